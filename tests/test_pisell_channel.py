"""`PisellChannel` against an in-process Pisell emulator: listing, reads, writes, webhooks."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from agent.channel import ChannelError, ConfigError, WebhookRejected, Write
from agent.emulator import EmulatorOptions
from plugins.pisell import hooks, wire
from plugins.pisell.channel import IDEMPOTENCY_NAMESPACE, PisellChannel, PisellSettings
from plugins.pisell.emulator import PisellEmulator

TOKEN = "tok-pisell-channel"
SECRET = "whsec-pisell-channel"


class FakeClock:
    """Virtual time shared by the channel and the emulator: sleeping moves it on at once."""

    def __init__(self) -> None:
        self.t = 1_780_000_000.0
        self.slept = 0.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        self.slept += max(0.0, seconds)
        await asyncio.sleep(0)


class Shop:
    """An emulator served over real HTTP, and a channel talking to it."""

    def __init__(self, emulator: PisellEmulator, channel: PisellChannel, base: str) -> None:
        self.emulator = emulator
        self.channel = channel
        self.base = base

    async def control(self, path: str, body: dict[str, Any]) -> int:
        async with self.channel.http.post(self.base + path, json=body) as resp:
            return resp.status

    def inventory(self) -> dict[str, int]:
        inv = self.emulator.inventory
        return {sku: inv.available(stock) for sku, stock in inv.items.items()}

    def applied(self) -> list[tuple[str, str | None]]:
        return [(w.sku, w.key) for w in self.emulator.store.write_log if w.applied]


def settings(base: str, **extra: Any) -> PisellSettings:
    options = {"api_url": base, "access_token": TOKEN, "webhook_secret": SECRET,
               "retry_base": 0.001, "timeout": 5, **extra}  # fmt: skip
    result = PisellSettings.from_options(options)
    assert isinstance(result, PisellSettings)
    return result


async def open_shop(
    aiohttp_server: Any,
    clock: FakeClock,
    *,
    skus: int = 5,
    rate_limit: bool = False,
    **extra: Any,
) -> Shop:
    options = EmulatorOptions(skus=skus, token=TOKEN, webhook_secret=SECRET,
                              rate_limit=rate_limit, seed=3)  # fmt: skip
    emulator = PisellEmulator(options, clock=clock.now)
    server = await aiohttp_server(emulator.build_app())
    base = str(server.make_url("")).rstrip("/")
    http = aiohttp.ClientSession()
    channel = PisellChannel(settings(base, **extra), http=http, clock=clock)
    return Shop(emulator, channel, base)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def shop(aiohttp_server: Any, clock: FakeClock) -> AsyncIterator[Shop]:
    shop = await open_shop(aiohttp_server, clock)
    yield shop
    await shop.channel.http.close()


def item(sku: str) -> str:
    return wire.format_item_id(sku, "1")


# -- settings and registration --------------------------------------------------------------


def test_settings_need_url_token_and_secret() -> None:
    with pytest.raises(ConfigError, match="access_token"):
        PisellSettings.from_options({"api_url": "http://x", "webhook_secret": "s"})
    with pytest.raises(ConfigError, match="api_url"):
        PisellSettings.from_options({"api_url": "x", "access_token": "t", "webhook_secret": "s"})
    parsed = PisellSettings.from_options(
        {"api_url": "http://x/", "access_token": "tok-123", "webhook_secret": "sec-456",
         "warehouse_id": 2}
    )  # fmt: skip
    assert isinstance(parsed, PisellSettings)
    assert (parsed.api_url, parsed.warehouse_id, parsed.max_retries) == ("http://x", "2", 8)
    assert "tok-123" not in repr(parsed) and "sec-456" not in repr(parsed)


def test_hooks_register_the_channel_and_the_emulator() -> None:
    channels: list[type] = []
    emulators: dict[str, Any] = {}
    hooks.register_channels(channels.append)
    hooks.register_emulators(emulators.__setitem__)
    assert channels == [PisellChannel] and PisellChannel.name == "pisell"
    app = emulators["pisell"](EmulatorOptions(skus=2))
    assert any(r.resource and r.resource.canonical == wire.PATHS["levels_set"]
               for r in app.router.routes())  # fmt: skip


# -- listing and reading --------------------------------------------------------------------


async def test_list_items_walks_every_page(aiohttp_server: Any, clock: FakeClock) -> None:
    shop = await open_shop(aiohttp_server, clock, skus=230)
    try:
        await shop.control("/_emulator/inventory", {"sku": "SKU-00230", "available": 4})
        items = [i async for i in shop.channel.list_items()]
    finally:
        await shop.channel.http.close()
    assert len(items) == len({i.item_id for i in items}) == 230
    last = items[-1]
    assert (last.item_id, last.sku, last.available) == ("SKU-00230@1", "SKU-00230", 4)
    # created_at comes from a local-time string in the shop's zone: exact to the second.
    assert abs(last.created_at - clock.t) < 1.0


async def test_list_items_leaves_combos_to_their_components(shop: Shop) -> None:
    # IS takes a combo's components when it sells one and derives its count from them: the
    # agent syncs the components, never the combo (its sale would be counted twice)
    combo = {"sku": "BOX", "components": [{"sku": "SKU-00001", "quantity": 3}]}
    assert await shop.control("/_emulator/combos", combo) == 201
    items = {i.sku: i.available async for i in shop.channel.list_items()}
    assert "BOX" not in items and items["SKU-00001"] == 100
    assert shop.inventory()["BOX"] == 33  # IS still sells it, at what the packs allow


async def test_read_gives_counts_and_none_for_unknown_ids(
    aiohttp_server: Any, clock: FakeClock
) -> None:
    shop = await open_shop(aiohttp_server, clock, skus=60)
    try:
        await shop.control("/_emulator/inventory", {"sku": "SKU-00055", "available": 3})
        ids = [item(f"SKU-{n:05d}") for n in range(1, 61)]
        counts = await shop.channel.read([*ids, item("NOPE"), "SKU-00001@9", "garbage"])
    finally:
        await shop.channel.http.close()
    assert counts[item("SKU-00055")] == 3 and counts[item("SKU-00001")] == 100
    assert counts[item("NOPE")] is None and counts["SKU-00001@9"] is None
    assert counts["garbage"] is None
    assert shop.emulator.stats["reads"] == 2 + 1  # 60 ids = two level calls, + one for @9


async def test_wrong_token_is_a_channel_error_without_the_token(
    aiohttp_server: Any, clock: FakeClock
) -> None:
    shop = await open_shop(aiohttp_server, clock)
    shop.channel.client.config = type(shop.channel.client.config)(
        api_url=shop.base, client_id="shopsync", access_token="stolen-token",
        client_secret="stolen-token",
    )  # fmt: skip
    try:
        with pytest.raises(ChannelError) as caught:
            await shop.channel.read([item("SKU-00001")])
    finally:
        await shop.channel.http.close()
    assert "403" in str(caught.value) and "stolen-token" not in str(caught.value)


# -- writing --------------------------------------------------------------------------------


async def test_write_sets_the_count(shop: Shop) -> None:
    (result,) = await shop.channel.write([Write(item("SKU-00001"), 100, 42)], key="w1")
    assert (result.status, result.available) == ("ok", 42)
    assert shop.inventory()["SKU-00001"] == 42
    assert shop.applied() == [("SKU-00001", "w1")]


async def test_write_after_a_concurrent_purchase_conflicts_and_keeps_the_sale(shop: Shop) -> None:
    order = {"line_items": [{"sku": "SKU-00002", "quantity": 3}]}
    assert await shop.control("/_emulator/orders", order) == 201
    (result,) = await shop.channel.write([Write(item("SKU-00002"), 100, 60)], key="w2")
    assert (result.status, result.available) == ("conflict", 97)
    assert shop.inventory()["SKU-00002"] == 97
    assert shop.applied() == []


async def test_write_to_a_combo_or_unknown_item_is_an_error(shop: Shop) -> None:
    combo = {"sku": "BOX", "components": [{"sku": "SKU-00001", "quantity": 3}]}
    await shop.control("/_emulator/combos", combo)
    writes = [Write(item("BOX"), 33, 1), Write(item("NOPE"), 0, 1), Write("no-at", 0, 1),
              Write(item("SKU-00003"), 100, 99)]  # fmt: skip
    results = await shop.channel.write(writes, key="w3")
    assert [r.status for r in results] == ["error", "error", "error", "ok"]
    assert wire.COMBO_NOT_WRITABLE in results[0].message
    assert [r.item_id for r in results] == [w.item_id for w in writes]


async def test_write_dropped_after_apply_is_retried_with_the_same_key_and_applied_once(
    shop: Shop,
) -> None:
    shop.emulator.faults.timeout_after_apply = 1
    with capture_logs() as logs:
        (result,) = await shop.channel.write([Write(item("SKU-00004"), 100, 7)], key="w4")
    assert (result.status, result.available) == ("ok", 7)
    assert shop.applied() == [("SKU-00004", "w4")]
    assert [e["event"] for e in logs].count("pisell_call_retry") == 1


async def test_a_retried_batch_is_not_applied_twice(shop: Shop) -> None:
    batch = [Write(item("SKU-00001"), 100, 90)]
    first = await shop.channel.write(batch, key="w5")
    again = await shop.channel.write(batch, key="w5")  # the core's retry after "unknown"
    assert first == again and again[0].status == "ok"
    assert shop.applied() == [("SKU-00001", "w5")]


async def test_a_large_batch_uses_one_derived_key_per_call(
    aiohttp_server: Any, clock: FakeClock
) -> None:
    shop = await open_shop(aiohttp_server, clock, skus=70)
    try:
        writes = [Write(item(f"SKU-{n:05d}"), 100, n) for n in range(1, 71)]
        results = await shop.channel.write(writes, key="big")
    finally:
        await shop.channel.http.close()
    assert [r.available for r in results] == list(range(1, 71))
    keys = [str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"big/{n}")) for n in (0, 1)]
    assert [k for _, k in shop.applied()] == [keys[0]] * 50 + [keys[1]] * 20


async def test_write_without_a_definite_answer_is_unknown(
    aiohttp_server: Any, clock: FakeClock
) -> None:
    shop = await open_shop(aiohttp_server, clock, max_retries=2)
    shop.emulator.faults.fail_requests = 100
    try:
        (result,) = await shop.channel.write([Write(item("SKU-00001"), 100, 5)], key="w6")
    finally:
        await shop.channel.http.close()
    assert result.status == "unknown"
    assert shop.emulator.faults.fail_requests == 100 - 3  # one try and two retries
    assert shop.inventory()["SKU-00001"] == 100


# -- pacing ---------------------------------------------------------------------------------


async def test_a_burst_of_40_reads_is_paced_without_429s(
    aiohttp_server: Any, clock: FakeClock
) -> None:
    shop = await open_shop(aiohttp_server, clock, rate_limit=True)
    try:
        await shop.channel.start()  # 2 requests
        reads = [shop.channel.read([item("SKU-00001")]) for _ in range(40)]
        counts = await asyncio.gather(*reads)
    finally:
        await shop.channel.http.close()
    assert all(c[item("SKU-00001")] == 100 for c in counts)
    assert shop.emulator.stats["throttled"] == 0
    # 42 requests through a 20-request bucket at 5/s take at least (42 - 20) / 5 seconds;
    # pacing may be a little careful (requests in flight), never grossly so.
    assert 4.0 <= clock.slept <= 6.0


async def test_a_429_waits_retry_after_and_succeeds(shop: Shop, clock: FakeClock) -> None:
    await shop.channel.start()
    shop.emulator.faults.fail_requests, shop.emulator.faults.fail_status = 1, 429
    counts = await shop.channel.read([item("SKU-00001")])
    assert counts[item("SKU-00001")] == 100
    assert clock.slept >= 1.0


# -- webhooks -------------------------------------------------------------------------------


def delivery(topic: str, payload: dict[str, Any], now: float, secret: str = SECRET) -> Any:
    body = json.dumps(payload).encode()
    headers = wire.webhook_headers(secret=secret, topic=topic, event_id="ev-1", body=body, now=now)
    return headers, body


async def test_webhook_with_a_good_signature_names_the_item(shop: Shop, clock: FakeClock) -> None:
    await shop.channel.start()
    headers, body = delivery(wire.TOPIC_INVENTORY_LEVEL_UPDATED,
                             wire.level_event("SKU-00001", "1"), clock.t - 60)  # fmt: skip
    hint = shop.channel.verify_webhook({k.lower(): v for k, v in headers.items()}, body)
    assert hint.topic == wire.TOPIC_INVENTORY_LEVEL_UPDATED and hint.delivery_id == "ev-1"
    assert hint.item_ids == (item("SKU-00001"),) and hint.skus == ("SKU-00001",)
    order = wire.order_event(9, "2", "1", [("SKU-00002", 1), ("SKU-00003", 2)])
    hint = shop.channel.verify_webhook(*delivery(wire.TOPIC_ORDER_IMPORTED, order, clock.t))
    assert hint.skus == ("SKU-00002", "SKU-00003") and hint.item_ids == ()
    assert hint.cause == f"{wire.TOPIC_ORDER_IMPORTED} 9"  # the order's id, for the sync log
    other = shop.channel.verify_webhook(*delivery("sync_record.failed", {"x": 1}, clock.t))
    assert other.item_ids == () and other.skus == ()


async def test_webhook_with_a_bad_or_missing_signature_is_rejected(
    shop: Shop, clock: FakeClock
) -> None:
    payload = wire.level_event("SKU-00001", "1")
    headers, body = delivery(wire.TOPIC_INVENTORY_LEVEL_UPDATED, payload, clock.t, "wrong")
    with pytest.raises(WebhookRejected):
        shop.channel.verify_webhook(headers, body)
    headers, body = delivery(wire.TOPIC_INVENTORY_LEVEL_UPDATED, payload, clock.t)
    with pytest.raises(WebhookRejected):
        shop.channel.verify_webhook(headers, body + b" ")
    del headers[wire.H_WEBHOOK_SIGNATURE]
    with pytest.raises(WebhookRejected):
        shop.channel.verify_webhook(headers, body)


async def test_stale_webhook_is_rejected(shop: Shop, clock: FakeClock) -> None:
    payload = wire.level_event("SKU-00001", "1")
    for skew in (-301, 301):
        headers, body = delivery(wire.TOPIC_INVENTORY_LEVEL_UPDATED, payload, clock.t + skew)
        with pytest.raises(WebhookRejected, match="timestamp"):
            shop.channel.verify_webhook(headers, body)


async def test_subscribe_is_idempotent_and_deliveries_verify(shop: Shop) -> None:
    received: list[Any] = []
    callback = shop.base + "/_test_hook"  # not served: we only look at the subscription
    await shop.channel.subscribe(callback)
    await shop.channel.subscribe(callback)
    hooks_now = list(shop.emulator.hooks.values())
    assert len(hooks_now) == 1 and set(hooks_now[0].topics) == {
        wire.TOPIC_INVENTORY_LEVEL_UPDATED, wire.TOPIC_STOCK_MOVEMENT_CREATED,
        wire.TOPIC_ORDER_IMPORTED,
    }  # fmt: skip
    # What the emulator would send verifies with the channel's configured secret.
    body = json.dumps(wire.level_event("SKU-00001", "1")).encode()
    headers = shop.emulator.sign_webhook(wire.TOPIC_INVENTORY_LEVEL_UPDATED, body, "ev-9")
    received.append(shop.channel.verify_webhook(headers, body))
    assert received[0].item_ids == (item("SKU-00001"),)


async def test_subscribe_replaces_a_webhook_with_too_few_topics(shop: Shop) -> None:
    callback = shop.base + "/_test_hook"
    body = wire.webhook_request(callback, [wire.TOPIC_ORDER_IMPORTED])
    await shop.channel.client.call("POST", wire.PATHS["webhooks"], body=body)
    await shop.channel.subscribe(callback)
    (hook,) = shop.emulator.hooks.values()
    assert len(hook.topics) == 3
