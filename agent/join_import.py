"""A joiner's import of the master's snapshot after the welcome (DESIGN §8).

The snapshot becomes this agent's base in one transaction that also notes it is installed,
so a joiner killed before that point takes the snapshot again on restart, and one killed
after it goes on from there (its sales since are events of the new base, never dropped).
Then the importer writes the group's counts into the shop (the cut-over), and sync runs live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog
from sqlmodel import select

from agent import ledger, synclog
from agent.clock import Clock
from agent.db import Database, read_state, write_state
from agent.importer import Importer
from agent.ledger import Snapshot
from agent.models import Identity, PoolRow
from agent.reconcile import Reconciler
from agent.replication import Replicator
from agent.roster import Roster
from agent.syncmode import SyncMode
from agent.transport import PeerCaller
from agent.wire import snapshot_from_wire

__all__ = ["JoinImport"]

log = structlog.get_logger(__name__)


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
    ) -> None:
        self.db = db
        self.identity = identity
        self.clock = clock
        self.call = call
        self.roster = roster
        self.mode = mode
        self.importer = importer
        self.replicator = replicator
        self.reconciler = reconciler
        self.task: asyncio.Task[None] | None = None
        #: Told of a snapshot just before it is installed (the simulation's shops watch).
        self.before_install: list[Callable[[Snapshot], None]] = []

    @property
    def importing(self) -> bool:
        """True from the welcome until the master's snapshot is this agent's base."""
        return self.task is not None and not self.task.done()

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
        state = await self.db.get_state("import", {})
        if state.get("phase") != "snapshot" or not state.get("master_url"):
            return
        log.info("import_resumed", peer=state["master"], installed=bool(state.get("installed")))
        if not state.get("installed"):
            self.start(state["master"], state["master_url"])
            return
        self.mode.begin_import()
        report = await self.db.get_state("import_report", None)
        async with self.db.sessions() as session:
            skus = set(await session.exec(select(PoolRow.sku)))
        self.task = asyncio.create_task(self._after_install(state["master"], report, skus))

    async def _fetch(self, domain: str, agent_url: str) -> Snapshot:
        """The master's snapshot, asked again (backing off) until one arrives whole."""
        delay = 0.2
        audience = await self.roster.audience(domain)
        while True:
            try:
                status, answer = await self.call(agent_url, audience, "POST", "/peer/snapshot", {})
                if status == 200:
                    return snapshot_from_wire(answer)
                error = f"snapshot answered {status}: {answer.get('error')}"
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                error = str(exc)
            log.info("snapshot_retry", peer=domain, error=error)
            await self.clock.sleep(delay)
            delay = min(30.0, delay * 2)

    async def _import_from(self, domain: str, agent_url: str) -> None:
        """Take the master's snapshot as this agent's base, then sync live (DESIGN §8)."""
        snap = await self._fetch(domain, agent_url)
        delay = 0.2
        while True:
            try:  # the pre-flight lists the shop: a 429/5xx must not end the import
                await self.importer.hold_for_import()
                counts = {p.sku: p.base + p.deltas for p in snap.pools if p.base is not None}
                report = await self.importer.preflight(counts)
                break
            except Exception as exc:
                log.warning("preflight_retry", peer=domain, error=str(exc))
                await self.clock.sleep(delay)
                delay = min(30.0, delay * 2)
        skus = await self.install(snap, domain, report)
        await self._after_install(domain, report, skus)

    async def _after_install(
        self, domain: str, report: dict[str, Any] | None, skus: set[str]
    ) -> None:
        """The snapshot is this agent's base: sync live, and write the cut-over counts."""
        self.mode.end_import()
        await self.replicator.start()
        await self.importer.start(reason="join", master=domain, report=report, mark=False)
        self.reconciler.request_reconcile()  # items the group lacks are introduced as new

    async def install(
        self, snap: Snapshot, master: str, report: dict[str, Any] | None = None
    ) -> set[str]:
        """Replace this agent's solo ledger by the master's snapshot, in one transaction.

        The same transaction notes in the import's state that the snapshot is installed (with
        the pre-flight `report`), so that a restart goes on from here instead of installing a
        snapshot again.
        """
        for listener in self.before_install:
            listener(snap)
        now = self.clock.now()
        async with self.db.transaction() as session:
            skus, epoch = await ledger.install_snapshot(
                session, snap, self.identity, now, self.roster.sign_event
            )
            synclog.record(
                session,
                "import",
                now,
                peer=master,
                message=f"snapshot of {len(skus)} SKUs taken as this shop's base",
            )
            state = await read_state(session, "import", {})
            await write_state(session, "import", {**state, "installed": True})
            await write_state(session, "import_report", report or {})
        self.identity.epoch = epoch
        return skus
