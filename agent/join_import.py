"""A joiner's import of the master's snapshot after the welcome (DESIGN §8).

The snapshot becomes this agent's base in one transaction that also notes it is installed,
so a joiner killed before that point takes the snapshot again on restart, and one killed
after it goes on from there (its sales since are events of the new base, never dropped).
Then the importer writes the group's counts into the shop (the cut-over), and sync runs live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp
import structlog
from sqlalchemy import Connection
from sqlmodel import select

from agent import ledger, synclog
from agent.causes import logged
from agent.clock import Clock
from agent.db import Database, drop_state, put_state, read_state, write_state
from agent.importer import JOIN_OPTIONS, LEFT_GROUP, REBASE, SNAPSHOT_DOWNLOAD, Importer
from agent.ledger import Pool, SnapshotHead
from agent.models import EventRow, Identity, StateEntry
from agent.reconcile import Reconciler
from agent.replication import Replicator
from agent.roster import Roster
from agent.syncmode import SyncMode
from agent.transport import PeerCaller
from agent.wire import (
    MAX_PAGE,
    event_from_wire,
    event_to_wire,
    pools_from_wire,
    snapshot_from_wire,
    snapshot_head_from_wire,
    vector_from_wire,
    vector_to_wire,
)

__all__ = ["JoinImport"]

log = structlog.get_logger(__name__)


class _Backoff:
    """The waits between a join's retries: 0.2 s, doubling, at most 30 s."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.delay = clock, 0.2

    async def wait(self) -> None:
        await self.clock.sleep(self.delay)
        self.delay = min(30.0, self.delay * 2)


class JoinImport:
    """Takes the master's snapshot as this agent's base, then hands over to the importer."""

    def __init__(
        self,
        *,
        db: Database,
        identity: Identity,
        clock: Clock,
        call: PeerCaller,
        roster: Roster,
        mode: SyncMode,
        importer: Importer,
        replicator: Replicator,
        reconciler: Reconciler,
        on_rules: Callable[[Any, str], Awaitable[Any]] | None = None,
    ) -> None:
        self.db = db
        #: takes the rules records a snapshot's head carries (`RuleBook.heard`)
        self.on_rules = on_rules
        self.identity = identity
        self.clock = clock
        self.call = call
        self.roster = roster
        self.mode = mode
        self.importer = importer
        self.replicator = replicator
        self.reconciler = reconciler
        self.task: asyncio.Task[None] | None = None
        self.rebasing: asyncio.Task[None] | None = None
        #: Told of a snapshot's SKUs just before it is installed (the
        #: simulation's shops watch).
        self.before_install: list[Callable[[set[str]], None]] = []

    @property
    def importing(self) -> bool:
        """True from the welcome until the master's snapshot is this agent's base."""
        return self.task is not None and not self.task.done()

    def rebase(self, domain: str, agent_url: str) -> None:
        """Re-import the group's counts from `domain`'s snapshot while staying a member: every
        peer has folded events this agent lacks (it was away longer than the horizon, or its
        database came back from an old backup). Sync goes on meanwhile; nothing this agent
        holds beyond the snapshot is lost (`ledger.rebase`). Once at a time; resumed after a
        crash (`resume`)."""
        if self.importing or (self.rebasing is not None and not self.rebasing.done()):
            return
        self.rebasing = asyncio.create_task(self._rebase(domain, agent_url), name="rebase")

    async def _rebase(self, domain: str, agent_url: str) -> None:
        if await self.db.get_state(REBASE, None) is None:
            now = self.clock.now()

            def begin(conn: Connection) -> None:
                put_state(conn, REBASE, {"peer": domain, "url": agent_url})
                synclog.insert(
                    conn,
                    [
                        synclog.entry(
                            "history_folded",
                            now,
                            peer=domain,
                            message="every member has folded history this shop lacks (it was "
                            "out of touch longer than the history horizon, or restored from "
                            f"an old backup): re-importing the group's counts from {domain}",
                        )
                    ],
                )

            await self.db.run(begin)
        log.warning("history_folded", peer=domain)
        head = await self._download(domain, agent_url)
        try:
            await self._rebase_on(head, domain)
        except ledger.StaleSnapshot as exc:
            # The source lacks events folded here: it can never be the base. The gap is
            # judged again from the members' next answers (`FoldClaims`), which name a
            # source that holds them, or let a member fill the gap.
            await self._give_up_rebase(domain, str(exc))
            self.replicator.forget_gaps()
            return
        self.replicator.forget_gaps()
        self.reconciler.replan()  # the counts changed: publish them everywhere they differ

    async def _give_up_rebase(self, domain: str, why: str) -> None:
        now = self.clock.now()
        log.info("rebase_abandoned", peer=domain, error=why)

        def give_up(conn: Connection) -> None:
            _forget_download(conn)
            drop_state(conn, REBASE)
            message = (
                f"not re-importing from {domain}: {why}. Waiting for a member that holds "
                "every change this shop folded"
            )
            synclog.insert(
                conn, [synclog.entry("history_folded", now, peer=domain, message=message)]
            )

        await self.db.run(give_up)

    async def _rebase_on(self, head: SnapshotHead, domain: str) -> None:
        now = self.clock.now()

        def install(conn: Connection) -> None:
            pools, kept = ledger.rebase(conn, head, now)
            drop_state(conn, SNAPSHOT_DOWNLOAD)
            drop_state(conn, REBASE)
            message = (
                f"re-imported: {domain}'s snapshot of {pools} SKUs is this shop's base; "
                f"{kept} changes held here that it did not count were kept and counted"
            )
            synclog.insert(conn, [synclog.entry("import", now, peer=domain, message=message)])

        await self.db.run(install)

    def start(self, domain: str, agent_url: str) -> None:
        """Take the master's snapshot in the background (also to resume one after a crash)."""
        self.mode.begin_import()
        self.task = asyncio.create_task(self._import_from(domain, agent_url))

    async def resume(self) -> None:
        """On start: finish a join that a crash interrupted.

        Before the snapshot was installed, the snapshot is taken again. After it was, it is
        never taken again: since the install, the shop's own sales are events of the new base,
        and a second install would drop those not yet sent. The join goes on from the install.
        """
        rebase = await self.db.get_state(REBASE, None)
        if isinstance(rebase, dict):
            self.rebase(rebase["peer"], rebase["url"])
            return
        state = await self.db.get_state("import", {})
        if state.get("phase") != "snapshot" or not state.get("master_url"):
            return
        log.info("import_resumed", peer=state["master"], installed=bool(state.get("installed")))
        if not state.get("installed"):
            self.start(state["master"], state["master_url"])
            return
        self.mode.begin_import()
        report = await self.db.get_state("import_report", None)
        self.task = asyncio.create_task(self._after_install(state["master"], report))

    async def _download(self, domain: str, agent_url: str) -> SnapshotHead:
        """The master's snapshot staged in this agent's database; its head. Asked again
        (backing off) until it is all here; a download a crash cut short goes on at its next
        page, unless the master no longer keeps that snapshot."""
        backoff = _Backoff(self.clock)
        while True:
            try:
                return await self._download_once(domain, agent_url)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                error = str(exc)
            log.info("snapshot_retry", peer=domain, error=error)
            await backoff.wait()

    async def _download_once(self, domain: str, agent_url: str) -> SnapshotHead:
        audience = await self.roster.audience(domain)
        download = await self.db.get_state(SNAPSHOT_DOWNLOAD, None)
        if download is None or download.get("master") != domain:
            download = await self._begin(domain, agent_url, audience)
        elif download["next"]:
            await self._note(
                domain,
                f"snapshot download resumed at page {download['next'] + 1} of "
                f"{download['pages']} ({download['pool_count']} SKUs)",
            )
        while download["next"] < download["pages"]:
            number = download["next"]
            body = {"snapshot": download["snapshot"], "page": number}
            status, answer = await self.call(
                agent_url, audience, "POST", "/peer/snapshot_page", body
            )
            if status == 410:  # the master restarted, or kept it too long: a new snapshot
                await self.db.run(_forget_download)
                raise ValueError(f"page {number}: {answer.get('message', 'snapshot gone')}")
            if status != 200:
                raise ValueError(f"page {number} answered {status}: {answer.get('error')}")
            pools = pools_from_wire(answer.get("pools"), MAX_PAGE)
            download = {**download, "next": number + 1}
            await self.db.run(partial(_stage_page, pools, download))
        staged = await self.db.read(ledger.staged_count)
        if staged != download["pool_count"]:
            await self.db.run(_forget_download)
            raise ValueError(f"{staged} pools arrived, not the {download['pool_count']} announced")
        return SnapshotHead(
            vector=vector_from_wire(download["vector"]),
            extra=[event_from_wire(e) for e in download["extra_events"]],
        )

    async def _begin(self, domain: str, agent_url: str, audience: str) -> dict[str, Any]:
        """Ask for a new snapshot; its download's state, stored with nothing staged yet (or,
        from a master of a release before paging, with the whole snapshot staged)."""
        status, answer = await self.call(
            agent_url, audience, "POST", "/peer/snapshot", {"paged": True}
        )
        if status != 200:
            raise ValueError(f"snapshot answered {status}: {answer.get('error')}")
        if self.on_rules is not None and "rules" in answer:  # before any count is seen
            await self.on_rules(answer["rules"], domain)
        if "snapshot" in answer:
            head, snapshot_id, pages, count = snapshot_head_from_wire(answer)
            whole: list[Pool] = []
        else:  # the whole snapshot in one answer
            snap = snapshot_from_wire(answer)
            head = SnapshotHead(vector=snap.vector, extra=snap.extra)
            snapshot_id, pages, count = "", 0, len(snap.pools)
            whole = snap.pools
        download = {
            "master": domain,
            "snapshot": snapshot_id,
            "pages": pages,
            "next": 0,
            "pool_count": count,
            "vector": vector_to_wire(head.vector),
            "extra_events": [event_to_wire(e) for e in head.extra],
        }

        def begin(conn: Connection) -> None:
            ledger.discard_staged(conn)
            _stage_page(whole, download, conn)

        await self.db.run(begin)
        log.info("snapshot_download", peer=domain, pages=pages, pools=count)
        return download

    async def _note(self, master: str, message: str) -> None:
        async with self.db.transaction() as session:
            synclog.record(session, "import", self.clock.now(), peer=master, message=message)

    async def _import_from(self, domain: str, agent_url: str) -> None:
        """Take the master's snapshot as this agent's base, then sync live (DESIGN §8)."""
        head = await self._download(domain, agent_url)
        report = await self._preflight(domain, head)
        await self.install(head, domain, report)
        await self._after_install(domain, report)

    async def _rejoin(self, master: str) -> bool | None:
        """For a shop joining the group it left before (the master was a member then, and
        this agent's stream is the one it had): whether the owner chose to count the changes
        the group lacks (the default) or discard them. None for any other join."""
        left = await self.db.get_state(LEFT_GROUP, None)
        if (
            not isinstance(left, dict)
            or left.get("epoch") != self.identity.epoch
            or master not in left.get("members", [])
        ):
            return None
        options = await self.db.get_state(JOIN_OPTIONS, {})
        return bool(options.get("while_out", "count") == "count")

    async def _preflight(self, domain: str, head: SnapshotHead) -> dict[str, Any]:
        """The import's pre-flight against the staged snapshot's counts (and, joining the
        group this shop left, the changes of its own that the group lacks)."""
        count = await self._rejoin(domain)
        while_out = None
        if count is not None:
            own = (self.identity.domain, self.identity.epoch)
            while_out = await self.db.read(lambda conn: ledger.group_lacks(conn, own, head))
        backoff = _Backoff(self.clock)
        while True:
            try:  # the pre-flight lists the shop: a 429/5xx must not end the import
                await self.importer.hold_for_import()
                return await self.importer.preflight(
                    await self.db.read(ledger.staged_counts),
                    while_out=while_out,
                    count_while_out=bool(count),
                )
            except Exception as exc:
                log.warning("preflight_retry", peer=domain, error=str(exc))
                await backoff.wait()

    async def _after_install(self, domain: str, report: dict[str, Any] | None) -> None:
        """The snapshot is this agent's base: sync live, and write the cut-over counts."""
        self.mode.end_import()
        await self.replicator.start()
        await self.importer.start(reason="join", master=domain, report=report, mark=False)

    async def install(
        self, head: SnapshotHead, master: str, report: dict[str, Any] | None = None
    ) -> int:
        """Replace this agent's solo ledger by the master's snapshot (staged), in one
        transaction.

        The same transaction notes in the import's state that the snapshot is installed (with
        the pre-flight `report`), so that a restart goes on from here instead of installing a
        snapshot again.
        """
        if self.before_install:
            group = await self.db.read(ledger.staged_skus)
            for listener in self.before_install:
                listener(group)
        count = await self._rejoin(master)
        now = self.clock.now()
        async with self.db.transaction() as session:
            pools, epoch = await ledger.install_snapshot(
                session,
                head,
                self.identity,
                now,
                self.roster.sign_event,
                carry=bool(count),
            )
            left = await session.get(StateEntry, LEFT_GROUP)
            if left is not None:  # in a group again: a later leave notes where it stood
                await session.delete(left)
            carried = list(
                await session.exec(
                    select(EventRow).where(
                        EventRow.origin == self.identity.domain,
                        EventRow.epoch == epoch,
                        EventRow.cause == ledger.WHILE_OUT,
                    )
                )
            )
            held = await ledger.get_pools(session, [e.sku for e in carried])
            for event in carried:  # each in the log, as the change of this shop it is
                pool = held.get(event.sku)
                after = None if pool is None else pool.value
                synclog.record(
                    session,
                    "change",
                    now,
                    sku=event.sku,
                    before=None if after is None else after - event.delta,
                    delta=event.delta,
                    after=after,
                    message=logged(event.cause),
                )
            download = await session.get(StateEntry, SNAPSHOT_DOWNLOAD)
            if download is not None:
                await session.delete(download)
            synclog.record(
                session,
                "import",
                now,
                peer=master,
                message=f"snapshot of {pools} SKUs taken as this shop's base",
            )
            state = await read_state(session, "import", {})
            await write_state(session, "import", {**state, "installed": True})
            await write_state(session, "import_report", report or {})
        self.identity.epoch = epoch
        return pools


def _stage_page(pools: list[Pool], download: dict[str, Any], conn: Connection) -> None:
    """A page of the snapshot staged, with the download's progress, in one unit of work."""
    ledger.stage(conn, pools)
    put_state(conn, SNAPSHOT_DOWNLOAD, download)


def _forget_download(conn: Connection) -> None:
    ledger.discard_staged(conn)
    drop_state(conn, SNAPSHOT_DOWNLOAD)
