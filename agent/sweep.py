"""The catalogue sweep: list the whole shop, sync the item table, observe every count (DESIGN §5).

It runs at start, periodically, and whenever the catalogue looks changed, so that a lost
webhook costs at most one cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import structlog

from agent import synclog
from agent.catalogue import SkuRule, sync_catalogue
from agent.channel import Channel
from agent.clock import Clock
from agent.db import Database
from agent.models import Identity
from agent.scheduler import Scheduler

__all__ = ["Sweep"]

log = structlog.get_logger(__name__)

#: Applies fresh counts of busy items in one unit of work, all with one cause.
Observe = Callable[[dict[str, int], str], Awaitable[None]]


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
            async with self.db.transaction() as session:
                change, rows = await sync_catalogue(session, listed, now, rule=self.sku_rule)
                for item_id, why in change.newly_excluded:
                    row = next(r for r in rows if r.item_id == item_id)
                    synclog.record(
                        session,
                        "excluded",
                        now,
                        sku=row.sku,
                        message=f"{why}: item {item_id} is not synced",
                    )
            for row in rows:
                sched.index.put(row)
            counts = {
                it.item_id: it.available for it in listed if it.item_id in sched.index.item_sku
            }
            ids = list(counts)
            never = float("-inf")
            for start in range(0, len(ids), 500):
                # the listing is a snapshot from before `started`: an item read or written
                # since then (even while earlier chunks were processed) knows better
                chunk = [
                    i
                    for i in ids[start : start + 500]
                    if i not in sched.busy and sched.last_touch.get(i, never) < started
                ]
                with sched.holding(chunk):
                    await self.observe({i: counts[i] for i in chunk}, "reconcile")
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
