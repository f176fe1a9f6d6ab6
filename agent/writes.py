"""The write pipeline: plan a shop's counts from pools, send them, fold in the answers (DESIGN §5).

A batch of writes carries an idempotency key persisted (`pending_write`) before it is sent, so
a write whose outcome is unknown, even across a crash, is re-sent as the same request and
applied at most once.
"""

from __future__ import annotations

import dataclasses
import json
import random
import uuid
from collections.abc import Callable, Iterable, Sequence, Set
from typing import Any, ClassVar

import structlog
from sqlalchemy import Connection
from sqlmodel import select as orm_select

from agent import ledger, observation, synclog
from agent.causes import in_words
from agent.channel import Channel, ChannelError, Write, WriteResult
from agent.clock import Clock
from agent.db import QUICK_ROWS, Database
from agent.ledger import NewEvent
from agent.models import EventRow, Identity, PendingWrite
from agent.observation import Append, Effects, Item, load_items, save_items
from agent.rules import Decision
from agent.scheduler import Scheduler
from agent.sql import Tx
from agent.warehouses import Listings, parse_listing

__all__ = ["Allocate", "Carried", "Reason", "Writes"]

log = structlog.get_logger(__name__)

#: What to publish of a pool: a count, or a `Decision` that also says which rules decided.
Allocate = Callable[[str, int], "int | Decision"]


@dataclasses.dataclass(eq=False, kw_only=True)
class Writes:
    """Publishes the pools' targets to the shop, on items the scheduler claimed for it."""

    db: Database
    channel: Channel
    clock: Clock
    identity: Identity
    allocate: Allocate
    rng: random.Random
    append: Append
    scheduler: Scheduler
    # the shop's locations and the group's bundles now (what a listing is made of)
    listings: Callable[[], Listings] = Listings
    oversold: set[str] = dataclasses.field(default_factory=set)  # SKUs logged as oversold
    # item -> why the count in flight to it is written (for its `write` log row)
    why: dict[str, Reason] = dataclasses.field(default_factory=dict)
    # SKU -> the changes applied since its last plan (what its next `write` row carries)
    carried: dict[str, Carried] = dataclasses.field(default_factory=dict)

    def carry(self, events: Iterable[EventRow]) -> None:
        """Changes just applied to pools (this shop's or a peer's): the next write of their
        SKUs carries them, and its log row names them ("order #1042 at shop2 (-1)")."""
        known = self.scheduler.index.sku_item
        listings = self.listings()
        for event in events:
            for listing in listings.affected([event.sku]) if listings else [event.sku]:
                if listing in known:
                    self.carried.setdefault(listing, Carried()).add(event)

    def target_for(self, sku: str, pool: int) -> int:
        """What to publish for a pool count (the allocate hook; never below zero)."""
        return self.decide(sku, pool)[0]

    def decide(self, sku: str, pool: int) -> tuple[int, str]:
        """What to publish for a pool count, and which rules decided ("" for none)."""
        made = self.allocate(sku, pool)
        if isinstance(made, Decision):
            return max(0, made.count), made.why
        return max(0, int(made)), ""

    async def plan(self, skus: list[str]) -> None:
        """Write the targets of `skus` that differ from what the shop shows (their items are
        claimed; each is released once its write has a definite outcome)."""
        sched = self.scheduler
        claimed = [sched.index.sku_item[s] for s in skus]
        key = str(uuid.uuid4())
        now = self.clock.now()
        oversold = frozenset(self.oversold)
        # the changes applied so far are in the pools `work` reads: this plan carries them
        carried = {
            item_id: c
            for item_id, sku in zip(claimed, skus, strict=True)
            if (c := self.carried.pop(sku, None))
        }

        rules: dict[str, str] = {}
        listings = self.listings()

        def work(conn: Connection) -> tuple[list[Write], set[str], set[str]]:
            writes: list[Write] = []
            rows = load_items(conn, claimed)
            pools = ledger.pools(conn, listings.keys(skus) if listings else skus)
            entries, cut, short, enough = [], [], set(), set()

            def count_of(key: str) -> int | None:
                pool = pools.get(key)
                return None if pool is None else pool.value

            for item_id in claimed:
                row = rows.get(item_id)
                if row is None or row.excluded or not row.sku or row.published is None:
                    continue
                sku = parse_listing(row.sku)[0]
                bundle = listings.bundles.is_bundle(sku)
                if listings:
                    made = listings.target(row.sku, count_of, self.decide)
                    if made is None:
                        continue
                    total = None if bundle else listings.known(row.sku, count_of).value
                else:
                    total = count_of(row.sku)
                    if total is None:
                        continue
                    made = self.decide(row.sku, total)
                if total is not None and total < 0 and row.sku not in oversold:
                    short.add(row.sku)
                    entries.append(
                        synclog.entry(
                            "oversold",
                            now,
                            sku=sku,
                            after=total,
                            message=f"the group sold {-total} more than it had; publishing 0",
                        )
                    )
                elif total is not None and total >= 0:
                    enough.add(row.sku)
                target, why = made
                if target != row.published:
                    writes.append(Write(item_id, row.published, target))
                    rules[item_id] = why
                elif row.cutover_pending:
                    row.cutover_pending = False  # the shop already shows the group's count
                    cut.append(row)
            save_items(conn, cut)
            synclog.insert(conn, entries)
            if writes:
                Tx(conn).run(
                    'INSERT INTO pending_write ("key", writes, created_at, attempts) '
                    "VALUES (?, ?, ?, 0)",
                    (key, _dump(writes, set()), float(now)),
                )
            return writes, short, enough

        try:
            writes, short, enough = await self.db.run(work, quick=len(claimed) <= QUICK_ROWS)
        except BaseException:
            sched.release(claimed)
            raise
        for sku in sorted(short):
            log.warning("oversold", shop=self.identity.domain, sku=sku)
        self.oversold = (self.oversold | short) - enough
        written = {w.item_id for w in writes}
        here = self.identity.domain
        for item_id in written:
            self.why[item_id] = Reason.of(rules.get(item_id, ""), carried.get(item_id), here)
        sched.writing.update((w.item_id, w.target) for w in writes)
        if not writes:
            sched.refund_write()  # nothing to send: the call's credit was not spent
        sched.release([i for i in claimed if i not in written], task_done=not writes)
        if writes:
            await self._send(key, writes, done=set())

    async def resume(self) -> None:
        """Re-send batches whose outcome was unknown when the agent stopped (same keys)."""
        async with self.db.sessions() as session:
            pending = list(await session.exec(orm_select(PendingWrite)))
        for row in pending:
            writes, done = _load(row.writes)
            ids = [w.item_id for w in writes if w.item_id not in done]
            log.info("write_resumed", shop=self.identity.domain, key=row.key, rows=len(ids))
            self.scheduler.claim(ids)
            self.scheduler.spawn(self._send(row.key, writes, done, resumed=True))

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
                self.scheduler.release([i for i in remaining if i not in unknown], task_done=False)
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
            self.scheduler.release(remaining)

    async def _call_write(self, key: str, writes: list[Write]) -> list[WriteResult]:
        stats = self.scheduler.stats
        stats["writes"] += 1
        stats["write_rows"] += len(writes)
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
        in it. So each row a retry settled as ``ok`` or ``conflict`` is read afresh (a
        conflict's count is then only the change up to that moment).
        """
        now = self.clock.now()
        held = frozenset(done)
        listings = self.listings()

        def work(conn: Connection) -> tuple[Effects, set[str]]:
            effects, unknown = Effects(), set()
            rows = load_items(conn, [w.item_id for w in writes])
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
                why = self.why.pop(write.item_id, None) or Reason()
                event = _fold_result(entries, effects, row, write, result, now, why)
                if row.state() != state:
                    changed.append(row)
                if row.published is not None and result.status == "ok":
                    effects.seen[write.item_id] = row.published
                    if result.stamp is not None and not retried:
                        # the platform's time of this state: older level webhooks are dropped
                        effects.known[write.item_id] = (result.stamp, row.published)
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
            if listings:
                pools = ledger.pools(conn, listings.keys(e.sku for e in new_events))

                def count_of(key: str) -> int | None:
                    pool = pools.get(key)
                    return None if pool is None else pool.value

                new_events, moved, refused = listings.expand(new_events, count_of)
                effects.plan |= moved
                entries.extend(
                    synclog.entry("change_refused", now, sku=s, message=m) for s, m in refused
                )
            save_items(conn, changed)
            synclog.insert(conn, entries)
            effects.events = self.append(conn, new_events, now)
            return effects, unknown

        effects, unknown = await self.db.run(work, quick=len(writes) <= QUICK_ROWS)
        stats = self.scheduler.stats
        for result in results:  # rows by the platform's answer (the batch's `key` stays)
            answered = f"rows_{result.status}"
            stats[answered] = stats.get(answered, 0) + 1
        done.update(effects.written)
        if retried:  # a replayed answer tells the count of its first moment: look again
            for write, result in zip(writes, results, strict=True):
                if result.status in ("ok", "conflict") and write.item_id in done - held:
                    effects.read.setdefault(write.item_id, "retried write")
        self.scheduler.settle(effects)
        for failed in effects.failed:
            log.error("write_failed", shop=self.identity.domain, sku=failed[0], error=failed[1])
        if not unknown:
            try:  # never sent again: what the channel noted for it can go
                await self.channel.settled(key)
            except Exception as exc:  # a leftover note is dropped at the next start
                log.warning("settle_failed", shop=self.identity.domain, key=key, error=repr(exc))
        return unknown


def _fold_result(
    entries: list[dict[str, Any]],
    effects: Effects,
    row: Item,
    write: Write,
    result: WriteResult,
    now: float,
    why: Reason,
) -> NewEvent | None:
    """One row's write result: the item's new published count, its log entries (a `write`
    row says `why`: the rules that decided its count and the changes it carries), and the
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
                peer=why.peer,
                message=why.message,
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
        # the rule looked up where it lives, so that every caller gets the same one
        return observation.observe(row, result.available, None, "write conflict")
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


@dataclasses.dataclass(slots=True)
class Carried:
    """The changes a SKU's next write carries: the first few by name, the rest counted."""

    SHOWN: ClassVar[int] = 3

    shown: list[EventRow] = dataclasses.field(default_factory=list)
    more: int = 0
    more_delta: int = 0

    def add(self, event: EventRow) -> None:
        if len(self.shown) < self.SHOWN:
            self.shown.append(event)
        else:
            self.more += 1
            self.more_delta += event.delta

    def origins(self) -> set[str]:
        return {e.origin for e in self.shown}

    def words(self, here: str) -> str:
        """ "order #1042 at shop2 (-1), refund of order 77 here (+1) and 4 more changes (-6)"."""
        said = ", ".join(_said(e, here) for e in self.shown)
        if self.more:
            said += f" and {self.more} more change{'s' if self.more != 1 else ''} "
            said += f"({self.more_delta:+d})"
        return said


def _said(event: EventRow, here: str) -> str:
    where = "here" if event.origin == here else f"at {event.origin}"
    if event.kind == ledger.INTRODUCE:
        return f"created {where} with {event.count}"
    return f"{in_words(event.cause)} {where} ({event.delta:+d})"


@dataclasses.dataclass(frozen=True, slots=True)
class Reason:
    """Why a count is written: the rules that decided it, and the changes it carries (their
    shop is the row's `peer` when they all come from one)."""

    message: str = ""
    peer: str | None = None

    @classmethod
    def of(cls, rules: str, carried: Carried | None, here: str) -> Reason:
        if carried is None:
            return cls(rules)
        said = carried.words(here)
        origins = carried.origins() - {here}
        peer = next(iter(origins)) if len(origins) == 1 and not carried.more else None
        return cls(f"{rules} · {said}" if rules else said, peer)


def _dump(writes: Sequence[Write], done: Set[str]) -> str:
    return json.dumps([[w.item_id, w.expected, w.target, w.item_id in done] for w in writes])


def _load(raw: str) -> tuple[list[Write], set[str]]:
    rows = json.loads(raw)
    writes = [Write(r[0], int(r[1]), int(r[2])) for r in rows]
    return writes, {r[0] for r in rows if len(r) > 3 and r[3]}
