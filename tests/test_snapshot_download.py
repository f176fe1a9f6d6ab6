"""A joiner's download of the master's snapshot (`agent.join_import`), against a master that
answers as this release does (paged, and restarted half-way) and as an earlier release does
(the whole snapshot in one answer): what is staged is the master's cut, whole."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlmodel import select

from agent import ledger
from agent.db import Database
from agent.join_import import JoinImport
from agent.ledger import NewEvent
from agent.models import Identity
from agent.snapshots import SnapshotGone, Spool
from agent.wire import snapshot_to_wire
from tests.support.clock import FastClock, StillClock

SKUS = [f"SKU-{i:03d}" for i in range(11)]


async def _database(path: Path, domain: str) -> tuple[Database, Identity]:
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.upgrade()
    me = Identity(id=1, domain=domain, epoch="e1", public_key="k", created_at=0)
    async with db.sessions.begin() as session:
        session.add(me)
    async with db.sessions() as session:
        return db, (await session.exec(select(Identity))).one()


class _Roster:
    async def audience(self, domain: str) -> str:
        return f"key of {domain}"


class _Master:
    """The master's side of the two calls, on a real ledger and spool: as this release
    answers, or (`earlier`) as a release before paging did, ignoring `paged`."""

    def __init__(self, db: Database, spool: Spool, *, earlier: bool = False) -> None:
        self.db, self.spool, self.earlier = db, spool, earlier
        self.restart_at: int | None = None  # the page whose first ask finds it restarted
        self.asked: list[Any] = []

    async def call(
        self, url: str, audience: str, method: str, path: str, body: Any
    ) -> tuple[int, dict[str, Any]]:
        self.asked.append((path, body.get("page")))
        if path == "/peer/snapshot":
            if self.earlier or body.get("paged") is not True:
                return 200, snapshot_to_wire(await self.db.read(ledger.snapshot))
            return 200, await self.spool.make(self.db, joiner="joiner.example.com")
        if body["page"] == self.restart_at:
            self.restart_at = None
            self.spool.clear()  # what a restart does: no joiner can ask for an earlier id
        try:
            pools = self.spool.page(body["snapshot"], body["page"])
        except SnapshotGone as exc:
            return 410, {"error": "snapshot_gone", "message": str(exc)}
        return 200, {"snapshot": body["snapshot"], "page": body["page"], "pools": pools}


async def _master(tmp_path: Path) -> Database:
    db, me = await _database(tmp_path / "master.db", "m.example.com")
    new = [NewEvent(sku, "introduce", count=i, item_created=1.0) for i, sku in enumerate(SKUS)]
    new.append(NewEvent("SKU-003", "change", delta=-2))
    await db.run(lambda conn: ledger.append(conn, me, new, 1.0, lambda _e: "proof"))
    return db


def _joiner(db: Database, me: Identity, master: _Master) -> JoinImport:
    return JoinImport(
        db=db, identity=me, clock=FastClock(), call=master.call, roster=_Roster(),  # type: ignore[arg-type]
        mode=None, importer=None, replicator=None, reconciler=None,  # type: ignore[arg-type]
    )  # fmt: skip


async def _installed_pools(db: Database, me: Identity, head: ledger.SnapshotHead) -> dict:
    await db.run(lambda conn: ledger.install(conn, head, me, 2.0, lambda _e: "proof"))
    async with db.sessions() as session:
        return {s: p.value for s, p in (await ledger.get_pools(session, SKUS)).items()}


async def test_a_download_cut_short_by_a_master_restart_starts_again_and_stages_all(
    tmp_path: Path,
) -> None:
    master_db = await _master(tmp_path)
    master = _Master(master_db, Spool(tmp_path / "spool", StillClock(), page_size=3))
    master.restart_at = 2
    db, me = await _database(tmp_path / "joiner.db", "j.example.com")
    try:
        head = await _joiner(db, me, master)._download("m.example.com", "http://m")
        pages = [page for path, page in master.asked if path == "/peer/snapshot_page"]
        assert pages == [0, 1, 2, 0, 1, 2, 3]  # page 2 was gone: a new snapshot, all of it
        assert head.vector == {("m.example.com", "e1"): 12}
        expected = {sku: i for i, sku in enumerate(SKUS)} | {"SKU-003": 1}
        assert await _installed_pools(db, me, head) == expected
        assert await db.read(ledger.staged_count) == 0
    finally:
        await db.dispose()
        await master_db.dispose()


async def test_a_master_of_an_earlier_release_sends_it_whole_and_it_is_staged_the_same(
    tmp_path: Path,
) -> None:
    master_db = await _master(tmp_path)
    master = _Master(master_db, Spool(tmp_path / "spool", StillClock()), earlier=True)
    db, me = await _database(tmp_path / "joiner.db", "j.example.com")
    try:
        head = await _joiner(db, me, master)._download("m.example.com", "http://m")
        assert master.asked == [("/peer/snapshot", None)]  # one answer, no pages
        expected = {sku: i for i, sku in enumerate(SKUS)} | {"SKU-003": 1}
        assert await _installed_pools(db, me, head) == expected
    finally:
        await db.dispose()
        await master_db.dispose()


class _Replicator:
    def __init__(self) -> None:
        self.forgot = 0

    def forget_gaps(self) -> None:
        self.forgot += 1


async def test_a_rebase_on_a_snapshot_older_than_what_was_folded_here_is_given_up(
    tmp_path: Path,
) -> None:
    # Seed 308571: the source chosen lacked events this agent had folded, so its snapshot
    # could never be the base, and the rebase asked it again and again for ever. Now it is
    # given up at once, said in the sync log, and the gap judged again.
    from agent import synclog
    from agent.importer import REBASE

    master_db = await _master(tmp_path)
    master = _Master(master_db, Spool(tmp_path / "spool", StillClock(), page_size=3))
    db, me = await _database(tmp_path / "joiner.db", "j.example.com")
    sales = [NewEvent("SKU-001", "introduce", count=5, item_created=1.0)]
    sales += [NewEvent("SKU-001", "change", delta=-1)] * 3
    await db.run(lambda conn: ledger.append(conn, me, sales, 1.0, lambda _e: "proof"))
    await db.run(lambda conn: ledger.compact(conn, {("j.example.com", "e1"): 4}, 100))
    replicator = _Replicator()
    joiner = _joiner(db, me, master)
    joiner.replicator = replicator  # type: ignore[assignment]
    try:
        joiner.rebase("m.example.com", "http://m")
        assert joiner.rebasing is not None
        await asyncio.wait_for(joiner.rebasing, 30)  # before: asked again for ever
        assert [path for path, _ in master.asked].count("/peer/snapshot") == 1  # not again
        assert await db.get_state(REBASE, None) is None  # not resumed after a restart
        assert await db.read(ledger.staged_count) == 0
        async with db.sessions() as session:
            pools = await ledger.get_pools(session, ["SKU-001", "SKU-003"])
            entries = await synclog.query_log(session, kind="history_folded")
        assert {s: p.value for s, p in pools.items()} == {"SKU-001": 2}  # its own base kept
        assert any("not re-importing from m.example.com" in e.message for e in entries)
        assert replicator.forgot == 1  # the members' next answers name another source
    finally:
        await db.dispose()
        await master_db.dispose()


async def test_the_groups_rules_and_bundles_are_taken_before_any_page(tmp_path: Path) -> None:
    # a joiner's import must know which of its products are bundles before it sees a count
    master_db = await _master(tmp_path)
    master = _Master(master_db, Spool(tmp_path / "spool", StillClock(), page_size=3))
    record = {"subject": "bundle:CASE", "body": {"components": []}, "by": "m.example.com"}
    real_call = master.call

    async def call(*args: Any) -> tuple[int, dict[str, Any]]:
        status, answer = await real_call(*args)
        return status, ({**answer, "rules": [record]} if args[3] == "/peer/snapshot" else answer)

    db, me = await _database(tmp_path / "joiner.db", "j.example.com")
    joiner = _joiner(db, me, master)
    joiner.call = call
    heard: list[tuple[Any, str, int]] = []

    async def on_rules(raw: Any, via: str) -> None:
        heard.append((raw, via, len(master.asked)))

    joiner.on_rules = on_rules
    try:
        await joiner._download("m.example.com", "http://m")
    finally:
        await db.dispose()
        await master_db.dispose()
    assert heard == [([record], "m.example.com", 1)]  # after the head, before page 0
