"""Bundles (`agent.bundles`): definitions checked, a bundle published as whole sets of its
components, a bundle's sale counted as its components' changes, on a memory shop."""

from __future__ import annotations

import pytest
from sqlmodel import select

from agent import ledger
from agent.bundles import Bundle, BundleError, BundleMap, components_from_text, components_from_wire
from agent.channel import WebhookHint
from agent.ledger import INTRODUCE, NewEvent
from agent.models import EventRow, LogEntry
from agent.reconcile import Reconciler
from tests.conftest import settle
from tests.support.memchannel import MemShop
from tests.test_reconcile import _remote_delta
from tests.test_reconcile import _running as running

PACK = Bundle("PACK-6", (("SAUSAGE", 6),))
KIT = Bundle("KIT", (("GLUE", 1), ("SAUSAGE", 2)))


@pytest.mark.parametrize(
    ("sku", "raw", "says"),
    [
        ("P", [], "non-empty list"),
        ("P", [{"sku": "P", "quantity": 2}], "component of itself"),
        ("P", [{"sku": "A", "quantity": 1}, {"sku": "A", "quantity": 2}], "named twice"),
        ("P", [{"sku": "A", "quantity": 0}], "between 1 and"),
        ("P", [{"sku": "A", "quantity": 1.5}], "whole number"),
        ("P", [{"sku": "A", "quantity": True}], "whole number"),
        ("P", [{"sku": "", "quantity": 1}], "must be a SKU"),
        ("", [{"sku": "A", "quantity": 1}], "bundle's sku"),
        ("P", ["A"], "an object"),
    ],
)
def test_a_malformed_definition_says_what_is_wrong(sku: str, raw: object, says: str) -> None:
    with pytest.raises(BundleError, match=says):
        components_from_wire(sku, raw)


def test_components_from_the_command_line() -> None:
    assert components_from_text("KIT", ["SAUSAGE:2", "GLUE"]) == KIT
    assert components_from_text("KIT", ["GLUE=1,SAUSAGE:2"]) == KIT
    with pytest.raises(BundleError, match="quantity of SAUSAGE"):
        components_from_text("KIT", ["SAUSAGE:two"])


def test_a_bundle_publishes_whole_sets_of_its_components_after_their_rules() -> None:
    bundles = BundleMap([PACK, KIT])
    counts = {"SAUSAGE": 20, "GLUE": 3}
    assert bundles.target("PACK-6", counts.get).count == 3  # 20 // 6
    kit = bundles.target("KIT", counts.get)
    assert kit.count == 3 and "GLUE" in kit.why  # glue is the limit, not 20 // 2
    assert bundles.target("KIT", {"SAUSAGE": -4, "GLUE": 3}.get).count == 0  # oversold part
    unknown = bundles.target("KIT", {"SAUSAGE": 20}.get)
    assert unknown.count == 0 and "GLUE is unknown" in unknown.why


def test_nested_definitions_made_at_two_members_at_once_are_not_used() -> None:
    nested = Bundle("CRATE", (("PACK-6", 4),))
    bundles = BundleMap([PACK, nested])
    assert bundles.is_bundle("PACK-6") and not bundles.is_bundle("CRATE")
    assert "PACK-6 is itself a bundle" in bundles.refused["CRATE"]


def test_a_bundle_sale_becomes_its_components_changes_and_replans_every_sharer() -> None:
    bundles = BundleMap([PACK, KIT])
    sale = NewEvent("PACK-6", "change", delta=-2, cause="orders/create #1001")
    first = NewEvent("PACK-6", INTRODUCE, count=4, item_created=1.0)
    other = NewEvent("OTHER", "change", delta=-1)
    events, moved = bundles.expand([first, sale, other])
    assert [(e.sku, e.kind, e.delta) for e in events] == [
        ("SAUSAGE", "change", -12),
        ("OTHER", "change", -1),
    ]
    assert "orders/create #1001" in events[0].cause and "bundle PACK-6" in events[0].cause
    assert moved == {"PACK-6", "KIT", "SAUSAGE"}
    assert BundleMap().expand([sale]) == ([sale], set())  # no bundles: as before


# -- the counting core with a bundle, on a memory shop ------------------------------------------


def _running(db, shop: MemShop, clock, bundles: BundleMap):  # type: ignore[no-untyped-def]
    return running(db, shop, clock, bundles=lambda: bundles)


async def _pools(r: Reconciler) -> dict[str, int | None]:
    async with r.db.sessions() as s:
        return {
            s_: p.value
            for s_, p in (await ledger.get_pools(s, ["SAUSAGE", "PACK-6", "GLUE", "KIT"])).items()
        }


async def test_a_shop_selling_a_bundle_and_its_component(
    sqlite_db, memshop: MemShop, clock
) -> None:  # type: ignore[no-untyped-def]
    memshop.add("s", "SAUSAGE", 20)
    memshop.add("p", "PACK-6", 0)  # the shop's own count of packs is overwritten
    async with _running(sqlite_db, memshop, clock, BundleMap([PACK])) as r:
        assert await _pools(r) == {"SAUSAGE": 20}  # a bundle is no pool of its own
        assert memshop.counts["p"] == 3  # 20 // 6
        memshop.sell("p", 1)  # a pack sold: six sausages gone
        r.hint(WebhookHint("orders/create", item_ids=("p",)))
        await settle(r)
        assert await _pools(r) == {"SAUSAGE": 14}
        assert memshop.counts == {"s": 14, "p": 2}
        memshop.sell("s", 3)  # three loose sausages: two packs can no longer be made
        r.hint(WebhookHint("orders/create", item_ids=("s",)))
        await settle(r)
        assert await _pools(r) == {"SAUSAGE": 11}
        assert memshop.counts == {"s": 11, "p": 1}
        async with sqlite_db.sessions() as s:
            events = list(await s.exec(select(EventRow).order_by(EventRow.seq)))
        assert [(e.sku, e.kind, e.delta) for e in events] == [
            ("SAUSAGE", "introduce", 0),
            ("SAUSAGE", "change", -6),
            ("SAUSAGE", "change", -3),
        ]


async def test_a_peers_component_sale_rewrites_the_bundle_and_a_racing_bundle_sale_counts(
    sqlite_db, memshop: MemShop, clock
) -> None:  # type: ignore[no-untyped-def]
    memshop.add("s", "SAUSAGE", 30)
    memshop.add("p", "PACK-6", 5)
    async with _running(sqlite_db, memshop, clock, BundleMap([PACK])) as r:
        assert memshop.counts == {"s": 30, "p": 5}
        await _remote_delta(r, "SAUSAGE", -12)  # another shop sold 12 sausages
        await settle(r)
        assert memshop.counts == {"s": 18, "p": 3}
        # another sells 6 more; while the writes are in flight a customer here buys a pack
        memshop.before_apply = lambda: memshop.sell("p", 1) if memshop.counts["p"] == 3 else None
        await _remote_delta(r, "SAUSAGE", -6)
        await settle(r)
        memshop.before_apply = None
        # 18 - 6 (the other shop) - 6 (the pack sold here during the write) = 6: one pack
        assert await _pools(r) == {"SAUSAGE": 6}
        assert memshop.counts == {"s": 6, "p": 1}


# -- a bundle's record: set by any member, checked like any rules record ----------------------


def test_a_bundles_record_is_taken_from_any_member_and_checked() -> None:
    import dataclasses

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent import trust
    from agent.group_rules import BUNDLE, RulesRecord, judge, record_from_wire
    from agent.rules import RuleError

    key = Ed25519PrivateKey.generate()
    keys = {"b.example.com": key.public_key()}
    body = {"components": PACK.to_wire()["components"]}
    record = RulesRecord(BUNDLE + "PACK-6", body, 1000.0, "b.example.com")
    record = dataclasses.replace(record, proof=trust.sign(key, record.message()))
    assert judge(record, None, keys, now=1000.0, max_skew=300) is None  # any member's
    assert record_from_wire(record.to_wire()).bundle == PACK
    tampered = {**record.to_wire(), "body": {"components": [{"sku": "SAUSAGE", "quantity": 1}]}}
    assert "not signed by" in (
        judge(record_from_wire(tampered), None, keys, now=1000.0, max_skew=300) or ""
    )
    removed = record_from_wire({**record.to_wire(), "body": {"components": None}})
    assert removed.bundle is None
    with pytest.raises(RuleError, match="component of itself"):
        record_from_wire(
            {**record.to_wire(), "body": {"components": [{"sku": "PACK-6", "quantity": 2}]}}
        )
    with pytest.raises(RuleError, match="only its components"):
        record_from_wire({**record.to_wire(), "body": {"components": None, "buffer": 2}})


async def test_a_bundle_sold_here_without_a_component_the_group_knows_is_reported(
    sqlite_db,
) -> None:  # type: ignore[no-untyped-def]
    from agent.duplicates import duplicates_report
    from agent.models import Identity, ItemRow

    async with sqlite_db.sessions.begin() as s:
        s.add(ItemRow(item_id="p", sku="PACK-6", created_at=1.0))
        s.add(ItemRow(item_id="k", sku="KIT", created_at=1.0))
    await sqlite_db.run(
        lambda conn: ledger.append(
            conn,
            Identity(id=1, domain="a.example.com", epoch="e1", public_key="k", created_at=0),
            [NewEvent("SAUSAGE", INTRODUCE, count=20, item_created=1.0)],
            1.0,
            lambda _e: "",
        )
    )
    async with sqlite_db.sessions() as s:
        report = await duplicates_report(s, bundles=BundleMap([PACK, KIT]))
    # PACK-6's sausages are known; KIT's glue is no product of any shop
    assert [(b["sku"], b["missing"]) for b in report["bundles_short"]] == [("KIT", ["GLUE"])]
    assert report["missing_here"] == ["SAUSAGE"]  # a component, not the bundles


async def test_a_reimport_counts_a_missed_bundle_sale_as_its_components_as_its_dry_run_says(
    sqlite_db, memshop: MemShop, clock
) -> None:  # type: ignore[no-untyped-def]
    from tests.test_reconcile import _importer

    memshop.add("s", "SAUSAGE", 30)
    memshop.add("p", "PACK-6", 0)
    async with _running(sqlite_db, memshop, clock, BundleMap([PACK])) as r:
        assert memshop.counts == {"s": 30, "p": 5}
        memshop.sell("s", 2)  # sales whose webhooks the agent missed: 2 sausages, a pack
        memshop.sell("p", 1)
        importer = await _importer(r)
        report = await importer.preflight()
        counted = [
            (c["sku"], c["item_id"], c["change"], c["group_after"]) for c in report["counted"]
        ]
        assert counted == [
            ("SAUSAGE", "s", -2, 28),
            ("SAUSAGE", "p", -6, 22),  # the pack's sale is six sausages
        ]
        assert {c["item_id"]: c["target"] for c in report["to_change"]} == {"s": 22, "p": 3}
        assert (report["bundles"], report["only_here"]) == (["PACK-6"], [])
        await importer.start(reason="admin", report=report)
        assert importer.task is not None
        await importer.task
        await settle(r)
        assert await _pools(r) == {"SAUSAGE": 22}
        assert memshop.counts == {"s": 22, "p": 3}  # what the dry run said, item by item


async def test_a_bundle_removed_syncs_from_what_its_components_allowed_not_a_stale_pool(
    sqlite_db, memshop: MemShop, clock
) -> None:  # type: ignore[no-untyped-def]
    memshop.add("s", "SAUSAGE", 20)
    memshop.add("p", "PACK-6", 9)  # sold as a product of its own first: a pool of 9
    group = {"bundles": BundleMap()}
    async with running(sqlite_db, memshop, clock, bundles=lambda: group["bundles"]) as r:
        assert await _pools(r) == {"SAUSAGE": 20, "PACK-6": 9}
        group["bundles"] = BundleMap([PACK])  # then made a bundle of six sausages
        r.replan()
        await settle(r)
        assert memshop.counts == {"s": 20, "p": 3}
        memshop.sell("p", 1)
        r.hint(WebhookHint("orders/create", item_ids=("p",)))
        await settle(r)
        assert memshop.counts == {"s": 14, "p": 2}
        # removed: the pool of 9 from before is stale; the pack syncs from the 2 it showed
        assert await r.unbundle(PACK) == 2
        group["bundles"] = BundleMap()
        r.resync(["PACK-6"])
        await settle(r)
        assert await _pools(r) == {"SAUSAGE": 14, "PACK-6": 2}
        assert memshop.counts == {"s": 14, "p": 2}
        memshop.sell("p", 1)  # a product of its own again: no sausage goes with it
        r.hint(WebhookHint("orders/create", item_ids=("p",)))
        await settle(r)
        assert await _pools(r) == {"SAUSAGE": 14, "PACK-6": 1}
        async with sqlite_db.sessions() as s:
            logged = list(await s.exec(select(LogEntry).where(LogEntry.sku == "PACK-6")))
        assert any("no longer a bundle" in e.message for e in logged)


async def test_a_bundle_that_never_had_a_pool_is_introduced_when_removed(
    sqlite_db, memshop: MemShop, clock
) -> None:  # type: ignore[no-untyped-def]
    memshop.add("s", "SAUSAGE", 20)
    memshop.add("p", "PACK-6", 0)
    group = {"bundles": BundleMap([PACK])}
    async with running(sqlite_db, memshop, clock, bundles=lambda: group["bundles"]) as r:
        assert await _pools(r) == {"SAUSAGE": 20}
        assert await r.unbundle(PACK) == 3
        group["bundles"] = BundleMap()
        r.resync(["PACK-6"])
        await settle(r)
        assert await _pools(r) == {"SAUSAGE": 20, "PACK-6": 3}
        async with sqlite_db.sessions() as s:
            events = list(await s.exec(select(EventRow).where(EventRow.sku == "PACK-6")))
        assert [(e.kind, e.count) for e in events] == [(INTRODUCE, 3)]  # the others can sync it
