"""The Shopify channel against the Shopify emulator: list, read, write, pacing, webhooks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import structlog
from multidict import CIMultiDict

from agent.channel import ChannelError, ConfigError, Level, WebhookRejected, Write
from agent.clock import SystemClock
from agent.emulator import EmulatorOptions, LeakyBucket
from plugins.shopify.channel import KEY_NAMESPACE, ShopifyChannel, ShopifySettings
from plugins.shopify.emulator import ShopifyEmulator

TOKEN = "shpat_secret_token"
SECRET = "hush"


def make_emulator(**kwargs: Any) -> ShopifyEmulator:
    options = {"shop": "dk-test.myshopify.com", "skus": 5, "token": TOKEN,
               "webhook_secret": SECRET, "rate_limit": False, "seed": 3, **kwargs}  # fmt: skip
    return ShopifyEmulator(EmulatorOptions(**options))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def emulator() -> ShopifyEmulator:
    return make_emulator()


@pytest.fixture
async def api_url(aiohttp_server: Any, emulator: ShopifyEmulator) -> str:
    server = await aiohttp_server(emulator.build_app())
    return str(server.make_url("")).rstrip("/")


def make_channel(api_url: str, http: aiohttp.ClientSession, **options: Any) -> ShopifyChannel:
    settings = ShopifySettings.from_options(
        {"api_url": api_url, "access_token": TOKEN, "webhook_secret": SECRET,
         "retry_base": 0.001, **options}
    )  # fmt: skip
    return ShopifyChannel(settings, http=http, clock=SystemClock())


def item_gid(emulator: ShopifyEmulator, sku: str) -> str:
    return f"gid://shopify/InventoryItem/{emulator.store.find_sku(sku).inventory_item_id}"


async def collect(channel: ShopifyChannel) -> list[Any]:
    return [item async for item in channel.list_items()]


# -- settings ----------------------------------------------------------------------------------


def test_settings_need_url_token_and_secret_and_accept_a_bare_location_number() -> None:
    with pytest.raises(ConfigError, match="missing channel option access_token"):
        ShopifySettings.from_options({"api_url": "http://x", "webhook_secret": "s"})
    settings = ShopifySettings.from_options(
        {"api_url": "http://x/", "access_token": "shpat_zzz", "webhook_secret": "whsec_zzz",
         "location_id": "42", "bulk": "false"}
    )  # fmt: skip
    assert isinstance(settings, ShopifySettings)
    assert settings.location_id == "gid://shopify/Location/42"
    assert settings.bulk is False
    assert settings.endpoint == "http://x/admin/api/2026-10/graphql.json"
    assert "zzz" not in repr(settings)


# -- reading -----------------------------------------------------------------------------------


async def test_bulk_listing_yields_tracked_stocked_variants_with_their_facts(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    emulator.store.add_product("", 3, notify=False)  # no SKU: still listed, sku None
    emulator.store.find_sku("SKU-00004").tracked = False
    emulator.unstocked.add(emulator.store.find_sku("SKU-00005").inventory_item_id)
    emulator.store.edit("SKU-00002", 17)
    channel = make_channel(api_url, http)
    items = await collect(channel)
    assert [i.sku for i in items] == ["SKU-00001", "SKU-00002", "SKU-00003", None]
    second = items[1]
    variant = emulator.store.find_sku("SKU-00002")
    assert second.item_id == item_gid(emulator, "SKU-00002")
    assert second.available == 17
    assert second.created_at == pytest.approx(variant.created_at, abs=0.001)
    assert second.title == "Product SKU-00002"
    assert emulator.bulk.operations[1].status == "COMPLETED"  # it really went through bulk


async def test_paged_listing_covers_several_pages(
    aiohttp_server: Any, http: aiohttp.ClientSession
) -> None:
    emulator = make_emulator(skus=450)
    server = await aiohttp_server(emulator.build_app())
    channel = make_channel(str(server.make_url("")).rstrip("/"), http, bulk=False)
    items = await collect(channel)
    assert len(items) == 450
    assert len({i.item_id for i in items}) == 450
    assert emulator.stats["reads"] == 1 + 3  # locations, then pages of 200, 200, 50
    assert not emulator.bulk.operations


async def test_listing_falls_back_to_pages_when_a_bulk_query_is_running(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    emulator.bulk.start("{ productVariants { edges { node { id } } } }", "2026-10", api_url)
    items = await collect(make_channel(api_url, http))
    assert len(items) == 5


async def test_read_returns_counts_and_none_for_what_is_not_sellable_stock(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    emulator.store.edit("SKU-00001", 12)
    emulator.unstocked.add(emulator.store.find_sku("SKU-00002").inventory_item_id)
    ids = [
        item_gid(emulator, "SKU-00001"),
        item_gid(emulator, "SKU-00002"),
        "gid://shopify/InventoryItem/987654",
        "not-a-gid",
    ]
    counts = await make_channel(api_url, http).read(ids)
    assert counts == {ids[0]: 12, ids[1]: None, ids[2]: None, ids[3]: None}


async def test_a_transient_503_is_retried(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    channel = make_channel(api_url, http)
    await channel.start()
    emulator.faults.fail_requests = 2
    item = item_gid(emulator, "SKU-00003")
    assert await channel.read([item]) == {item: 100}
    assert emulator.faults.fail_requests == 0


async def test_a_wrong_token_is_a_channel_error_that_does_not_leak_it(
    api_url: str, http: aiohttp.ClientSession
) -> None:
    channel = make_channel(api_url, http, access_token="shpat_wrong_one")
    with pytest.raises(ChannelError) as caught:
        await channel.read(["gid://shopify/InventoryItem/1"])
    assert "401" in str(caught.value)
    assert "shpat_wrong_one" not in str(caught.value)


# -- writing -----------------------------------------------------------------------------------


async def test_write_sets_the_count_and_reports_it(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    item = item_gid(emulator, "SKU-00001")
    results = await make_channel(api_url, http).write([Write(item, 100, 60)], key="batch-1")
    assert [(r.status, r.available) for r in results] == [("ok", 60)]
    assert emulator.store.inventory()["SKU-00001"] == 60
    assert [w.key for w in emulator.store.write_log] == ["batch-1"]


async def test_reads_and_writes_carry_the_level_time_that_level_webhooks_carry(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    channel = make_channel(api_url, http)
    variant = emulator.store.find_sku("SKU-00001")
    item = f"gid://shopify/InventoryItem/{variant.inventory_item_id}"
    emulator.clock = lambda: 1_800_000_000.75  # type: ignore[method-assign]
    emulator.store._clock = emulator.clock
    emulator.store.purchase([("SKU-00001", 1)])
    level = (await channel.read_levels([item]))[item]
    assert level == Level(variant.available, 1_800_000_000.0)  # whole seconds, as Shopify
    emulator.clock = lambda: 1_800_000_002.2  # type: ignore[method-assign]
    emulator.store._clock = emulator.clock
    [result] = await channel.write([Write(item, variant.available, 3)], key=str(uuid.uuid4()))
    assert (result.status, result.available, result.stamp) == ("ok", 3, 1_800_000_002.0)
    items = [i async for i in channel.list_items() if i.item_id == item]
    assert [(i.available, i.stamp) for i in items] == [(3, 1_800_000_002.0)]


async def test_write_after_a_concurrent_purchase_is_a_conflict_and_keeps_the_sale(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    channel = make_channel(api_url, http)
    first, second = item_gid(emulator, "SKU-00001"), item_gid(emulator, "SKU-00002")
    assert await channel.read([first]) == {first: 100}
    emulator.store.purchase([("SKU-00001", 2)])  # the storefront sells meanwhile
    results = await channel.write([Write(first, 100, 50), Write(second, 100, 70)], key="b-2")
    assert [(r.status, r.available) for r in results] == [("conflict", None), ("ok", 70)]
    assert emulator.store.inventory()["SKU-00001"] == 98
    assert emulator.store.inventory()["SKU-00002"] == 70
    applied = [w for w in emulator.store.write_log if w.applied]
    assert [(w.sku, w.key) for w in applied] == [
        ("SKU-00002", str(uuid.uuid5(KEY_NAMESPACE, "b-2/retry")))
    ]


async def test_a_write_whose_answer_is_lost_is_retried_with_its_key_and_applied_once(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    emulator.faults.timeout_after_apply = 1
    item = item_gid(emulator, "SKU-00003")
    results = await make_channel(api_url, http).write([Write(item, 100, 90)], key="lost-1")
    assert [(r.status, r.available) for r in results] == [("ok", 90)]
    applied = [w for w in emulator.store.write_log if w.applied]
    assert [(w.before, w.after, w.key) for w in applied] == [(100, 90, "lost-1")]
    assert emulator.stats["idempotent_replays"] == 1


async def test_a_write_that_never_gets_an_answer_is_unknown(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    emulator.faults.fail_requests = 10
    item = item_gid(emulator, "SKU-00003")
    channel = make_channel(api_url, http, max_retries=2, location_id="1")
    results = await channel.write([Write(item, 100, 90)], key="k")
    assert [r.status for r in results] == ["unknown"]
    assert emulator.store.inventory()["SKU-00003"] == 100


async def test_a_big_batch_uses_derived_keys_and_its_retry_applies_nothing_new(
    aiohttp_server: Any, http: aiohttp.ClientSession
) -> None:
    emulator = make_emulator(skus=300)
    server = await aiohttp_server(emulator.build_app())
    channel = make_channel(str(server.make_url("")).rstrip("/"), http)
    writes = [Write(f"gid://shopify/InventoryItem/{v.inventory_item_id}", 100, 5)
              for v in emulator.store.variants.values()]  # fmt: skip
    first = await channel.write(writes, key="big")
    again = await channel.write(writes, key="big")
    assert {r.status for r in first} == {"ok"} and first == again
    keys = {w.key for w in emulator.store.write_log}
    assert keys == {str(uuid.uuid5(KEY_NAMESPACE, f"big/{n}")) for n in (0, 1)}
    assert len(emulator.store.write_log) == 300  # the retry was answered from the key store


# -- pacing ------------------------------------------------------------------------------------


async def test_a_burst_on_a_small_bucket_is_paced_with_few_throttles(
    aiohttp_server: Any, http: aiohttp.ClientSession
) -> None:
    emulator = make_emulator(skus=10, rate_limit=True)
    emulator.bucket = LeakyBucket(50, 2000, clock=time.time)
    server = await aiohttp_server(emulator.build_app())
    channel = make_channel(str(server.make_url("")).rstrip("/"), http, location_id="1")
    ids = [f"gid://shopify/InventoryItem/{v.inventory_item_id}"
           for v in emulator.store.variants.values()]  # fmt: skip
    results = await asyncio.gather(*(channel.read(ids) for _ in range(40)))  # 30 points each
    assert all(r == dict.fromkeys(ids, 100) for r in results)
    assert emulator.stats["throttled"] <= 3
    assert channel.budget.bucket == 50
    assert channel.budget.restore_rate == 2000


# -- webhooks ----------------------------------------------------------------------------------

VECTOR = "VnKUjZsLuN5iZWjn5EntcBVCF9kMN43LglzCE1/GSeY="


async def test_webhook_signature_matches_the_test_vector_in_any_header_case(
    http: aiohttp.ClientSession,
) -> None:
    channel = make_channel("http://127.0.0.1:1", http)
    plain = {"x-shopify-hmac-sha256": VECTOR, "x-shopify-topic": "app/uninstalled"}
    hint = channel.verify_webhook(plain, b'{"id":1}')
    assert (hint.topic, hint.item_ids, hint.skus) == ("app/uninstalled", (), ())
    multi = CIMultiDict({"X-Shopify-Hmac-Sha256": VECTOR, "X-Shopify-Webhook-Id": "d-1"})
    assert channel.verify_webhook(multi, b'{"id":1}').delivery_id == "d-1"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"X-Shopify-Hmac-Sha256": VECTOR}, b'{"id":2}'),
        ({"X-Shopify-Hmac-Sha256": "bm90IGl0"}, b'{"id":1}'),
        ({"X-Shopify-Hmac-Sha256": "%%%"}, b'{"id":1}'),
        ({}, b'{"id":1}'),
    ],
)
async def test_a_bad_or_missing_signature_is_rejected(
    http: aiohttp.ClientSession, headers: dict[str, str], body: bytes
) -> None:
    with pytest.raises(WebhookRejected):
        make_channel("http://127.0.0.1:1", http).verify_webhook(headers, body)


async def test_topics_map_to_item_ids_and_skus(
    aiohttp_server: Any, http: aiohttp.ClientSession, emulator: ShopifyEmulator, api_url: str
) -> None:
    from aiohttp import web

    got: list[tuple[CIMultiDict[str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((CIMultiDict(request.headers), await request.read()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/wh", hook)
    receiver = await aiohttp_server(app)
    channel = make_channel(api_url, http)
    await channel.start()
    await channel.subscribe(str(receiver.make_url("/wh")))
    variant = emulator.store.find_sku("SKU-00002")
    order = emulator.store.purchase([("SKU-00002", 1)])
    emulator.on_order(order)
    emulator.store.restock_order(order["id"], "refund")
    emulator.on_restock(order, "refund")
    emulator.store.add_product("NEW-7", 2)
    for _ in range(300):
        if len(got) >= 6:
            break
        await asyncio.sleep(0.01)
    hints = {}
    for headers, body in got:
        hint = channel.verify_webhook(headers, body)
        hints.setdefault(hint.topic, hint)
    item = f"gid://shopify/InventoryItem/{variant.inventory_item_id}"
    assert hints["inventory_levels/update"].item_ids == (item,)
    # the level's count and its time, in whole seconds as Shopify's REST timestamps; an order
    # says its level follows (the agent waits for it rather than reading)
    level = hints["inventory_levels/update"]
    assert level.counts and level.stamp is not None and level.stamp == int(level.stamp)
    assert hints["orders/create"].levels_follow and hints["orders/create"].stamp is not None
    assert hints["orders/create"].skus == ("SKU-00002",)
    assert hints["orders/create"].cause == f"orders/create {order['name']}"  # "#1001"
    assert hints["refunds/create"].skus == ("SKU-00002",)
    assert hints["refunds/create"].cause == f"refunds/create {order['id']}"  # the order's id
    created = hints["products/create"]
    new_item = emulator.store.find_sku("NEW-7").inventory_item_id
    assert created.catalogue_changed
    assert created.item_ids == (f"gid://shopify/InventoryItem/{new_item}",)


async def test_subscribe_twice_creates_each_subscription_once(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator
) -> None:
    channel = make_channel(api_url, http)
    await channel.subscribe("https://agent.example.com/webhooks/shopify")
    await channel.subscribe("https://agent.example.com/webhooks/shopify")
    subs = emulator.webhooks.subscriptions.values()
    assert sorted(s.topic for s in subs) == sorted(
        ["inventory_levels/update", "orders/create", "orders/cancelled", "refunds/create",
         "products/create", "products/update"]
    )  # fmt: skip


async def test_the_storefront_cannot_be_closed(http: aiohttp.ClientSession) -> None:
    assert await make_channel("http://127.0.0.1:1", http).set_storefront_open(False) is False


async def test_the_entry_point_registers_the_channel_and_a_working_emulator(
    aiohttp_client: Any,
) -> None:
    import pluggy

    from agent import hookspecs

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT, name="shopify")
    channels: list[type] = []
    emulators: dict[str, Any] = {}
    pm.hook.register_channels(register=channels.append)
    pm.hook.register_emulators(register=emulators.__setitem__)
    assert channels == [ShopifyChannel]
    client = await aiohttp_client(emulators["shopify"](EmulatorOptions(skus=2)))
    resp = await client.get("/_emulator/inventory")
    assert await resp.json() == {"SKU-00001": 100, "SKU-00002": 100}


# -- credentials: a Dev Dashboard app's client credentials ------------------------------------

CLIENT = {"client_id": "emulator-client-id", "client_secret": SECRET}


class SharedClock:
    """Wall time that the emulator and the channel both read, which a test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return self.now()

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def client_channel(api_url: str, http: aiohttp.ClientSession, clock: Any = None) -> ShopifyChannel:
    settings = ShopifySettings.from_options({"api_url": api_url, "retry_base": 0.001, **CLIENT})
    return ShopifyChannel(settings, http=http, clock=clock or SystemClock())


def test_settings_take_client_credentials_and_sign_webhooks_with_the_client_secret() -> None:
    settings = ShopifySettings.from_options({"api_url": "http://x", **CLIENT})
    assert isinstance(settings, ShopifySettings)
    assert settings.webhook_secret == SECRET
    assert SECRET not in repr(settings)
    with pytest.raises(ConfigError, match="client_id and client_secret go together"):
        ShopifySettings.from_options({"api_url": "http://x", "client_id": "abc"})


async def test_client_credentials_are_renewed_ahead_of_expiry_without_logging_a_secret(
    aiohttp_server: Any, http: aiohttp.ClientSession
) -> None:
    clock = SharedClock()
    emulator = ShopifyEmulator(
        EmulatorOptions(token=TOKEN, webhook_secret=SECRET, rate_limit=False), clock=clock
    )
    server = await aiohttp_server(emulator.build_app())
    channel = client_channel(str(server.make_url("")).rstrip("/"), http, clock)
    with structlog.testing.capture_logs() as logs:
        await channel.start()
        first = await collect(channel)
        clock.offset += 86399 - 300  # inside the renewal margin, before expiry
        again = await collect(channel)
    assert len(first) == len(again) == 10
    assert emulator.tokens.issued == 2
    renewals = [e for e in logs if e["event"] == "token_renewed"]
    assert [e["reason"] for e in renewals] == ["first", "expiring"]
    assert not [e for e in logs if e["event"] == "shopify_token_refused"]
    text = repr(logs)
    assert SECRET not in text
    assert not any(token in text for token in emulator.tokens._expiry)


async def test_an_expired_token_is_renewed_once_on_a_401_and_the_call_retried(
    aiohttp_client: Any, http: aiohttp.ClientSession
) -> None:
    emulator = make_emulator()
    client = await aiohttp_client(emulator.build_app())
    channel = client_channel(str(client.make_url("")).rstrip("/"), http)
    await channel.start()
    gid = item_gid(emulator, next(iter(emulator.store.variants.values())).sku)
    await client.post("/_emulator/clock/advance", json={"seconds": 86400})  # the token expired
    with structlog.testing.capture_logs() as logs:
        counts = await channel.read([gid])
        results = await channel.write([Write(gid, counts[gid] or 0, 7)], key=str(uuid.uuid4()))
    assert counts[gid] == 100
    assert [r.status for r in results] == ["ok"]
    assert emulator.tokens.issued == 2
    assert [e["reason"] for e in logs if e["event"] == "token_renewed"] == ["rejected"]


async def test_refused_client_credentials_are_one_clear_error(
    api_url: str, http: aiohttp.ClientSession
) -> None:
    settings = ShopifySettings.from_options(
        {"api_url": api_url, "client_id": "emulator-client-id", "client_secret": "wrong"}
    )
    channel = ShopifyChannel(settings, http=http, clock=SystemClock())
    with pytest.raises(ChannelError, match=r"refused the client credentials .*client_secret"):
        await channel.start()


async def test_a_refused_static_token_stays_final(
    api_url: str, http: aiohttp.ClientSession
) -> None:
    channel = make_channel(api_url, http, access_token="shpat_wrong")
    with pytest.raises(ChannelError, match="check access_token"):
        await channel.start()


# -- the location -------------------------------------------------------------------------------


async def test_without_location_id_the_channel_works_at_the_primary_location(
    aiohttp_client: Any, http: aiohttp.ClientSession
) -> None:
    emulator = make_emulator(locations=3)  # "Annex 2" and "Annex 3" sort before the primary
    client = await aiohttp_client(emulator.build_app())
    api_url = str(client.make_url("")).rstrip("/")
    channel = make_channel(api_url, http, bulk=False)
    await channel.start()
    assert await channel.location() == "gid://shopify/Location/1"
    items = {item.sku: item for item in await collect(channel)}
    assert len(items) == 5
    before = items["SKU-00002"].available
    emulator.store.purchase([("SKU-00002", 3)])  # a sale at the primary location
    read = await channel.read([items["SKU-00002"].item_id])
    assert read == {items["SKU-00002"].item_id: before - 3}  # the agent sees it
    configured = make_channel(api_url, http, bulk=False, location_id="2")
    await configured.start()
    assert await configured.location() == "gid://shopify/Location/2"
    assert await collect(configured) == []  # the annex stocks nothing, and location_id wins


async def test_previous_attempt_failed_is_retried_under_a_new_key_and_applied_once(
    emulator: ShopifyEmulator, api_url: str, http: aiohttp.ClientSession
) -> None:
    channel = make_channel(api_url, http)
    await channel.start()
    item = item_gid(emulator, "SKU-00001")
    emulator.fail_attempts = 1  # the first attempt fails inside Shopify, applying nothing
    key = str(uuid.uuid4())
    [result] = await channel.write([Write(item, 100, 90)], key=key)
    assert result.status == "ok"
    assert result.available == 90
    [again] = await channel.write([Write(item, 100, 90)], key=key)  # the core's retry
    assert again.status == "ok"
    assert emulator.store.find_sku("SKU-00001").available == 90
    assert len(emulator.store.write_log) == 1


async def test_a_refused_topic_does_not_stop_the_others(
    api_url: str, http: aiohttp.ClientSession, emulator: ShopifyEmulator, monkeypatch: Any
) -> None:
    from plugins.shopify.emulator_mutations import MutationRoot

    create = MutationRoot.webhookSubscriptionCreate

    def refuse_orders(self: Any, info: Any, topic: str, **kw: Any) -> dict[str, Any]:
        if topic == "ORDERS_CREATE":
            return {"webhookSubscription": None, "userErrors": [{"field": None,
                    "message": "Topic is not allowed for this app"}]}  # fmt: skip
        return create(self, info, topic, **kw)

    monkeypatch.setattr(MutationRoot, "webhookSubscriptionCreate", refuse_orders)
    channel = make_channel(api_url, http)
    with pytest.raises(ChannelError, match="ORDERS_CREATE: Topic is not allowed"):
        await channel.subscribe("https://agent.example.com/webhooks/shopify")
    topics = {s.topic for s in emulator.webhooks.subscriptions.values()}
    assert len(topics) == 5
    assert "orders/create" not in topics
