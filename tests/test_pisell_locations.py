"""`PisellChannel` syncing several IS warehouses, against a Pisell emulator with three."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.channel import ChannelError, Item, WebhookHint, Write
from agent.emulator import EmulatorOptions
from plugins.pisell import wire
from plugins.pisell.channel import PisellChannel
from plugins.pisell.emulator import PisellEmulator
from tests.test_pisell_channel import SECRET, TOKEN, FakeClock, Shop, delivery, settings


async def open_shop(
    aiohttp_server: Any, clock: FakeClock, *, locations: tuple[str, ...] | None = None
) -> Shop:
    """Three warehouses; warehouse 2 stocks SKU-00002 (7 units) by an admin's edit there, 3
    stocks nothing. The channel syncs its own (1) and `locations` (default: warehouse 2)."""
    options = EmulatorOptions(skus=5, token=TOKEN, webhook_secret=SECRET, rate_limit=False,
                              seed=3, locations=3)  # fmt: skip
    emulator = PisellEmulator(options, clock=clock.now)
    server = await aiohttp_server(emulator.build_app())
    base = str(server.make_url("")).rstrip("/")
    channel = PisellChannel(settings(base), http=aiohttp.ClientSession(), clock=clock)
    channel.locations = (emulator.warehouses[1].id,) if locations is None else locations
    shop = Shop(emulator, channel, base)
    edit = {"sku": "SKU-00002", "available": 7, "location": 2}
    assert await shop.control("/_emulator/inventory", edit) == 200
    return shop


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def shop(aiohttp_server: Any, clock: FakeClock) -> AsyncIterator[Shop]:
    shop = await open_shop(aiohttp_server, clock)
    yield shop
    await shop.channel.http.close()


def in_2(shop: Shop) -> dict[str, int]:
    """Warehouse 2's counts in the emulator."""
    inv = shop.emulator.inventory
    return {sku: n for sku, s in inv.items.items() if (n := inv.count(s, 2)) is not None}


class Receiver:
    """A webhook endpoint on a real server: what the emulator delivers, as the channel's hints."""

    def __init__(self, channel: PisellChannel) -> None:
        self.channel = channel
        self.hints: list[WebhookHint] = []
        self.arrived = asyncio.Event()

    async def receive(self, request: web.Request) -> web.Response:
        self.hints.append(self.channel.verify_webhook(request.headers, await request.read()))
        self.arrived.set()
        return web.Response()

    async def wait_for(self, match: Callable[[WebhookHint], bool]) -> WebhookHint:
        async with asyncio.timeout(5):
            while True:
                found = [h for h in self.hints if match(h)]
                if found:
                    return found[0]
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receiver(aiohttp_server: Any, shop: Shop) -> Receiver:
    receiver = Receiver(shop.channel)
    app = web.Application()
    app.router.add_post("/hook", receiver.receive)
    server = await aiohttp_server(app)
    await shop.channel.start()
    await shop.channel.subscribe(str(server.make_url("/hook")))
    return receiver


# -- start-up and check ---------------------------------------------------------------------


async def test_the_emulator_gives_location_n_warehouse_n(shop: Shop) -> None:
    assert [w.id for w in shop.emulator.warehouses] == ["1", "2", "3"]
    await shop.channel.start()
    assert shop.channel.synced == {"1": "", "2": "2"}
    assert PisellChannel.multi_location


async def test_an_unknown_warehouse_is_a_channel_error_at_start(
    aiohttp_server: Any, clock: FakeClock
) -> None:
    shop = await open_shop(aiohttp_server, clock, locations=("2", "9", "x"))
    own = await open_shop(aiohttp_server, clock, locations=("1",))
    try:
        with pytest.raises(ChannelError) as caught:
            await shop.channel.start()
        with pytest.raises(ChannelError, match="own Pisell warehouse") as own_caught:
            await own.channel.start()
        checks = await shop.channel.check()
    finally:
        await shop.channel.http.close()
        await own.channel.http.close()
    message = str(caught.value)
    assert "no warehouse '9', 'x'" in message and "has 1, 2, 3" in message
    assert "'1'" in str(own_caught.value)
    assert [(c.name, c.ok) for c in checks] == [("token", True), ("shop", False)]
    assert "'9'" in checks[-1].detail


async def test_check_reports_the_synced_warehouses(shop: Shop) -> None:
    checks = await shop.channel.check()
    assert all(c.ok for c in checks)
    assert checks[-1].name == "warehouses"
    assert checks[-1].detail == (
        "syncs warehouse 1 (Main warehouse), and as locations 2 (Warehouse 2)"
    )


# -- listing and lookup ---------------------------------------------------------------------


async def test_list_items_lists_an_item_per_warehouse_that_stocks_it(shop: Shop) -> None:
    items = [i async for i in shop.channel.list_items()]
    own = [i for i in items if i.location == ""]
    located = [i for i in items if i.location != ""]
    assert [i.item_id for i in own] == [f"SKU-{n:05d}@1" for n in range(1, 6)]  # as ever
    assert all(i.available == 100 for i in own)
    (there,) = located  # SKU-00001 and the others: not stocked in warehouse 2, not listed
    assert (there.item_id, there.sku, there.location, there.available) == (
        "SKU-00002@2", "SKU-00002", "2", 7
    )  # fmt: skip
    mine = next(i for i in own if i.sku == "SKU-00002")
    assert (there.title, there.created_at) == (mine.title, mine.created_at)
    assert len({i.item_id for i in items}) == len(items) == 6


async def test_location_is_returned_as_the_merchant_wrote_it(
    aiohttp_server: Any, clock: FakeClock
) -> None:
    shop = await open_shop(aiohttp_server, clock, locations=(" 2",))
    try:
        located = [i async for i in shop.channel.list_items() if i.location]
    finally:
        await shop.channel.http.close()
    assert [(i.item_id, i.location) for i in located] == [("SKU-00002@2", " 2")]


async def test_lookup_finds_items_in_the_warehouses_asked(shop: Shop) -> None:
    asked = ["SKU-00002@2", "SKU-00003@1", "SKU-00001@2", "SKU-00002@3", "junk"]
    found = await shop.channel.lookup(asked)
    assert found is not None
    got = {(i.item_id, i.location, i.available) for i in found}
    # SKU-00001 is not stocked in 2; warehouse 3 is not synced
    assert got == {("SKU-00002@2", "2", 7), ("SKU-00003@1", "", 100)}
    assert all(isinstance(i, Item) for i in found)


# -- reading and writing --------------------------------------------------------------------


async def test_read_and_write_in_another_warehouse(shop: Shop) -> None:
    counts = await shop.channel.read(["SKU-00002@2", "SKU-00002@1", "SKU-00001@2"])
    assert counts == {"SKU-00002@2": 7, "SKU-00002@1": 100, "SKU-00001@2": None}
    writes = [Write("SKU-00002@2", 7, 4), Write("SKU-00001@2", 0, 3)]
    done, not_stocked = await shop.channel.write(writes, key="w-2")
    assert (done.item_id, done.status, done.available) == ("SKU-00002@2", "ok", 4)
    assert not_stocked.status == "error" and wire.NOT_STOCKED in not_stocked.message
    assert in_2(shop) == {"SKU-00002": 4}
    assert shop.inventory()["SKU-00002"] == 100  # the own warehouse is untouched
    (record,) = [w for w in shop.emulator.store.write_log if w.applied]
    assert (record.sku, record.location, record.key) == ("SKU-00002", 2, "w-2")


async def test_a_sale_in_warehouse_2_makes_a_write_there_conflict(shop: Shop) -> None:
    order = {"location": 2, "line_items": [{"sku": "SKU-00002", "quantity": 3}]}
    assert await shop.control("/_emulator/orders", order) == 201
    (result,) = await shop.channel.write([Write("SKU-00002@2", 7, 10)], key="w-c")
    assert (result.status, result.available) == ("conflict", 4)
    assert in_2(shop) == {"SKU-00002": 4}
    (own,) = await shop.channel.write([Write("SKU-00002@1", 100, 90)], key="w-1")
    assert (own.status, own.available) == ("ok", 90)  # the own warehouse had no sale


# -- webhooks -------------------------------------------------------------------------------


async def test_a_level_change_in_warehouse_2_names_the_located_item(
    shop: Shop, receiver: Receiver
) -> None:
    edit = {"sku": "SKU-00002", "available": 5, "warehouse_id": "2"}
    assert await shop.control("/_emulator/inventory", edit) == 200
    hint = await receiver.wait_for(
        lambda h: h.topic == wire.TOPIC_INVENTORY_LEVEL_UPDATED and bool(h.item_ids)
    )
    # only the item in warehouse 2: its SKU alone would name the own warehouse's item
    assert (hint.item_ids, hint.skus) == (("SKU-00002@2",), ())


async def test_a_level_change_in_a_warehouse_not_synced_is_ignored(
    shop: Shop, clock: FakeClock
) -> None:
    await shop.channel.start()
    headers, body = delivery(
        wire.TOPIC_INVENTORY_LEVEL_UPDATED, wire.level_event("SKU-00002", "3"), clock.t
    )
    hint = shop.channel.verify_webhook(headers, body)
    assert (hint.item_ids, hint.skus) == ((), ())
    own = shop.channel.verify_webhook(
        *delivery(wire.TOPIC_INVENTORY_LEVEL_UPDATED, wire.level_event("SKU-00002", "1"), clock.t)
    )
    assert (own.item_ids, own.skus) == (("SKU-00002@1",), ("SKU-00002",))  # as ever


async def test_an_order_in_warehouse_2_names_the_located_item(
    shop: Shop, receiver: Receiver
) -> None:
    order = {"warehouse_id": "2", "line_items": [{"sku": "SKU-00002", "quantity": 1}]}
    assert await shop.control("/_emulator/orders", order) == 201
    hint = await receiver.wait_for(lambda h: h.topic == wire.TOPIC_ORDER_IMPORTED)
    assert (hint.item_ids, hint.skus) == (("SKU-00002@2",), ())
    assert hint.reference and hint.cause.startswith(wire.TOPIC_ORDER_IMPORTED)


async def test_an_order_names_items_by_the_warehouse_its_payload_gives(
    shop: Shop, clock: FakeClock
) -> None:
    combo = {"sku": "PAIR", "components": [{"sku": "SKU-00002", "quantity": 2}]}
    assert await shop.control("/_emulator/combos", combo) == 201
    _ = [i async for i in shop.channel.list_items()]  # the channel learns PAIR is a combo
    lines = [("SKU-00002", 1), ("SKU-00003", 1), ("PAIR", 1)]

    def hint_of(payload: dict[str, Any]) -> WebhookHint:
        return shop.channel.verify_webhook(*delivery(wire.TOPIC_ORDER_IMPORTED, payload, clock.t))

    own = hint_of(wire.order_event(1, "1", "1", lines))
    assert (own.item_ids, own.skus) == ((), ("SKU-00002", "SKU-00003", "PAIR"))  # as ever
    there = hint_of(wire.order_event(2, "1", "2", lines))
    assert (there.item_ids, there.skus) == (("SKU-00002@2", "SKU-00003@2"), ())
    nowhere = {k: v for k, v in wire.order_event(3, "1", "1", lines).items()
               if k != "warehouse_id"}  # fmt: skip
    unsaid = hint_of(nowhere)
    # no warehouse said: the SKUs (the own items) and the items in every other synced one
    assert (unsaid.item_ids, unsaid.skus) == (
        ("SKU-00002@2", "SKU-00003@2"), ("SKU-00002", "SKU-00003", "PAIR")
    )  # fmt: skip
    elsewhere = hint_of(wire.order_event(4, "1", "3", lines))
    assert (elsewhere.item_ids, elsewhere.skus) == ((), ())
