"""The catalogue sweep: list the whole shop, sync the item table, observe every count (DESIGN §5).

It runs at start, periodically, and when the catalogue looks changed in a way a lookup cannot
settle (at most one such pass per `catalogue_min_interval`), so that a lost webhook costs at
most one cycle. Items that product webhooks name, and ids the agent does not know, are looked
up instead (`Sweep.lookup`): a bulk edit of a thousand products costs a thousand items' reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from functools import partial

import structlog
from sqlalchemy import Connection

from agent import synclog
from agent.catalogue import (
    CatalogueChange,
    CatalogueRow,
    SkuRule,
    clear_listing,
    listed_counts,
    listed_rows,
    stage_listing,
    sync_items,
    sync_listing,
)
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
PAGE = 5000  # listed items staged, or indexed, per unit of work
OBSERVE = 500  # counts observed per unit of work


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
        """List the catalogue, record new and excluded items, and observe every synced count.

        A page at a time, never the whole catalogue in memory: the listing is staged in the
        database (`listing`) as it arrives, the item table synced from it, then the index and
        the counts read back from it in pages."""
        sched = self.scheduler
        started = self.clock.monotonic()
        listed_at = self.clock.now()
        try:
            listed = await self._stage()
        except Exception as exc:
            log.warning("reconcile_list_failed", shop=self.identity.domain, error=str(exc))
            sched.sweep_ended(wake=False)
            return
        try:
            now = self.clock.now()
            change = await self.db.run(partial(_sync_listed, now=now))
            after = ""
            while rows := await self.db.read(partial(listed_rows, after=after, limit=PAGE)):
                for row in rows:
                    sched.index.put(row)
                after = rows[-1].item_id
            await self._observe_listed(started)
            await self.db.run(clear_listing)
            self.last_reconcile = self.clock.now()
            self.last_listing = listed_at
            log.info(
                "reconciled",
                shop=self.identity.domain,
                items=listed,
                new=change.added,
                excluded=len(sched.index.excluded),
            )
        finally:
            sched.sweep_ended()

    async def _stage(self) -> int:
        """The shop's listing, staged a page at a time; how many items it has."""
        page: list[Item] = []
        staged, first = 0, True
        async for item in self.channel.list_items():
            page.append(item)
            if len(page) >= PAGE:
                await self.db.run(
                    partial(stage_listing, page=page, rule=self.sku_rule, first=first)
                )
                staged, first, page = staged + len(page), False, []
        await self.db.run(partial(stage_listing, page=page, rule=self.sku_rule, first=first))
        return staged + len(page)

    async def _observe_listed(self, started: float) -> None:
        """Observe the listed counts of synced items, 500 per unit of work; the listing is a
        snapshot from before `started`: an item read or written since knows better."""
        sched = self.scheduler
        never = float("-inf")
        after = ""
        while page := await self.db.read(partial(listed_counts, after=after, limit=OBSERVE)):
            after = page[-1][0]
            chunk = [
                (item_id, count, stamp)
                for item_id, count, stamp in page
                if item_id in sched.index.item_sku
                and item_id not in sched.busy
                and sched.last_touch.get(item_id, never) < started
            ]
            with sched.holding([item_id for item_id, _, _ in chunk]):
                await self.observe(
                    {item_id: count for item_id, count, _ in chunk},
                    "reconcile",
                    stamps={item_id: stamp for item_id, _, stamp in chunk},
                )

    async def lookup(self, causes: dict[str, str]) -> bool:
        """Look these (claimed) items up at the platform, sync their rows and observe their
        counts, each with its cause; False when the channel cannot look items up (the caller
        falls back to a full pass)."""
        item_ids = list(causes)
        found = await self.channel.lookup(item_ids)
        if found is None:
            return False
        wanted = set(item_ids)
        found = [item for item in found if item.item_id in wanted]
        now = self.clock.now()
        change, rows = await self.db.run(
            partial(_sync_found, found=found, looked_up=item_ids, now=now, rule=self.sku_rule)
        )
        await self._settle(found, rows, causes)
        log.info(
            "looked_up",
            shop=self.identity.domain,
            items=len(item_ids),
            new=len(change.new),
            gone=len(change.gone),
        )
        return True

    async def _settle(
        self, found: list[Item], rows: list[CatalogueRow], claimed: dict[str, str]
    ) -> None:
        """Index `rows`, then observe the counts of the synced items `found`, 500 per unit of
        work, each with its cause (`claimed`: these items are held for the lookup, so their
        counts are as fresh as any read's)."""
        sched = self.scheduler
        for row in rows:
            sched.index.put(row)
        synced = [it for it in found if it.item_id in sched.index.item_sku]
        for start in range(0, len(synced), OBSERVE):
            chunk = synced[start : start + OBSERVE]
            await self.observe(
                {it.item_id: it.available for it in chunk},
                claimed,
                stamps={it.item_id: it.stamp for it in chunk},
            )


def _log_excluded(conn: Connection, change: CatalogueChange, now: float) -> None:
    """One sync-log row per item a catalogue sync newly left out of the sync, saying why, in
    the sync's unit of work."""
    synclog.insert(
        conn,
        [
            synclog.entry("excluded", now, sku=sku, message=f"{why}: item {item_id} is not synced")
            for item_id, why, sku in change.newly_excluded
        ],
    )


def _sync_listed(conn: Connection, *, now: float) -> CatalogueChange:
    change = sync_listing(conn, now=now)
    _log_excluded(conn, change, now)
    return change


def _sync_found(
    conn: Connection, *, found: list[Item], looked_up: list[str], now: float, rule: SkuRule
) -> tuple[CatalogueChange, list[CatalogueRow]]:
    change, rows = sync_items(found, looked_up, now, rule=rule)(conn)
    _log_excluded(conn, change, now)
    return change, rows
