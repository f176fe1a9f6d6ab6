"""A joiner's import of the master's snapshot after the welcome (DESIGN §8).

The snapshot becomes this agent's base in one transaction that also notes it is installed,
so a joiner killed before that point takes the snapshot again on restart, and one killed
after it goes on from there (its sales since are events of the new base, never dropped).
"""

# mypy: disable-error-code="misc"
# (the mixin's methods say `self: Peering`, the class it is mixed into, which mypy refuses as a
# self type of the mixin; the split of Peering named in the Core v2 issue ends the mixins)

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from sqlmodel import delete, select

from agent import synclog
from agent.db import read_state, write_state
from agent.models import EventRow, Identity, ItemRow, PoolRow, VectorEntry
from agent.replication import event_from_wire, vector_from_wire

if TYPE_CHECKING:
    from agent.peering import Peering

__all__ = ["JoinImport"]

log = structlog.get_logger(__name__)


class JoinImport:
    """Taking the master's snapshot, for `agent.peering.Peering` (a mixin)."""

    @property
    def importing(self: Peering) -> bool:
        """True from the welcome until the master's snapshot is this agent's base."""
        return self.import_task is not None and not self.import_task.done()

    def start_import(self: Peering, domain: str, agent_url: str) -> None:
        """Take the master's snapshot in the background (also to resume one after a crash)."""
        self.mode.begin_import()
        self.import_task = asyncio.create_task(self._import_from(domain, agent_url))

    async def resume_import(self: Peering) -> None:
        """On start: finish a join that a crash interrupted.

        Before the snapshot was installed, the snapshot is taken again. After it was, it is
        never taken again: since the install, the shop's own sales are events of the new base,
        and a second install would drop those not yet sent. The join goes on from the install.
        """
        state = await self.get_state("import", {})
        if state.get("phase") != "snapshot" or not state.get("master_url"):
            return
        log.info("import_resumed", peer=state["master"], installed=bool(state.get("installed")))
        if not state.get("installed"):
            self.start_import(state["master"], state["master_url"])
            return
        self.mode.begin_import()
        report = await self.get_state("import_report", None)
        async with self.db.sessions() as session:
            skus = set(await session.exec(select(PoolRow.sku)))
        self.import_task = asyncio.create_task(self._after_install(state["master"], report, skus))

    async def _import_from(self: Peering, domain: str, agent_url: str) -> None:
        """Take the master's snapshot as this agent's base, then sync live (DESIGN §8)."""
        delay = 0.2
        audience = await self._audience(domain)
        while True:
            try:
                status, snap = await self.call(agent_url, audience, "POST", "/peer/snapshot", {})
                if status == 200:
                    break
                error = f"snapshot answered {status}: {snap.get('error')}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = str(exc)
            log.info("snapshot_retry", peer=domain, error=error)
            await self.clock.sleep(delay)
            delay = min(30.0, delay * 2)
        report = None
        while self.importer is not None:
            try:  # the pre-flight lists the shop: a 429/5xx must not end the import
                await self.importer.hold_for_import()
                pools = {row[0]: row[1] + row[4] for row in snap["pools"] if row[1] is not None}
                report = await self.importer.preflight(pools)
                break
            except Exception as exc:
                log.warning("preflight_retry", peer=domain, error=str(exc))
                await self.clock.sleep(delay)
                delay = min(30.0, delay * 2)
        skus = await self.install_snapshot(snap, domain, report)
        await self._after_install(domain, report, skus)

    async def _after_install(
        self: Peering, domain: str, report: dict[str, Any] | None, skus: set[str]
    ) -> None:
        """The snapshot is this agent's base: sync live, and write the cut-over counts."""
        self.mode.end_import()
        if self.replicator is not None:
            await self.replicator.start()
        if self.importer is not None:
            await self.importer.start(reason="join", master=domain, report=report, mark=False)
        self.on_joined(skus)

    async def install_snapshot(
        self: Peering, snap: dict[str, Any], master: str, report: dict[str, Any] | None = None
    ) -> set[str]:
        """Replace this agent's solo ledger by the master's snapshot, in one transaction.

        A new epoch starts: events of the shop's life before the join are not the group's.
        Items whose SKU the group knows wait for their cut-over write; the others will be
        introduced as new products. The same transaction notes in the import's state that the
        snapshot is installed (with the pre-flight `report`), so that a restart goes on from
        here instead of installing a snapshot again.
        """
        vector = vector_from_wire(snap["vector"])
        extra = [event_from_wire(e) for e in snap.get("extra_events", [])]
        now = self.clock.now()
        async with self.db.transaction() as session:
            for table in (EventRow, PoolRow, VectorEntry):
                await session.exec(delete(table))
            skus = set()
            for sku, base, created, origin, deltas in snap["pools"]:
                session.add(
                    PoolRow(
                        sku=sku,
                        base=base,
                        base_created=created,
                        base_origin=origin,
                        deltas=deltas,
                        updated_at=now,
                    )
                )
                skus.add(sku)
            for (origin, epoch), seq in vector.items():
                session.add(VectorEntry(origin=origin, epoch=epoch, seq=seq))
            for event in extra:
                session.add(event)  # already folded into the pools: held, not applied again
            identity = await session.get(Identity, 1)
            assert identity is not None
            identity.epoch = self.identity.epoch = uuid.uuid4().hex[:16]
            for item in await session.exec(select(ItemRow)):
                if item.sku in skus:
                    item.cutover_pending = item.excluded is None
                else:
                    item.published, item.cutover_pending = None, False
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
        return skus
