"""The per-SKU loop between the group's pool and this agent's shop (DESIGN §5).

Webhooks are hints: they queue a fresh, batched read. A read is an observation; a difference
from the published count is a local change and becomes an event. A pool change queues a write
of `allocate(pool)`, compare-and-set against the published count. One read or write is in
flight per item at a time (`busy`), so an observation never races a write of the same item.
Writes carry an idempotency key persisted before sending, so a write whose outcome is unknown,
even across a crash, is re-sent as the same request and applied at most once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import uuid
from collections.abc import Callable, Iterable, Sequence, Set
from typing import Any, Protocol

import structlog
from sqlalchemy import Connection
from sqlmodel import select as orm_select

from agent import ledger, synclog
from agent.catalogue import Index, SkuRule, sync_catalogue
from agent.channel import Channel, ChannelError, WebhookHint, Write, WriteResult
from agent.clock import Clock
from agent.db import Database
from agent.ledger import INTRODUCE, NewEvent
from agent.models import EventRow, Identity, PendingWrite
from agent.sql import Tx, marks

__all__ = ["Item", "Reconciler", "observe"]

log = structlog.get_logger(__name__)

Allocate = Callable[[str, int], int]
READS_IN_FLIGHT = 2
_ITEMS = "SELECT item_id, sku, published, created_at, excluded, cutover_pending FROM item"
_SAVE_ITEM = "UPDATE item SET published = ?, cutover_pending = ? WHERE item_id = ?"


@dataclasses.dataclass(slots=True)
class Item:
    """What the write pipeline reads and updates of an item row (a plain value)."""

    item_id: str
    sku: str | None
    published: int | None
    created_at: float
    excluded: str | None
    cutover_pending: bool

    def state(self) -> tuple[int | None, bool]:
        return (self.published, self.cutover_pending)


class _ItemLike(Protocol):
    sku: str | None
    published: int | None
    created_at: float
    cutover_pending: bool


class _HasValue(Protocol):
    @property
    def value(self) -> int | None: ...


def _items(conn: Connection, ids: Iterable[str]) -> dict[str, Item]:
    tx = Tx(conn)
    out: dict[str, Item] = {}
    for chunk in ledger._chunks(ids):
        for i, sku, published, created, excluded, cutover in tx.rows(
            f"{_ITEMS} WHERE item_id IN ({marks(len(chunk))})", chunk
        ):
            out[i] = Item(i, sku, published, created, excluded, bool(cutover))
    return out


def _save_items(conn: Connection, items: Iterable[Item]) -> None:
    """Write back the published count and cut-over flag of `items`, in one statement."""
    Tx(conn).many(_SAVE_ITEM, ((i.published, i.cutover_pending, i.item_id) for i in items))


@dataclasses.dataclass
class _Effects:
    """What a unit of work decided for the reconciler's memory, applied after it commits (the
    unit runs in the database thread, which never touches the reconciler's state)."""

    touched: list[str] = dataclasses.field(default_factory=list)
    seen: dict[str, int] = dataclasses.field(default_factory=dict)
    plan: set[str] = dataclasses.field(default_factory=set)  # SKUs to write again
    read: dict[str, str] = dataclasses.field(default_factory=dict)  # item_id -> cause
    written: list[str] = dataclasses.field(default_factory=list)  # rows settled
    events: list[EventRow] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (sku, why)


def observe(item: _ItemLike, obs: int, pool: _HasValue | None, cause: str) -> NewEvent | None:
    """The observation rule: what a fresh count `obs` of `item` means (updates `item`).

    First sighting of a SKU the pool does not know → `introduce` with its count; first
    sighting of a known SKU → no event (the pool's target will overwrite it); otherwise a
    non-zero difference from the published count is a local change.
    """
    assert item.sku is not None
    if item.cutover_pending:  # old stock before the join's cut-over write: not an event
        item.published = obs
        return None
    if item.published is None:
        item.published = obs
        if pool is None or pool.value is None:
            return NewEvent(
                item.sku, INTRODUCE, count=obs, item_created=item.created_at, cause=cause
            )
        return None
    delta = obs - item.published
    item.published = obs
    if delta == 0:
        return None
    return NewEvent(item.sku, "change", delta=delta, cause=cause)


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
        on_local_events: Callable[[list[EventRow]], None] | None = None,
        max_inflight: int = 4,
        rng: random.Random | None = None,
        sku_rule: SkuRule | None = None,
        sign_event: ledger.Signer | None = None,
    ) -> None:
        self.db = db
        # this agent's proof of origin for its events; without one (a reconciler on its own,
        # in tests) events carry none, and no peer would take them
        self.sign_event: ledger.Signer = sign_event or (lambda _event: "")
        self.channel = channel
        self.clock = clock
        self.identity = identity
        self.allocate = allocate
        self.coalesce = coalesce
        self.reconcile_interval = reconcile_interval
        self.on_local_events = on_local_events
        self.max_inflight = max_inflight
        self.rng = rng or random.Random()
        self.sku_rule = sku_rule or SkuRule()
        self.index = Index()
        self.pending_reads: dict[str, str] = {}  # item_id -> cause
        self.pending_skus: set[str] = set()
        self.busy: set[str] = set()
        self.last_touch: dict[str, float] = {}  # item_id -> monotonic time of last observation
        self.seen: dict[str, int] = {}  # item_id -> published count, to spot webhook echoes
        self.writing: dict[str, int] = {}  # item_id -> target of the write in flight
        self.oversold: set[str] = set()
        self.stats = {
            "reads": 0,
            "read_ids": 0,
            "writes": 0,
            "write_rows": 0,
            "events": 0,
            "echoes_skipped": 0,
        }
        self.last_reconcile: float | None = None  # when the last full pass ended
        self.last_listing: float | None = None  # when that pass began to list the shop
        self._inflight = 0
        self._reading = 0
        self._last_write_at = float("-inf")
        self._timer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._catalogue_due = False
        self._reconciling = False
        self.ready = asyncio.Event()

    # -- inputs ------------------------------------------------------------------------------

    def hint(self, hint: WebhookHint) -> None:
        """A verified webhook: queue fresh reads of what it names."""
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
        for hinted in hint.item_ids:
            if hinted in unchanged:
                continue
            if hinted in self.index.item_sku:
                self.pending_reads[hinted] = hint.topic
            elif hinted not in self.index.excluded:
                self._catalogue_due = True  # an item we do not know yet
        for raw in hint.skus:
            rule_sku = self.sku_rule(raw)
            item_id = self.index.sku_item.get(rule_sku) if rule_sku else None
            if item_id is not None:
                self.pending_reads[item_id] = hint.topic
        if hint.catalogue_changed:
            self._catalogue_due = True
        self._wake.set()

    def pool_changed(self, skus: Iterable[str]) -> None:
        """Pools of `skus` moved (remote events, import): queue writes of their targets."""
        self.pending_skus.update(skus)
        self._wake.set()

    def resync(self, skus: Iterable[str] | None = None) -> list[str]:
        """Re-read these SKUs' items (all when None) and re-write their counts if they differ;
        returns the SKUs queued. For an admin who doubts a count."""
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
        """Ask for a full catalogue reconciliation soon."""
        self._catalogue_due = True
        self._wake.set()

    def is_idle(self) -> bool:
        """No read, write or catalogue work queued or in flight."""
        return not (
            self.pending_reads
            or self.pending_skus
            or self.busy
            or self._inflight
            or self._catalogue_due
            or self._reconciling
        )

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Resume unfinished writes, reconcile the catalogue, then serve hints forever."""
        async with self.db.sessions() as session:
            self.index = await Index.load(session)
        await self._resume_pending_writes()
        # which pools still await their write was known only in memory: after a restart, plan
        # every SKU again (only those whose target differs from the published count are sent)
        self.pending_skus.update(self.index.sku_item)
        self._spawn(self._periodic())
        self.request_reconcile()
        self.ready.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.coalesce > 0:
                await self.clock.sleep(self.coalesce)  # let a burst of hints gather
            self._dispatch()

    async def close(self) -> None:
        """Cancel background work (in-flight writes stay pending in the database)."""
        if self._timer is not None:
            self._tasks.add(self._timer)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def tasks(self) -> list[asyncio.Task[None]]:
        """The reconciler's background tasks, oldest first (a simulated crash cancels them)."""
        return sorted(self._tasks, key=lambda t: t.get_name())

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("reconcile_task_failed", error=repr(task.exception()))

    def _dispatch(self) -> None:
        if self._catalogue_due and not self._reconciling:
            self._catalogue_due = False
            self._reconciling = True
            self._spawn(self._reconcile_all())
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
            causes = {i: self.pending_reads.pop(i) for i in ids}
            self._claim(ids)
            self._reading += 1
            self._spawn(self._read(causes))
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
                self._wake_later(wait)
                break
            self._last_write_at = self.clock.monotonic()
            self.pending_skus.difference_update(skus)
            self._claim([self.index.sku_item[s] for s in skus])
            self._spawn(self._plan_writes(skus))

    def _write_gap(self, rows: int) -> float:
        """Seconds to hold a write call that is not full, so that calls never spend more than
        half the platform's budget: under load, rows coalesce into fewer, fuller calls."""
        budget = self.channel.budget
        if rows >= budget.max_write_batch or budget.restore_rate <= 0:
            return 0.0
        gap = 2 * budget.write_cost / budget.restore_rate
        return max(0.0, self._last_write_at + gap - self.clock.monotonic())

    def _wake_later(self, seconds: float) -> None:
        if self._timer is not None and not self._timer.done():
            return

        async def later() -> None:
            await self.clock.sleep(seconds)
            self._wake.set()

        self._timer = asyncio.create_task(later())

    def _claim(self, item_ids: Iterable[str]) -> None:
        self.busy.update(item_ids)
        self._inflight += 1

    def _release(self, item_ids: Iterable[str], *, task_done: bool = True) -> None:
        self.busy.difference_update(item_ids)
        if task_done:
            self._inflight -= 1
        self._wake.set()

    async def _periodic(self) -> None:
        while True:
            await self.clock.sleep(self.reconcile_interval)
            self.request_reconcile()

    # -- observing -----------------------------------------------------------------------------

    async def _read(self, causes: dict[str, str]) -> None:
        ids = list(causes)
        try:
            await self._read_and_observe(ids, causes)
        finally:
            self._reading -= 1
            self._release(ids)

    async def _read_and_observe(self, ids: list[str], causes: dict[str, str]) -> None:
        try:
            counts = await self.channel.read(ids)
        except Exception as exc:  # any failure: retry the reads later
            log.warning("read_failed", shop=self.identity.domain, error=str(exc), ids=len(ids))
            await self.clock.sleep(1.0 + self.rng.random())
            for item_id in ids:
                self.pending_reads.setdefault(item_id, causes[item_id])
            return
        self.stats["reads"] += 1
        self.stats["read_ids"] += len(ids)
        observations = {i: c for i, c in counts.items() if c is not None}
        if len(observations) < len(ids):
            self._catalogue_due = True  # an item vanished or moved: look at the catalogue
        await self._observe(observations, causes)

    async def _observe(self, counts: dict[str, int], causes: dict[str, str] | str) -> None:
        """Apply fresh counts of busy items in one unit of work."""
        if not counts:
            return
        now = self.clock.now()

        def work(conn: Connection) -> _Effects:
            done = _Effects()
            rows = _items(conn, counts)
            pools = ledger.pools(conn, (r.sku for r in rows.values() if r.sku))
            new_events: list[NewEvent] = []
            introduced: list[str] = []
            entries: list[dict[str, Any]] = []
            changed: list[Item] = []
            for item_id, obs in counts.items():
                row = rows.get(item_id)
                if row is None or row.excluded is not None or not row.sku:
                    continue
                done.touched.append(item_id)
                cause = causes if isinstance(causes, str) else causes.get(item_id, "read")
                before, state = row.published, row.state()
                event = observe(row, obs, pools.get(row.sku), cause)
                if row.state() != state:
                    changed.append(row)
                done.seen[item_id] = obs
                if event is None:
                    if before is None or row.cutover_pending:
                        done.plan.add(row.sku)  # the pool's count must overwrite it
                    continue
                new_events.append(event)
                if event.kind == INTRODUCE:
                    introduced.append(row.sku)
                    continue
                entries.append(
                    synclog.entry(
                        "change",
                        now,
                        sku=row.sku,
                        before=before,
                        delta=event.delta,
                        after=obs,
                        message=cause,
                    )
                )
            if 0 < len(introduced) <= 20:
                entries += [
                    synclog.entry("introduce", now, sku=s, message=cause) for s in introduced
                ]
            elif introduced:  # a whole catalogue at once: one line, not thousands
                entries.append(
                    synclog.entry(
                        "introduce",
                        now,
                        message=f"{len(introduced)} new SKUs "
                        f"({introduced[0]} … {introduced[-1]}), {cause}",
                    )
                )
            _save_items(conn, changed)
            synclog.insert(conn, entries)
            done.events = self._append(conn, new_events, now)
            return done

        self._settle(await self.db.run(work))

    def _append(self, conn: Connection, events: list[NewEvent], now: float) -> list[EventRow]:
        return ledger.append(conn, self.identity, events, now, self.sign_event)

    def _settle(self, done: _Effects) -> None:
        """Fold a committed unit's decisions into memory, and announce its events."""
        touched = self.clock.monotonic()
        for item_id in done.touched:
            self.last_touch[item_id] = touched
        for item_id in done.written:
            self.writing.pop(item_id, None)
        self.seen.update(done.seen)
        self.pending_skus.update(done.plan)
        for item_id, cause in done.read.items():
            self.pending_reads.setdefault(item_id, cause)
        appended = done.events
        self.stats["events"] += len(appended)
        if appended:
            self.pending_skus.update(e.sku for e in appended)
            if self.on_local_events is not None:
                self.on_local_events(appended)
        if done.plan or done.read or appended:
            self._wake.set()

    # -- writing -------------------------------------------------------------------------------

    def target_for(self, sku: str, pool: int) -> int:
        """What to publish for a pool count (the allocate hook; never below zero)."""
        return max(0, int(self.allocate(sku, pool)))

    async def _plan_writes(self, skus: list[str]) -> None:
        claimed = [self.index.sku_item[s] for s in skus]
        key = str(uuid.uuid4())
        now = self.clock.now()
        oversold = frozenset(self.oversold)

        def work(conn: Connection) -> tuple[list[Write], set[str], set[str]]:
            writes: list[Write] = []
            rows = _items(conn, claimed)
            pools = ledger.pools(conn, skus)
            entries, cut, short, enough = [], [], set(), set()
            for item_id in claimed:
                row = rows.get(item_id)
                if row is None or row.excluded or not row.sku or row.published is None:
                    continue
                pool = pools.get(row.sku)
                if pool is None or pool.value is None:
                    continue
                if pool.value < 0 and row.sku not in oversold:
                    short.add(row.sku)
                    entries.append(
                        synclog.entry(
                            "oversold",
                            now,
                            sku=row.sku,
                            after=pool.value,
                            message=f"the group sold {-pool.value} more than it had; publishing 0",
                        )
                    )
                elif pool.value >= 0:
                    enough.add(row.sku)
                target = self.target_for(row.sku, pool.value)
                if target != row.published:
                    writes.append(Write(item_id, row.published, target))
                elif row.cutover_pending:
                    row.cutover_pending = False  # the shop already shows the group's count
                    cut.append(row)
            _save_items(conn, cut)
            synclog.insert(conn, entries)
            if writes:
                Tx(conn).run(
                    'INSERT INTO pending_write ("key", writes, created_at, attempts) '
                    "VALUES (?, ?, ?, 0)",
                    (key, _dump(writes, set()), float(now)),
                )
            return writes, short, enough

        try:
            writes, short, enough = await self.db.run(work)
        except BaseException:
            self._release(claimed)
            raise
        for sku in sorted(short):
            log.warning("oversold", shop=self.identity.domain, sku=sku)
        self.oversold = (self.oversold | short) - enough
        written = {w.item_id for w in writes}
        self.writing.update((w.item_id, w.target) for w in writes)
        self._release([i for i in claimed if i not in written], task_done=not writes)
        if writes:
            await self._send(key, writes, done=set())

    async def _send(
        self, key: str, writes: list[Write], done: set[str], *, resumed: bool = False
    ) -> None:
        """Send a batch until every row has a definite outcome; the same key on every retry."""
        attempt = 0
        remaining = [w.item_id for w in writes if w.item_id not in done]
        try:
            while True:
                results = await self._call_write(key, writes)
                retried = resumed or attempt > 0
                unknown = await self._apply_results(key, writes, results, done, retried=retried)
                if not unknown:
                    return
                self._release([i for i in remaining if i not in unknown], task_done=False)
                remaining = list(unknown)
                attempt += 1
                delay = min(30.0, 0.2 * 2**attempt) * (0.5 + self.rng.random())
                log.warning(
                    "write_unknown",
                    shop=self.identity.domain,
                    key=key,
                    rows=len(unknown),
                    attempt=attempt,
                    retry_in=round(delay, 2),
                )
                await self.clock.sleep(delay)
        finally:
            self._release(remaining)

    async def _call_write(self, key: str, writes: list[Write]) -> list[WriteResult]:
        self.stats["writes"] += 1
        self.stats["write_rows"] += len(writes)
        try:
            results = await self.channel.write(writes, key=key)
        except ChannelError as exc:
            return [WriteResult(w.item_id, "error", message=str(exc)) for w in writes]
        except Exception as exc:
            log.warning("write_call_failed", shop=self.identity.domain, error=repr(exc))
            return [WriteResult(w.item_id, "unknown", message=repr(exc)) for w in writes]
        if len(results) != len(writes):
            raise RuntimeError(f"channel returned {len(results)} results for {len(writes)} writes")
        return results

    async def _apply_results(
        self,
        key: str,
        writes: list[Write],
        results: list[WriteResult],
        done: set[str],
        *,
        retried: bool = False,
    ) -> set[str]:
        """Fold a write's results into items, events and the log; returns rows still unknown.

        The answer to a retry of a write whose first answer was lost may be the platform's
        replay of that first answer, with the count of that moment: a sale since then is not
        in it. So each row a retry settled as ``ok`` is read afresh.
        """
        now = self.clock.now()
        held = frozenset(done)

        def work(conn: Connection) -> tuple[_Effects, set[str]]:
            effects, unknown = _Effects(), set()
            rows = _items(conn, [w.item_id for w in writes])
            new_events: list[NewEvent] = []
            entries: list[dict[str, Any]] = []
            changed: list[Item] = []
            for write, result in zip(writes, results, strict=True):
                row = rows.get(write.item_id)
                if write.item_id in held or row is None or not row.sku:
                    continue
                if result.status == "unknown":
                    unknown.add(write.item_id)
                    continue
                effects.written.append(write.item_id)
                effects.touched.append(write.item_id)
                state = row.state()
                event = _fold_result(entries, effects, row, write, result, now)
                if row.state() != state:
                    changed.append(row)
                if row.published is not None and result.status == "ok":
                    effects.seen[write.item_id] = row.published
                if event is not None:
                    new_events.append(event)
            tx = Tx(conn)
            if unknown:
                settled = held | set(effects.written)
                tx.run(
                    'UPDATE pending_write SET writes = ?, attempts = attempts + 1 WHERE "key" = ?',
                    (_dump(writes, settled), key),
                )
            else:
                tx.run('DELETE FROM pending_write WHERE "key" = ?', (key,))
            _save_items(conn, changed)
            synclog.insert(conn, entries)
            effects.events = self._append(conn, new_events, now)
            return effects, unknown

        effects, unknown = await self.db.run(work)
        done.update(effects.written)
        if retried:
            for write, result in zip(writes, results, strict=True):
                if result.status == "ok" and write.item_id in done - held:
                    effects.read.setdefault(write.item_id, "retried write")
        self._settle(effects)
        for failed in effects.failed:
            log.error("write_failed", shop=self.identity.domain, sku=failed[0], error=failed[1])
        if not unknown:
            try:  # never sent again: what the channel noted for it can go
                await self.channel.settled(key)
            except Exception as exc:  # a leftover note is dropped at the next start
                log.warning("settle_failed", shop=self.identity.domain, key=key, error=repr(exc))
        return unknown

    async def _resume_pending_writes(self) -> None:
        """Re-send batches whose outcome was unknown when the agent stopped (same keys)."""
        async with self.db.sessions() as session:
            pending = list(await session.exec(orm_select(PendingWrite)))
        for row in pending:
            writes, done = _load(row.writes)
            ids = [w.item_id for w in writes if w.item_id not in done]
            log.info("write_resumed", shop=self.identity.domain, key=row.key, rows=len(ids))
            self._claim(ids)
            self._spawn(self._send(row.key, writes, done, resumed=True))

    # -- the whole catalogue -------------------------------------------------------------------

    async def _reconcile_all(self) -> None:
        started = self.clock.monotonic()
        listed_at = self.clock.now()
        try:
            listed = [item async for item in self.channel.list_items()]
        except Exception as exc:
            log.warning("reconcile_list_failed", shop=self.identity.domain, error=str(exc))
            self._reconciling = False
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
                self.index.put(row)
            counts = {
                it.item_id: it.available for it in listed if it.item_id in self.index.item_sku
            }
            ids = list(counts)
            never = float("-inf")
            for start in range(0, len(ids), 500):
                # the listing is a snapshot from before `started`: an item read or written
                # since then (even while earlier chunks were processed) knows better
                chunk = [
                    i
                    for i in ids[start : start + 500]
                    if i not in self.busy and self.last_touch.get(i, never) < started
                ]
                self.busy.update(chunk)
                try:
                    await self._observe({i: counts[i] for i in chunk}, "reconcile")
                finally:
                    self.busy.difference_update(chunk)
            self.last_reconcile = self.clock.now()
            self.last_listing = listed_at
            log.info(
                "reconciled",
                shop=self.identity.domain,
                items=len(listed),
                new=len(change.new),
                excluded=len(self.index.excluded),
            )
        finally:
            self._reconciling = False
            self._wake.set()


def _fold_result(
    entries: list[dict[str, Any]],
    effects: _Effects,
    row: Item,
    write: Write,
    result: WriteResult,
    now: float,
) -> NewEvent | None:
    """One row's write result: the item's new published count, its log entries, and the
    event if the shop moved at the same moment."""
    sku = row.sku
    assert sku is not None
    if result.status == "ok":
        after = write.target if result.available is None else result.available
        row.published = write.target
        row.cutover_pending = False
        entries.append(
            synclog.entry(
                "write",
                now,
                sku=sku,
                before=write.expected,
                delta=write.target - write.expected,
                after=write.target,
            )
        )
        if after != write.target:  # the shop moved at the same moment: a local sale
            row.published = after
            entries.append(
                synclog.entry(
                    "change",
                    now,
                    sku=sku,
                    before=write.target,
                    delta=after - write.target,
                    after=after,
                    message="during write",
                )
            )
            return NewEvent(sku, "change", delta=after - write.target, cause="during write")
        return None
    if result.status == "conflict":
        entries.append(
            synclog.entry(
                "write_conflict",
                now,
                sku=sku,
                before=write.expected,
                after=result.available,
                message="shop moved; re-read",
            )
        )
        effects.plan.add(sku)
        if result.available is None:
            effects.read[write.item_id] = "write conflict"
            return None
        return observe(row, result.available, None, "write conflict")
    entries.append(
        synclog.entry(
            "write_failed",
            now,
            sku=sku,
            before=write.expected,
            after=write.target,
            message=result.message[:500],
        )
    )
    effects.failed.append((sku, result.message))
    return None


def _dump(writes: Sequence[Write], done: Set[str]) -> str:
    return json.dumps([[w.item_id, w.expected, w.target, w.item_id in done] for w in writes])


def _load(raw: str) -> tuple[list[Write], set[str]]:
    rows = json.loads(raw)
    writes = [Write(r[0], int(r[1]), int(r[2])) for r in rows]
    return writes, {r[0] for r in rows if len(r) > 3 and r[3]}
