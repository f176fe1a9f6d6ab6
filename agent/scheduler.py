"""When the reconciler reads, writes and sweeps: its queues, claims and wake-ups (DESIGN §5).

Hints and pool changes queue work; a dispatch, after a short coalescing pause, starts reads and
writes in batches on items no other read or write holds (`busy`), within their own slots.
Product webhooks and ids not known yet queue lookups, gathered for `lookup_window` seconds and
sent together; a full catalogue pass they cannot replace runs at most once per
`catalogue_min_interval` (asked-for passes — at start, periodic, by an admin — run at once).

Stamped levels (DESIGN §5): a level webhook that carries the platform's time of its change is
judged against the newest stamped state the agent knows of the item (`known`: from a read, a
write's answer or an earlier level). Older: dropped. Of the same moment: nothing new if the
count is the same, else read (two changes in one tick of the platform's clock). Newer: its
count is a fresh observation, taken without a read. Without a known stamp it is read, as any
hint. An order webhook whose level follows (`WebhookHint.levels_follow`) waits for that level
and reads only if none has come within `LEVEL_GRACE` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from typing import Any

import structlog

from agent.catalogue import Index, SkuRule
from agent.causes import prefer
from agent.channel import Channel, WebhookHint
from agent.clock import Clock
from agent.models import EventRow
from agent.observation import Effects

__all__ = [
    "CATALOGUE_MIN_INTERVAL",
    "LEVEL_GRACE",
    "LOOKUP_WINDOW",
    "QUICK_PAUSE",
    "READS_IN_FLIGHT",
    "STAMP_AHEAD",
    "Scheduler",
    "Told",
]

log = structlog.get_logger(__name__)

READS_IN_FLIGHT = 2
#: Seconds between the start of one full catalogue pass and one that hints ask for.
CATALOGUE_MIN_INTERVAL = 300.0
#: Seconds product webhooks gather before their items are looked up together.
LOOKUP_WINDOW = 2.0
#: Seconds a dispatch with no read to gather waits for more level webhooks and pool changes:
#: none. What arrived while the loop was busy is dispatched together anyway, and credits pace
#: the writes; a pause of 1 ms cost 2 ms of a sale's 10 (one at each end) and gathered nothing
#: the bench could see (ingest and the Standard plan's steps measured the same without it).
QUICK_PAUSE = 0.0
#: Seconds an order webhook waits for the level webhook of its change before its items are read.
LEVEL_GRACE = 2.0
#: Seconds a level's stamp may be ahead of this agent's clock and still be taken: a stamp far
#: in the future (a forged webhook, a platform clock gone wrong) is read instead, so it can
#: never make the real webhooks that follow look stale.
STAMP_AHEAD = 300.0

Job = Coroutine[Any, Any, None]


@dataclasses.dataclass(slots=True)
class Told:
    """A stamped count a level webhook told of an item, waiting for the item to be free.

    `ambiguous`: another webhook told a different count of the same moment (read instead).
    `expect`: the published count the agent's stamped knowledge of the item belongs to (set
    when the count is taken; the unit of work takes it only if the item still publishes it).
    """

    count: int
    stamp: float
    cause: str
    ambiguous: bool = False
    expect: int = 0


class Scheduler:
    """The reconciler's queues and its memory of items, and the loop that starts its work.

    It starts three kinds of work, given as coroutine functions: `read(ids, causes)` on items
    it claimed, `write(skus)` on the items of SKUs it claimed (the write pipeline releases
    them), `sweep()`, a pass over the whole catalogue (which calls `sweep_ended`), and
    `lookup(causes)`, which looks claimed items up at the platform (False: it cannot).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        channel: Channel,
        sku_rule: SkuRule,
        coalesce: float,
        reconcile_interval: float,
        max_inflight: int,
        on_local_events: Callable[[list[EventRow]], None] | None,
        read: Callable[[list[str], dict[str, str]], Job],
        take: Callable[[dict[str, Told]], Job],
        write: Callable[[list[str]], Job],
        sweep: Callable[[], Job],
        lookup: Callable[[dict[str, str]], Coroutine[Any, Any, bool]],
        catalogue_min_interval: float = CATALOGUE_MIN_INTERVAL,
        lookup_window: float = LOOKUP_WINDOW,
    ) -> None:
        self.clock = clock
        self.channel = channel
        self.sku_rule = sku_rule
        self.coalesce = coalesce
        self.reconcile_interval = reconcile_interval
        self.max_inflight = max_inflight
        self.on_local_events = on_local_events
        self._read_items, self._write_skus, self._sweep = read, write, sweep
        self._take_levels = take
        self._look_up = lookup
        self.catalogue_min_interval = catalogue_min_interval
        self.lookup_window = lookup_window
        self.index = Index()
        self.pending_reads: dict[str, str] = {}  # item_id -> cause
        self.pending_skus: set[str] = set()
        self.pending_lookups: dict[str, str] = {}  # item_id -> cause
        self.busy: set[str] = set()
        self.last_touch: dict[str, float] = {}  # item_id -> monotonic time of last observation
        self.seen: dict[str, int] = {}  # item_id -> published count, to spot webhook echoes
        self.writing: dict[str, int] = {}  # item_id -> target of the write in flight
        # item_id -> (platform stamp, published count): the newest stamped state known of it
        self.known: dict[str, tuple[float, int]] = {}
        self.pending_levels: dict[str, Told] = {}  # stamped counts waiting for their item
        self.awaiting: dict[str, tuple[float, str]] = {}  # item_id -> (read at, order cause)
        # items whose rise was held back once (`observe_counts`' `held`): the next look decides
        self.held: set[str] = set()
        self.stats = {
            "reads": 0,
            "read_ids": 0,
            "writes": 0,
            "write_rows": 0,
            "events": 0,
            "echoes_skipped": 0,
            "levels_taken": 0,  # stamped level webhooks taken as counts, without a read
            "levels_dropped": 0,  # stamped level webhooks older than what was known
            "rises_held": 0,  # rises at a location of several warehouses held for a refund
            "lookups": 0,
            "lookup_ids": 0,
            "passes": 0,
            # rows by the platform's answer: ok, conflict, error, unknown
            "rows_ok": 0,
            "rows_conflict": 0,
            "rows_error": 0,
            "rows_unknown": 0,
        }
        # a pass hints ask for (a catalogue change no lookup can settle): at most one per
        # `catalogue_min_interval`; `_pass_asked` is one asked for by name, run at once
        self.catalogue_due = False
        self._pass_asked = False
        self._last_pass_at = float("-inf")
        self._lookups_since: float | None = None
        self._looking_up = False
        self.ready = asyncio.Event()
        self._reconciling = False
        self._inflight = 0
        self._reading = 0
        self._credits = float("inf")  # write calls that may go at once (`_write_gap`)
        self._credits_at = 0.0
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._tasks: dict[asyncio.Task[None], None] = {}  # in creation order

    # -- inputs ------------------------------------------------------------------------------

    def hint(self, hint: WebhookHint) -> None:
        """A verified webhook: queue fresh reads of what it names (or its stamped counts)."""
        stamped = hint.stamp is not None and hint.stamp <= self.clock.now() + STAMP_AHEAD
        told = self._tell(hint) if stamped and hint.counts else set()
        unchanged = {
            item_id
            for item_id, count in hint.counts
            if (
                # a count equal to what we last saw or wrote says nothing new (if the shop has
                # moved since, the webhook of that move follows); the echo of a write still in
                # flight arrives before the write's answer
                self.seen.get(item_id) == count or self.writing.get(item_id) == count
            )
            and item_id not in self.pending_reads
        }
        self.stats["echoes_skipped"] += len(unchanged)
        lookups: list[str] = []
        cause = hint.cause
        for hinted in hint.item_ids:
            if hint.catalogue_changed:
                lookups.append(hinted)  # a product edit: its SKU or title may have changed
            elif hinted in unchanged or hinted in told:
                continue
            elif hinted in self.index.item_sku:
                self._read_or_await(hinted, cause, hint)
            elif hinted not in self.index.excluded:
                lookups.append(hinted)  # an item we do not know yet
        for raw in () if hint.catalogue_changed and hint.item_ids else hint.skus:
            rule_sku = self.sku_rule(raw)
            item_id = self.index.sku_item.get(rule_sku) if rule_sku else None
            if item_id is not None:
                self._read_or_await(item_id, cause, hint)
        if hint.catalogue_changed and not hint.item_ids:
            self.catalogue_due = True
        self.look_up(lookups, cause)
        self._wake.set()

    def _tell(self, hint: WebhookHint) -> set[str]:
        """Hold the stamped counts of a level webhook for their items (the newest per item);
        returns the items it told of."""
        assert hint.stamp is not None
        told: set[str] = set()
        for item_id, count in hint.counts:
            if item_id not in self.index.item_sku:
                continue  # not an item we sync (yet): the hint's other handling applies
            told.add(item_id)
            held = self.pending_levels.get(item_id)
            if held is None or hint.stamp > held.stamp:
                self.pending_levels[item_id] = Told(count, hint.stamp, hint.cause)
            elif hint.stamp == held.stamp and count != held.count:
                held.ambiguous = True
        return told

    def _read_or_await(self, item_id: str, cause: str, hint: WebhookHint) -> None:
        """Queue a read of an item a hint names; or, when the platform sends the item's level
        itself, wait `LEVEL_GRACE` for it (the order's cause goes to whatever observes it)."""
        if not hint.levels_follow or item_id in self.pending_reads:
            self.pending_reads[item_id] = prefer(self.pending_reads.get(item_id), cause)
            return
        known = self.known.get(item_id)
        if hint.stamp is not None and known is not None and known[0] >= hint.stamp:
            return  # a level of the order's moment or later was taken already
        due, queued = self.awaiting.get(item_id, (self.clock.monotonic() + LEVEL_GRACE, None))
        self.awaiting[item_id] = (due, prefer(queued, cause))
        self._wake_later(LEVEL_GRACE, "awaiting")

    def look_up(self, item_ids: Iterable[str], cause: str) -> None:
        """Queue lookups of these items (new, changed or vanished), sent together once the
        first has waited `lookup_window` seconds."""
        for item_id in item_ids:
            self.pending_lookups.setdefault(item_id, cause)
        if self.pending_lookups and self._lookups_since is None:
            self._lookups_since = self.clock.monotonic()
            self._wake_later(self.lookup_window, "lookup")

    def pool_changed(self, skus: Iterable[str]) -> None:
        """Pools of `skus` moved (remote events, import): queue writes of their targets."""
        self.pending_skus.update(skus)
        self._wake.set()

    def resync(self, skus: Iterable[str] | None = None) -> list[str]:
        """Re-read these SKUs' items (all when None) and re-write their counts if they differ;
        returns the SKUs queued."""
        wanted = (
            self.index.sku_item
            if skus is None
            else {s: self.index.sku_item[s] for s in skus if s in self.index.sku_item}
        )
        for sku, item_id in wanted.items():
            self.pending_reads[item_id] = "resync"
            self.pending_skus.add(sku)
        self._wake.set()
        return sorted(wanted)

    def request_reconcile(self) -> None:
        """Ask for a full catalogue reconciliation now (not held by the minimum interval)."""
        self._pass_asked = True
        self._wake.set()

    def requeue(self, causes: Mapping[str, str]) -> None:
        """Read these items again at a later dispatch (a cause already queued stays)."""
        for item_id, cause in causes.items():
            self.pending_reads.setdefault(item_id, cause)

    def is_idle(self) -> bool:
        """No read, write, lookup or catalogue work queued or in flight (a pass that waits
        for the minimum interval is scheduled work, like the periodic one, not queued)."""
        return not (
            self.pending_reads
            or self.pending_levels
            or self.awaiting
            or self.pending_skus
            or self.pending_lookups
            or self.busy
            or self._inflight
            or self._pass_asked
            or (self.catalogue_due and self._pass_wait() <= 0)
            or self._reconciling
        )

    def _pass_wait(self) -> float:
        """Seconds until a pass that hints ask for may start."""
        return self._last_pass_at + self.catalogue_min_interval - self.clock.monotonic()

    # -- results -----------------------------------------------------------------------------

    def settle(self, done: Effects) -> None:
        """Fold a committed unit's decisions into memory, and announce its events."""
        touched = self.clock.monotonic()
        for item_id in done.touched:
            self.last_touch[item_id] = touched
            stamped = done.known.get(item_id)
            if stamped is None:
                self.known.pop(item_id, None)  # moved by what carried no stamp: read to know
            else:
                self.known[item_id] = stamped
        for item_id in done.observed:
            self.awaiting.pop(item_id, None)  # what an order webhook waited for has come
            self.held.discard(item_id)
        for item_id, cause in done.held.items():  # a rise held back once: read it again soon
            self.stats["rises_held"] += 1
            self.held.add(item_id)
            self.awaiting[item_id] = (touched + LEVEL_GRACE, cause)
            self._wake_later(LEVEL_GRACE, "awaiting")
        for item_id in done.written:
            self.writing.pop(item_id, None)
        self.seen.update(done.seen)
        self.pending_skus.update(done.plan)
        self.requeue(done.read)
        appended = done.events
        self.stats["events"] += len(appended)
        if appended:
            self.pending_skus.update(e.sku for e in appended)
            if self.on_local_events is not None:
                self.on_local_events(appended)
        if done.plan or done.read or appended:
            self._wake.set()

    # -- the loop ------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Plan every SKU, start the periodic reconciliation, then dispatch forever."""
        # which pools still await their write was known only in memory: after a restart, plan
        # every SKU again (only those whose target differs from the published count are sent)
        self.pending_skus.update(self.index.sku_item)
        self.spawn(self._periodic())
        self.request_reconcile()
        self.ready.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            # reads wait `coalesce` for a burst of hints to share them (a platform that limits
            # requests counts each); taken levels and writes go at once (credits pace writes)
            pause = self.coalesce if self.pending_reads else QUICK_PAUSE
            if pause > 0:
                await self.clock.sleep(pause)
            self._dispatch()

    async def close(self) -> None:
        """Cancel background work and wait for it to end."""
        for timer in self._timers.values():
            self._tasks[timer] = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def tasks(self) -> list[asyncio.Task[None]]:
        """The background tasks still running, in creation order."""
        return list(self._tasks)

    def spawn(self, coro: Job) -> None:
        """Run `coro` as a background task (cancelled by `close`)."""
        task = asyncio.create_task(coro)
        self._tasks[task] = None
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("reconcile_task_failed", error=repr(task.exception()))

    def _dispatch(self) -> None:
        if (self._pass_asked or self.catalogue_due) and not self._reconciling:
            wait = 0.0 if self._pass_asked else self._pass_wait()
            if wait <= 0:
                self.catalogue_due = self._pass_asked = False
                self._reconciling = True
                self._last_pass_at = self.clock.monotonic()
                self.stats["passes"] += 1
                self.spawn(self._sweep())
            else:
                self._wake_later(wait, "catalogue")
        self._dispatch_lookups()
        budget = self.channel.budget
        # reads and writes have their own slots, so a storm of webhooks (reads) never starves
        # the writes that publish the group's counts
        while self._reading < READS_IN_FLIGHT:
            ids = []
            for item_id in self.pending_reads:
                if item_id not in self.busy:
                    ids.append(item_id)
                    if len(ids) >= budget.max_read_batch:
                        break
            if not ids:
                break
            causes = {i: self._read_cause(i) for i in ids}
            self.claim(ids)
            self._reading += 1
            self.spawn(self._read(causes))
        while self._inflight - self._reading < self.max_inflight:
            skus: list[str] = []
            gone: list[str] = []
            for sku in self.pending_skus:
                synced = self.index.sku_item.get(sku)
                if synced is None:
                    gone.append(sku)  # no synced item here: nothing to write
                elif synced not in self.busy:
                    skus.append(sku)
                    if len(skus) >= budget.max_write_batch:
                        break
            self.pending_skus.difference_update(gone)
            if not skus:
                break
            wait = self._write_gap(len(skus))
            if wait > 0:  # gather more rows into the next call rather than spend the budget
                self._wake_later(wait, "write")
                break
            self._credits -= 1.0
            self.pending_skus.difference_update(skus)
            self.claim([self.index.sku_item[s] for s in skus])
            self.spawn(self._write_skus(skus))
        # last: the reads that judging levels queues wait for the next dispatch, so that a
        # burst's reads gather for `coalesce` into shared calls
        reads = len(self.pending_reads)
        self._dispatch_levels()
        if len(self.pending_reads) > reads:
            self._wake.set()
        self._drop_drained()

    def _drop_drained(self) -> None:
        """Start the queues afresh once they are empty. CPython never shrinks a set's or a
        dict's table: a queue that once held a whole catalogue (every SKU planned at start,
        a resync of all) kept it, and every dispatch walked all of its empty slots to find
        the few queued entries (at 100,000 SKUs that saturated the agent's CPU at 50 sales/s,
        and a sale took 12 s to reach the other shops)."""
        if not self.pending_skus:
            self.pending_skus = set()
        if not self.pending_reads:
            self.pending_reads = {}
        if not self.pending_levels:
            self.pending_levels = {}
        if not self.pending_lookups:
            self.pending_lookups = {}
        if not self.awaiting:
            self.awaiting = {}

    def _dispatch_levels(self) -> None:
        """Judge the held level webhooks of free items: drop, read, or take (one unit of work
        for all taken); and read the items whose orders waited `LEVEL_GRACE` in vain."""
        now = self.clock.monotonic()
        for item_id, (due, cause) in list(self.awaiting.items()):
            if due <= now:
                del self.awaiting[item_id]
                self.pending_reads[item_id] = prefer(self.pending_reads.get(item_id), cause)
        if self.awaiting:
            first = min(due for due, _ in self.awaiting.values())
            self._wake_later(first - now, "awaiting")
        if not self.pending_levels:
            return
        taken: dict[str, Told] = {}
        for item_id in [i for i in self.pending_levels if i not in self.busy]:
            told = self.pending_levels.pop(item_id)
            if item_id in self.pending_reads:
                continue  # a read is queued: it sees this change and any after it
            verdict = self._judge(item_id, told)
            if verdict == "take":
                waited = self.awaiting.pop(item_id, None)
                told.cause = prefer(waited[1] if waited else None, told.cause)
                taken[item_id] = told
            elif verdict == "read":
                waited = self.awaiting.pop(item_id, None)
                cause = prefer(waited[1] if waited else None, told.cause)
                self.pending_reads[item_id] = cause
            else:
                self.stats["levels_dropped"] += 1
        if taken:
            self.stats["levels_taken"] += len(taken)
            self.claim(taken)
            self.spawn(self._take(taken))

    def _judge(self, item_id: str, told: Told) -> str:
        """ "take", "read" or "drop" a stamped count, against what is known of the item."""
        known = self.known.get(item_id)
        if known is None:  # no stamped state to compare with: as an unstamped hint
            unchanged = self.seen.get(item_id) == told.count and not told.ambiguous
            return "drop" if unchanged else "read"
        stamp, count = known
        if told.stamp < stamp:
            return "drop"  # older than what the agent saw or wrote since
        if told.ambiguous or told.stamp == stamp:
            return "drop" if told.count == count and not told.ambiguous else "read"
        told.expect = count
        return "take"

    async def _take(self, taken: dict[str, Told]) -> None:
        try:
            await self._take_levels(taken)
        finally:
            self.release(taken)

    def _read_cause(self, item_id: str) -> str:
        """The cause a read of a queued item observes with: an order that waits for the item's
        level is what a read for any other reason (a write conflict) finds too."""
        cause = self.pending_reads.pop(item_id)
        waited = self.awaiting.get(item_id)
        return cause if waited is None else prefer(waited[1], cause)

    def _dispatch_lookups(self) -> None:
        """Look up what waited `lookup_window`, in a read slot, unless a pass is listing the
        shop (its lookups wait for it to end)."""
        if (
            not self.pending_lookups
            or self._looking_up
            or self._reconciling
            or self._reading >= READS_IN_FLIGHT
        ):
            return
        since = self._lookups_since if self._lookups_since is not None else float("-inf")
        wait = since + self.lookup_window - self.clock.monotonic()
        if wait > 0:
            self._wake_later(wait, "lookup")
            return
        ids = [i for i in self.pending_lookups if i not in self.busy]
        self._lookups_since = None
        if not ids:
            self.look_up((), "")  # all busy: wait another window
            return
        causes = {i: self.pending_lookups.pop(i) for i in ids}
        self.look_up((), "")  # what stays (busy items) waits another window
        self.claim(ids)
        self._reading += 1
        self._looking_up = True
        self.spawn(self._lookup(causes))

    async def _lookup(self, causes: dict[str, str]) -> None:
        ids = list(causes)
        try:
            if await self._look_up(causes):
                self.stats["lookups"] += 1
                self.stats["lookup_ids"] += len(ids)
            else:
                self.catalogue_due = True  # the channel cannot look up: a (held) full pass
        except Exception as exc:  # any failure: look them up again later
            log.warning("lookup_failed", error=str(exc), ids=len(ids))
            await self.clock.sleep(1.0)
            for item_id, cause in causes.items():
                self.pending_lookups.setdefault(item_id, cause)
            self.look_up((), "")
        finally:
            self._reading -= 1
            self._looking_up = False
            self.release(ids)

    def _write_gap(self, rows: int) -> float:
        """Seconds to hold a write call that is not full, so that calls spend at most half the
        platform's budget over time: under load, rows coalesce into fewer, fuller calls.

        Write calls draw on credits that come back at half the budget's restore rate, and up
        to a quarter of its bucket can be spent at once: a shop far from its limit (Plus at
        50 sales/s) writes every change at once, a shop at its limit holds rows back."""
        budget = self.channel.budget
        if budget.restore_rate <= 0:
            return 0.0
        rate = budget.restore_rate / (2 * budget.write_cost)  # calls per second
        most = max(1.0, 0.25 * budget.bucket / budget.write_cost)
        now = self.clock.monotonic()
        credits = min(most, self._credits + (now - self._credits_at) * rate)
        self._credits, self._credits_at = credits, now
        if rows >= budget.max_write_batch or credits >= 1.0:
            return 0.0
        return (1.0 - credits) / rate

    def refund_write(self) -> None:
        """A write dispatched by `_dispatch` found nothing to send: give its credit back."""
        self._credits += 1.0

    def _wake_later(self, seconds: float, name: str) -> None:
        """Dispatch again in `seconds`, unless a wake-up of that `name` is set already."""
        timer = self._timers.get(name)
        if timer is not None and not timer.done():
            return

        async def later() -> None:
            await self.clock.sleep(seconds)
            self._wake.set()

        self._timers[name] = asyncio.create_task(later())

    async def _periodic(self) -> None:
        while True:
            await self.clock.sleep(self.reconcile_interval)
            self.request_reconcile()

    async def _read(self, causes: dict[str, str]) -> None:
        ids = list(causes)
        try:
            await self._read_items(ids, causes)
        finally:
            self._reading -= 1
            self.release(ids)

    # -- claims --------------------------------------------------------------------------------

    def claim(self, item_ids: Iterable[str]) -> None:
        """Mark items busy for one task of reads or writes."""
        self.busy.update(item_ids)
        self._inflight += 1

    def release(self, item_ids: Iterable[str], *, task_done: bool = True) -> None:
        """Free items of a claim (`task_done`: and end its task's slot), and dispatch again."""
        self.busy.difference_update(item_ids)
        if task_done:
            self._inflight -= 1
        self._wake.set()

    @contextlib.contextmanager
    def holding(self, item_ids: list[str]) -> Iterator[None]:
        """Keep items busy for the length of the block, outside any read or write slot."""
        self.busy.update(item_ids)
        try:
            yield
        finally:
            self.busy.difference_update(item_ids)

    def sweep_ended(self, *, wake: bool = True) -> None:
        """The catalogue pass ended (`wake`: dispatch what it queued)."""
        self._reconciling = False
        if wake:
            self._wake.set()
