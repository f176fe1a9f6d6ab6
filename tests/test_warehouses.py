"""Warehouses (`agent.warehouses`): keys, a shop's location links, and what a location shows
and what a change seen at one does to the warehouses' counts."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import select

from agent import ledger, scheduler
from agent.bundles import Bundle, BundleMap
from agent.channel import WebhookHint
from agent.duplicates import duplicates_report
from agent.models import LogEntry
from agent.reconcile import Reconciler
from agent.warehouses import DEFAULT, LocationMap, WarehouseError, parse_key, stock_key
from tests.conftest import settle
from tests.support.memchannel import MemShop
from tests.test_reconcile import _events, _remote_delta
from tests.test_reconcile import _running as running

SHOP, ANNEX, POPUP = "gid://shopify/Location/1", "gid://shopify/Location/2", "popup"


def _counts(**by_warehouse: int | None):  # type: ignore[no-untyped-def]
    held = {stock_key("TEA", w): c for w, c in by_warehouse.items()}
    return lambda key: held.get(key)


def test_the_default_warehouse_keys_are_the_bare_skus() -> None:
    assert stock_key("TEA") == stock_key("TEA", DEFAULT) == "TEA"
    assert stock_key("TEA", "east") == "TEA@@east"
    assert parse_key("TEA@@east") == ("TEA", "east")
    assert parse_key("TEA") == ("TEA", DEFAULT)
    assert parse_key("TEA@@") == ("TEA@@", DEFAULT)


def test_by_default_only_the_primary_location_syncs_from_the_default_warehouse() -> None:
    links = LocationMap(SHOP)
    assert links.keys(SHOP, "TEA") == ["TEA"]
    assert not links.synced(ANNEX) and links.keys(ANNEX, "TEA") == []
    assert links.publish(ANNEX, "TEA", _counts(main=5), lambda n: n) is None


@pytest.mark.parametrize(
    ("links", "says"),
    [
        ({ANNEX: []}, "at least"),
        ({ANNEX: ["east", "east"]}, "twice"),
        ({ANNEX: ["east wing"]}, "no warehouse name"),
        ({ANNEX: ["-east"]}, "no warehouse name"),
        ({ANNEX: [3]}, "no warehouse name"),
        ({"2##3": ["east"]}, "no location id"),
        ({"9" * 256: ["east"]}, "no location id"),
        ({ANNEX: [f"w{n}" for n in range(21)]}, "20 warehouses at most"),
        ({"": ["east"]}, "must be named"),
    ],
)
def test_malformed_links_say_what_is_wrong(links: dict, says: str) -> None:
    with pytest.raises(WarehouseError, match=says):
        LocationMap(SHOP, links)


def test_a_location_shows_the_sum_of_its_warehouses_with_the_rules_applied_once() -> None:
    links = LocationMap(SHOP, {ANNEX: ["east", DEFAULT]})
    buffer_of_2 = lambda n: max(0, n - 2)  # noqa: E731 - the shop's rules, as `decide`
    assert links.publish(ANNEX, "TEA", _counts(east=5, main=4), buffer_of_2) == 7
    assert links.publish(ANNEX, "TEA", _counts(main=4), buffer_of_2) == 2  # east counts none
    assert links.publish(SHOP, "TEA", _counts(east=5, main=4), buffer_of_2) == 2
    assert links.publish(ANNEX, "TEA", _counts(), buffer_of_2) is None


def test_a_sale_takes_from_the_warehouses_in_order_and_the_first_goes_below_zero() -> None:
    links = LocationMap(SHOP, {ANNEX: ["east", "west"]})
    east, west = stock_key("TEA", "east"), stock_key("TEA", "west")
    order = "orders/create #1001"
    assert links.taken(ANNEX, "TEA", -2, order, _counts(east=5, west=5)).changes == ((east, -2),)
    assert links.taken(ANNEX, "TEA", -7, order, _counts(east=5, west=5)).changes == (
        (east, -5),
        (west, -2),
    )
    assert links.taken(ANNEX, "TEA", -3, order, _counts(east=0, west=2)).changes == (
        (east, -1),  # what west lacks, from the first (the changes in the warehouses' order)
        (west, -2),
    )
    assert links.taken(ANNEX, "TEA", -12, order, _counts(east=5, west=5)).changes == (
        (east, -7),  # oversold: two more than both hold, from the first
        (west, -5),
    )
    assert links.taken(ANNEX, "TEA", -1, order, _counts(east=None, west=None)).changes == (
        (east, -1),
    )


def test_stock_back_goes_to_the_first_warehouse_and_an_edit_there_is_refused() -> None:
    links = LocationMap(SHOP, {ANNEX: ["east", "west"], POPUP: ["west"]})
    east, west = stock_key("TEA", "east"), stock_key("TEA", "west")
    counts = _counts(east=5, west=5)
    refund = links.taken(ANNEX, "TEA", 2, "refunds/create 450789469", counts)
    assert refund.changes == ((east, 2),) and not refund.refused
    edit = links.taken(ANNEX, "TEA", 4, "inventory_levels/update", counts)
    assert edit.changes == ()
    assert "several warehouses (east, west)" in edit.refused and f"link {ANNEX}" in edit.refused
    # a location linked to one warehouse: an edit there is that warehouse's, either way
    assert links.taken(POPUP, "TEA", 4, "inventory_levels/update", counts).changes == ((west, 4),)
    assert links.taken(POPUP, "TEA", -4, "inventory_levels/update", counts).changes == ((west, -4),)
    assert links.taken(SHOP, "TEA", 3, "inventory_levels/update", counts).changes == (("TEA", 3),)
    assert links.taken(ANNEX, "TEA", 0, "read", counts) == links.taken(
        "elsewhere", "TEA", 5, "read", counts
    )


# -- the counting core with warehouses, on a memory shop -----------------------------------------
# The shop's own location ("") sells from the default warehouse; its annex from "north"; its
# outlet from north first, then main.

ANNEXED = {"": ["main"], "annex": ["north"], "outlet": ["north", "main"]}


def _located(db, shop: MemShop, clock, links=ANNEXED, bundles=None):  # type: ignore[no-untyped-def]
    return running(
        db,
        shop,
        clock,
        locations=LocationMap("", links),
        bundles=(lambda: bundles) if bundles else BundleMap,
    )


def _tea(shop: MemShop, *, outlet: bool = False) -> None:
    """TEA in the memory shop: 10 at its own location (main), 4 at the annex (north), and
    with `outlet` an outlet item, whose count the group's north + main overwrites."""
    shop.add("t", "TEA", 10)
    shop.add("t@annex", "TEA", 4, location="annex")
    if outlet:
        shop.add("t@outlet", "TEA", 0, location="outlet")


async def _keys(r: Reconciler, *keys: str) -> dict[str, int | None]:
    async with r.db.sessions() as s:
        return {k: p.value for k, p in (await ledger.get_pools(s, list(keys))).items()}


async def _log(r: Reconciler, kind: str) -> list[LogEntry]:
    async with r.db.sessions() as s:
        rows = await s.exec(select(LogEntry).where(LogEntry.kind == kind))
        return list(rows)


async def test_each_location_counts_into_its_own_warehouse(sqlite_db, memshop, clock) -> None:  # type: ignore[no-untyped-def]
    _tea(memshop)
    async with _located(sqlite_db, memshop, clock) as r:
        assert await _keys(r, "TEA", "TEA@@north") == {"TEA": 10, "TEA@@north": 4}
        memshop.sell("t@annex", 1)
        r.hint(WebhookHint("orders/create", item_ids=("t@annex",)))
        await settle(r)
        assert await _keys(r, "TEA", "TEA@@north") == {"TEA": 10, "TEA@@north": 3}
        assert memshop.counts == {"t": 10, "t@annex": 3}  # the own location did not move


async def test_a_location_selling_from_two_warehouses_shows_their_sum_and_takes_in_order(
    sqlite_db, memshop, clock
) -> None:  # type: ignore[no-untyped-def]
    _tea(memshop, outlet=True)
    async with _located(sqlite_db, memshop, clock) as r:
        assert memshop.counts["t@outlet"] == 14  # north 4 + main 10
        memshop.sell("t@outlet", 6)  # north's 4 first, then 2 of main's
        r.hint(WebhookHint("orders/create", item_ids=("t@outlet",)))
        await settle(r)
        assert await _keys(r, "TEA", "TEA@@north") == {"TEA": 8, "TEA@@north": 0}
        assert memshop.counts == {"t": 8, "t@annex": 0, "t@outlet": 8}


async def test_an_edit_at_a_location_of_two_warehouses_is_refused_and_undone(
    sqlite_db, memshop, clock
) -> None:  # type: ignore[no-untyped-def]
    _tea(memshop, outlet=True)
    async with _located(sqlite_db, memshop, clock) as r:
        memshop.counts["t@outlet"] = 20  # an admin's edit: whose stock is it?
        r.hint(WebhookHint("inventory_levels/update", item_ids=("t@outlet",)))
        await settle(r)
        assert await _keys(r, "TEA", "TEA@@north") == {"TEA": 10, "TEA@@north": 4}
        assert memshop.counts["t@outlet"] == 14  # shown the warehouses' sum again
        (refused,) = await _log(r, "change_refused")
        assert refused.sku == "TEA" and "outlet" in refused.message
        assert "link outlet to one warehouse" in refused.message


async def test_a_peers_change_to_a_warehouse_is_written_where_it_is_sold(
    sqlite_db, memshop, clock
) -> None:  # type: ignore[no-untyped-def]
    _tea(memshop, outlet=True)
    async with _located(sqlite_db, memshop, clock) as r:
        await _remote_delta(r, "TEA@@north", -3)  # sold in another shop's north location
        await settle(r)
        assert memshop.counts == {"t": 10, "t@annex": 1, "t@outlet": 11}


async def test_a_bundle_sold_at_a_location_takes_its_components_there(
    sqlite_db, memshop, clock
) -> None:  # type: ignore[no-untyped-def]
    pack = Bundle("PACK-2", (("TEA", 2),))
    _tea(memshop)
    memshop.add("p@annex", "PACK-2", 0, location="annex")
    memshop.add("p", "PACK-2", 0)
    async with _located(sqlite_db, memshop, clock, bundles=BundleMap([pack])) as r:
        assert memshop.counts == {"t": 10, "t@annex": 4, "p@annex": 2, "p": 5}
        memshop.sell("p@annex", 1)
        r.hint(WebhookHint("orders/create", item_ids=("p@annex",)))
        await settle(r)
        assert await _keys(r, "TEA", "TEA@@north") == {"TEA": 10, "TEA@@north": 2}
        assert memshop.counts == {"t": 10, "t@annex": 2, "p@annex": 1, "p": 5}


async def test_a_sku_holding_a_key_separator_is_not_synced_and_says_why(
    sqlite_db, memshop, clock
) -> None:  # type: ignore[no-untyped-def]
    memshop.add("odd", "TEA@@2", 3)
    async with _located(sqlite_db, memshop, clock) as r:
        assert await _keys(r, "TEA@@2", "TEA") == {}
        async with r.db.sessions() as s:
            report = await duplicates_report(s)
        (entry,) = report["no_sku"]
        assert "TEA@@2" in entry["advice"] and "rename" in entry["advice"]


async def test_a_database_from_before_warehouses_keeps_syncing_when_a_location_is_linked(
    sqlite_db, memshop, clock
) -> None:  # type: ignore[no-untyped-def]
    """No migration: a shop that synced one location (its items keyed by SKU, its pools by
    SKU) links a second one; its own items keep their pools, counts and events, and only the
    new location's stock is new to the group."""
    memshop.add("t", "TEA", 10)
    async with running(sqlite_db, memshop, clock) as r:  # as the previous release ran it
        memshop.sell("t", 2)
        r.hint(WebhookHint("orders/create", item_ids=("t",)))
        await settle(r)
        before = [(e.sku, e.kind, e.delta) for e in await _events(r)]
    assert before == [("TEA", "introduce", 0), ("TEA", "change", -2)]
    memshop.add("t@annex", "TEA", 4, location="annex")
    writes = len(memshop.write_log)
    async with _located(sqlite_db, memshop, clock) as r:
        assert await _keys(r, "TEA", "TEA@@north") == {"TEA": 8, "TEA@@north": 4}
        events = [(e.sku, e.kind, e.delta) for e in await _events(r)]
        assert events == [*before, ("TEA@@north", "introduce", 0)]
        assert len(memshop.write_log) == writes  # nothing to correct
        memshop.sell("t", 1)
        r.hint(WebhookHint("orders/create", item_ids=("t",)))
        await settle(r)
        assert await _keys(r, "TEA", "TEA@@north") == {"TEA": 7, "TEA@@north": 4}


async def test_a_reimport_counts_missed_location_sales_into_their_warehouses_as_its_dry_run_says(
    sqlite_db, memshop, clock
) -> None:  # type: ignore[no-untyped-def]
    from tests.test_reconcile import _importer

    _tea(memshop, outlet=True)
    memshop.add("c@annex", "COCOA", 5, location="annex")  # only at the annex: north's alone
    async with _located(sqlite_db, memshop, clock) as r:
        assert memshop.counts == {"t": 10, "t@annex": 4, "t@outlet": 14, "c@annex": 5}
        memshop.sell("t@annex", 1)  # sales whose webhooks the agent missed
        memshop.sell("t@outlet", 5)  # north's 3 left, then 2 of main's
        importer = await _importer(r)
        report = await importer.preflight()
        counted = [(c["sku"], c["item_id"], c["change"]) for c in report["counted"]]
        assert sorted(counted) == [
            ("TEA", "t@outlet", -2),
            ("TEA@@north", "t@annex", -1),
            ("TEA@@north", "t@outlet", -3),
        ]
        targets = {c["item_id"]: c["target"] for c in report["to_change"]}
        assert targets == {"t": 8, "t@annex": 0, "t@outlet": 8}
        assert (report["only_here"], report["missing_here"]) == ([], [])
        await importer.start(reason="admin", report=report)
        assert importer.task is not None
        await importer.task
        await settle(r)
        assert await _keys(r, "TEA", "TEA@@north", "COCOA@@north") == {
            "TEA": 8,
            "TEA@@north": 0,
            "COCOA@@north": 5,
        }
        assert memshop.counts == {"t": 8, "t@annex": 0, "t@outlet": 8, "c@annex": 5}


async def test_a_refund_told_after_its_level_at_a_location_of_two_warehouses_still_counts(
    sqlite_db, memshop, clock, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Shopify sends a refund's level webhook and the refund's own in either order: a rise at
    a location of several warehouses is held back a moment for the refund to say what it is."""
    _tea(memshop, outlet=True)
    async with _located(sqlite_db, memshop, clock) as r:
        memshop.sell("t@outlet", 2)  # north's
        r.hint(WebhookHint("orders/create", item_ids=("t@outlet",), reference="#1001"))
        await settle(r)
        assert await _keys(r, "TEA", "TEA@@north") == {"TEA": 10, "TEA@@north": 2}
        # the grace a held rise waits: long enough on this fast clock for the test to act in
        monkeypatch.setattr(scheduler, "LEVEL_GRACE", 1000.0)
        memshop.counts["t@outlet"] += 2  # refunded and restocked: the level webhook first
        r.hint(WebhookHint("inventory_levels/update", item_ids=("t@outlet",)))
        for _ in range(200):
            if "t@outlet" in r.scheduler.held:
                break
            await asyncio.sleep(0.005)
        assert r.scheduler.held == {"t@outlet"}  # held back, not refused yet
        assert await _log(r, "change_refused") == []
        monkeypatch.setattr(scheduler, "LEVEL_GRACE", 2.0)
        r.hint(WebhookHint("refunds/create", item_ids=("t@outlet",), reference="1001"))
        await settle(r)
        assert await _keys(r, "TEA", "TEA@@north") == {"TEA": 10, "TEA@@north": 4}
        assert memshop.counts == {"t": 10, "t@annex": 4, "t@outlet": 14}
        assert await _log(r, "change_refused") == []
        memshop.counts["t@outlet"] += 5  # stock added by hand: no refund tells of it
        r.hint(WebhookHint("inventory_levels/update", item_ids=("t@outlet",)))
        await settle(r)
        assert await _keys(r, "TEA", "TEA@@north") == {"TEA": 10, "TEA@@north": 4}
        assert memshop.counts["t@outlet"] == 14
        assert len(await _log(r, "change_refused")) == 1


async def test_the_primary_location_may_sell_from_several_warehouses_too(
    sqlite_db, memshop, clock
) -> None:  # type: ignore[no-untyped-def]
    _tea(memshop)
    links = {"": ["main", "north"], "annex": ["north"]}
    async with _located(sqlite_db, memshop, clock, links=links) as r:
        assert await _keys(r, "TEA", "TEA@@north") == {"TEA": 10, "TEA@@north": 4}
        assert memshop.counts == {"t": 14, "t@annex": 4}  # main and north together
        memshop.sell("t", 12)  # main's 10, then 2 of north's
        r.hint(WebhookHint("orders/create", item_ids=("t",)))
        await settle(r)
        assert await _keys(r, "TEA", "TEA@@north") == {"TEA": 0, "TEA@@north": 2}
        assert memshop.counts == {"t": 2, "t@annex": 2}
