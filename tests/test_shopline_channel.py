"""The SHOPLINE channel against an in-process SHOPLINE emulator."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from agent.channel import ChannelError, ConfigError, WebhookRejected, Write
from agent.emulator import EmulatorOptions
from plugins.shopline.channel import ShoplineChannel, ShoplineSettings
from plugins.shopline.emulator import ShoplineEmulator
from plugins.shopline.resolve import Observation, StockEvent, judge, possible_sums

SECRET = "emulator-secret"


class FakeClock:
    """Virtual time shared by the emulator and the channel: sleeping moves it forward."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


class Shop:
    """An emulated SHOPLINE store and a started channel talking to it."""

    def __init__(self, emulator: ShoplineEmulator, channel: ShoplineChannel, clock: FakeClock):
        self.emulator = emulator
        self.channel = channel
        self.clock = clock
        self.restart: Callable[[], Awaitable[ShoplineChannel]]

    def item(self, n: int = 0) -> str:
        variant = list(self.emulator.store.variants.values())[n]
        return str(10**18 + variant.inventory_item_id)

    def sku(self, n: int = 0) -> str:
        return list(self.emulator.store.variants.values())[n].sku

    def count(self, n: int = 0) -> int:
        return list(self.emulator.store.variants.values())[n].available

    def adjusts(self) -> list[Any]:
        return [w for w in self.emulator.store.write_log if w.kind == "adjust"]

    def after_adjust(self, action: Callable[[], None]) -> None:
        """Run `action` inside the emulator right after it applies the next adjust."""
        store = self.emulator.store
        original = store.api_adjust

        def adjust(*args: Any, **kwargs: Any) -> int:
            store.api_adjust = original  # type: ignore[method-assign]
            after = original(*args, **kwargs)
            action()
            return after

        store.api_adjust = adjust  # type: ignore[method-assign]


MakeShop = Callable[..., Awaitable[Shop]]


@pytest.fixture
async def make_shop(aiohttp_server: Any) -> AsyncIterator[MakeShop]:
    sessions: list[aiohttp.ClientSession] = []

    async def make(
        skus: int = 5, *, rate_limit: bool = False, start: bool = True, **options: Any
    ) -> Shop:
        clock = FakeClock()
        emulator = ShoplineEmulator(EmulatorOptions(skus=skus, rate_limit=rate_limit), clock=clock)
        server = await aiohttp_server(emulator.build_app())
        settings = ShoplineSettings.from_options(
            {
                "api_url": str(server.make_url("/")),
                "access_token": "emulator-token",
                "webhook_secret": SECRET,
                "retry_base": "0.01",
                **options,
            }
        )
        session = aiohttp.ClientSession()
        sessions.append(session)
        channel = ShoplineChannel(settings, http=session, clock=clock)
        if start:
            await channel.start()
        shop = Shop(emulator, channel, clock)
        shop.restart = lambda: _restarted(channel, settings, session, clock)
        return shop

    yield make
    for session in sessions:
        await session.close()


async def _restarted(
    old: ShoplineChannel, settings: ShoplineSettings, session: aiohttp.ClientSession, clock: Any
) -> ShoplineChannel:
    """A new channel for the same store, as after the agent was killed: nothing of the old
    one survives but its journal (which the core keeps in the agent's database)."""
    channel = ShoplineChannel(settings, http=session, clock=clock)
    channel.journal = old.journal
    await channel.start()
    return channel


def signed(body: bytes, *, encoding: str = "hex", secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256)
    return digest.hexdigest() if encoding == "hex" else base64.b64encode(digest.digest()).decode()


# -- settings and start -------------------------------------------------------------------------


def test_settings_refuse_unknown_and_missing_options():
    with pytest.raises(ConfigError, match="unknown"):
        ShoplineSettings.from_options(
            {"api_url": "http://x", "access_token": "t", "webhook_secret": "s", "rat": 2}
        )
    with pytest.raises(ConfigError, match="webhook_secret"):
        ShoplineSettings.from_options({"api_url": "http://x", "access_token": "t"})
    settings = ShoplineSettings.from_options(
        {"api_url": "https://h.myshopline.com/", "access_token": "t", "webhook_secret": "s"}
    )
    assert settings.api_url == "https://h.myshopline.com"
    assert "access_token" not in repr(settings)


async def test_start_uses_the_default_location(make_shop: MakeShop):
    shop = await make_shop()
    assert shop.channel.location_id == shop.emulator.location_id
    assert shop.channel.budget.max_write_batch == 1
    assert shop.channel.budget.max_read_batch == 50


async def test_unknown_configured_location_is_a_config_error(make_shop: MakeShop):
    shop = await make_shop(start=False, location_id="1000000000000000777")
    with pytest.raises(ConfigError, match="location_id"):
        await shop.channel.start()


async def test_bad_token_is_a_channel_error_that_does_not_show_the_token(make_shop: MakeShop):
    shop = await make_shop(start=False, access_token="sekrit-token-123")
    with pytest.raises(ChannelError) as caught:
        await shop.channel.start()
    assert "401" in str(caught.value)
    assert "sekrit-token-123" not in str(caught.value)


# -- reading ------------------------------------------------------------------------------------


async def test_list_items_follows_pages_and_reads_levels(make_shop: MakeShop):
    shop = await make_shop(skus=260)  # two product pages of 250, six level calls of <= 50
    shop.emulator.store.edit(shop.sku(255), 7)
    items = [item async for item in shop.channel.list_items()]
    assert len(items) == 260
    assert len({item.item_id for item in items}) == 260
    by_sku = {item.sku: item for item in items}
    assert by_sku[shop.sku(255)].available == 7
    assert by_sku[shop.sku(0)].available == 100
    assert by_sku[shop.sku(0)].item_id == shop.item(0)
    assert by_sku[shop.sku(0)].created_at == pytest.approx(shop.clock.t, abs=1)
    assert by_sku[shop.sku(0)].title


async def test_read_batches_by_50_and_gives_none_for_unknown_ids(make_shop: MakeShop):
    shop = await make_shop(skus=60)
    ids = [shop.item(n) for n in range(60)]
    shop.emulator.store.edit(shop.sku(59), 3)
    counts = await shop.channel.read([*ids, "1999999999999999999", "not-an-id"])
    assert counts[ids[0]] == 100
    assert counts[ids[59]] == 3
    assert counts["1999999999999999999"] is None
    assert counts["not-an-id"] is None


# -- writing ------------------------------------------------------------------------------------


async def test_write_adjusts_and_reports_the_new_count(make_shop: MakeShop):
    shop = await make_shop()
    await shop.channel.read([shop.item()])
    [result] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert (result.status, result.available) == ("ok", 90)
    assert shop.count() == 90
    assert [(w.before, w.after) for w in shop.adjusts()] == [(100, 90)]


async def test_a_repeated_key_returns_the_first_answer_without_adjusting_again(
    make_shop: MakeShop,
):
    shop = await make_shop()
    [first] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    [again] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert first == again
    assert len(shop.adjusts()) == 1
    [other] = await shop.channel.write([Write(shop.item(), 90, 80)], key="k2")
    assert (other.status, other.available) == ("ok", 80)


async def test_write_without_a_prior_read_reads_first_and_still_adjusts(make_shop: MakeShop):
    shop = await make_shop()
    [result] = await shop.channel.write([Write(shop.item(), 100, 95)], key="k1")
    assert (result.status, result.available) == ("ok", 95)


async def test_write_under_a_concurrent_sale_keeps_the_sale(make_shop: MakeShop):
    shop = await make_shop()
    await shop.channel.read([shop.item()])
    shop.emulator.store.purchase([(shop.sku(), 2)])  # a sale the core has not seen yet
    [result] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    # ok, but the count is 88, not 90: the core records the 2 as a local sale.
    assert (result.status, result.available) == ("ok", 88)
    assert shop.count() == 88


async def test_write_applied_then_dropped_during_a_sale_resolves_as_applied(
    make_shop: MakeShop,
):
    shop = await make_shop()
    await shop.channel.read([shop.item()])
    shop.clock.t += 10
    shop.emulator.faults.timeout_after_apply = 1
    shop.after_adjust(lambda: shop.emulator.store.purchase([(shop.sku(), 3)]))
    [result] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert (result.status, result.available) == ("ok", 87)
    assert shop.count() == 87
    assert len(shop.adjusts()) == 1  # resolved from facts, never sent twice


async def test_write_applied_then_dropped_with_a_sale_in_the_same_second(make_shop: MakeShop):
    shop = await make_shop()
    await shop.channel.read([shop.item()])  # no time passes: the sale is hard to place
    shop.emulator.faults.timeout_after_apply = 1
    shop.after_adjust(lambda: shop.emulator.store.purchase([(shop.sku(), 3)]))
    [result] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert (result.status, result.available) == ("ok", 87)
    assert len(shop.adjusts()) == 1


async def test_write_failing_with_5xx_before_applying_is_applied_exactly_once(
    make_shop: MakeShop,
):
    shop = await make_shop()
    await shop.channel.read([shop.item()])
    shop.clock.t += 10
    shop.emulator.faults.fail_requests = 1  # the adjust itself gets a 503
    [result] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert (result.status, result.available) == ("ok", 90)
    assert shop.count() == 90
    assert len(shop.adjusts()) == 1


async def test_not_applied_write_with_a_sale_is_resent_and_keeps_the_sale(make_shop: MakeShop):
    shop = await make_shop()
    await shop.channel.read([shop.item()])
    shop.clock.t += 10
    shop.emulator.store.purchase([(shop.sku(), 4)])
    shop.emulator.faults.fail_requests = 1
    [result] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert (result.status, result.available) == ("ok", 86)
    assert len(shop.adjusts()) == 1


@pytest.mark.parametrize("cause", ["cancel", "refund"])
async def test_unknown_write_counts_a_restock_of_an_older_order_in_the_window(
    make_shop: MakeShop, cause: str
):
    shop = await make_shop()
    order = shop.emulator.store.purchase([(shop.sku(), 5)])
    shop.clock.t += 10  # placed well before the read (in the same second it could not be placed)
    await shop.channel.read([shop.item()])
    shop.clock.t += 10
    shop.emulator.faults.timeout_after_apply = 1

    def restock() -> None:
        shop.emulator.on_restock(shop.emulator.store.restock_order(order["id"], cause), cause)

    shop.after_adjust(restock)
    [result] = await shop.channel.write([Write(shop.item(), 95, 90)], key="k1")
    # 95 - 5 (ours) + 5 (restocked): missing the restock would look "not applied" and resend.
    assert (result.status, result.available) == ("ok", 95)
    assert len(shop.adjusts()) == 1


async def test_retry_with_the_same_key_resolves_instead_of_resending(make_shop: MakeShop):
    shop = await make_shop(max_retries="0")
    await shop.channel.read([shop.item()])
    shop.clock.t += 10
    shop.emulator.faults.timeout_after_apply = 1

    def fail_the_next_read() -> None:
        shop.emulator.faults.fail_requests = 1

    shop.after_adjust(fail_the_next_read)
    [first] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert first.status == "unknown"  # the re-read failed: nothing to resolve from
    [again] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert (again.status, again.available) == ("ok", 90)
    assert len(shop.adjusts()) == 1


async def test_manual_edit_during_an_unknown_write_stays_unknown_and_is_not_resent(
    make_shop: MakeShop,
):
    shop = await make_shop()
    await shop.channel.read([shop.item()])
    shop.clock.t += 10
    shop.emulator.faults.timeout_after_apply = 1
    shop.after_adjust(lambda: shop.emulator.store.edit(shop.sku(), 50))
    [first] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert first.status == "unknown"
    [again] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert again.status == "unknown"
    assert len(shop.adjusts()) == 1
    assert shop.count() == 50


async def test_an_unknown_write_is_resolved_after_a_restart_not_sent_again(make_shop: MakeShop):
    shop = await make_shop(max_retries="0")
    await shop.channel.read([shop.item()])
    shop.clock.t += 10
    shop.emulator.faults.timeout_after_apply = 1
    shop.after_adjust(lambda: setattr(shop.emulator.faults, "fail_requests", 1))
    [first] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert first.status == "unknown"  # applied, but nothing to tell it from: then the crash
    channel = await shop.restart()
    [again] = await channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert (again.status, again.available) == ("ok", 90)
    assert len(shop.adjusts()) == 1
    assert shop.count() == 90


async def test_a_definite_answer_is_given_again_after_a_restart(make_shop: MakeShop):
    shop = await make_shop()
    [first] = await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    channel = await shop.restart()  # killed before the core recorded the answer
    [again] = await channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert again == first
    assert len(shop.adjusts()) == 1
    await channel.settled("k1")  # the core recorded it: the note goes, the key is done
    assert await channel.journal.get("k1") is None


async def test_an_adjust_killed_before_it_left_is_sent_once_after_a_restart(make_shop: MakeShop):
    shop = await make_shop()
    await shop.channel.read([shop.item()])
    shop.clock.t += 10

    async def killed(*_args: Any, **_kwargs: Any) -> Any:
        raise asyncio.CancelledError  # the process dies between the note and the request

    shop.channel.client.post = killed  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert await shop.channel.journal.get("k1")  # the facts were noted before sending
    channel = await shop.restart()
    [result] = await channel.write([Write(shop.item(), 100, 90)], key="k1")
    assert (result.status, result.available) == ("ok", 90)  # proven not applied, sent once
    assert len(shop.adjusts()) == 1


async def test_write_to_an_unknown_item_is_an_error(make_shop: MakeShop):
    shop = await make_shop()
    [result] = await shop.channel.write([Write("1999999999999999999", 1, 2)], key="k1")
    assert result.status == "error"
    assert shop.adjusts() == []


def test_resolution_refuses_to_decide_when_both_outcomes_fit():
    start, end = Observation(100, 10.0, 10.0), Observation(99, 10.5, 10.5)
    sale = StockEvent(at=10.0, resolution=1.0, delta=-1)  # cannot be placed
    sums = possible_sums([sale], start, end, skew=1.0)
    assert sums == {0, -1}
    # adjusting by -1: level 99 is "applied, no sale" and "not applied, one sale".
    assert judge(100, -1, 99, sums) == "unclear"
    assert judge(100, -5, 94, sums) == "applied"
    assert judge(100, -5, 99, sums) == "not_applied"


# -- pacing -------------------------------------------------------------------------------------


async def test_a_burst_of_45_reads_is_paced_below_the_platform_limit(make_shop: MakeShop):
    shop = await make_shop(rate_limit=True)
    await asyncio.gather(*(shop.channel.read([shop.item()]) for _ in range(45)))
    assert shop.emulator.bucket.refused == 0
    assert shop.emulator.stats["throttled"] == 0


async def test_without_pacing_the_same_burst_would_be_throttled(make_shop: MakeShop):
    # The control for the test above: a channel paced too fast does meet 429s (and recovers).
    shop = await make_shop(rate_limit=True, rate="1000", burst="1000")
    counts = await asyncio.gather(*(shop.channel.read([shop.item()]) for _ in range(45)))
    assert shop.emulator.bucket.refused > 0
    assert all(count == {shop.item(): 100} for count in counts)


# -- webhooks -----------------------------------------------------------------------------------


async def test_webhook_signature_hex_and_base64_accepted_bad_rejected(make_shop: MakeShop):
    shop = await make_shop()
    order = {"id": "2105", "name": "test1001", "line_items": [{"sku": "A-1", "quantity": 1}]}
    body = json.dumps(order).encode()
    for encoding in ("hex", "base64"):
        headers = {
            "X-Shopline-Hmac-Sha256": signed(body, encoding=encoding),
            "X-Shopline-Topic": "orders/create",
            "X-Shopline-Webhook-Id": "d1",
        }
        hint = shop.channel.verify_webhook(headers, body)
        assert (hint.topic, hint.skus, hint.delivery_id) == ("orders/create", ("A-1",), "d1")
        assert hint.cause == "orders/create test1001"  # the order's name, for the sync log
    bad = {"X-Shopline-Hmac-Sha256": signed(body, secret="other"), "X-Shopline-Topic": "x"}
    with pytest.raises(WebhookRejected):
        shop.channel.verify_webhook(bad, body)
    tampered = {"X-Shopline-Hmac-Sha256": signed(body), "X-Shopline-Topic": "orders/create"}
    with pytest.raises(WebhookRejected):
        shop.channel.verify_webhook(tampered, body + b" ")
    with pytest.raises(WebhookRejected):
        shop.channel.verify_webhook({"X-Shopline-Topic": "orders/create"}, body)


async def test_webhook_topics_give_the_right_hints(make_shop: MakeShop):
    shop = await make_shop()

    def hint(topic: str, payload: dict[str, Any]) -> Any:
        body = json.dumps(payload).encode()
        headers = {"x-shopline-hmac-sha256": signed(body), "x-shopline-topic": topic}
        return shop.channel.verify_webhook(headers, body)

    level = {"inventory_item_id": shop.item(), "location_id": shop.emulator.location_id}
    assert hint("inventory_levels/update", {**level, "available": 5}).item_ids == (shop.item(),)
    elsewhere = {**level, "location_id": "1000000000000000999", "available": 5}
    assert hint("inventory_levels/update", elsewhere).item_ids == ()
    refund = {"refund_line_items": [{"line_item": {"sku": "B-2"}, "quantity": 1}]}
    assert hint("refunds/create", refund).skus == ("B-2",)
    assert hint("orders/cancelled", {"line_items": [{"sku": "C-3"}]}).skus == ("C-3",)
    assert hint("products/update", {"variants": []}).catalogue_changed


async def test_emulator_deliveries_verify_and_own_echo_is_dropped(
    make_shop: MakeShop, aiohttp_server: Any
):
    shop = await make_shop()
    hints: list[Any] = []
    done = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        hints.append(shop.channel.verify_webhook(request.headers, await request.read()))
        if len(hints) == 2:
            done.set()
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/webhooks/shopline", receive)
    server = await aiohttp_server(receiver)
    await shop.channel.subscribe(str(server.make_url("/webhooks/shopline")))
    await shop.channel.read([shop.item()])
    await shop.channel.write([Write(shop.item(), 100, 90)], key="k1")  # echo: 90, known
    shop.emulator.store.edit(shop.sku(), 70)  # a real change: 70, unknown to the channel
    await asyncio.wait_for(done.wait(), 5)
    levels = [h for h in hints if h.topic == "inventory_levels/update"]
    assert [h.item_ids for h in levels] == [(), (shop.item(),)]


async def test_subscribe_creates_each_topic_once(make_shop: MakeShop):
    shop = await make_shop()
    url = "http://127.0.0.1:9/webhooks/shopline"
    await shop.channel.subscribe(url)
    await shop.channel.subscribe(url)  # the emulator answers 422 to a duplicate: none is sent
    topics = sorted(sub.topic for sub in shop.emulator.webhooks.subscriptions.values())
    assert topics == sorted(
        [
            "inventory_levels/update",
            "orders/create",
            "orders/cancelled",
            "refunds/create",
            "products/create",
            "products/update",
        ]
    )


# -- app tokens: refreshed ahead of expiry and after a 401 ------------------------------------

APP = {"app_key": "emulator-client-id", "app_secret": "emulator-secret", "webhook_secret": ""}


def test_settings_take_an_app_key_and_secret_instead_of_a_static_token():
    settings = ShoplineSettings.from_options({"api_url": "http://x", **APP})
    assert isinstance(settings, ShoplineSettings)
    assert settings.webhook_secret == "emulator-secret"
    assert "emulator-secret" not in repr(settings)
    with pytest.raises(ConfigError, match="app_key and app_secret go together"):
        ShoplineSettings.from_options({"api_url": "http://x", "app_key": "k", "access_token": "t"})


async def test_an_app_token_is_refreshed_ahead_of_expiry_and_no_secret_is_logged(make_shop):
    with structlog.testing.capture_logs() as logs:
        shop = await make_shop(access_token="", **APP)
        before = await shop.channel.read([shop.item()])
        shop.clock.t += 36000 - 120  # within the renewal margin, before expiry
        after = await shop.channel.read([shop.item()])
    assert before == after == {shop.item(): shop.count()}
    assert shop.emulator.tokens.issued == 2
    assert [e["reason"] for e in logs if e["event"] == "token_renewed"] == ["first", "expiring"]
    assert not [e for e in logs if e["event"] == "shopline_token_refused"]
    assert "emulator-secret" not in repr(logs)
    assert not any(token in repr(logs) for token in shop.emulator.tokens._expiry)


async def test_an_expired_token_is_refreshed_on_a_401_and_the_write_sent_once(make_shop):
    shop = await make_shop(access_token="", **APP)
    await shop.channel.read([shop.item()])  # so the next call is the adjust itself
    shop.emulator.clock_offset += 36001  # SHOPLINE's clock says the token expired
    with structlog.testing.capture_logs() as logs:
        [result] = await shop.channel.write(
            [Write(shop.item(), shop.count(), shop.count() - 3)], key="k1"
        )
    assert result.status == "ok"
    assert len(shop.adjusts()) == 1
    assert shop.emulator.tokens.issued == 2
    assert [e["reason"] for e in logs if e["event"] == "token_renewed"] == ["rejected"]


async def test_a_refused_refresh_is_one_clear_error(make_shop):
    with pytest.raises(ChannelError, match=r"refused to refresh the app token.*app_secret"):
        await make_shop(access_token="", app_key="emulator-client-id", app_secret="wrong",
                        webhook_secret="s")  # fmt: skip


async def test_a_refused_topic_does_not_stop_the_others(make_shop: MakeShop, monkeypatch):
    import plugins.shopline.emulator as emulator_module

    monkeypatch.setattr(emulator_module, "TOPICS", emulator_module.TOPICS - {"orders/create"})
    shop = await make_shop()
    with pytest.raises(ChannelError, match=r"refused webhook topic.*orders/create"):
        await shop.channel.subscribe("http://127.0.0.1:9/webhooks/shopline")
    topics = {sub.topic for sub in shop.emulator.webhooks.subscriptions.values()}
    assert len(topics) == 5
    assert "orders/create" not in topics
