"""The per-SKU loop between the group's pool and this agent's shop (DESIGN §5).

Webhooks are hints: they queue a fresh, batched read. A read is an observation; a difference
from the published count is a local change and becomes an event. A pool change queues a write
of `allocate(pool)`, compare-and-set against the published count. One read or write is in
flight per item at a time (`busy`), so an observation never races a write of the same item.
Writes carry an idempotency key persisted before sending, so a write whose outcome is unknown,
even across a crash, is re-sent as the same request and applied at most once.

`Reconciler` composes the parts: the scheduler (`agent.scheduler`: queues, claims, the
dispatch loop), the write pipeline (`agent.writes`) and the catalogue sweep (`agent.sweep`);
it does the reads itself, through the observation rule (`agent.observation`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Iterable

import structlog
from sqlalchemy import Connection

from agent import ledger, synclog
from agent.bundles import Bundle, BundleMap
from agent.catalogue import Index, SkuRule
from agent.channel import Channel, WebhookHint
from agent.clock import Clock
from agent.db import QUICK_ROWS, Database
from agent.ledger import INTRODUCE, NewEvent
from agent.models import EventRow, Identity
from agent.observation import Effects, Item, observe, observe_counts
from agent.scheduler import CATALOGUE_MIN_INTERVAL, LOOKUP_WINDOW, Scheduler, Told
from agent.sweep import Sweep
from agent.warehouses import OWN, Listings, LocationMap, parse_listing
from agent.writes import Allocate, Writes

__all__ = ["Item", "Reconciler", "ReconcilerStatus", "observe"]

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ReconcilerStatus:
    """What the reconciler has queued and done, at one moment (a plain value)."""

    pending_reads: int  # items queued for a fresh read
    pending_skus: int  # SKUs queued for a write of their target
    busy: int  # items with a read or write in flight
    idle: bool  # nothing queued or in flight, catalogue passes included (`is_idle`)
    ready: bool  # started: pending writes resumed, the loop serving
    last_reconcile: float | None  # when the last full catalogue pass ended
    stats: dict[str, int]  # reads, read_ids, writes, write_rows, events, echoes_skipped,
    # lookups, lookup_ids, passes


class Reconciler:
    """Keeps one shop and the pool in step. Its I/O (database, channel, clock) is injected."""

    def __init__(
        self,
        *,
        db: Database,
        channel: Channel,
        clock: Clock,
        identity: Identity,
        allocate: Allocate,
        coalesce: float = 0.005,
        reconcile_interval: float = 300.0,
        catalogue_min_interval: float = CATALOGUE_MIN_INTERVAL,
        lookup_window: float = LOOKUP_WINDOW,
        on_local_events: Callable[[list[EventRow]], None] | None = None,
        max_inflight: int = 4,
        rng: random.Random | None = None,
        sku_rule: SkuRule | None = None,
        sign_event: ledger.Signer | None = None,
        bundles: Callable[[], BundleMap] = BundleMap,
        locations: LocationMap | None = None,
    ) -> None:
        self.db = db
        self.bundles = bundles  # the group's bundles now (`RuleBook.bundles`)
        # the shop's locations, each linked to the warehouses it sells from (`[locations]`)
        self.locations = locations or LocationMap(OWN)
        self._listings: tuple[BundleMap, Listings] | None = None
        # this agent's proof of origin for its events; without one (a reconciler on its own,
        # in tests) events carry none, and no peer would take them
        self.sign_event: ledger.Signer = sign_event or (lambda _event: "")
        self.channel = channel
        self.clock = clock
        self.identity = identity
        self.rng = rng or random.Random()
        self.sku_rule = sku_rule or SkuRule()
        # the scheduler starts the parts built below it only once `run` serves
        self.scheduler = Scheduler(
            clock=clock,
            channel=channel,
            sku_rule=self.sku_rule,
            coalesce=coalesce,
            reconcile_interval=reconcile_interval,
            max_inflight=max_inflight,
            on_local_events=on_local_events,
            read=self._read,
            take=self._take,
            write=lambda skus: self.writes.plan(skus),
            sweep=lambda: self.sweep.run(),
            lookup=lambda causes: self.sweep.lookup(causes),
            catalogue_min_interval=catalogue_min_interval,
            lookup_window=lookup_window,
        )
        self.writes = Writes(
            db=db,
            channel=channel,
            clock=clock,
            identity=identity,
            allocate=allocate,
            rng=self.rng,
            append=self._append,
            scheduler=self.scheduler,
            listings=self.listings,
        )
        self.sweep = Sweep(
            db=db,
            channel=channel,
            clock=clock,
            identity=identity,
            sku_rule=self.sku_rule,
            observe=self._observe,
            scheduler=self.scheduler,
        )
        self.ready: asyncio.Event = self.scheduler.ready

    # -- inputs ------------------------------------------------------------------------------

    def hint(self, hint: WebhookHint) -> None:
        """A verified webhook: queue fresh reads of what it names."""
        self.scheduler.hint(hint)

    def listings(self) -> Listings:
        """The shop's locations and the group's bundles now (`agent.warehouses.Listings`)."""
        bundles = self.bundles()
        if self._listings is None or self._listings[0] is not bundles:
            self._listings = (bundles, Listings(bundles, self.locations))
        return self._listings[1]

    def set_locations(self, locations: LocationMap) -> None:
        """The shop's locations are linked anew (the same locations synced): every listing
        is planned again, and those whose count changes are written."""
        self.locations = locations
        self._listings = None
        self.replan()

    def pool_changed(self, skus: Iterable[str]) -> None:
        """Pools of `skus` (ledger keys) moved (remote events, import): queue writes of the
        listings they make, and of every bundle taking one of them."""
        listings = self.listings()
        self.scheduler.pool_changed(listings.affected(skus) if listings else skus)

    def resync(self, skus: Iterable[str] | None = None) -> list[str]:
        """Re-read these SKUs' items (all when None) and re-write their counts if they differ;
        returns the SKUs queued. For an admin who doubts a count. A SKU names its listings at
        every location."""
        if skus is not None and not self.locations.plain():
            wanted = set(skus)
            skus = [
                key
                for key in self.scheduler.index.sku_item
                if key in wanted or parse_listing(key)[0] in wanted
            ]
        return self.scheduler.resync(skus)

    def replan(self) -> None:
        """What to publish may have changed for every SKU (stock rules changed): plan every
        synced SKU again; only those whose count changes are written, batched as usual."""
        self.scheduler.pool_changed(list(self.scheduler.index.sku_item))

    def request_reconcile(self) -> None:
        """Ask for a full catalogue reconciliation now."""
        self.scheduler.request_reconcile()

    def target_for(self, sku: str, pool: int) -> int:
        """What to publish for a pool count (the allocate hook; never below zero)."""
        return self.writes.target_for(sku, pool)

    # -- state ---------------------------------------------------------------------------------

    def is_idle(self) -> bool:
        """No read, write or catalogue work queued or in flight."""
        return self.scheduler.is_idle()

    def status(self) -> ReconcilerStatus:
        """Queues, counters and progress, for status pages, metrics and waiters."""
        sched = self.scheduler
        return ReconcilerStatus(
            pending_reads=len(sched.pending_reads),
            pending_skus=len(sched.pending_skus),
            busy=len(sched.busy),
            idle=sched.is_idle(),
            ready=self.ready.is_set(),
            last_reconcile=self.sweep.last_reconcile,
            stats=dict(sched.stats),
        )

    def tasks(self) -> list[asyncio.Task[None]]:
        """The background tasks running (reads, writes, catalogue passes, the periodic timer),
        in creation order."""
        return self.scheduler.tasks()

    @property
    def coalesce(self) -> float:
        """Seconds a dispatch waits for a burst of hints to gather."""
        return self.scheduler.coalesce

    @coalesce.setter
    def coalesce(self, seconds: float) -> None:
        self.scheduler.coalesce = seconds

    @property
    def last_reconcile(self) -> float | None:
        """When the last full catalogue pass ended (None: not yet)."""
        return self.sweep.last_reconcile

    @property
    def last_listing(self) -> float | None:
        """When the last full catalogue pass began to list the shop (None: not yet)."""
        return self.sweep.last_listing

    @property
    def stats(self) -> dict[str, int]:
        """Counters of reads, writes and events (live; `status()` gives a copy)."""
        return self.scheduler.stats

    @property
    def pending_reads(self) -> dict[str, str]:
        """Items queued for a read, with their cause (live; prefer `status()`)."""
        return self.scheduler.pending_reads

    @property
    def pending_skus(self) -> set[str]:
        """SKUs queued for a write (live; prefer `status()`)."""
        return self.scheduler.pending_skus

    @property
    def busy(self) -> set[str]:
        """Items with a read or write in flight (live; prefer `status()`)."""
        return self.scheduler.busy

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Resume unfinished writes, reconcile the catalogue, then serve hints forever."""
        async with self.db.sessions() as session:
            self.scheduler.index = await Index.load(session)
        await self.writes.resume()
        await self.scheduler.serve()

    async def close(self) -> None:
        """Cancel background work (in-flight writes stay pending in the database)."""
        await self.scheduler.close()

    # -- observing -----------------------------------------------------------------------------

    async def _read(self, ids: list[str], causes: dict[str, str]) -> None:
        """Read claimed items and observe their counts (with the platform's stamps)."""
        try:
            levels = await self.channel.read_levels(ids)
        except Exception as exc:  # any failure: retry the reads later
            log.warning("read_failed", shop=self.identity.domain, error=str(exc), ids=len(ids))
            await self.clock.sleep(1.0 + self.rng.random())
            self.scheduler.requeue(causes)
            return
        stats = self.scheduler.stats
        stats["reads"] += 1
        stats["read_ids"] += len(ids)
        gone = [i for i in ids if i not in levels or levels[i].count is None]
        counts = {i: c for i, level in levels.items() if (c := level.count) is not None}
        stamps = {i: levels[i].stamp for i in counts}
        # an item vanished or moved: look it up (a pass if the channel cannot)
        self.scheduler.look_up(gone, "read")
        await self._observe(counts, causes, stamps=stamps)

    async def _take(self, taken: dict[str, Told]) -> None:
        """Take stamped counts of level webhooks as fresh observations (no platform call)."""
        counts = {i: t.count for i, t in taken.items()}
        causes = {i: t.cause for i, t in taken.items()}
        stamps: dict[str, float | None] = {i: t.stamp for i, t in taken.items()}
        await self._observe(
            counts, causes, stamps=stamps, expect={i: t.expect for i, t in taken.items()}
        )

    async def _observe(
        self,
        counts: dict[str, int],
        causes: dict[str, str] | str,
        *,
        stamps: dict[str, float | None] | None = None,
        expect: dict[str, int] | None = None,
    ) -> None:
        """Apply fresh counts of busy items in one unit of work."""
        if not counts:
            return
        now = self.clock.now()
        listings = self.listings()
        held = frozenset(self.scheduler.held)

        def work(conn: Connection) -> Effects:
            return observe_counts(
                conn, counts, causes, now, self._append, stamps=stamps, expect=expect,
                listings=listings, held=held,
            )  # fmt: skip

        self.scheduler.settle(await self.db.run(work, quick=len(counts) <= QUICK_ROWS))

    async def unbundle(self, bundle: Bundle) -> int:
        """`bundle` stops being one: its SKU's pool takes the count its components allowed the
        group (whole sets of their pools), by an event of this shop's, so that every member's
        shops sync it as a SKU of its own from there. Introduced if the group had no count of
        it (a bundle has no pool), changed to it if it had one from before it was a bundle
        (that count went stale while the bundle's sales were its components'). The count."""
        now = self.clock.now()
        parts = [part for part, _ in bundle.components]

        def work(conn: Connection) -> tuple[Effects, int]:
            pools = ledger.pools(conn, [bundle.sku, *parts])

            def group_count(part: str) -> int | None:
                pool = pools.get(part)
                return None if pool is None else pool.value

            count = BundleMap([bundle]).target(bundle.sku, group_count).count
            held = pools.get(bundle.sku)
            cause = f"no longer a bundle: {count} whole sets of its components"
            before = None if held is None else held.value
            if before is None:
                event = NewEvent(bundle.sku, INTRODUCE, count=count, item_created=now, cause=cause)
            elif before != count:
                event = NewEvent(bundle.sku, "change", delta=count - before, cause=cause)
            else:
                return Effects(), count
            entry = synclog.entry(
                event.kind, now, sku=bundle.sku, before=before, after=count, message=cause
            )
            synclog.insert(conn, [entry])
            done = Effects()
            done.events = self._append(conn, [event], now)
            return done, count

        done, count = await self.db.run(work)
        self.scheduler.settle(done)
        return count

    def _append(self, conn: Connection, events: list[NewEvent], now: float) -> list[EventRow]:
        return ledger.append(conn, self.identity, events, now, self.sign_event)
