"""The Shopify channel syncing several locations of a shop, against the emulator over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from agent.channel import ChannelError, Write
from plugins.shopify.channel import ShopifyChannel
from plugins.shopify.emulator import ShopifyEmulator
from plugins.shopify.webhooks import signature
from tests.test_shopify_channel import SECRET, collect, item_gid, make_channel, make_emulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def api_url(aiohttp_server: Any, emulator: ShopifyEmulator) -> str:
    server = await aiohttp_server(emulator.build_app())
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
def emulator() -> ShopifyEmulator:
    """Three locations; SKU-00002 is stocked at location 2 (7 units), nothing else is."""
    emulator = make_emulator(locations=3)
    emulator.store.edit("SKU-00002", 7, location=2)
    return emulator


def located(emulator: ShopifyEmulator, sku: str, location: int = 2) -> str:
    return f"{item_gid(emulator, sku)}@{location}"


async def start(
    api_url: str, http: aiohttp.ClientSession, locations: tuple[str, ...] = ("2",), **options: Any
) -> ShopifyChannel:
    channel = make_channel(api_url, http, **options)
    channel.locations = locations
    await channel.start()
    return channel


async def deliveries(aiohttp_server: Any) -> tuple[str, list[tuple[CIMultiDict[str], bytes]]]:
    got: list[tuple[CIMultiDict[str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((CIMultiDict(request.headers), await request.read()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/wh", hook)
    server = await aiohttp_server(app)
    return str(server.make_url("/wh")), got


async def wait_for(got: list[Any], count: int) -> None:
    for _ in range(300):
        if len(got) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} deliveries, got {len(got)}")


# -- listing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bulk", [True, False])
async def test_an_item_is_listed_at_each_location_that_stocks_it_with_an_id_of_its_own(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator, bulk: bool
) -> None:
    single = await collect(make_channel(api_url, http, bulk=bulk))
    items = await collect(await start(api_url, http, bulk=bulk))
    own = [i for i in items if i.location == ""]
    assert own == single  # the own location's items and ids are what they always were
    annex = [i for i in items if i.location != ""]
    assert [(i.item_id, i.sku, i.available, i.location) for i in annex] == [
        (located(emulator, "SKU-00002"), "SKU-00002", 7, "2")
    ]  # SKU-00001 and the others are not stocked at location 2: not listed there
    at_home = next(i for i in own if i.sku == "SKU-00002")
    assert (at_home.item_id, at_home.available) == (item_gid(emulator, "SKU-00002"), 100)
    assert annex[0].stamp is not None and annex[0].title == at_home.title
    assert bool(emulator.bulk.operations) is bulk


async def test_a_location_keeps_the_name_it_was_given(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    channel = await start(api_url, http, ("gid://shopify/Location/2",))
    annex = [i for i in await collect(channel) if i.location]
    assert [(i.item_id, i.location) for i in annex] == [
        (located(emulator, "SKU-00002"), "gid://shopify/Location/2")
    ]
    checks = {c.name: c for c in await channel.check()}
    assert checks["locations"].ok
    assert "Annex 2 (gid://shopify/Location/2)" in checks["locations"].detail


async def test_pages_at_two_locations_are_priced_as_shopify_prices_them(
    aiohttp_server: Any, http: aiohttp.ClientSession
) -> None:
    emulator = make_emulator(skus=400, locations=2, rate_limit=True)
    emulator.store.edit("SKU-00003", 4, location=2)
    server = await aiohttp_server(emulator.build_app())
    channel = await start(str(server.make_url("")).rstrip("/"), http, bulk=False)
    items = await collect(channel)
    assert len(items) == 401
    # each variant costs 6 points at two locations: pages of 166 (998 points) fit the
    # 1000-point limit, so no page was refused and repriced
    assert emulator.stats["reads"] == 2 + 3  # primary location, locations, 166 + 166 + 68
    assert emulator.stats["throttled"] == 0


async def test_lookup_finds_items_at_any_synced_location(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    channel = await start(api_url, http)
    ids = [
        item_gid(emulator, "SKU-00002"),
        located(emulator, "SKU-00002"),
        located(emulator, "SKU-00001"),  # not stocked at location 2
        located(emulator, "SKU-00002", 3),  # a location not synced
    ]
    found = await channel.lookup(ids)
    assert found is not None
    assert [(i.item_id, i.available, i.location) for i in found] == [
        (ids[0], 100, ""),
        (ids[1], 7, "2"),
    ]


# -- reading and writing -----------------------------------------------------------------------


async def test_read_and_compare_and_set_write_at_another_location(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    channel = await start(api_url, http)
    home, annex = item_gid(emulator, "SKU-00002"), located(emulator, "SKU-00002")
    unstocked = located(emulator, "SKU-00001")
    levels = await channel.read_levels([home, annex, unstocked, located(emulator, "SKU-00002", 3)])
    assert [level.count for level in levels.values()] == [100, 7, None, None]
    assert levels[annex].stamp is not None
    results = await channel.write([Write(annex, 7, 4), Write(home, 100, 95)], key="two-places")
    assert [(r.item_id, r.status, r.available) for r in results] == [
        (annex, "ok", 4),
        (home, "ok", 95),
    ]
    assert results[0].stamp is not None
    variant = emulator.store.find_sku("SKU-00002")
    assert (variant.available, variant.count(2)) == (95, 4)
    log = [(w.location, w.key) for w in emulator.store.write_log]
    assert log == [(2, "two-places"), (1, "two-places")]  # one call for both locations
    emulator.store.purchase([("SKU-00002", 1)], location=2)  # a sale there meanwhile
    [conflict] = await channel.write([Write(annex, 4, 10)], key="stale")
    assert conflict.status == "conflict"
    assert variant.count(2) == 3 and variant.available == 95
    [refused] = await channel.write([Write(unstocked, 0, 5)], key="unstocked")
    assert refused.status == "error" and "ITEM_NOT_STOCKED_AT_LOCATION" in refused.message
    [foreign] = await channel.write([Write(located(emulator, "SKU-00002", 3), 0, 5)], key="x")
    assert foreign.status == "error"


# -- webhooks ----------------------------------------------------------------------------------


async def test_level_and_order_webhooks_at_another_location_name_the_located_item(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator, aiohttp_server: Any
) -> None:
    channel = await start(api_url, http)
    await collect(channel)  # the listing tells the channel each variant's item
    url, got = await deliveries(aiohttp_server)
    await channel.subscribe(url)
    annex, home = located(emulator, "SKU-00002"), item_gid(emulator, "SKU-00002")
    emulator.store.edit("SKU-00002", 9, location=2)
    await wait_for(got, 1)
    level = channel.verify_webhook(*got.pop())
    assert (level.topic, level.item_ids, level.counts) == (
        "inventory_levels/update",
        (annex,),
        ((annex, 9),),
    )
    assert level.stamp is not None
    emulator.store.edit("SKU-00002", 2, location=3)  # a location the channel does not sync
    await wait_for(got, 1)
    ignored = channel.verify_webhook(*got.pop())
    assert ignored.item_ids == () and ignored.counts == ()
    order = emulator.store.purchase([("SKU-00002", 1)], location=2)
    emulator.on_order(order)
    await wait_for(got, 2)
    hints = {h.topic: h for h in (channel.verify_webhook(*d) for d in got)}
    placed = hints["orders/create"]
    assert placed.item_ids == (annex,) and placed.skus == ()  # the own location did not move
    assert placed.levels_follow and placed.reference == order["name"]
    assert hints["inventory_levels/update"].counts == ((annex, 8),)
    got.clear()
    emulator.store.purchase([("SKU-00002", 1)])
    emulator.on_order(emulator.store.orders[-1])
    await wait_for(got, 2)
    hints = {h.topic: h for h in (channel.verify_webhook(*d) for d in got)}
    assert hints["orders/create"].item_ids == (home,)
    assert hints["orders/create"].skus == ("SKU-00002",)


async def test_an_order_that_names_no_location_names_the_item_at_every_synced_location(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    channel = await start(api_url, http)
    await collect(channel)
    variant = emulator.store.find_sku("SKU-00002")
    body = json.dumps(
        {"id": 5, "name": "#1005", "created_at": "2026-01-15T10:00:00-05:00",
         "line_items": [{"id": 6, "variant_id": variant.variant_id, "sku": "SKU-00002",
                         "quantity": 1}]}
    ).encode()  # fmt: skip
    headers = {"X-Shopify-Hmac-Sha256": signature(SECRET, body), "X-Shopify-Topic": "orders/create"}
    hint = channel.verify_webhook(headers, body)
    assert hint.item_ids == (item_gid(emulator, "SKU-00002"), located(emulator, "SKU-00002"))
    assert hint.skus == ("SKU-00002",)
    products = json.dumps(
        {"id": 1, "variants": [{"id": variant.variant_id, "sku": "SKU-00002",
                                "inventory_item_id": variant.inventory_item_id}]}
    ).encode()  # fmt: skip
    headers = {"X-Shopify-Hmac-Sha256": signature(SECRET, products),
               "X-Shopify-Topic": "products/update"}  # fmt: skip
    product = channel.verify_webhook(headers, products)
    assert product.catalogue_changed
    assert product.item_ids == (item_gid(emulator, "SKU-00002"), located(emulator, "SKU-00002"))
    line = {"variant_id": variant.variant_id, "sku": "SKU-00002"}
    refund = json.dumps(
        {"id": 7, "order_id": 5, "refund_line_items": [
            {"quantity": 1, "restock_type": "return", "location_id": 2, "line_item": line},
            {"quantity": 1, "restock_type": "no_restock", "line_item": line}]}
    ).encode()  # fmt: skip
    headers = {"X-Shopify-Hmac-Sha256": signature(SECRET, refund),
               "X-Shopify-Topic": "refunds/create"}  # fmt: skip
    returned = channel.verify_webhook(headers, refund)
    assert returned.item_ids == (located(emulator, "SKU-00002"), item_gid(emulator, "SKU-00002"))
    assert returned.skus == ("SKU-00002",)  # the line without a location: everywhere


# -- start ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locations", "message"),
    [
        (("9",), "the shop has no active location '9'"),
        (("gid://shopify/Location/1",), "is the channel's own location"),
        (("annex",), "not a location number or a Location gid"),
        (("2", "gid://shopify/Location/2"), "listed twice"),
    ],
)
async def test_a_location_the_shop_lacks_or_the_own_one_is_a_clear_error_at_start(
    api_url: str, http: aiohttp.ClientSession, locations: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ChannelError, match=message):
        await start(api_url, http, locations)
