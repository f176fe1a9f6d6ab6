"""The SHOPLINE channel syncs several locations of a store, against the emulator over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.channel import ChannelError, Item, WebhookHint, Write
from agent.emulator import EmulatorOptions
from plugins.shopline.channel import ShoplineChannel, ShoplineSettings
from plugins.shopline.emulator import ShoplineEmulator, shopline_id
from tests.test_shopline_channel import SECRET, FakeClock, signed

LOCATION_2 = shopline_id(2)
LOCATION_3 = shopline_id(3)


class Shop:
    """An emulated SHOPLINE store with 3 locations and a channel that also syncs location 2."""

    def __init__(self, emulator: ShoplineEmulator, server: Any, clock: FakeClock) -> None:
        self.emulator = emulator
        self.server = server
        self.clock = clock
        self.channel: ShoplineChannel
        self.channel_for: Callable[..., Awaitable[ShoplineChannel]]

    def item(self, n: int = 0) -> str:
        variant = list(self.emulator.store.variants.values())[n]
        return shopline_id(variant.inventory_item_id)

    def sku(self, n: int = 0) -> str:
        return list(self.emulator.store.variants.values())[n].sku

    async def control(self, path: str, body: dict[str, Any]) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.server.make_url(path), json=body) as resp,
        ):
            assert resp.status < 300, await resp.text()
            return await resp.json()

    def hint(self, topic: str, payload: dict[str, Any]) -> WebhookHint:
        body = json.dumps(payload).encode()
        headers = {"x-shopline-hmac-sha256": signed(body), "x-shopline-topic": topic}
        return self.channel.verify_webhook(headers, body)


MakeShop = Callable[..., Awaitable[Shop]]


@pytest.fixture
async def make_shop(aiohttp_server: Any) -> AsyncIterator[MakeShop]:
    sessions: list[aiohttp.ClientSession] = []

    async def make(
        skus: int = 5, *, locations: tuple[str, ...] = (LOCATION_2,), start: bool = True
    ) -> Shop:
        clock = FakeClock()
        options = EmulatorOptions(skus=skus, rate_limit=False, locations=3)
        emulator = ShoplineEmulator(options, clock=clock)
        server = await aiohttp_server(emulator.build_app())
        shop = Shop(emulator, server, clock)

        async def channel_for(synced: tuple[str, ...], *, start: bool = True) -> ShoplineChannel:
            settings = ShoplineSettings.from_options(
                {
                    "api_url": str(server.make_url("/")),
                    "access_token": "emulator-token",
                    "webhook_secret": SECRET,
                    "retry_base": "0.01",
                }
            )
            session = aiohttp.ClientSession()
            sessions.append(session)
            channel = ShoplineChannel(settings, http=session, clock=clock)
            channel.locations = synced  # as the core sets it, before start()
            if start:
                await channel.start()
            return channel

        shop.channel_for = channel_for
        shop.channel = await channel_for(locations, start=start)
        return shop

    yield make
    for session in sessions:
        await session.close()


async def listed(channel: ShoplineChannel) -> list[Item]:
    return [item async for item in channel.list_items()]


async def hints_of(shop: Shop, aiohttp_server: Any, action: Callable[[], Awaitable[None]], n: int):
    """The hints of the first `n` deliveries after `action`, through the emulator's sender."""
    hints: list[WebhookHint] = []
    done = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        hints.append(shop.channel.verify_webhook(request.headers, await request.read()))
        if len(hints) >= n:
            done.set()
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/webhooks/shopline", receive)
    server = await aiohttp_server(receiver)
    await shop.channel.subscribe(str(server.make_url("/webhooks/shopline")))
    await action()
    await asyncio.wait_for(done.wait(), 5)
    return hints


# -- start --------------------------------------------------------------------------------------


def test_the_channel_says_it_syncs_several_locations():
    assert ShoplineChannel.multi_location is True


async def test_a_location_the_store_does_not_have_is_a_clear_error_at_start(make_shop: MakeShop):
    shop = await make_shop(locations=(LOCATION_2, "1000000000000000777"), start=False)
    with pytest.raises(ChannelError) as caught:
        await shop.channel.start()
    message = str(caught.value)
    assert "'1000000000000000777'" in message and "not in this SHOPLINE store" in message
    assert LOCATION_3 in message  # it lists the store's locations to choose from
    own = await shop.channel_for((shopline_id(1),), start=False)
    with pytest.raises(ChannelError, match="repeat the channel's own location"):
        await own.start()


async def test_check_reports_the_synced_locations(make_shop: MakeShop):
    shop = await make_shop()
    checks = {check.name: check for check in await shop.channel.check()}
    assert checks["locations"].ok
    assert f"own location {shopline_id(1)} (Default location)" in checks["locations"].detail
    assert f"{LOCATION_2} (Location 2)" in checks["locations"].detail
    single = await shop.channel_for(())
    assert "locations" not in {check.name for check in await single.check()}


# -- listing and reading ------------------------------------------------------------------------


async def test_an_item_is_listed_at_each_synced_location_that_stocks_it(make_shop: MakeShop):
    shop = await make_shop()
    await shop.control("/_emulator/inventory", {"sku": shop.sku(0), "available": 7, "location": 2})
    shop.emulator.store.edit(shop.sku(1), 4, 3)  # location 3 is not synced
    items = await listed(shop.channel)
    located = f"{shop.item(0)}@{LOCATION_2}"
    at_2 = [item for item in items if item.location]
    assert [(i.item_id, i.sku, i.available, i.location) for i in at_2] == [
        (located, shop.sku(0), 7, LOCATION_2)
    ]
    own = [item for item in items if not item.location]
    assert len(own) == 5 and own[0].available == 100
    # the own location's items are exactly those of a channel that syncs no other location
    single = await listed(await shop.channel_for(()))
    assert own == single
    assert len({item.item_id for item in items}) == 6


async def test_the_location_is_given_back_exactly_as_it_was_written(make_shop: MakeShop):
    written = f" {LOCATION_2}"
    shop = await make_shop(locations=(written,))
    shop.emulator.store.edit(shop.sku(0), 7, 2)
    [item] = [item for item in await listed(shop.channel) if item.location]
    assert item.location == written
    assert item.item_id == f"{shop.item(0)}@{LOCATION_2}"
    assert await shop.channel.read([item.item_id]) == {item.item_id: 7}


async def test_read_and_lookup_at_another_location(make_shop: MakeShop):
    shop = await make_shop()
    shop.emulator.store.edit(shop.sku(0), 7, 2)
    located = f"{shop.item(0)}@{LOCATION_2}"
    unstocked = f"{shop.item(1)}@{LOCATION_2}"
    unsynced = f"{shop.item(0)}@{LOCATION_3}"
    own_spelled = f"{shop.item(0)}@{shopline_id(1)}"
    counts = await shop.channel.read([located, shop.item(0), unstocked, unsynced, own_spelled])
    assert counts == {
        located: 7,
        shop.item(0): 100,
        unstocked: None,
        unsynced: None,
        own_spelled: None,
    }
    found = await shop.channel.lookup([located, unstocked])
    assert found is not None
    assert {(item.item_id, item.available, item.location) for item in found} >= {
        (located, 7, LOCATION_2)
    }
    assert unstocked not in {item.item_id for item in found}


# -- writing ------------------------------------------------------------------------------------


async def test_a_write_at_another_location_adjusts_there_and_keeps_a_concurrent_change(
    make_shop: MakeShop,
):
    shop = await make_shop()
    shop.emulator.store.edit(shop.sku(0), 7, 2)
    located = f"{shop.item(0)}@{LOCATION_2}"
    await shop.channel.read([located])
    [result] = await shop.channel.write([Write(located, 7, 4)], key="k1")
    assert (result.item_id, result.status, result.available) == (located, "ok", 4)
    variant = shop.emulator.store.find_sku(shop.sku(0))
    assert (variant.count(1), variant.count(2)) == (100, 4)
    # SHOPLINE has no compare-and-set: the channel adjusts, so a change the core has not seen
    # yet (an edit to 10) survives the write and shows in its answer, as a local change
    shop.emulator.store.edit(shop.sku(0), 10, 2)
    [result] = await shop.channel.write([Write(located, 4, 6)], key="k2")
    assert (result.status, result.available) == ("ok", 12)
    writes = shop.emulator.store.write_log
    assert [(w.kind, w.location, w.before, w.after) for w in writes] == [
        ("adjust", 2, 7, 4),
        ("adjust", 2, 10, 12),
    ]


async def test_a_write_where_the_item_is_not_synced_or_not_stocked_is_an_error(
    make_shop: MakeShop,
):
    shop = await make_shop()
    shop.emulator.store.edit(shop.sku(0), 7, 3)
    ids = [
        f"{shop.item(1)}@{LOCATION_2}",  # not stocked at location 2
        f"{shop.item(0)}@{LOCATION_3}",  # location 3 is not synced
        f"{shop.item(0)}@{shopline_id(1)}",  # the own location's ids carry no location
    ]
    results = await shop.channel.write([Write(item_id, 1, 2) for item_id in ids], key="k1")
    assert [result.status for result in results] == ["error", "error", "error"]
    assert shop.emulator.store.write_log == []


# -- webhooks -----------------------------------------------------------------------------------


async def test_a_level_webhook_names_the_item_at_the_location_it_tells_of(
    make_shop: MakeShop, aiohttp_server: Any
):
    shop = await make_shop()

    async def edits() -> None:
        await shop.control("/_emulator/inventory", {"sku": shop.sku(0), "available": 6})
        for where in (2, 3):
            edit = {"sku": shop.sku(0), "available": 7, "location": where}
            await shop.control("/_emulator/inventory", edit)

    hints = await hints_of(shop, aiohttp_server, edits, 3)
    named = sorted(hint.item_ids for hint in hints if hint.topic == "inventory_levels/update")
    # location 3 is not synced: its level names nothing
    assert named == sorted([(), (shop.item(0),), (f"{shop.item(0)}@{LOCATION_2}",)])


async def test_the_echo_of_a_write_at_another_location_is_dropped(make_shop: MakeShop):
    shop = await make_shop()
    shop.emulator.store.edit(shop.sku(0), 7, 2)
    located = f"{shop.item(0)}@{LOCATION_2}"
    await shop.channel.write([Write(located, 7, 5)], key="k1")
    level = {"inventory_item_id": shop.item(0), "location_id": LOCATION_2}
    assert shop.hint("inventory_levels/update", {**level, "available": 5}).item_ids == ()
    assert shop.hint("inventory_levels/update", {**level, "available": 3}).item_ids == (located,)


async def test_an_order_at_another_location_names_the_item_there(
    make_shop: MakeShop, aiohttp_server: Any
):
    shop = await make_shop()
    shop.emulator.store.edit(shop.sku(0), 7, 2)
    await listed(shop.channel)  # the channel learns each variant's inventory item
    located = f"{shop.item(0)}@{LOCATION_2}"

    async def orders() -> None:
        line = {"sku": shop.sku(0), "quantity": 2}
        await shop.control("/_emulator/orders", {"line_items": [line], "location": 2})

    hints = await hints_of(shop, aiohttp_server, orders, 2)
    [order] = [hint for hint in hints if hint.topic == "orders/create"]
    assert (order.item_ids, order.skus) == ((located,), ())
    [level] = [hint for hint in hints if hint.topic == "inventory_levels/update"]
    assert level.item_ids == (located,)


async def test_an_order_line_without_a_location_names_the_item_at_every_synced_location(
    make_shop: MakeShop,
):
    shop = await make_shop()
    shop.emulator.store.edit(shop.sku(0), 7, 2)
    await listed(shop.channel)
    variant = shop.emulator.store.find_sku(shop.sku(0))
    located = f"{shop.item(0)}@{LOCATION_2}"
    line = {"sku": shop.sku(0), "variant_id": shopline_id(variant.variant_id), "quantity": 1}
    # the own location is named by SKU, as a single-location channel names it
    nowhere = shop.hint("orders/create", {"line_items": [line]})
    assert (nowhere.item_ids, nowhere.skus) == ((located,), (shop.sku(0),))
    own = shop.hint("orders/cancelled", {"line_items": [{**line, "location_id": shopline_id(1)}]})
    assert (own.item_ids, own.skus) == ((), (shop.sku(0),))
    # SHOPLINE's refund names no location
    refund = {"order_id": "1", "refund_line_items": [{"line_item": line, "quantity": 1}]}
    refunded = shop.hint("refunds/create", refund)
    assert (refunded.item_ids, refunded.skus) == ((located,), (shop.sku(0),))
    # a variant the channel has not listed yet: its SKU stands in
    unknown = {**line, "variant_id": "1999999999999999999", "location_id": LOCATION_2}
    assert shop.hint("orders/create", {"line_items": [unknown]}).skus == (shop.sku(0),)


async def test_a_product_webhook_names_its_items_at_every_synced_location(make_shop: MakeShop):
    shop = await make_shop()
    product = {"variants": [{"inventory_item_id": shop.item(0), "sku": shop.sku(0)}]}
    hint = shop.hint("products/update", product)
    assert hint.catalogue_changed
    assert hint.item_ids == (shop.item(0), f"{shop.item(0)}@{LOCATION_2}")
