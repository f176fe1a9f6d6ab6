"""Events, pools and version vectors: the counting rules (pure) and their persistence.

The rules (DESIGN §5, §7):
- an observation `obs` of an item last published at `published` is a local change of
  `obs - published`, appended as an event with this agent as origin and the next seq;
- a pool is the base of its SKU plus the sum of every non-introduce event's delta; the base is
  the count of the earliest-created `introduce` (ties: lowest origin), so agents that hold the
  same events hold the same pools, whatever order they arrived in;
- an event is identified by (origin, epoch, seq) and applied at most once.
Data functions take the session first and never commit: the caller's transaction holds the
event, the pool change and the vector together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from agent.models import EventRow, Identity, PoolRow, VectorEntry

__all__ = [
    "INTRODUCE",
    "Admit",
    "NewEvent",
    "Signer",
    "Vector",
    "append_local",
    "apply_event",
    "apply_events",
    "base_wins",
    "get_pool",
    "get_pools",
    "load_vector",
    "unsigned_own",
]

INTRODUCE = "introduce"


@dataclasses.dataclass(frozen=True, slots=True)
class NewEvent:
    """A local change about to be appended (origin and seq are assigned on append)."""

    sku: str
    kind: str
    delta: int = 0
    count: int | None = None
    item_created: float | None = None
    cause: str = ""


Vector = dict[tuple[str, str], int]  # (origin, epoch) -> highest seq held without gaps
#: Signs an event as this agent (its origin): the base64 proof stored and sent with it.
Signer = Callable[[EventRow], str]
#: Judges a peer's event before it is applied: None to take it, else why it is refused.
Admit = Callable[[EventRow], str | None]


# -- pure rules --------------------------------------------------------------------------------


def base_wins(candidate: tuple[float, str], current: tuple[float | None, str | None]) -> bool:
    """True if an introduce created at candidate=(created, origin) beats the current base."""
    created, origin = current
    if created is None or origin is None:
        return True
    return candidate < (created, origin)


def pool_after(pool: PoolRow, event: EventRow) -> None:
    """Fold one event into a pool row (in place)."""
    if event.kind == INTRODUCE:
        assert event.count is not None and event.item_created is not None
        if base_wins((event.item_created, event.origin), (pool.base_created, pool.base_origin)):
            pool.base = event.count
            pool.base_created = event.item_created
            pool.base_origin = event.origin
    else:
        pool.deltas += event.delta


# -- persistence -------------------------------------------------------------------------------


async def get_pool(session: AsyncSession, sku: str) -> PoolRow | None:
    """The pool row of `sku`, or None if no event for it was ever seen."""
    return await session.get(PoolRow, sku)


async def get_pools(session: AsyncSession, skus: Iterable[str]) -> dict[str, PoolRow]:
    """Pool rows of `skus` that exist, by SKU."""
    wanted = list(set(skus))
    out: dict[str, PoolRow] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = await session.exec(select(PoolRow).where(PoolRow.sku.in_(chunk)))  # type: ignore[attr-defined]
        out.update({row.sku: row for row in rows})
    return out


async def load_vector(session: AsyncSession) -> Vector:
    """The whole version vector."""
    rows = await session.exec(select(VectorEntry))
    return {(row.origin, row.epoch): row.seq for row in rows}


def _fold(session: AsyncSession, pools: dict[str, PoolRow], event: EventRow, now: float) -> None:
    """Fold `event` into its pool; `pools` holds every existing pool row of the batch's SKUs."""
    pool = pools.get(event.sku)
    if pool is None:
        pool = pools[event.sku] = PoolRow(sku=event.sku, deltas=0, updated_at=now)
        session.add(pool)
    pool_after(pool, event)
    pool.updated_at = now


async def append_local(
    session: AsyncSession,
    identity: Identity,
    events: Sequence[NewEvent],
    now: float,
    sign: Signer,
) -> list[EventRow]:
    """Append this agent's own events with the next seqs, signed by `sign`, and fold them into
    pools and the vector.

    The next seq follows the highest this agent holds of its own stream, by the vector and by
    the rows themselves: no stored seq is ever taken twice, whatever arrived from outside.
    """
    if not events:
        return []
    entry = await session.get(VectorEntry, (identity.domain, identity.epoch))
    if entry is None:
        entry = VectorEntry(origin=identity.domain, epoch=identity.epoch, seq=0)
        session.add(entry)
    stored = await session.scalar(
        select(func.max(EventRow.seq)).where(
            EventRow.origin == identity.domain, EventRow.epoch == identity.epoch
        )
    )
    entry.seq = max(entry.seq, stored or 0)
    pools = await get_pools(session, (e.sku for e in events))
    rows = []
    for new in events:
        entry.seq += 1
        row = EventRow(
            origin=identity.domain,
            epoch=identity.epoch,
            seq=entry.seq,
            sku=new.sku,
            kind=new.kind,
            delta=new.delta,
            count=new.count,
            item_created=new.item_created,
            cause=new.cause,
            at=now,
        )
        row.proof = sign(row)
        session.add(row)
        _fold(session, pools, row, now)
        rows.append(row)
    return rows


async def apply_events(
    session: AsyncSession,
    events: Sequence[EventRow],
    now: float,
    admit: Admit | None = None,
    refused: list[tuple[EventRow, str]] | None = None,
) -> list[EventRow]:
    """Apply a batch of peers' events, each at most once (the inbox); returns the new ones.

    Held means: at or below the vector's seq for its (origin, epoch) — which covers events
    taken in through a snapshot, whose rows this agent never had — or present as a row. The
    vector moves only over contiguous seqs, so a gap is filled later by anti-entropy. Rows and
    vector entries added by this batch are tracked here, not looked up: they are not flushed.
    An event not yet held is first put to `admit` (its proof of origin); a refused one is
    skipped, and noted with the reason in `refused`.
    """
    pools = await get_pools(session, (e.sku for e in events))
    vectors: dict[tuple[str, str], VectorEntry] = {}
    added: set[tuple[str, str, int]] = set()
    applied = []
    with session.no_autoflush:
        for event in sorted(events, key=lambda e: (e.origin, e.epoch, e.seq)):
            key, pk = (event.origin, event.epoch), (event.origin, event.epoch, event.seq)
            entry = vectors.get(key)
            if entry is None:
                # a stream new to this agent gets its vector entry with its first event, so
                # that refused events of invented origins leave no trace
                entry = await session.get(VectorEntry, key)
                if entry is None:
                    entry = VectorEntry(origin=event.origin, epoch=event.epoch, seq=0)
                vectors[key] = entry
            if event.seq <= entry.seq or pk in added:
                continue
            if await session.get(EventRow, pk) is not None:
                continue
            reason = None if admit is None else admit(event)
            if reason is not None:
                if refused is not None:
                    refused.append((event, reason))
                continue
            if entry not in session:
                session.add(entry)
            session.add(event)
            added.add(pk)
            _fold(session, pools, event, now)
            applied.append(event)
            if event.seq == entry.seq + 1:
                entry.seq = event.seq
                # events that arrived ahead of a gap may now be contiguous
                while (*key, entry.seq + 1) in added or await session.get(
                    EventRow, (*key, entry.seq + 1)
                ):
                    entry.seq += 1
    return applied


async def apply_event(session: AsyncSession, event: EventRow, now: float) -> bool:
    """Apply one peer's event at most once; False if it was already held."""
    return bool(await apply_events(session, [event], now))


async def unsigned_own(session: AsyncSession, identity: Identity) -> list[EventRow]:
    """This agent's own events stored without a proof (made before events were signed)."""
    query = select(EventRow).where(EventRow.origin == identity.domain, col(EventRow.proof) == "")
    return list(await session.exec(query))
