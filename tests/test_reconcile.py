"""The counting core (DESIGN §5) on a memory shop with real CAS and idempotency semantics."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import pytest_asyncio
from sqlmodel import func, select

from agent import ledger
from agent.channel import WebhookHint, Write, WriteResult
from agent.importer import Importer
from agent.models import EventRow, Identity, ItemRow, LogEntry, PendingWrite
from agent.reconcile import Reconciler
from agent.syncmode import SyncMode
from tests.conftest import settle
from tests.support.memchannel import MemChannel, MemShop


@pytest_asyncio.fixture
async def core(sqlite_db, memshop, clock) -> AsyncIterator[Reconciler]:
    memshop.add("i1", "A-1", 10)
    memshop.add("i2", "B-2", 5)
    async with _running(sqlite_db, memshop, clock) as reconciler:
        yield reconciler


@contextlib.asynccontextmanager
async def _running(db, shop: MemShop, clock, **tuning: Any) -> AsyncIterator[Reconciler]:  # type: ignore[no-untyped-def]
    """A reconciler serving (settled after its start) for the length of the block; then it
    stops as an agent's shutdown (or a crash) stops it: outcomes of writes in flight unknown."""
    async with db.sessions() as session:
        identity = (await session.exec(select(Identity))).one()
    reconciler = Reconciler(
        db=db,
        channel=MemChannel(shop),
        clock=clock,
        identity=identity,
        allocate=lambda sku, pool: max(0, pool),
        coalesce=0,
        reconcile_interval=10**9,
        **tuning,
    )
    main = asyncio.create_task(reconciler.run())
    try:
        await settle(reconciler)
        yield reconciler
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main
        await reconciler.close()


async def _events(r: Reconciler) -> list[EventRow]:
    async with r.db.sessions() as s:
        return list(await s.exec(select(EventRow).order_by(EventRow.seq)))


async def _pool(r: Reconciler, sku: str) -> int | None:
    async with r.db.sessions() as s:
        row = await ledger.get_pool(s, sku)
        return None if row is None else row.value


async def test_first_reconcile_introduces_every_sku(core: Reconciler) -> None:
    events = await _events(core)
    assert [(e.sku, e.kind, e.count) for e in events] == [
        ("A-1", "introduce", 10),
        ("B-2", "introduce", 5),
    ]
    assert await _pool(core, "A-1") == 10


async def test_sale_hint_becomes_one_delta_event(core: Reconciler, memshop: MemShop) -> None:
    memshop.sell("i1", 3)
    core.hint(WebhookHint("orders/create", item_ids=("i1",)))
    await settle(core)
    assert await _pool(core, "A-1") == 7
    assert [(e.kind, e.delta) for e in (await _events(core))[2:]] == [("change", -3)]


async def test_stale_or_duplicated_webhook_creates_no_event(
    core: Reconciler, memshop: MemShop
) -> None:
    memshop.sell("i1", 1)
    hint = WebhookHint("inventory_levels/update", item_ids=("i1",))
    core.hint(hint)
    await settle(core)
    for _ in range(3):  # the same delivery again, and an old one: re-reads find nothing new
        core.hint(hint)
        await settle(core)
    assert [e.delta for e in (await _events(core))[2:]] == [-1]
    assert memshop.reads >= 2  # it did re-read: a hint is never trusted as a count


async def test_cas_conflict_is_counted_as_a_sale_not_overwritten(
    core: Reconciler, memshop: MemShop
) -> None:
    # A remote change lowers the pool to 6; while the write is in flight a customer buys 2.
    memshop.before_apply = lambda: memshop.sell("i1", 2)
    await _remote_delta(core, "A-1", -4)
    await settle(core)
    # pool: 10 - 4 (remote) - 2 (the racing sale) = 4; the shop shows it, the sale is an event
    assert await _pool(core, "A-1") == 4
    assert memshop.counts["i1"] == 4
    local = [e.delta for e in await _events(core) if e.origin == "a.example.com" and e.delta]
    assert local == [-2]
    async with core.db.sessions() as s:
        kinds = [e.kind for e in await s.exec(select(LogEntry).order_by(LogEntry.id))]
    assert "write_conflict" in kinds


async def test_a_replayed_conflict_is_read_again_so_a_later_change_is_not_lost(
    core: Reconciler, memshop: MemShop
) -> None:
    # The group sold 12 of the shop's 10 (pool -2: the shop must show 0). The write meets a
    # sale of the last 10 units (a conflict at 0, which is what the shop should show anyway);
    # its answer is lost; before the retry, whose answer is the platform's replay of that
    # conflict, the shop is restocked by 5 and that webhook is lost too. The replay says 0, the
    # shop shows 5: only a fresh read after the replay finds the restock.
    memshop.before_apply = lambda: memshop.sell("i1", 10)
    memshop.drop_after_apply = 1
    send, calls = core.channel.write, 0

    async def write(writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        nonlocal calls
        calls += 1
        if calls == 2:
            memshop.counts["i1"] += 5
        return await send(writes, key=key)

    core.channel.write = write  # type: ignore[method-assign]
    await _remote_delta(core, "A-1", -12)
    await settle(core)
    assert calls >= 2  # the answer was lost, the batch sent again
    # pool: 10 - 12 (remote) - 10 (the racing sale) + 5 (the restock) = -7: the shop shows 0
    assert await _pool(core, "A-1") == -7
    assert memshop.counts["i1"] == 0
    local = [e.delta for e in await _events(core) if e.origin == "a.example.com" and e.delta]
    assert local == [-10, 5]


async def test_write_with_unknown_outcome_is_retried_with_same_key_and_applied_once(
    core: Reconciler, memshop: MemShop
) -> None:
    memshop.drop_after_apply = 2  # applied, but the answer is lost twice
    settled: list[str] = []

    async def note_settled(key: str) -> None:
        settled.append(key)

    core.channel.settled = note_settled  # type: ignore[method-assign]
    await _remote_delta(core, "B-2", +7)
    await settle(core)
    assert memshop.counts["i2"] == 12
    applied = [entry for entry in memshop.write_log if entry[1] == "i2"]
    assert len(applied) == 1, applied
    assert len(memshop.applied_keys) == 1  # every retry carried the same idempotency key
    assert settled == list(memshop.applied_keys)  # then the channel heard the key is done
    async with core.db.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(PendingWrite)) == 0
    # and no phantom sale was recorded
    local = [e for e in await _events(core) if e.origin == "a.example.com"]
    assert [e.kind for e in local] == ["introduce", "introduce"]


async def test_a_sale_after_a_write_whose_answer_was_lost_is_counted(
    core: Reconciler, memshop: MemShop
) -> None:
    memshop.drop_after_apply = 1  # applied, answer lost; the retry gets the replayed answer
    original = core.channel.write
    calls = 0

    async def write(writes, *, key):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        try:
            return await original(writes, key=key)
        finally:
            if calls == 1:
                memshop.sell("i2")  # sold right after the write landed; its webhook is lost

    core.channel.write = write  # type: ignore[method-assign]
    await _remote_delta(core, "B-2", +7)
    await settle(core)
    # the replay says "12", as of the first attempt; the shop holds 11 and the sale counts
    assert memshop.counts["i2"] == 11
    assert await _pool(core, "B-2") == 11
    local = [e for e in await _events(core) if e.origin == "a.example.com" and e.sku == "B-2"]
    assert [e.delta for e in local if e.kind == "change"] == [-1]


async def test_pending_write_is_resent_with_its_key_after_a_restart(
    sqlite_db, memshop: MemShop, clock
) -> None:
    memshop.add("i1", "A-1", 10)
    async with _running(sqlite_db, memshop, clock) as first:
        deliver = first.channel.write

        async def unheard(writes, *, key):  # type: ignore[no-untyped-def]
            await deliver(writes, key=key)  # the platform applies it (replays it when retried)
            raise TimeoutError("connection dropped after the write was applied")

        first.channel.write = unheard  # type: ignore[method-assign]  # the agent never hears back
        await _remote_delta(first, "A-1", -3)
        for _ in range(200):
            await asyncio.sleep(0.005)
            if memshop.write_log:
                break
    # stopped: a "crash" with the write's outcome unknown
    async with sqlite_db.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(PendingWrite)) == 1
    async with _running(sqlite_db, memshop, clock) as second:
        await settle(second)
        assert memshop.counts["i1"] == 7
        assert len(memshop.write_log) == 1  # re-sent with the same key: applied once
        async with sqlite_db.sessions() as s:
            assert await s.scalar(select(func.count()).select_from(PendingWrite)) == 0
            item = await s.get(ItemRow, "i1")
            assert item is not None and item.published == 7


async def test_first_created_wins_for_a_sku_created_in_two_places(
    core: Reconciler, memshop: MemShop
) -> None:
    # This shop creates C-3 now with 4; another shop had created it earlier with 9.
    memshop.add("i3", "C-3", 4, created=core.clock.now())
    core.request_reconcile()
    await settle(core)
    assert await _pool(core, "C-3") == 4
    earlier = EventRow(
        origin="b.example.com",
        epoch="eb",
        seq=1,
        sku="C-3",
        kind="introduce",
        count=9,
        item_created=core.clock.now() - 3600,
    )
    async with core.db.sessions.begin() as s:
        assert await ledger.apply_event(s, earlier, core.clock.now())
    core.pool_changed(["C-3"])
    await settle(core)
    assert await _pool(core, "C-3") == 9
    assert memshop.counts["i3"] == 9


async def test_oversold_pool_publishes_zero_and_logs(core: Reconciler, memshop: MemShop) -> None:
    await _remote_delta(core, "B-2", -8)  # pool 5 - 8 = -3
    await settle(core)
    assert await _pool(core, "B-2") == -3
    assert memshop.counts["i2"] == 0
    async with core.db.sessions() as s:
        rows = list(await s.exec(select(LogEntry).where(LogEntry.kind == "oversold")))
    assert [r.sku for r in rows] == ["B-2"]


async def test_duplicate_and_skuless_items_are_never_written_or_observed(
    sqlite_db, memshop: MemShop, clock
) -> None:
    memshop.add("d1", "DUP", 3)
    memshop.add("d2", "DUP", 8)
    memshop.add("n1", None, 2)
    memshop.add("ok", "OK-1", 5)
    async with _running(sqlite_db, memshop, clock) as r:
        memshop.sell("d1", 1)
        memshop.sell("n1", 1)
        r.hint(WebhookHint("x", item_ids=("d1", "n1")))
        r.request_reconcile()
        await settle(r)
        assert {e.sku for e in await _events(r)} == {"OK-1"}
        assert memshop.write_log == []
        async with sqlite_db.sessions() as s:
            excluded = {i.item_id: i.excluded for i in await s.exec(select(ItemRow))}
        assert excluded == {"d1": "duplicate", "d2": "duplicate", "n1": "no_sku", "ok": None}


async def test_burst_of_hints_is_coalesced_into_few_reads(
    core: Reconciler, memshop: MemShop
) -> None:
    core.coalesce = 0.01
    memshop.counts["i1"] = 100  # an admin restocks
    core.hint(WebhookHint("inventory_levels/update", item_ids=("i1",)))
    await settle(core)
    reads_before = memshop.reads
    for _ in range(50):
        memshop.sell("i1", 1)
        core.hint(WebhookHint("orders/create", item_ids=("i1",)))
    await settle(core)
    assert await _pool(core, "A-1") == 50
    assert memshop.reads - reads_before <= 5


async def _remote_delta(r: Reconciler, sku: str, delta: int) -> None:
    """Apply a peer's change event, as replication will, and tell the reconciler."""
    async with r.db.sessions.begin() as s:
        vector = await ledger.load_vector(s)
        seq = vector.get(("peer.example.com", "ep"), 0) + 1
        event = EventRow(
            origin="peer.example.com", epoch="ep", seq=seq, sku=sku, kind="change", delta=delta
        )
        assert await ledger.apply_event(s, event, r.clock.now())
    r.pool_changed([sku])


async def test_remote_event_applied_twice_counts_once(core: Reconciler) -> None:
    event = dict(origin="peer.example.com", epoch="ep", seq=1, sku="A-1", kind="change", delta=-2)
    async with core.db.sessions.begin() as s:
        assert await ledger.apply_event(s, EventRow(**event), 0)
    async with core.db.sessions.begin() as s:
        assert not await ledger.apply_event(s, EventRow(**event), 0)
    assert await _pool(core, "A-1") == 8


async def test_a_write_names_the_changes_it_carries_and_their_shop(core: Reconciler) -> None:
    def event(seq: int, delta: int, cause: str) -> EventRow:
        origin = "shop2.example"
        return EventRow(
            origin=origin, epoch="ep", seq=seq, sku="A-1", kind="change", delta=delta, cause=cause
        )

    events = [event(1, -2, "orders/create #1042"), event(2, 1, "refunds/create 450789469")]
    for e in events:
        async with core.db.sessions.begin() as s:
            assert await ledger.apply_event(s, e, 0)
    core.writes.carry(events)
    core.pool_changed(["A-1"])
    await settle(core)
    async with core.db.sessions() as s:
        rows = list(await s.exec(select(LogEntry).where(LogEntry.kind == "write")))
    assert [(r.sku, r.before, r.after, r.peer, r.message) for r in rows] == [
        (
            "A-1",
            10,
            9,
            "shop2.example",
            "order #1042 at shop2.example (-2), refund of order 450789469 at shop2.example (+1)",
        )
    ]
    assert core.writes.carried == {}  # named once: the next write of A-1 starts afresh


async def test_an_order_webhook_names_the_change_whatever_came_first(
    core: Reconciler, memshop: MemShop
) -> None:
    memshop.sell("i1", 1)
    core.hint(WebhookHint("inventory_levels/update", item_ids=("i1",)))
    core.hint(WebhookHint("orders/create", skus=("A-1",), reference="#1042"))
    core.hint(WebhookHint("inventory_levels/update", item_ids=("i1",)))
    await settle(core)
    async with core.db.sessions() as s:
        rows = list(await s.exec(select(LogEntry).where(LogEntry.kind == "change")))
    assert [(r.delta, r.message) for r in rows] == [(-1, "order #1042 (orders/create)")]
    assert (await _events(core))[-1].cause == "orders/create #1042"  # signed into the event


async def _importer(core: Reconciler) -> Importer:
    mode = SyncMode(core.db)
    await mode.load()
    return Importer(
        db=core.db,
        channel=core.channel,
        clock=core.clock,
        reconciler=core,
        mode=mode,
        sku_rule=core.sku_rule,
    )


@pytest.mark.parametrize(
    ("auto", "stays_on"),
    [
        (True, False),  # the import's own: killed between "done" and turning it off
        (False, True),  # an admin's: it stays until the admin turns it off
    ],
)
async def test_after_an_import_only_the_maintenance_it_turned_on_ends_on_start(
    core: Reconciler, auto: bool, stays_on: bool
) -> None:
    await core.db.set_state("import", {"state": "done", "phase": "done", "reason": "admin"})
    await core.db.set_state("maintenance", {"on": True, "auto": auto, "since": 1.0})
    importer = await _importer(core)
    await importer.restore()
    assert (await importer.maintenance())["on"] is stays_on
    assert importer.mode.held_back is stays_on  # held: the shop's own changes wait


async def test_product_webhooks_are_looked_up_together_and_start_no_catalogue_pass(
    sqlite_db, memshop: MemShop, clock
) -> None:
    memshop.lookups = []
    for n in range(300):
        memshop.add(f"p{n}", f"P-{n}", 5)
    async with _running(sqlite_db, memshop, clock) as r:
        passes = r.status().stats["passes"]
        memshop.items["p7"] = dataclasses.replace(memshop.items["p7"], sku="P-RENAMED")
        memshop.items["p8"] = dataclasses.replace(memshop.items["p8"], sku="P-9")  # p9's SKU
        memshop.add("new", "NEW-1", 4)
        for n in range(300):  # a bulk edit: one webhook per product
            r.hint(WebhookHint("products/update", item_ids=(f"p{n}",), catalogue_changed=True))
        r.hint(WebhookHint("products/create", item_ids=("new",), catalogue_changed=True))
        await settle(r)
        assert r.status().stats["passes"] == passes
        assert [len(ids) for ids in memshop.lookups] == [301]  # one lookup, all ids
        assert memshop.reads == 0
        async with sqlite_db.sessions() as s:
            rows = {i.item_id: (i.sku, i.excluded) for i in await s.exec(select(ItemRow))}
        assert rows["p7"] == ("P-RENAMED", None)
        assert rows["p8"] == ("P-9", "duplicate") and rows["p9"] == ("P-9", "duplicate")
        assert rows["p10"] == ("P-10", None)
        assert await _pool(r, "NEW-1") == 4
        assert await _pool(r, "P-RENAMED") == 5


async def test_an_item_that_vanished_is_looked_up_and_marked_gone(
    sqlite_db, memshop: MemShop, clock
) -> None:
    memshop.lookups = []
    memshop.add("i1", "A-1", 10)
    memshop.add("i2", "B-2", 5)
    async with _running(sqlite_db, memshop, clock) as r:
        del memshop.items["i2"], memshop.counts["i2"]
        r.hint(WebhookHint("inventory_levels/update", item_ids=("i2",)))
        await settle(r)
        assert memshop.lookups == [["i2"]]
        async with sqlite_db.sessions() as s:
            row = (await s.exec(select(ItemRow).where(ItemRow.item_id == "i2"))).one()
        assert row.excluded == "gone"


async def test_catalogue_passes_that_webhooks_ask_for_are_held_to_the_minimum_interval(
    sqlite_db, memshop: MemShop, clock
) -> None:
    memshop.add("i1", "A-1", 10)  # a channel that cannot look items up (lookups None)
    async with _running(sqlite_db, memshop, clock, catalogue_min_interval=10**6) as r:
        passes = r.status().stats["passes"]
        for _ in range(50):  # a storm of product webhooks right after the start's pass
            r.hint(WebhookHint("products/update", item_ids=("i1",), catalogue_changed=True))
            await asyncio.sleep(0.001)
        await settle(r)
        assert r.status().stats["passes"] == passes  # held: the start's pass was just now
        clock.advance(10**6)
        r.hint(WebhookHint("products/update", catalogue_changed=True))
        await settle(r)
        assert r.status().stats["passes"] == passes + 1  # one pass for the whole storm
        r.request_reconcile()  # an admin's (or the periodic) pass is not held
        await settle(r)
        assert r.status().stats["passes"] == passes + 2


async def test_writes_go_at_once_far_from_the_limit_and_coalesce_at_it(
    sqlite_db, memshop: MemShop, clock
) -> None:  # type: ignore[no-untyped-def]
    from agent.channel import RateBudget

    for n in range(8):
        memshop.add(f"i{n}", f"S-{n}", 50)
    async with _running(sqlite_db, memshop, clock) as core:
        # a big bucket: each remote change is written on its own, without waiting
        for n in range(4):
            await _remote_delta(core, f"S-{n}", -1)
            await settle(core)
        assert core.stats["writes"] == 4 and core.stats["write_rows"] == 4
        # a small bucket (one call at once, one more every 100 s): the next changes, arriving
        # together, share a call instead of spending the budget row by row
        core.channel.budget = RateBudget(
            40, 0.2, max_write_batch=250, max_read_batch=250, write_cost=10
        )
        core.scheduler._credits, core.scheduler._credits_at = 1.0, core.clock.monotonic()
        for n in range(8):
            await _remote_delta(core, f"S-{n}", -2)
        await settle(core)
        assert core.stats["write_rows"] == 12
        assert core.stats["writes"] - 4 <= 2, core.stats
        assert [memshop.counts[f"i{n}"] for n in range(8)] == [47] * 4 + [48] * 4


async def test_queues_that_held_a_whole_catalogue_start_afresh_once_drained(
    sqlite_db, memshop: MemShop, clock
) -> None:  # type: ignore[no-untyped-def]
    """Every SKU is planned at start and a resync queues all: once those drain, a dispatch
    walks only what is queued, not the slots the whole catalogue once took (CPython never
    shrinks a set's or a dict's table; at 100,000 SKUs each dispatch walked megabytes)."""
    for i in range(5000):
        memshop.add(f"i{i}", f"S-{i}", 3)
    async with _running(sqlite_db, memshop, clock) as reconciler:
        reconciler.scheduler.resync()
        await settle(reconciler, timeout=60)
        sched = reconciler.scheduler
        for queue in (sched.pending_skus, sched.pending_reads):
            assert not queue and sys.getsizeof(queue) == sys.getsizeof(type(queue)())
