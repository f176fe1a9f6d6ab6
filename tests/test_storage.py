"""The storage layer on both SQLite and the real PostgreSQL: migrations, ledger, log paging."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import select

from agent import ledger, synclog
from agent.db import CHECKPOINT_EVERY, Database, put_state
from agent.journal import StateJournal
from agent.ledger import NewEvent, Pool
from agent.models import (
    EventRow,
    Identity,
    ItemRow,
    JoinRequest,
    LogEntry,
    PeerRow,
    PendingWrite,
    PoolRow,
    VectorEntry,
)
from agent.snapshots import SnapshotGone, Spool
from agent.wire import pools_from_wire
from tests.support.clock import StillClock


async def test_migrations_create_every_table_and_are_idempotent(db_url: str) -> None:
    db = Database(db_url)
    try:
        await db.upgrade()
        await db.upgrade()  # a restart upgrades again: nothing to do, nothing breaks
        async with db.engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
            version = (await conn.execute(sa.text("select version_num from alembic_version"))).all()
    finally:
        await db.dispose()
    assert {"identity", "item", "pool", "event", "vector", "pending_write", "sync_log"} <= names
    assert "incoming_pool" in names  # 0003: a joiner's snapshot, staged page by page
    assert version == [("0006",)]


def test_the_schema_head_the_agent_checks_at_start_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from agent.db import SCHEMA_HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [SCHEMA_HEAD]


# SQLite's reflection cannot see an expression index (ix_pool_count): it is checked by its SQL
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
async def test_the_schema_is_exactly_what_the_models_declare(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    db = Database(db_url)
    try:
        await db.upgrade()
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), SQLModel.metadata)
            )
            if db_url.startswith("sqlite"):
                sql = "SELECT sql FROM sqlite_master WHERE name = 'ix_pool_count'"
                made = (await conn.execute(sa.text(sql))).scalar_one()
                assert "(base + deltas)" in made and "WHERE base IS NOT NULL" in made
    finally:
        await db.dispose()
    assert diff == []


async def _plan(conn: Any, sqlite: bool, table: str, sql: str) -> str:
    """The engine's plan for `sql` (no parameters), after its statistics of `table`."""
    await conn.execute(sa.text("ANALYZE" if sqlite else f"ANALYZE {table}"))
    explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
    return " ".join(str(step) for step in (await conn.execute(sa.text(explain + sql))).all())


async def test_the_imports_count_of_items_waiting_for_cut_over_uses_its_index(
    db_url: str,
) -> None:
    from sqlmodel import col, func, select

    from agent.models import ItemRow

    db = Database(db_url)
    query = select(func.count()).select_from(ItemRow).where(col(ItemRow.cutover_pending).is_(True))
    try:
        await db.upgrade()
        async with db.engine.begin() as conn:
            rows = [{"i": f"gid://v/{i}", "s": f"S{i:05d}", "p": i % 50 == 0} for i in range(3000)]
            await conn.execute(
                sa.text(
                    "INSERT INTO item (item_id, sku, title, created_at, cutover_pending, "
                    "updated_at) VALUES (:i, :s, '', 0, :p, 0)"
                ),
                rows,
            )
            compiled = query.compile(conn.sync_connection, compile_kwargs={"literal_binds": True})
            plan = await _plan(conn, db_url.startswith("sqlite"), "item", str(compiled))
            waiting = (await conn.execute(query)).scalar_one()
    finally:
        await db.dispose()
    assert "ix_item_cutover" in plan, plan
    assert waiting == 3000 // 50


async def test_the_alerts_read_of_low_pools_uses_the_count_index(db_url: str) -> None:
    from agent.alerts import LOW_POOLS

    db = Database(db_url)
    query = LOW_POOLS.replace("?", "5")
    try:
        await db.upgrade()
        async with db.engine.begin() as conn:
            rows = [{"s": f"S{i:05d}", "b": 100, "d": -(i % 100)} for i in range(3000)]
            await conn.execute(
                sa.text("INSERT INTO pool (sku, base, deltas, updated_at) VALUES (:s, :b, :d, 0)"),
                rows,
            )
            plan = await _plan(conn, db_url.startswith("sqlite"), "pool", query)
            low = (await conn.execute(sa.text(query))).all()
    finally:
        await db.dispose()
    assert "ix_pool_count" in plan, plan
    assert len(low) == 3000 // 100 * 5  # counts 100 down to 1: five of each hundred


async def test_a_database_of_the_previous_release_upgrades_and_keeps_its_rows(
    db_url: str,
) -> None:
    from alembic import command

    from agent.db import alembic_config

    db = Database(db_url)
    try:

        def to_0001(conn: Any) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")

        async with db.engine.begin() as conn:
            await conn.run_sync(to_0001)
            for sql in (
                "INSERT INTO event (origin, epoch, seq, sku, kind, delta, count, item_created,"
                " cause, at) VALUES ('a.example.com', 'e1', 1, 'A', 'change', -2, NULL, NULL,"
                " 'order', 5.0)",
                "INSERT INTO peer (domain, agent_url, public_key, fingerprint, state, changed_at,"
                " joined_at, last_contact, last_error, acked) VALUES ('b.example.com',"
                " 'http://b', 'k', 'SHA256:b', 'active', 1.0, 1.0, NULL, '', '[]')",
                "INSERT INTO join_request (domain, direction, agent_url, public_key, fingerprint,"
                " nonce, received_at, state) VALUES ('c.example.com', 'incoming', 'http://c',"
                " 'k', 'SHA256:c', 'n', 2.0, 'pending')",
                "INSERT INTO pool (sku, base, base_created, base_origin, deltas, updated_at)"
                " VALUES ('A', 10, 1.0, 'a.example.com', -2, 5.0)",
                "INSERT INTO vector (origin, epoch, seq) VALUES ('a.example.com', 'e1', 1)",
            ):
                await conn.execute(sa.text(sql))
        await db.upgrade()
        async with db.sessions() as s:
            event = (await s.exec(select(EventRow))).one()
            peer = (await s.exec(select(PeerRow))).one()
            request = (await s.exec(select(JoinRequest))).one()
            pool = (await s.exec(select(PoolRow))).one()
            entry = (await s.exec(select(VectorEntry))).one()
    finally:
        await db.dispose()
    # 0004: nothing folded yet, every count as it was
    assert (pool.value, pool.deltas, pool.folded) == (8, -2, 0)
    assert (entry.seq, entry.folded) == (1, 0)
    assert (event.seq, event.delta, event.proof) == (1, -2, "")  # signed at the agent's start
    assert (peer.domain, peer.state, peer.proof, peer.admission) == (
        "b.example.com",
        "active",
        "",
        "",
    )
    assert (request.domain, request.fingerprint, request.state) == (
        "c.example.com",
        "SHA256:c",
        "pending",
    )


async def test_local_events_get_consecutive_seqs_and_move_pool_and_vector(
    database: Database,
) -> None:
    async with database.sessions.begin() as s:
        me = (await s.exec(select(Identity))).one()
        await ledger.append_local(
            s, me, [NewEvent("A", "introduce", count=10, item_created=5.0)], 1.0, _seq_proof
        )
    async with database.sessions.begin() as s:
        changes = [NewEvent("A", "change", delta=-2), NewEvent("A", "change", delta=-1)]
        await ledger.append_local(s, me, changes, 2.0, _seq_proof)
    async with database.sessions() as s:
        seqs = [e.seq for e in await s.exec(select(EventRow).order_by(EventRow.seq))]
        pool = await ledger.get_pool(s, "A")
        vector = await ledger.load_vector(s)
    assert seqs == [1, 2, 3]
    assert pool is not None and pool.value == 7
    assert vector == {("a.example.com", "e1"): 3}


def _seq_proof(event: EventRow) -> str:
    return f"proof of {event.seq}"


async def test_a_spooled_snapshot_is_one_cut_served_a_page_at_a_time(
    database: Database, tmp_path: Path
) -> None:
    async with database.sessions.begin() as s:
        me = (await s.exec(select(Identity))).one()
        new = [NewEvent(sku, "introduce", count=10, item_created=1.0) for sku in "GFEDCBA"]
        await ledger.append_local(s, me, new, 1.0, _seq_proof)
    clock = StillClock()
    spool = Spool(tmp_path / "spool", clock, page_size=3, keep=600.0)
    head = await spool.make(database, joiner="c.example.com")
    async with database.sessions.begin() as s:  # a sale after the cut
        await ledger.append_local(s, me, [NewEvent("A", "change", delta=-4)], 2.0, _seq_proof)
    snapshot = head["snapshot"]
    assert (head["pages"], head["pool_count"]) == (3, 7)
    assert head["vector"] == [["a.example.com", "e1", 7]]  # the sale's seq 8 is not in it
    pages = [pools_from_wire(spool.page(snapshot, n), 3) for n in range(3)]
    assert [len(page) for page in pages] == [3, 3, 1]
    pools = [p for page in pages for p in page]
    assert [p.sku for p in pools] == list("ABCDEFG")  # SKU order: keyset pages
    assert {p.value for p in pools} == {10}  # A before its sale
    (spooled,) = (tmp_path / "spool").iterdir()
    assert stat.S_IMODE(spooled.stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="page 3 is not in 0…2"):
        spool.page(snapshot, 3)
    with pytest.raises(SnapshotGone):
        spool.page("0123456789abcdef", 0)
    clock.t += 601  # a joiner that did not come back within `keep`: it starts again
    with pytest.raises(SnapshotGone):
        spool.page(snapshot, 0)
    assert list((tmp_path / "spool").iterdir()) == []


async def test_a_staged_snapshot_installs_as_the_base_and_leaves_nothing_staged(
    database: Database,
) -> None:
    async with database.sessions.begin() as s:
        me = (await s.exec(select(Identity))).one()
        own = [NewEvent(sku, "introduce", count=5, item_created=1.0) for sku in "AYZ"]
        await ledger.append_local(s, me, own, 1.0, _seq_proof)
        for item_id, sku, excluded in (("i1", "A", None), ("i2", "Z", None), ("i3", "Y", "x")):
            s.add(ItemRow(item_id=item_id, sku=sku, published=5, excluded=excluded))
    group = [Pool("A", 40, 0.5, "m.example.com", -3), Pool("B", None, None, None, -1)]
    await database.run(lambda conn: ledger.stage(conn, group[:1]))
    await database.run(lambda conn: ledger.stage(conn, group))  # a page again: kept once
    assert await database.read(ledger.staged_counts) == {"A": 37}
    head = ledger.SnapshotHead(vector={("m.example.com", "e9"): 12}, extra=[])
    pools, epoch = await database.run(lambda conn: ledger.install(conn, head, me, 3.0, _seq_proof))
    assert pools == 2 and epoch != "e1"
    async with database.sessions() as s:
        held = await ledger.get_pools(s, ["A", "B", "Y", "Z"])
        vector = await ledger.load_vector(s)
        items = {i.item_id: (i.published, i.cutover_pending) for i in await s.exec(select(ItemRow))}
    assert held["A"].value == 37 and held["B"].value is None
    assert held["Z"].value == 5  # only this shop has Z: introduced to the group in the new epoch
    assert "Y" not in held  # its one item is excluded: nothing to introduce
    assert vector == {("m.example.com", "e9"): 12, ("a.example.com", epoch): 1}
    # the group's SKU waits for its cut-over write; Z stays as it was; Y is read afresh
    assert items == {"i1": (5, True), "i2": (5, False), "i3": (None, False)}
    assert await database.read(ledger.staged_count) == 0


async def test_a_local_event_never_takes_a_seq_already_stored(database: Database) -> None:
    async with database.sessions.begin() as s:
        s.add(EventRow(origin="a.example.com", epoch="e1", seq=7, sku="A", kind="change"))
    async with database.sessions.begin() as s:
        me = (await s.exec(select(Identity))).one()
        rows = await ledger.append_local(
            s, me, [NewEvent("A", "change", delta=-1)], 1.0, _seq_proof
        )
    assert [(r.seq, r.proof) for r in rows] == [(8, "proof of 8")]


async def test_inbox_applies_each_event_once_and_vector_waits_for_gaps(database: Database) -> None:
    def ev(seq: int, delta: int) -> EventRow:
        return EventRow(origin="b", epoch="eb", seq=seq, sku="A", kind="change", delta=delta)

    async with database.sessions.begin() as s:
        assert await ledger.apply_event(s, ev(1, -1), 0)
        assert await ledger.apply_event(s, ev(3, -3), 0)  # arrives ahead of 2
    async with database.sessions.begin() as s:
        assert not await ledger.apply_event(s, ev(1, -1), 0)  # duplicate: ignored
        assert (await s.get(VectorEntry, ("b", "eb"))).seq == 1  # type: ignore[union-attr]
        assert await ledger.apply_event(s, ev(2, -2), 0)
    async with database.sessions() as s:
        assert (await s.get(VectorEntry, ("b", "eb"))).seq == 3  # type: ignore[union-attr]
        pool = await ledger.get_pool(s, "A")
    assert pool is not None and pool.deltas == -6 and pool.value is None  # no introduce yet


async def test_earliest_introduce_is_the_base_whatever_the_arrival_order(
    database: Database,
) -> None:
    late = EventRow(
        origin="b", epoch="x", seq=1, sku="S", kind="introduce", count=4, item_created=200.0
    )
    early = EventRow(
        origin="c", epoch="y", seq=1, sku="S", kind="introduce", count=9, item_created=100.0
    )
    tie = EventRow(
        origin="a", epoch="z", seq=1, sku="S", kind="introduce", count=1, item_created=100.0
    )
    async with database.sessions.begin() as s:
        for e in (late, early):
            await ledger.apply_event(s, e, 0)
    async with database.sessions() as s:
        assert (await ledger.get_pool(s, "S")).value == 9  # type: ignore[union-attr]
    async with database.sessions.begin() as s:
        await ledger.apply_event(s, tie, 0)  # same time, lower origin: wins the tie
    async with database.sessions() as s:
        assert (await ledger.get_pool(s, "S")).value == 1  # type: ignore[union-attr]


async def test_sync_log_pages_newest_first_and_tails_forward(database: Database) -> None:
    async with database.sessions.begin() as s:
        for n in range(25):
            synclog.record(s, "change", float(n), sku="A" if n % 2 else "B", delta=-1)
    async with database.sessions() as s:
        page1 = await synclog.query_log(s, limit=10)
        page2 = await synclog.query_log(s, limit=10, before_id=page1[-1].id)
        only_a = await synclog.query_log(s, sku="A", limit=100)
        tail = await synclog.query_log(s, after_id=page1[0].id - 3, limit=100)
    ids1, ids2 = [e.id for e in page1], [e.id for e in page2]
    assert ids1 == sorted(ids1, reverse=True) and max(ids2) < min(ids1)  # type: ignore[type-var]
    assert len(only_a) == 12 and all(e.sku == "A" for e in only_a)
    assert [e.id for e in tail] == sorted(e.id for e in tail) and len(tail) == 3  # type: ignore[type-var]
    assert all(isinstance(e, LogEntry) for e in tail)


async def test_a_batch_from_a_new_origin_applies_each_event_once(database: Database) -> None:
    def ev(seq: int, delta: int) -> EventRow:
        return EventRow(origin="c", epoch="ec", seq=seq, sku="B", kind="change", delta=delta)

    batch = [ev(2, -2), ev(1, -1), ev(1, -1), ev(4, -4)]  # unordered, a duplicate, a gap
    async with database.sessions.begin() as s:
        applied = await ledger.apply_events(s, batch, 0)
    assert sorted(e.seq for e in applied) == [1, 2, 4]
    async with database.sessions.begin() as s:
        again = await ledger.apply_events(s, [ev(1, -1), ev(3, -3), ev(4, -4)], 0)
    assert [e.seq for e in again] == [3]
    async with database.sessions() as s:
        assert (await s.get(VectorEntry, ("c", "ec"))).seq == 4  # type: ignore[union-attr]
        assert (await ledger.get_pool(s, "B")).deltas == -10  # type: ignore[union-attr]


async def test_a_channel_journal_survives_a_reopen_and_drops_only_orphans(db_url: str) -> None:
    db = Database(db_url)
    try:
        await db.upgrade()
        journal = StateJournal(db, "shopline")
        await journal.put("batch-1", {"0:7": {"pending": {"base": [5, 1.0, 2.0]}}})
        await journal.put("batch-2", {"0:8": {"result": {"status": "ok"}}})
        await StateJournal(db, "other").put("batch-1", "another channel's note")
        async with db.transaction() as session:  # the core still means to send batch-1
            session.add(PendingWrite(key="batch-1", writes="[]", created_at=1.0))
    finally:
        await db.dispose()
    db = Database(db_url)  # as after a restart
    try:
        journal = StateJournal(db, "shopline")
        assert await journal.get("batch-2") == {"0:8": {"result": {"status": "ok"}}}
        assert await journal.drop_orphans() == 1  # batch-2 is settled: the core won't retry it
        assert await journal.get("batch-1") == {"0:7": {"pending": {"base": [5, 1.0, 2.0]}}}
        assert await journal.get("batch-2") is None
        assert await StateJournal(db, "other").get("batch-1") == "another channel's note"
        await journal.delete("batch-1")
        await journal.delete("batch-1")  # forgetting twice is fine
        assert await journal.get("batch-1") is None
        await journal.put("batch-3", {"0:9": {}})  # a note made since the start goes as well
        await journal.delete("batch-3")
        assert await journal.get("batch-3") is None
    finally:
        await db.dispose()


async def test_sync_log_prune_drops_only_entries_older_than_the_cut(database: Database) -> None:
    async with database.sessions.begin() as s:
        for n in range(30):
            synclog.record(s, "change", float(n), sku="A", delta=-1)
    assert await synclog.prune(database, before=17.0, batch=5) == 17  # in four transactions
    assert await synclog.prune(database, before=17.0, batch=5) == 0
    async with database.sessions() as s:
        left = [e.at for e in await s.exec(select(LogEntry).order_by(LogEntry.id))]
    assert left == [float(n) for n in range(17, 30)]


_ME = Identity(id=1, domain="a.example.com", epoch="e1", public_key="k", created_at=0)


def _sale(conn: sa.Connection) -> list[Any]:
    """A unit of work: one sale of SKU A, this shop's next event."""
    return ledger.append(conn, _ME, [NewEvent("A", "change", delta=-1)], 5.0, _seq_proof)


def _sale_then_failure(conn: sa.Connection) -> None:
    _sale(conn)
    raise RuntimeError("the unit fails after its statements")


async def test_a_unit_of_work_commits_whole_or_not_at_all(database: Database) -> None:
    """`Database.run` (the hot path's transactions) on SQLite and PostgreSQL: a unit that
    fails leaves nothing; one that returns is seen by the next read, and by the ORM."""
    with pytest.raises(RuntimeError):
        await database.run(_sale_then_failure)
    assert await database.read(ledger.vector) == {}
    rows = await database.run(_sale)
    assert [r.seq for r in rows] == [1]
    assert await database.read(ledger.vector) == {("a.example.com", "e1"): 1}
    pools = await database.read(lambda conn: ledger.pools(conn, ["A"]))
    assert pools["A"].deltas == -1 and pools["A"].updated_at == 5.0
    async with database.sessions() as s:
        stored = (await s.exec(select(EventRow))).all()
    assert [(e.sku, e.delta, e.proof) for e in stored] == [("A", -1, _seq_proof(rows[0]))]


async def test_a_quick_unit_commits_whole_or_not_at_all(database: Database) -> None:
    """A quick unit (on the event loop's own connection with SQLite) keeps the unit's promise:
    a failure leaves nothing, a return is seen by the next unit of either kind."""
    with pytest.raises(RuntimeError):
        await database.run(_sale_then_failure, quick=True)
    assert await database.read(ledger.vector, quick=True) == {}
    assert [r.seq for r in await database.run(_sale, quick=True)] == [1]
    assert [r.seq for r in await database.run(_sale)] == [2]  # the thread's connection sees it
    assert await database.read(ledger.vector, quick=True) == {("a.example.com", "e1"): 2}
    assert await database.read(ledger.vector) == {("a.example.com", "e1"): 2}


async def test_a_quick_unit_never_waits_on_the_loop_for_another_writer(tmp_path: Path) -> None:
    """Another process holds SQLite's write lock: a quick unit does not block the event loop
    waiting for it (its connection does not wait), it waits in the database thread and
    commits once the lock is free; a quick read meanwhile goes on (WAL)."""
    path = tmp_path / "core.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.upgrade()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # the other writer, e.g. a CLI command
        other.execute("INSERT INTO agent_state (key, value) VALUES ('other', '1')")
        unit = asyncio.create_task(db.run(lambda conn: put_state(conn, "mine", 2), quick=True))
        started = time.monotonic()
        for _ in range(10):  # the loop keeps turning while the unit waits
            await asyncio.sleep(0.02)
        assert time.monotonic() - started < 2.0  # not held for SQLite's busy timeout (10 s)
        assert not unit.done()
        assert await db.get_state("mine") is None  # a quick read is not held up either
        other.execute("COMMIT")
        await asyncio.wait_for(unit, 10)
        assert await db.get_state("mine") == 2 and await db.get_state("other") == 1
        await db.set_state("after", 3)  # and the next quick unit runs on the loop again
        assert await db.get_state("after") == 3
    finally:
        other.close()
        await db.dispose()


async def test_quick_units_leave_the_checkpoints_to_the_database_thread(tmp_path: Path) -> None:
    """The loop's connection never checkpoints (a checkpoint syncs to disk): its commits pile
    up in the write-ahead log beyond the 1,000 pages at which SQLite would checkpoint by
    itself; at `CHECKPOINT_EVERY` quick commits a database thread copies them into the
    database file."""
    path = tmp_path / "core.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.upgrade()
    try:
        await db.set_state("k", 0)
        wal = path.with_name(path.name + "-wal")
        page = 4096
        before = path.stat().st_size
        for _ in range(CHECKPOINT_EVERY - 2):  # 16 kB of new text each: five pages a commit
            await db.set_state("k", os.urandom(8_000).hex())
        frames = wal.stat().st_size // (page + 24)
        assert frames > 1000, frames  # never checkpointed (the log would have wrapped)
        assert path.stat().st_size == before  # nothing copied into the database yet
        await db.set_state("k", "last")  # the CHECKPOINT_EVERY-th: a checkpoint is started
        checkpoint = db._checkpoint  # the database thread's, awaited to look at its effect
        assert checkpoint is not None
        await checkpoint
        assert path.stat().st_size > 10 * before  # the log's pages are in the database file
        assert await db.get_state("k") == "last"
    finally:
        await db.dispose()


async def test_a_peers_contact_is_noted_and_its_failures_logged_once(database: Database) -> None:
    """What an admin sees of a peer (`record_contact`): a failure logged once however often it
    repeats, the reconnection logged, the acknowledged vector kept when an answer has none."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.group_rules import RuleBook
    from agent.replication import Replicator
    from agent.roster import Roster
    from agent.rules import ShopRules, decide
    from agent.signing import public_key_b64
    from agent.syncmode import SyncMode
    from tests.support.clock import FastClock

    async with database.sessions.begin() as s:
        identity = (await s.exec(select(Identity))).one()
        s.add(
            PeerRow(domain="b.example.com", agent_url="http://b", public_key="k", fingerprint="f")
        )

    async def no_call(*_args: Any) -> tuple[int, dict[str, Any]]:
        raise AssertionError("no peer calls here")

    clock = FastClock()
    key = Ed25519PrivateKey.generate()
    identity.public_key = public_key_b64(key)  # the fixture's placeholder is no key
    roster = Roster(
        db=database, identity=identity, private_key=key, public_url="http://a", clock=clock
    )
    replicator = Replicator(
        db=database,
        identity=identity,
        clock=clock,
        call=no_call,
        on_pool_change=lambda _skus: None,
        roster=roster,
        rules=RuleBook(
            db=database,
            roster=roster,
            clock=clock,
            call=no_call,
            allocate=lambda sku, pool, rules, priority: decide(sku, pool, "a", rules, priority),
            shop_rules=ShopRules(),
        ),
        mode=SyncMode(database),
    )
    await replicator.record_contact("b.example.com", error="ClientConnectorError: refused")
    await replicator.record_contact("b.example.com", error="ClientConnectorError: refused")
    await replicator.record_contact(
        "b.example.com", acked={("a.example.com", "e1"): 3}, sent="3 events up to seq 3"
    )
    await replicator.record_contact("b.example.com", error="")  # a pull answer without a vector
    async with database.sessions() as s:
        kinds = [e.kind for e in await s.exec(select(LogEntry).order_by(LogEntry.id))]
        peer = await s.get(PeerRow, "b.example.com")
    assert kinds == ["peer_unreachable", "batch_sent", "peer_reconnected"]
    assert peer is not None and peer.last_error == "" and peer.last_contact is not None
    assert peer.acked == '[["a.example.com", "e1", 3]]'


async def test_an_install_carries_the_own_changes_the_group_lacks_into_the_new_epoch(
    database: Database,
) -> None:
    async with database.sessions.begin() as s:
        me = (await s.exec(select(Identity))).one()
        before = [NewEvent("A", "introduce", count=9, item_created=1.0)]
        before.append(NewEvent("A", "change", delta=-2))  # seq 2: the group counted it
        await ledger.append_local(s, me, before, 1.0, _seq_proof)
        never_sent = [NewEvent("A", "change", delta=-1), NewEvent("B", "change", delta=-7)]
        out = [NewEvent("A", "change", delta=-3), NewEvent("B", "change", delta=4)]
        out += [NewEvent("A", "change", delta=1), NewEvent("C", "change", delta=5)]
        rows = await ledger.append_local(s, me, never_sent + out, 2.0, _seq_proof)
    held_beyond = rows[1]  # seq 4 (B -7): the master holds it ahead of a gap at seq 3
    group = [Pool("A", 50, 0.5, "m.example.com", 0), Pool("B", 20, 0.5, "m.example.com", -1)]
    head = ledger.SnapshotHead(
        vector={("m.example.com", "e9"): 3, ("a.example.com", "e1"): 2}, extra=[held_beyond]
    )
    lacks = await database.read(lambda c: ledger.group_lacks(c, ("a.example.com", "e1"), head))
    assert lacks == {"A": -3, "B": 4, "C": 5}  # seqs 3, 5-8: not 1-2 (counted) nor 4 (held)
    await database.run(lambda conn: ledger.stage(conn, group))
    _, epoch = await database.run(
        lambda conn: ledger.install(conn, head, me, 3.0, _seq_proof, carry=True)
    )
    async with database.sessions() as s:
        held = await ledger.get_pools(s, ["A", "B", "C"])
        carried = list(await s.exec(select(EventRow).where(EventRow.epoch == epoch)))
    assert (held["A"].value, held["B"].value) == (47, 23)  # the group's counts moved
    assert "C" not in held  # not the group's SKU (and no item of it here): nothing to carry
    assert sorted((e.sku, e.delta, e.cause) for e in carried) == [
        ("A", -3, ledger.WHILE_OUT),
        ("B", 4, ledger.WHILE_OUT),
    ]
