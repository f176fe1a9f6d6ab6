"""The channel conformance suite on every installed channel, and proof that it catches a bug.

The three built-in channels and the example third-party plugin (``tests/example_plugin``,
installed with ``pip install -e tests/example_plugin``) are found through their ``shopsync``
entry points, exactly as an agent finds them; nothing here imports a plugin.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.channel import Channel, Item, WebhookHint, Write, WriteResult
from agent.hookspecs import hookimpl
from agent.testing import ChannelConformance, ChannelHarness
from agent.testing.harness import CLIENT_ID, SECRET
from tests.test_layering import PLUGIN_MAY_IMPORT, _imports

FAST = {"retry_base": 0.01}


HARNESSES = {
    # bulk off: the suite lists a catalogue larger than one page, so make Shopify page. Three
    # locations, the primary one last by name: the channel must find the primary one.
    "shopify": ChannelHarness(
        "shopify",
        page_size=200,
        options={**FAST, "bulk": False},
        emulator_options={"locations": 3},
    ),  # a location named as its emulator names it (its number: GET /_emulator/locations/n)
    # A Dev Dashboard app: 24 h tokens from the client-credentials grant, renewed.
    "shopify-app": ChannelHarness(
        "shopify",
        page_size=200,
        options={**FAST, "bulk": False},
        credentials={"client_id": CLIENT_ID, "client_secret": SECRET},
        location_id=lambda n: f"gid://shopify/Location/{n}",  # ...or named by its gid
    ),
    # clock_skew 0: the emulator shares our clock, and unknown writes resolve a second sooner.
    "shopline": ChannelHarness("shopline", page_size=250, options={**FAST, "clock_skew": 0}),
    # A custom app: 10 h tokens it refreshes with its app key and secret.
    "shopline-app": ChannelHarness(
        "shopline",
        page_size=250,
        options={**FAST, "clock_skew": 0},
        credentials={"app_key": CLIENT_ID, "app_secret": SECRET},
    ),
    # Pisell keys stock items by SKU: it can hold neither duplicates nor SKU-less items.
    "pisell": ChannelHarness(
        "pisell", page_size=100, options=FAST, can_have_duplicates=False, can_have_skuless=False
    ),
    "acme": ChannelHarness("acme", page_size=25, options=FAST),
}


@pytest.fixture(params=sorted(HARNESSES))
def channel_under_test(request: pytest.FixtureRequest) -> ChannelHarness:
    return HARNESSES[request.param]


class TestConformance(ChannelConformance):
    """Every test of the suite, once per channel."""


# -- the example plugin is a real third-party package ------------------------------------------


def test_the_example_plugin_is_discovered_through_its_entry_point() -> None:
    registry = HARNESSES["acme"].registry()
    assert "acme" in registry.channels, "run: pip install -e tests/example_plugin"
    assert registry.channel("acme").__module__ == "shopsync_example.channel"
    assert "acme" in registry.emulators
    names = {name for name, _ in registry.pm.list_name_plugin()}
    assert "acme" in names  # registered under its entry-point name, like the built-ins


def test_the_example_plugin_imports_only_what_a_plugin_may() -> None:
    package = Path(__file__).parent / "example_plugin" / "shopsync_example"
    offenders = [
        f"{path.name} imports {name}"
        for path in sorted(package.glob("*.py"))
        for name in _imports(path)
        if name.startswith(("agent", "plugins")) and not name.startswith(PLUGIN_MAY_IMPORT)
    ]
    assert offenders == []


# -- the suite fails on broken channels --------------------------------------------------------
# Each mutant is the example channel with one classic integration bug, registered as a plugin
# of its own; the suite's test for that bug must fail on it, with a message that names it.


def _blind(base: type[Any]) -> dict[str, Any]:
    """Reads the count and sets the target over it: a sale between read and write is lost."""

    async def write(self: Any, writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        current = await self.read([w.item_id for w in writes])
        blind = [Write(w.item_id, current[w.item_id] or 0, w.target) for w in writes]
        return await base.write(self, blind, key=key)  # type: ignore[no-any-return]

    return {"write": write}


def _forgetful(base: type[Any]) -> dict[str, Any]:
    """Retries a write whose answer was lost under a fresh key, so it is not de-duplicated."""

    async def write(self: Any, writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        results = await base.write(self, writes, key=key)
        if any(r.status == "unknown" for r in results):
            return await base.write(self, writes, key=str(uuid.uuid4()))  # type: ignore[no-any-return]
        return results  # type: ignore[no-any-return]

    return {"write": write}


def _guessing(base: type[Any]) -> dict[str, Any]:
    """Takes a lost answer for "not applied" and reports a conflict at the count it reads."""

    async def write(self: Any, writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        results = await base.write(self, writes, key=key)
        lost = [r.item_id for r in results if r.status == "unknown"]
        counts = await self.read(lost) if lost else {}
        return [
            WriteResult(r.item_id, "conflict", available=counts[r.item_id])
            if r.status == "unknown"
            else r
            for r in results
        ]

    return {"write": write}


def _trusting(base: type[Any]) -> dict[str, Any]:
    """Believes any webhook that parses: no signature check."""

    def verify_webhook(self: Any, headers: Mapping[str, str], body: bytes) -> WebhookHint:
        payload = json.loads(body)
        return WebhookHint("stock.changed", item_ids=(str(payload["id"]),))

    return {"verify_webhook": verify_webhook}


def _first_page(base: type[Any]) -> dict[str, Any]:
    """Stops after the first page of the listing."""

    async def list_items(self: Any) -> AsyncIterator[Item]:
        count = 0
        async for item in base.list_items(self):
            count += 1
            yield item
            if count == self.options.page_size:
                return

    return {"list_items": list_items}


def _one_by_one(base: type[Any]) -> dict[str, Any]:
    """Reads one id per call (and, to stay quick, does not pace itself)."""

    async def read(self: Any, item_ids: Sequence[str]) -> dict[str, int | None]:
        counts: dict[str, int | None] = {}
        for item_id in item_ids:
            counts.update(await base.read(self, [item_id]))
        return counts

    # Unpaced as well: the example paces itself to 5 calls a second, which would make this
    # mutant slow, not wrong.
    return {"read": read, **_unpaced(base)}


def _deduplicating(base: type[Any]) -> dict[str, Any]:
    """Hides the second item of a duplicated SKU."""

    async def list_items(self: Any) -> AsyncIterator[Item]:
        seen: set[str] = set()
        async for item in base.list_items(self):
            if item.sku and item.sku in seen:
                continue
            seen.add(item.sku or "")
            yield item

    return {"list_items": list_items}


def _subscribes_once(base: type[Any]) -> dict[str, Any]:
    """Subscribes at start and then trusts the subscription to live forever."""

    async def subscribe(self: Any, callback_url: str) -> None:
        if getattr(self, "_subscribed", False):
            return
        await base.subscribe(self, callback_url)
        self._subscribed = True

    return {"subscribe": subscribe}


def _greedy_pages(base: type[Any]) -> dict[str, Any]:
    """Asks for pages of 100 where the platform serves at most 25."""

    async def list_items(self: Any) -> AsyncIterator[Item]:
        cursor = "0"
        while cursor:
            page = await self._call("GET", "/v1/items", params={"limit": "100", "cursor": cursor})
            for row in page["items"]:
                yield Item(str(row["id"]), row["sku"], row["available"], 0.0, row["title"])
            cursor = page["next_cursor"]

    return {"list_items": list_items}


def _unpaced(base: type[Any]) -> dict[str, Any]:
    """Ignores its rate budget and lets the platform refuse (then retries the 429s)."""

    async def _take_token(self: Any) -> None:
        return None

    return {"_take_token": _take_token}


MUTANTS: dict[str, tuple[Callable[[type[Any]], dict[str, Any]], str, str]] = {
    "blind": (_blind, "test_a_sale_between_read_and_write_is_not_lost", "counted as 0"),
    "forgetful": (
        _forgetful,
        "test_a_write_retried_after_a_lost_answer_is_applied_once",
        "applied 2 times",
    ),
    "guessing": (
        _guessing,
        "test_a_sale_while_a_write_answer_is_lost_is_counted_exactly",
        "counted as 7",
    ),
    "trusting": (
        _trusting,
        "test_a_good_webhook_signature_is_accepted_and_a_bad_one_rejected",
        "accepted a body changed",
    ),
    "first-page": (
        _first_page,
        "test_lists_every_item_of_a_catalogue_larger_than_one_page",
        "listed 25 items of 53",
    ),
    "one-by-one": (
        _one_by_one,
        "test_reads_fresh_counts_in_batches_and_none_for_an_unknown_id",
        "took 53 calls",
    ),
    "deduplicating": (
        _deduplicating,
        "test_duplicates_and_skuless_items_are_listed_as_such",
        "1 items listed with SKU",
    ),
    "unpaced": (
        _unpaced,
        "test_a_burst_larger_than_the_rate_budget_is_paced_not_refused",
        "refused by the rate limit",
    ),
    "subscribes-once": (
        _subscribes_once,
        "test_a_subscription_the_platform_deleted_is_created_again",
        r"re-created \[\], not \['stock.changed'\]",
    ),
    "greedy-pages": (
        _greedy_pages,
        "test_lists_every_item_of_a_catalogue_larger_than_one_page",
        "the listing failed: .*limit must be 1..25",
    ),
}


def mutant(kind: str, **options: Any) -> ChannelHarness:
    """A harness for the example channel with the bug `kind`, as channel ``acme-<kind>``."""
    acme = ChannelHarness("acme").registry()
    base = acme.channel("acme")
    emulator = acme.emulator("acme")
    name = f"acme-{kind}"
    broken = type(f"Broken{base.__name__}", (base,), {"name": name, **MUTANTS[kind][0](base)})
    plugin = _plugin(broken, emulator)
    return ChannelHarness(name, page_size=25, options={**FAST, **options}, plugins=[plugin])


def _plugin(channel: type[Channel], emulator: Any) -> object:
    """A plugin registering `channel`, and `emulator` under the channel's name."""

    class Plugin:
        @hookimpl
        def register_channels(self, register: Callable[[type[Channel]], None]) -> None:
            register(channel)

        @hookimpl
        def register_emulators(self, register: Callable[[str, Any], None]) -> None:
            register(channel.name, emulator)

    return Plugin()


@pytest.mark.parametrize("kind", sorted(MUTANTS))
def test_the_suite_fails_for_a_channel_with_a_classic_bug(kind: str) -> None:
    _, test_name, message = MUTANTS[kind]
    # The channel's own retries (same key) would hide these two bugs: let one failure show.
    options: dict[str, int] = {"max_retries": 0} if kind in ("forgetful", "guessing") else {}
    if kind == "unpaced":  # retries enough that the platform's refusals show, not a give-up
        options = {"max_retries": 12}
    check = getattr(ChannelConformance(), test_name)
    with pytest.raises(AssertionError, match=message):
        check(mutant(kind, **options))


def test_the_blind_channel_is_otherwise_sound_so_its_failure_is_the_lost_sale() -> None:
    # Without the race the blind channel passes, so the failure above is the lost sale and
    # not a broken test double.
    ChannelConformance().test_a_write_retried_after_a_lost_answer_is_applied_once(mutant("blind"))


def test_the_suite_fails_for_a_channel_that_never_renews_its_token() -> None:
    # The classic bug of the 24 h tokens: one grant at start, kept forever. A Shopify channel
    # with its renewal taken out must fail the token test once the platform's clock has moved.
    shopify = HARNESSES["shopify-app"]
    base = shopify.channel_class()

    async def start(self: Any) -> None:
        await base.start(self)

        async def renewed(rejected: str) -> str | None:
            return None  # no renewal from here on: the first grant is kept forever

        self.credentials.renewed = renewed

    broken = type("NeverRenews", (base,), {"name": "shopify-frozen", "start": start})
    plugin = _plugin(broken, shopify.registry().emulator("shopify"))
    harness = dataclasses.replace(shopify, name="shopify-frozen", plugins=[plugin])
    check = ChannelConformance().test_a_token_that_expires_mid_run_is_renewed
    with pytest.raises(AssertionError, match="after the token expired, a call failed"):
        check(harness)
    check(shopify)  # and the real one passes the same test


# -- the suite fails on channels that get locations wrong ----------------------------------------
# The example channel syncs one location, so these mutants are the SHOPLINE channel (whose ids
# at another location are ``<own id>@<location>``) with one bug each.


def _own_location_only(base: type[Any]) -> dict[str, Any]:
    """Lists the items at its own location only, whatever `locations` says."""

    async def list_items(self: Any) -> AsyncIterator[Item]:
        async for item in base.list_items(self):
            if not item.location:
                yield item

    return {"list_items": list_items}


def _lax_start(base: type[Any]) -> dict[str, Any]:
    """Starts without checking `locations` against the shop's."""

    async def start(self: Any) -> None:
        wanted, self.locations = self.locations, ()
        try:
            await base.start(self)
        finally:
            self.locations = wanted

    return {"start": start}


def _misplaced_writes(base: type[Any]) -> dict[str, Any]:
    """Writes every item at its own location, whichever location the id names."""

    async def write(self: Any, writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        own = [Write(w.item_id.split("@")[0], w.expected, w.target) for w in writes]
        results = await base.write(self, own, key=key)
        return [
            dataclasses.replace(r, item_id=w.item_id) for r, w in zip(results, writes, strict=True)
        ]

    return {"write": write}


LOCATION_MUTANTS: dict[str, tuple[Callable[[type[Any]], dict[str, Any]], str, str]] = {
    "own-location-only": (
        _own_location_only,
        "test_a_location_lists_the_items_it_stocks_under_ids_of_their_own",
        r"the listing's \(sku, location\) pairs",
    ),
    "lax-start": (
        _lax_start,
        "test_a_location_the_shop_lacks_is_refused_at_start",
        r"start\(\) accepted a location the shop lacks",
    ),
    "misplaced-writes": (
        _misplaced_writes,
        "test_reads_and_writes_at_a_location_land_at_that_location_only",
        "it must land at that location only",
    ),
}


@pytest.mark.parametrize("kind", sorted(LOCATION_MUTANTS))
def test_the_suite_fails_for_a_channel_that_gets_locations_wrong(kind: str) -> None:
    make, test_name, message = LOCATION_MUTANTS[kind]
    shopline = HARNESSES["shopline"]
    base = shopline.channel_class()
    name = f"shopline-{kind}"
    broken = type(f"Broken{base.__name__}", (base,), {"name": name, **make(base)})
    plugin = _plugin(broken, shopline.registry().emulator("shopline"))
    check = getattr(ChannelConformance(), test_name)
    with pytest.raises(AssertionError, match=message):
        check(dataclasses.replace(shopline, name=name, plugins=[plugin]))
    check(shopline)  # and the real one passes the same test
