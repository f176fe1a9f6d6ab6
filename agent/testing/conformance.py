"""The channel conformance suite, shipped as a pytest plugin: what "a channel works" means.

A channel plugin, built-in or third-party, runs the suite against its own emulator with a
few lines in its tests::

    import pytest
    from agent.testing import ChannelConformance, ChannelHarness

    @pytest.fixture
    def channel_under_test() -> ChannelHarness:
        return ChannelHarness("acme", page_size=20, options={"retry_base": 0.01})

    class TestAcmeConformance(ChannelConformance):
        pass

Loaded as a pytest plugin (the ``pytest11`` entry point), this module also adds the option
``--shopsync-channel NAME``, which supplies a default `channel_under_test`, so that
``pytest --pyargs agent.testing.suite --shopsync-channel NAME`` checks any installed channel
without writing a test file. Tests are synchronous functions that run their scenario with
`asyncio.run`, so the suite needs no async test plugin in the author's environment.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from agent.channel import (
    ChannelSettings,
    ConfigError,
    CredentialsRefused,
    RateBudget,
    WebhookRejected,
    Write,
)
from agent.testing.counting import CountingModel
from agent.testing.harness import ChannelHarness, run
from agent.testing.locations import LocationConformance

__all__ = ["ChannelConformance", "channel_under_test", "pytest_addoption"]

# How far a listed creation time may be from the moment the emulator made the item; a time
# zone mistake is hours off, a clock tick a second.
CREATED_AT_TOLERANCE = 120.0
# HTTP headers that prove nothing about the sender, kept when a delivery is stripped.
_PLAIN_HEADERS = frozenset({"host", "content-type", "content-length", "user-agent", "accept"})


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--shopsync-channel NAME``: run the suite on an installed channel with defaults."""
    group = parser.getgroup("shopsync", "shopsync channel conformance")
    group.addoption(
        "--shopsync-channel",
        dest="shopsync_channel",
        default=None,
        metavar="NAME",
        help="channel (and emulator) name for the conformance suite's default harness",
    )


@pytest.fixture
def channel_under_test(request: pytest.FixtureRequest) -> ChannelHarness:
    """The harness of the channel under test: override it, or pass ``--shopsync-channel``."""
    name = request.config.getoption("shopsync_channel", default=None)
    if not name:
        pytest.fail(
            "the shopsync conformance suite needs a `channel_under_test` fixture returning "
            "agent.testing.ChannelHarness, or the option --shopsync-channel NAME",
            pytrace=False,
        )
    return ChannelHarness(str(name))


def _applied(writes: list[dict[str, Any]], sku: str) -> list[dict[str, Any]]:
    return [w for w in writes if w.get("sku") == sku and w.get("applied")]


class ChannelConformance(LocationConformance):
    """The contract of `agent.channel.Channel`, checked against the plugin's emulator.

    Subclass it in a test module (the name must start with ``Test``) and provide a
    ``channel_under_test`` fixture returning a `ChannelHarness`.
    """

    # -- the class ---------------------------------------------------------------------------

    def test_channel_declares_a_name_a_rate_budget_and_strict_settings(
        self, channel_under_test: ChannelHarness
    ) -> None:
        cls = channel_under_test.channel_class()
        assert cls.name == channel_under_test.name, "the class registers under another name"
        assert issubclass(cls.settings_class, ChannelSettings)
        with pytest.raises(ConfigError):
            cls.settings_class.from_options(
                {"api_url": "http://127.0.0.1:9", "access_token": "t", "webhook_secret": "s",
                 "no_such_option_conformance": 1}
            )  # fmt: skip

        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=1) as shop:
                budget = shop.channel.budget
                assert isinstance(budget, RateBudget), "the channel declares no RateBudget"
                assert budget.bucket > 0 and budget.restore_rate > 0
                assert budget.max_read_batch >= 1 and budget.max_write_batch >= 1
                assert budget.read_cost > 0 and budget.write_cost > 0

        run(scenario, channel_under_test)

    # -- reading -----------------------------------------------------------------------------

    def test_lists_every_item_of_a_catalogue_larger_than_one_page(
        self, channel_under_test: ChannelHarness
    ) -> None:
        async def scenario(h: ChannelHarness) -> None:
            size = 2 * h.page_size + 3  # three pages, the last one short
            async with h.open(skus=size) as shop:
                skus = sorted(await shop.inventory())
                assert len(skus) == size, f"the emulator seeded {len(skus)} SKUs, not {size}"
                edited = {skus[0]: 7, skus[h.page_size]: 0, skus[-1]: 42}
                for sku, count in edited.items():
                    await shop.edit(sku, count)
                expected = await shop.inventory()
                try:
                    items = [item async for item in shop.channel.list_items()]
                except Exception as exc:  # e.g. a page larger than the platform's maximum
                    raise AssertionError(f"the listing failed: {exc}") from exc
                now = time.time()
            listed = [item.sku for item in items]
            assert len(items) == size, f"listed {len(items)} items of {size}"
            assert len({item.item_id for item in items}) == size, "an item id was listed twice"
            assert sorted(s for s in listed if s) == skus, "the listing misses or repeats SKUs"
            wrong = {i.sku: i.available for i in items if i.available != expected.get(i.sku or "")}
            assert not wrong, f"listed counts differ from the shop's: {wrong}"
            off = [i.sku for i in items if abs(i.created_at - now) > CREATED_AT_TOLERANCE]
            assert not off, f"created_at is not the creation time (epoch s) for {off[:5]}"

        run(scenario, channel_under_test)

    def test_reads_fresh_counts_in_batches_and_none_for_an_unknown_id(
        self, channel_under_test: ChannelHarness
    ) -> None:
        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=1) as shop:
                batch = shop.channel.budget.max_read_batch
            size = min(batch, 250) + 3  # more than one batch
            async with h.open(skus=size) as shop:
                items = await shop.list_by_sku()
                skus = sorted(items)
                for n, sku in enumerate((skus[0], skus[-1], skus[size // 2])):
                    await shop.edit(sku, 11 + n)  # after the listing: only a fresh read sees it
                before = (await shop.stats())["requests"]
                ids = [items[sku].item_id for sku in skus]
                counts = await shop.channel.read([*ids, "conformance-no-such-item"])
                calls = (await shop.stats())["requests"] - before
                expected = await shop.inventory()
            assert counts.pop("conformance-no-such-item", "missing") is None, (
                "an id the shop lacks must read as None"
            )
            assert set(counts) == set(ids), "read() must answer every id it was given"
            wrong = {
                s: counts[items[s].item_id] for s in skus if counts[items[s].item_id] != expected[s]
            }
            assert not wrong, f"read() gave stale or wrong counts: {wrong}"
            most = 2 * math.ceil(size / batch) + 2
            assert calls <= most, f"read() of {size} ids took {calls} calls (batch {batch})"

        run(scenario, channel_under_test)

    # -- writing -----------------------------------------------------------------------------

    def test_a_sale_between_read_and_write_is_not_lost(
        self, channel_under_test: ChannelHarness
    ) -> None:
        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=3) as shop:
                sku, item = sorted((await shop.list_by_sku()).items())[0]
                books = await CountingModel.start(shop.channel, item.item_id)
                start = books.published
                books.remote(-5)  # another shop sold five: publish start - 5
                await shop.order(sku, 2)  # meanwhile this shop sells two
                await books.publish()
                await books.observe()
                held = (await shop.inventory())[sku]
            assert books.counted == -2, (
                f"a concurrent sale of 2 was counted as {-books.counted} (answers: {books.results})"
            )
            assert held == start - 7 == books.pool, (
                f"the shop holds {held}, the books say {books.pool}, the truth is {start - 7}"
            )

        run(scenario, channel_under_test)

    def test_a_write_retried_after_a_lost_answer_is_applied_once(
        self, channel_under_test: ChannelHarness
    ) -> None:
        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=3) as shop:
                sku, item = sorted((await shop.list_by_sku()).items())[0]
                books = await CountingModel.start(shop.channel, item.item_id)
                start = books.published
                mark = len(await shop.writes())
                await shop.faults(timeout_after_apply=1)
                books.remote(-5)
                await books.publish()
                fired = (await shop.faults())["timeout_after_apply"] == 0
                await books.observe()
                # A core that restarts with the batch still pending sends it again, same key.
                await books.resend(Write(item.item_id, start, start - 5), books.keys[0])
                held = (await shop.inventory())[sku]
                applied = _applied((await shop.writes())[mark:], sku)
            assert fired, "the emulator never dropped an answer: is timeout_after_apply honoured?"
            assert len(applied) == 1, f"one write was applied {len(applied)} times: {applied}"
            assert held == start - 5, f"the shop holds {held}, not {start - 5}"
            assert books.counted == 0, f"a retried write was counted as a sale: {books.local}"

        run(scenario, channel_under_test)

    def test_a_sale_while_a_write_answer_is_lost_is_counted_exactly(
        self, channel_under_test: ChannelHarness
    ) -> None:
        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=3) as shop:
                sku, item = sorted((await shop.list_by_sku()).items())[0]
                books = await CountingModel.start(shop.channel, item.item_id)
                start = books.published
                mark = len(await shop.writes())
                await shop.faults(timeout_after_apply=1)
                shop.sell_when_an_answer_is_lost(sku, 2)
                books.remote(-5)
                await books.publish()
                await books.observe()
                held = (await shop.inventory())[sku]
                applied = _applied((await shop.writes())[mark:], sku)
            assert shop.sales_on_lost_answers, (
                "no write answer was lost, so nothing was tested: does the emulator honour "
                "timeout_after_apply, and does the channel use the injected http session?"
            )
            assert books.counted == -2, (
                f"a sale of 2 during a lost write answer was counted as {-books.counted} "
                f"(answers: {books.results})"
            )
            assert len(applied) == 1, f"one write was applied {len(applied)} times: {applied}"
            assert applied[0]["before"] == start, "the write was not applied before the sale"
            assert held == start - 7 == books.pool, (
                f"the shop holds {held}, the books say {books.pool}, the truth is {start - 7}"
            )

        run(scenario, channel_under_test)

    # -- webhooks ----------------------------------------------------------------------------

    def test_a_good_webhook_signature_is_accepted_and_a_bad_one_rejected(
        self, channel_under_test: ChannelHarness
    ) -> None:
        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=3) as shop, shop.webhook_receiver() as receiver:
                sku, item = sorted((await shop.list_by_sku()).items())[0]
                channel = shop.channel
                await channel.subscribe(receiver.url)
                subscriptions = (await shop.stats())["subscriptions"]
                await channel.subscribe(receiver.url)
                again = (await shop.stats())["subscriptions"]
                assert subscriptions > 0, "subscribe() registered no webhook"
                assert again == subscriptions, "subscribe() twice made more subscriptions"

                def names_item(headers: dict[str, str], body: bytes) -> bool:
                    try:
                        hint = channel.verify_webhook(headers, body)
                    except WebhookRejected as exc:
                        raise AssertionError(f"a genuine delivery was rejected: {exc}") from exc
                    return item.item_id in hint.item_ids or sku in hint.skus

                await shop.edit(sku, 37)
                try:
                    headers, body = await receiver.wait_for(names_item)
                except TimeoutError:
                    raise AssertionError(
                        f"no verified delivery named {sku} within 10 s "
                        f"({len(receiver.deliveries)} deliveries)"
                    ) from None
                wrong_secret = await shop.make_channel(webhook_secret="not-the-webhook-secret")
                unsigned = {k: v for k, v in headers.items() if k.lower() in _PLAIN_HEADERS}
                forged = [
                    ("a body changed after signing", channel, headers, body + b" "),
                    ("a signature made with another secret", wrong_secret, headers, body),
                    ("no signature", channel, unsigned, body),
                ]
                for what, verifier, forged_headers, forged_body in forged:
                    try:
                        verifier.verify_webhook(forged_headers, forged_body)
                    except WebhookRejected:
                        continue
                    raise AssertionError(f"verify_webhook accepted {what}")

        run(scenario, channel_under_test)

    # -- pacing ------------------------------------------------------------------------------

    def test_a_burst_larger_than_the_rate_budget_is_paced_not_refused(
        self, channel_under_test: ChannelHarness
    ) -> None:
        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=1) as shop:
                batch = min(shop.channel.budget.max_read_batch, 250)
            async with h.open(skus=batch) as shop:
                ids = [item.item_id for item in (await shop.list_by_sku()).values()]
                budget = shop.channel.budget
                # As many full reads as the bucket holds, then half a second's refill more
                # (at least one read): the smallest burst that must wait, so the test is quick.
                calls = math.floor(budget.bucket / budget.read_cost) + max(
                    1, math.ceil(0.5 * budget.restore_rate / budget.read_cost)
                )
                await shop.faults(rate_limit=True)
                before = await shop.stats()
                started = time.monotonic()

                async def worker(share: int) -> None:
                    for _ in range(share):
                        counts = await shop.channel.read(ids)
                        assert None not in counts.values(), "a paced read lost items"

                shares = [calls // 4 + (1 if n < calls % 4 else 0) for n in range(4)]
                await asyncio.gather(*(worker(share) for share in shares))
                elapsed = time.monotonic() - started
                after = await shop.stats()
            refused = after["bucket_refused"] - before["bucket_refused"]
            assert refused <= h.max_refusals, (
                f"{refused} of {calls} calls were refused by the rate limit "
                f"(at most {h.max_refusals}); the channel must pace itself"
            )
            floor = 0.5 * (calls * budget.read_cost - budget.bucket) / budget.restore_rate
            assert elapsed >= floor, (
                f"{calls} reads took {elapsed:.2f} s, under {floor:.2f} s: the declared "
                f"RateBudget ({budget}) does not match what the platform charges"
            )

        run(scenario, channel_under_test)

    # -- credentials -------------------------------------------------------------------------

    def test_a_token_that_expires_mid_run_is_renewed(
        self, channel_under_test: ChannelHarness
    ) -> None:
        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=3) as shop:
                sku, item = sorted((await shop.list_by_sku()).items())[0]
                # Forty days on the platform's clock: past the lifetime of any granted token
                # (a static one does not expire), while the channel's own clock stands still,
                # so only the platform's 401 can tell the channel.
                await shop.advance_clock(40 * 86400)
                try:
                    counts = await shop.channel.read([item.item_id])
                    [result] = await shop.channel.write(
                        [Write(item.item_id, item.available, item.available - 1)], key="expired-1"
                    )
                except Exception as exc:
                    raise AssertionError(f"after the token expired, a call failed: {exc}") from exc
                held = (await shop.inventory())[sku]
            assert counts == {item.item_id: item.available}, (
                f"after the token expired, read() gave {counts}, not {item.available}"
            )
            assert result.status == "ok", f"after the token expired, a write got {result}"
            assert held == item.available - 1, f"the shop holds {held}, not {item.available - 1}"

        run(scenario, channel_under_test)

    def test_refused_credentials_are_told_until_a_call_is_accepted(
        self, channel_under_test: ChannelHarness
    ) -> None:
        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=1) as shop:
                [item] = (await shop.list_by_sku()).values()
                await shop.revoke()  # every token and grant refused, renewed or not
                try:
                    await shop.channel.read([item.item_id])
                except CredentialsRefused:
                    pass
                else:
                    raise AssertionError("a read with revoked credentials did not fail")
                failing = shop.channel.credentials.failing
                assert failing, "the refusal was not told to the core (credentials.refused)"
                await shop.revoke(False)
                await shop.channel.read([item.item_id])
                after = shop.channel.credentials.failing
                assert after is None, f"an accepted call left credentials failing: {after}"

        run(scenario, channel_under_test)

    def test_the_clients_counters_count_requests_and_retries(
        self, channel_under_test: ChannelHarness
    ) -> None:
        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=1) as shop:
                [item] = (await shop.list_by_sku()).values()
                before = shop.channel.stats()
                if not before:  # optional: a channel that reports nothing has no /metrics rows
                    return
                await shop.faults(fail_requests=1, fail_status=503)
                await shop.channel.read([item.item_id])
                after = shop.channel.stats()
            assert after["requests"] >= before["requests"] + 2, (before, after)
            assert after["retries"] >= before["retries"] + 1, (before, after)
            assert 0.0 <= after["budget"] <= 1.0, after

        run(scenario, channel_under_test)

    # -- webhooks kept alive ------------------------------------------------------------------

    def test_a_subscription_the_platform_deleted_is_created_again(
        self, channel_under_test: ChannelHarness
    ) -> None:
        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=1) as shop:
                url = "https://agent.example.com/webhooks/" + h.name
                await shop.channel.subscribe(url)
                first = sorted(s["topic"] for s in await shop.subscriptions() if s["url"] == url)
                await shop.channel.subscribe(url)  # idempotent: nothing twice
                again = sorted(s["topic"] for s in await shop.subscriptions() if s["url"] == url)
                deleted = await shop.delete_subscriptions()  # deliveries kept failing
                await shop.channel.subscribe(url)  # the core calls it again every hour
                healed = sorted(s["topic"] for s in await shop.subscriptions() if s["url"] == url)
            assert first, "subscribe() created no subscription"
            assert again == first, f"a second subscribe() made {again}, not {first}"
            assert deleted == len(first)
            assert healed == first, (
                f"after the platform deleted them, subscribe() re-created {healed}, not {first}"
            )

        run(scenario, channel_under_test)

    # -- the catalogue's oddities ------------------------------------------------------------

    def test_duplicates_and_skuless_items_are_listed_as_such(
        self, channel_under_test: ChannelHarness
    ) -> None:

        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=3) as shop:
                sku, start = sorted((await shop.inventory()).items())[0]
                for wanted, allowed in ((sku, h.can_have_duplicates), ("", h.can_have_skuless)):
                    if allowed:
                        await shop.add_product(wanted, 7 if wanted else 4)
                    else:  # a platform that cannot hold it must refuse it, not half-store it
                        with pytest.raises(AssertionError):
                            await shop.add_product(wanted, 7)
                items = [item async for item in shop.channel.list_items()]
                counts = await shop.channel.read([item.item_id for item in items])
            assert all(counts[i.item_id] == i.available for i in items), "read() != listing"
            if not h.can_have_duplicates:
                listed = [i.sku for i in items]
                assert len(listed) == len(set(listed)) == 3, f"SKUs listed: {listed}"
            if h.can_have_duplicates:
                twins = [i for i in items if i.sku == sku]
                assert len(twins) == 2, f"{len(twins)} items listed with SKU {sku}, not 2"
                assert twins[0].item_id != twins[1].item_id, "two items listed with one id"
                assert sorted(i.available for i in twins) == sorted([7, start]), "twin counts"
            if h.can_have_skuless:
                bare = [i for i in items if not i.sku]
                assert len(bare) == 1, f"{len(bare)} SKU-less items listed, not 1"
                assert bare[0].sku in (None, ""), "a SKU-less item's sku is None or empty"
                assert bare[0].available == 4

        run(scenario, channel_under_test)
