"""The catalogue sweep: list the whole shop, sync the item table, observe every count (DESIGN §5).

It runs at start, periodically, and when the catalogue looks changed in a way a lookup cannot
settle (at most one such pass per `catalogue_min_interval`), so that a lost webhook costs at
most one cycle. Items that product webhooks name, and ids the agent does not know, are looked
up instead (`Sweep.lookup`): a bulk edit of a thousand products costs a thousand items' reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy import Connection

from agent import synclog
from agent.catalogue import CatalogueChange, CatalogueRow, SkuRule, sync_catalogue, sync_items
from agent.channel import Channel, Item
from agent.clock import Clock
from agent.db import Database
from agent.models import Identity
from agent.scheduler import Scheduler

__all__ = ["Sweep"]

log = structlog.get_logger(__name__)

#: Applies fresh counts of busy items in one unit of work, with one cause or one per item.
#: `Reconciler._observe`: counts, their causes, and (keyword `stamps`) their platform stamps.
Observe = Callable[..., Awaitable[None]]
#: A catalogue sync's unit of work: what changed, and the rows it leaves.
CatalogueSync = Callable[[Connection], tuple[CatalogueChange, list[CatalogueRow]]]


@dataclasses.dataclass(eq=False, kw_only=True)
class Sweep:
    """One pass over the shop's whole catalogue at a time (the scheduler starts it)."""

    db: Database
    channel: Channel
    clock: Clock
    identity: Identity
    sku_rule: SkuRule
    observe: Observe
    scheduler: Scheduler
    last_reconcile: float | None = None  # when the last full pass ended
    last_listing: float | None = None  # when that pass began to list the shop

    async def run(self) -> None:
        """List the catalogue, record new and excluded items, and observe every synced count."""
        sched = self.scheduler
        started = self.clock.monotonic()
        listed_at = self.clock.now()
        try:
            listed = [item async for item in self.channel.list_items()]
        except Exception as exc:
            log.warning("reconcile_list_failed", shop=self.identity.domain, error=str(exc))
            sched.sweep_ended(wake=False)
            return
        try:
            now = self.clock.now()
            change, rows = await self.db.run(
                _logged(sync_catalogue(listed, now, rule=self.sku_rule), now)
            )
            await self._settle(listed, rows, started)
            self.last_reconcile = self.clock.now()
            self.last_listing = listed_at
            log.info(
                "reconciled",
                shop=self.identity.domain,
                items=len(listed),
                new=len(change.new),
                excluded=len(sched.index.excluded),
            )
        finally:
            sched.sweep_ended()

    async def lookup(self, causes: dict[str, str]) -> bool:
        """Look these (claimed) items up at the platform, sync their rows and observe their
        counts, each with its cause; False when the channel cannot look items up (the caller
        falls back to a full pass)."""
        item_ids = list(causes)
        started = self.clock.monotonic()
        found = await self.channel.lookup(item_ids)
        if found is None:
            return False
        wanted = set(item_ids)
        found = [item for item in found if item.item_id in wanted]
        now = self.clock.now()
        change, rows = await self.db.run(
            _logged(sync_items(found, item_ids, now, rule=self.sku_rule), now)
        )
        # the items were claimed for this lookup: their counts are as fresh as any read's
        await self._settle(found, rows, started, claimed=causes)
        log.info(
            "looked_up",
            shop=self.identity.domain,
            items=len(item_ids),
            new=len(change.new),
            gone=len(change.gone),
        )
        return True

    async def _settle(
        self,
        listed: list[Item],
        rows: list[CatalogueRow],
        started: float,
        *,
        claimed: dict[str, str] | None = None,
    ) -> None:
        """Index `rows`, then observe the listed counts of synced items, 500 per unit of work.

        The listing is a snapshot from before `started`: an item read or written since then
        (even while earlier chunks were processed) knows better, unless this caller holds it
        (`claimed`, with each item's cause)."""
        sched = self.scheduler
        for row in rows:
            sched.index.put(row)
        synced = [it for it in listed if it.item_id in sched.index.item_sku]
        counts = {it.item_id: it.available for it in synced}
        stamps = {it.item_id: it.stamp for it in synced}
        ids = list(counts)
        never = float("-inf")
        for start in range(0, len(ids), 500):
            if claimed is not None:
                chunk = ids[start : start + 500]
                await self.observe(
                    {i: counts[i] for i in chunk}, claimed, stamps={i: stamps[i] for i in chunk}
                )
                continue
            chunk = [
                i
                for i in ids[start : start + 500]
                if i not in sched.busy and sched.last_touch.get(i, never) < started
            ]
            with sched.holding(chunk):
                await self.observe(
                    {i: counts[i] for i in chunk}, "reconcile", stamps={i: stamps[i] for i in chunk}
                )


def _logged(sync: CatalogueSync, now: float) -> CatalogueSync:
    """The catalogue sync `sync`, with one sync-log row per item it newly left out of the
    sync, saying why, in the same unit of work."""

    def work(conn: Connection) -> tuple[CatalogueChange, list[CatalogueRow]]:
        change, rows = sync(conn)
        by_id = {row.item_id: row for row in rows}
        synclog.insert(
            conn,
            [
                synclog.entry(
                    "excluded",
                    now,
                    sku=by_id[item_id].sku,
                    message=f"{why}: item {item_id} is not synced",
                )
                for item_id, why in change.newly_excluded
            ],
        )
        return change, rows

    return work
