"""Events, pools and version vectors: the counting rules (pure) and their persistence.

The rules (DESIGN §5, §7):
- an observation `obs` of an item last published at `published` is a local change of
  `obs - published`, appended as an event with this agent as origin and the next seq;
- a pool is the base of its SKU plus the sum of every non-introduce event's delta; the base is
  the count of the earliest-created `introduce` (ties: lowest origin), so agents that hold the
  same events hold the same pools, whatever order they arrived in;
- an event is identified by (origin, epoch, seq) and applied at most once.
Data functions take a Core connection first and never commit: the caller's unit of work
(`Database.run`) holds the event, the pool change and the vector together. They are batch
statements in plain SQL (`agent.sql`) on the SQLModel tables: one SELECT per table,
`executemany` inserts and upserts, never ORM objects per row. `append_local`,
`apply_events`, `get_pools` and `load_vector` are the same for an ORM session (cold paths,
tests).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from agent.models import EventRow, Identity
from agent.sql import Tx, marks

__all__ = [
    "INTRODUCE",
    "WHILE_OUT",
    "Admit",
    "NewEvent",
    "Pool",
    "Signer",
    "Snapshot",
    "SnapshotHead",
    "StaleSnapshot",
    "Vector",
    "append",
    "append_local",
    "apply",
    "apply_event",
    "apply_events",
    "base_wins",
    "discard_staged",
    "event_of",
    "compact",
    "event_values",
    "events_after",
    "folded",
    "get_pool",
    "get_pools",
    "group_lacks",
    "held_beyond",
    "install",
    "install_snapshot",
    "load_vector",
    "pool_pages",
    "pools",
    "rebase",
    "save_pools",
    "snapshot",
    "snapshot_head",
    "stage",
    "staged_count",
    "staged_counts",
    "staged_skus",
    "unsigned_own",
    "vector",
]

CHUNK = 500  # values per IN (…): well under every driver's limit on bound parameters

INTRODUCE = "introduce"
#: The cause of a change a shop made while out of the group, counted when it joined again.
WHILE_OUT = "while_out"


class StaleSnapshot(ValueError):
    """A snapshot older than what this agent has folded: it cannot be its base (`rebase`)."""


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


def covers(vector: Vector, other: Vector) -> bool:
    """Whether `vector` holds every event `other` holds."""
    return all(vector.get(stream, 0) >= seq for stream, seq in other.items())


#: Signs an event as this agent (its origin): the base64 proof stored and sent with it.
Signer = Callable[[EventRow], str]
#: Judges a peer's event before it is applied: None to take it, else why it is refused.
Admit = Callable[[EventRow], str | None]


@dataclasses.dataclass(slots=True)
class Pool:
    """The group's count of one SKU, as a plain value (the `pool` table's row)."""

    sku: str
    base: int | None = None
    base_created: float | None = None
    base_origin: str | None = None
    deltas: int = 0
    updated_at: float = 0.0

    @property
    def value(self) -> int | None:
        """The pool count, or None while no introduce has been seen."""
        return None if self.base is None else self.base + self.deltas


@dataclasses.dataclass(frozen=True, slots=True)
class SnapshotHead:
    """A snapshot but its pools: the vector the pools count, and the events held beyond it
    (arrived ahead of a gap: not yet folded, and still owed to whoever lacks them)."""

    vector: Vector
    extra: list[EventRow]


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent copy of a ledger, which a joiner takes as its base: every pool, the
    vector those pools count, and the events held beyond the vector (arrived ahead of a gap:
    not yet folded, and still owed to whoever lacks them)."""

    pools: list[Pool]
    vector: Vector
    extra: list[EventRow]


class _PoolLike(Protocol):
    base: int | None
    base_created: float | None
    base_origin: str | None
    deltas: int


# -- pure rules --------------------------------------------------------------------------------


def base_wins(candidate: tuple[float, str], current: tuple[float | None, str | None]) -> bool:
    """True if an introduce created at candidate=(created, origin) beats the current base."""
    created, origin = current
    if created is None or origin is None:
        return True
    return candidate < (created, origin)


def pool_after(pool: _PoolLike, event: EventRow) -> None:
    """Fold one event into a pool row (in place)."""
    if event.kind == INTRODUCE:
        assert event.count is not None and event.item_created is not None
        if base_wins((event.item_created, event.origin), (pool.base_created, pool.base_origin)):
            pool.base = event.count
            pool.base_created = event.item_created
            pool.base_origin = event.origin
    else:
        pool.deltas += event.delta


# -- persistence: batch statements on a connection ------------------------------------------

_POOL_COLUMNS = "sku, base, base_created, base_origin, deltas, updated_at"
_SAVE_POOL = (
    f"INSERT INTO pool ({_POOL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sku) DO UPDATE "
    "SET base = excluded.base, base_created = excluded.base_created, "
    "base_origin = excluded.base_origin, deltas = excluded.deltas, "
    "updated_at = excluded.updated_at"
)
_SAVE_VECTOR = (
    "INSERT INTO vector (origin, epoch, seq) VALUES (?, ?, ?) "
    "ON CONFLICT (origin, epoch) DO UPDATE SET seq = excluded.seq"
)
EVENT_COLUMNS = 'origin, epoch, seq, sku, kind, delta, "count", item_created, cause, "at", proof'
_INSERT_EVENT = f"INSERT INTO event ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _chunks(values: Iterable[Any]) -> Iterable[list[Any]]:
    wanted = list(values)
    for start in range(0, len(wanted), CHUNK):
        yield wanted[start : start + CHUNK]


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def pools(conn: Connection, skus: Iterable[str]) -> dict[str, Pool]:
    """Pools of `skus` that exist, by SKU."""
    tx = Tx(conn)
    out: dict[str, Pool] = {}
    for chunk in _chunks(set(skus)):
        query = f"SELECT {_POOL_COLUMNS} FROM pool WHERE sku IN ({marks(len(chunk))})"
        for row in tx.rows(query, chunk):
            out[row[0]] = Pool(*row)
    return out


def save_pools(conn: Connection, changed: Iterable[Pool]) -> None:
    """Write pools back (new ones inserted)."""
    Tx(conn).many(
        _SAVE_POOL,
        (
            (p.sku, p.base, _float(p.base_created), p.base_origin, p.deltas, float(p.updated_at))
            for p in changed
        ),
    )


def vector(conn: Connection) -> Vector:
    """The whole version vector."""
    return {(o, e): s for o, e, s in Tx(conn).rows("SELECT origin, epoch, seq FROM vector")}


def _save_vector(conn: Connection, entries: dict[tuple[str, str], int]) -> None:
    Tx(conn).many(_SAVE_VECTOR, ((o, e, s) for (o, e), s in entries.items()))


def event_values(e: EventRow) -> tuple[Any, ...]:
    """An event's row, in `EVENT_COLUMNS` order."""
    return (
        e.origin,
        e.epoch,
        e.seq,
        e.sku,
        e.kind,
        e.delta,
        e.count,
        _float(e.item_created),
        e.cause,
        float(e.at),
        e.proof,
    )


def event_of(row: Sequence[Any]) -> EventRow:
    """An event from its row (`EVENT_COLUMNS` order)."""
    origin, epoch, seq, sku, kind, delta, count, created, cause, at, proof = row
    return EventRow(
        origin=origin,
        epoch=epoch,
        seq=seq,
        sku=sku,
        kind=kind,
        delta=delta,
        count=count,
        item_created=created,
        cause=cause,
        at=at,
        proof=proof,
    )


def _fold(held: dict[str, Pool], event: EventRow, now: float) -> Pool:
    """Fold `event` into its pool; `held` holds every existing pool of the batch's SKUs."""
    pool = held.get(event.sku)
    if pool is None:
        pool = held[event.sku] = Pool(sku=event.sku, deltas=0, updated_at=now)
    pool_after(pool, event)
    pool.updated_at = now
    return pool


class Stream(Protocol):
    """Whose events these are: this agent's domain and its current epoch."""

    @property
    def domain(self) -> str: ...

    @property
    def epoch(self) -> str: ...


@dataclasses.dataclass(frozen=True, slots=True)
class _Stream:
    domain: str
    epoch: str


def append(
    conn: Connection, identity: Stream, events: Sequence[NewEvent], now: float, sign: Signer
) -> list[EventRow]:
    """Append this agent's own events with the next seqs, signed by `sign`, and fold them into
    pools and the vector.

    The next seq follows the highest this agent holds of its own stream, by the vector and by
    the rows themselves: no stored seq is ever taken twice, whatever arrived from outside.
    """
    if not events:
        return []
    tx = Tx(conn)
    own = (identity.domain, identity.epoch)
    noted = tx.one("SELECT seq FROM vector WHERE origin = ? AND epoch = ?", own)
    stored = tx.one("SELECT MAX(seq) FROM event WHERE origin = ? AND epoch = ?", own)
    seq = max(noted[0] if noted else 0, (stored[0] if stored else None) or 0)
    held = pools(conn, (e.sku for e in events))
    rows, touched = [], {}
    for new in events:
        seq += 1
        row = EventRow(
            origin=own[0],
            epoch=own[1],
            seq=seq,
            sku=new.sku,
            kind=new.kind,
            delta=new.delta,
            count=new.count,
            item_created=new.item_created,
            cause=new.cause,
            at=now,
        )
        row.proof = sign(row)
        rows.append(row)
        touched[new.sku] = _fold(held, row, now)
    tx.many(_INSERT_EVENT, (event_values(r) for r in rows))
    save_pools(conn, touched.values())
    _save_vector(conn, {own: seq})
    return rows


def apply(
    conn: Connection,
    events: Sequence[EventRow],
    now: float,
    admit: Admit | None = None,
    refused: list[tuple[EventRow, str]] | None = None,
) -> list[EventRow]:
    """Apply a batch of peers' events, each at most once (the inbox); returns the new ones.

    Held means: at or below the vector's seq for its (origin, epoch) — which covers events
    taken in through a snapshot, whose rows this agent never had — or present as a row. The
    vector moves only over contiguous seqs, so a gap is filled later by anti-entropy. An
    event not yet held is first put to `admit` (its proof of origin); a refused one is
    skipped, and noted with the reason in `refused`. A stream new to this agent gets its
    vector entry with its first applied event, so refused events of invented origins leave
    no trace.
    """
    if not events:
        return []
    tx = Tx(conn)
    entries = vector(conn)  # one row per stream: a handful
    # rows held beyond each stream's vector entry: events that arrived ahead of a gap
    beyond: dict[tuple[str, str], set[int]] = {}
    for key in {(e.origin, e.epoch) for e in events}:
        query = "SELECT seq FROM event WHERE origin = ? AND epoch = ? AND seq > ?"
        beyond[key] = {r[0] for r in tx.rows(query, (*key, entries.get(key, 0)))}
    held = pools(conn, (e.sku for e in events))
    applied: list[EventRow] = []
    touched: dict[str, Pool] = {}
    moved: dict[tuple[str, str], int] = {}
    for event in sorted(events, key=lambda e: (e.origin, e.epoch, e.seq)):
        key = (event.origin, event.epoch)
        seq = entries.get(key, 0)
        if event.seq <= seq or event.seq in beyond[key]:
            continue
        reason = None if admit is None else admit(event)
        if reason is not None:
            if refused is not None:
                refused.append((event, reason))
            continue
        beyond[key].add(event.seq)
        applied.append(event)
        touched[event.sku] = _fold(held, event, now)
        while seq + 1 in beyond[key]:  # events that arrived ahead of a gap may now follow
            seq += 1
        entries[key] = moved[key] = seq
    if applied:
        tx.many(_INSERT_EVENT, (event_values(e) for e in applied))
        save_pools(conn, touched.values())
        _save_vector(conn, moved)
    return applied


# -- the same, for an ORM session (cold paths, tests) -------------------------------------------


async def _on_session(session: AsyncSession, work: Callable[[Connection], Any]) -> Any:
    def run(sync: Session) -> Any:
        sync.flush()  # what the session holds unflushed is seen by the statements
        return work(sync.connection())

    return await session.run_sync(run)


async def get_pool(session: AsyncSession, sku: str) -> Pool | None:
    """The pool of `sku`, or None if no event for it was ever seen."""
    return (await get_pools(session, [sku])).get(sku)


async def get_pools(session: AsyncSession, skus: Iterable[str]) -> dict[str, Pool]:
    """Pools of `skus` that exist, by SKU."""
    wanted = list(skus)
    return await _on_session(session, lambda conn: pools(conn, wanted))


async def load_vector(session: AsyncSession) -> Vector:
    """The whole version vector."""
    return await _on_session(session, vector)


async def append_local(
    session: AsyncSession,
    identity: Identity,
    events: Sequence[NewEvent],
    now: float,
    sign: Signer,
) -> list[EventRow]:
    """`append` in the session's transaction."""
    return await _on_session(session, lambda conn: append(conn, identity, events, now, sign))


async def apply_events(
    session: AsyncSession,
    events: Sequence[EventRow],
    now: float,
    admit: Admit | None = None,
    refused: list[tuple[EventRow, str]] | None = None,
) -> list[EventRow]:
    """`apply` in the session's transaction."""
    return await _on_session(session, lambda conn: apply(conn, events, now, admit, refused))


async def apply_event(session: AsyncSession, event: EventRow, now: float) -> bool:
    """Apply one peer's event at most once; False if it was already held."""
    return bool(await apply_events(session, [event], now))


def unsigned_own_rows(conn: Connection, identity: Identity) -> list[EventRow]:
    """This agent's own events stored without a proof (made before events were signed)."""
    query = f"SELECT {EVENT_COLUMNS} FROM event WHERE origin = ? AND proof = ''"
    return [event_of(row) for row in Tx(conn).rows(query, (identity.domain,))]


async def unsigned_own(session: AsyncSession, identity: Identity) -> list[EventRow]:
    """This agent's own events stored without a proof (made before events were signed)."""
    return await _on_session(session, lambda conn: unsigned_own_rows(conn, identity))


# -- snapshots: a joiner's base -------------------------------------------------------------


def events_after(conn: Connection, origin: str, epoch: str, seq: int, limit: int) -> list[EventRow]:
    """Events of stream (origin, epoch) after `seq`, in seq order, at most `limit`."""
    query = (
        f"SELECT {EVENT_COLUMNS} FROM event WHERE origin = ? AND epoch = ? AND seq > ? "
        "ORDER BY seq LIMIT ?"
    )
    return [event_of(row) for row in Tx(conn).rows(query, (origin, epoch, seq, limit))]


def snapshot(conn: Connection) -> Snapshot:
    """Pools, vector and the events held beyond the vector, read on one connection.

    Run it in one read transaction (`Database.read`): one snapshot of the database, so a sale
    committed meanwhile is in all three or in none (a vector that counted it over pools that
    lack it would leave the joiner one sale short for good).
    """
    held = [p for page in pool_pages(conn, 10**9) for p in page]
    head = snapshot_head(conn)
    return Snapshot(pools=held, vector=head.vector, extra=head.extra)


def snapshot_head(conn: Connection) -> SnapshotHead:
    """The vector and the events held beyond it (in the same read transaction as the pools)."""
    entries = vector(conn)
    return SnapshotHead(vector=entries, extra=held_beyond(conn, entries))


def held_beyond(conn: Connection, cut: Vector) -> list[EventRow]:
    """Every event this agent holds beyond `cut` (a stream `cut` lacks: all of its events),
    stream by stream in seq order."""
    out: list[EventRow] = []
    for origin, epoch in sorted(Tx(conn).rows("SELECT DISTINCT origin, epoch FROM event")):
        out += events_after(conn, origin, epoch, cut.get((origin, epoch), 0), 10**9)
    return out


def pool_pages(conn: Connection, size: int) -> Iterator[list[Pool]]:
    """Every pool in SKU order, `size` at a time (keyset pages: memory stays flat). In one
    read transaction the pages are one consistent snapshot."""
    tx = Tx(conn)
    query = f"SELECT {_POOL_COLUMNS} FROM pool ORDER BY sku LIMIT ?"
    rows = tx.rows(query, (size,))
    while rows:
        yield [Pool(*row) for row in rows]
        if len(rows) < size:
            return
        query = f"SELECT {_POOL_COLUMNS} FROM pool WHERE sku > ? ORDER BY sku LIMIT ?"
        rows = tx.rows(query, (rows[-1][0], size))


# -- a joiner's side: the snapshot staged a page at a time, then installed ------------------

_STAGED_COLUMNS = "sku, base, base_created, base_origin, deltas"


def stage(conn: Connection, page: Iterable[Pool]) -> None:
    """Keep a page of the master's snapshot until it is installed (`incoming_pool`). A SKU
    already staged is kept as it was: the install checks the count the master announced."""
    Tx(conn).many(
        f"INSERT INTO incoming_pool ({_STAGED_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (sku) DO NOTHING",
        ((p.sku, p.base, _float(p.base_created), p.base_origin, p.deltas) for p in page),
    )


def discard_staged(conn: Connection) -> None:
    """Forget a download that will not be installed (or start one afresh)."""
    Tx(conn).run("DELETE FROM incoming_pool")


def staged_count(conn: Connection) -> int:
    """How many pools are staged."""
    row = Tx(conn).one("SELECT COUNT(*) FROM incoming_pool")
    return int(row[0]) if row else 0


def staged_skus(conn: Connection) -> set[str]:
    """The staged snapshot's SKUs."""
    return {row[0] for row in Tx(conn).rows("SELECT sku FROM incoming_pool")}


def staged_counts(conn: Connection) -> dict[str, int]:
    """The staged snapshot's count of every SKU that has one (for the import's pre-flight)."""
    query = "SELECT sku, base + deltas FROM incoming_pool WHERE base IS NOT NULL"
    return {sku: int(value) for sku, value in Tx(conn).rows(query)}


def group_lacks(conn: Connection, stream: tuple[str, str], head: SnapshotHead) -> dict[str, int]:
    """This agent's own changes (not introduces) of `stream` that a group's snapshot does not
    count, summed by SKU (SKUs whose changes add up to nothing are left out): those after
    the snapshot's vector entry for the stream, but for any it holds beyond it (`extra`).
    For a shop joining its group again: what it did while out, and what it made before it
    left but never got to send."""
    seq = head.vector.get(stream, 0)
    held = {e.seq for e in head.extra if (e.origin, e.epoch) == stream}
    total: dict[str, int] = {}
    query = (
        "SELECT sku, seq, delta FROM event WHERE origin = ? AND epoch = ? AND seq > ? AND kind <> ?"
    )
    for sku, number, delta in Tx(conn).rows(query, (*stream, seq, INTRODUCE)):
        if number not in held:
            total[sku] = total.get(sku, 0) + delta
    return {sku: delta for sku, delta in total.items() if delta}


def install(
    conn: Connection,
    head: SnapshotHead,
    identity: Identity,
    now: float,
    sign: Signer,
    carry: bool = False,
) -> tuple[int, str]:
    """Replace this agent's ledger by the staged snapshot (its pools in `incoming_pool`, the
    rest in `head`); returns how many pools the snapshot has and the agent's new epoch. The
    staged pools are moved, not copied: the table is empty afterwards. Set-wise statements
    only, nothing per SKU in memory: the same at a million SKUs as at ten.

    A new epoch starts: the shop's events from before are not the group's. Items of a SKU the
    group knows wait for their cut-over write (unless excluded). A SKU only this shop has is
    introduced to the group at once, with the count its own pool held: the shop's true stock,
    which may be more than it showed (its stock rules may have held units back). Items of
    neither kind forget their published count and are introduced when next read.

    With `carry` (a shop that was a member before, left, and joins again counting what it did
    while out): the changes of this agent's own stream that the snapshot does not count
    (`group_lacks`) are carried into the new epoch as changes, for the snapshot's SKUs, so
    they move the group's counts as the sales they are. Without, the group's counts win
    (SKUs only this shop has keep their count either way).
    """
    tx = Tx(conn)
    carried = group_lacks(conn, (identity.domain, identity.epoch), head) if carry else {}
    # items of SKUs only this shop has, synced and counted: introduced with their pool's count
    # (the first item of a SKU by id; another item of it is of neither kind)
    only_here = tx.rows(
        "SELECT i.item_id, i.sku, i.published, i.created_at, p.base + p.deltas FROM item i "
        "JOIN pool p ON p.sku = i.sku WHERE p.base IS NOT NULL AND i.excluded IS NULL "
        "AND i.published IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM incoming_pool g WHERE g.sku = i.sku) ORDER BY i.item_id"
    )
    staged = _replace_by_staged(conn, head, now)
    epoch = uuid.uuid4().hex[:16]
    tx.run("UPDATE identity SET epoch = ? WHERE id = 1", (epoch,))
    # (NOT) EXISTS, not (NOT) IN: PostgreSQL hashes a NOT IN list only while it fits in
    # work_mem, and at a million SKUs would compare every item with every pool
    tx.run(
        "UPDATE item SET cutover_pending = (excluded IS NULL) "
        "WHERE EXISTS (SELECT 1 FROM pool p WHERE p.sku = item.sku)"
    )
    tx.run(
        "UPDATE item SET published = NULL, cutover_pending = FALSE "
        "WHERE NOT EXISTS (SELECT 1 FROM pool p WHERE p.sku = item.sku)"
    )
    introduced: dict[str, NewEvent] = {}
    kept = []
    for item_id, sku, published, created, count in only_here:
        if sku not in introduced:
            introduced[sku] = NewEvent(sku, INTRODUCE, count=count, item_created=created)
            kept.append((published, item_id))
    tx.many("UPDATE item SET published = ? WHERE item_id = ?", kept)
    new = list(introduced.values())
    new += [
        NewEvent(sku, "change", delta=carried[sku], cause=WHILE_OUT)
        for sku in sorted(pools(conn, carried))  # the snapshot's SKUs among them
    ]
    append(conn, _Stream(identity.domain, epoch), new, now, sign)
    return staged, epoch


def _replace_by_staged(conn: Connection, head: SnapshotHead, now: float) -> int:
    """This agent's events, pools and vector replaced by the staged snapshot (moved out of
    `incoming_pool`) and its head; returns how many pools it has."""
    tx = Tx(conn)
    staged = staged_count(conn)
    for table in ("event", "pool", "vector"):
        tx.run(f"DELETE FROM {table}")
    tx.run(
        f"INSERT INTO pool ({_POOL_COLUMNS}) SELECT {_STAGED_COLUMNS}, ? FROM incoming_pool",
        (float(now),),
    )
    discard_staged(conn)
    _take_head(conn, head)
    return staged


def _take_head(conn: Connection, head: SnapshotHead) -> None:
    """The vector and held events of a snapshot whose pools were just installed. What the
    pools count but this agent holds no event of is folded: every seq up to the vector, and
    every pool's deltas but those of the events held beyond it (`extra`)."""
    tx = Tx(conn)
    _save_vector(conn, head.vector)
    tx.run("UPDATE vector SET folded = seq")
    tx.many(_INSERT_EVENT, (event_values(e) for e in head.extra))  # held, not applied again
    tx.run("UPDATE pool SET folded = deltas")
    held: dict[str, int] = {}
    for event in head.extra:
        if event.kind != INTRODUCE:
            held[event.sku] = held.get(event.sku, 0) + event.delta
    tx.many("UPDATE pool SET folded = folded - ? WHERE sku = ?", ((d, k) for k, d in held.items()))


def rebase(conn: Connection, head: SnapshotHead, now: float) -> tuple[int, int]:
    """Take a member's snapshot (staged, like a joiner's) as this agent's base while it stays
    a member of the group with its own stream: for a shop that lacks events every member
    has folded (away longer than the horizon, or restored from an old backup). Returns how
    many pools the snapshot has and how many held events it kept.

    Nothing is lost or counted twice: every event this agent holds that the snapshot does not
    count (beyond its vector, and not among its `extra`) is kept, with its identity, and
    folded into the snapshot's pools; the rest is in the snapshot. The epoch stays: this
    shop's changes not yet sent are still its stream's next seqs, which the group expects.
    """
    gone = {s: seq for s, seq in folded(conn).items() if seq > head.vector.get(s, 0)}
    if gone:  # events this agent folded (their deltas in its pools, their rows gone) that the
        # snapshot does not count: taking it would lose them, and reuse their seqs
        raise StaleSnapshot(f"the snapshot predates events folded here: {sorted(gone)[:3]}")
    counted = {(e.origin, e.epoch, e.seq) for e in head.extra}
    keep = [e for e in held_beyond(conn, head.vector) if (e.origin, e.epoch, e.seq) not in counted]
    staged = _replace_by_staged(conn, head, now)
    apply(conn, keep, now)
    return staged, len(keep)


# -- compaction: history every member holds, folded into its pools ----------------------------


def folded(conn: Connection) -> Vector:
    """Per stream, the highest seq whose events this agent no longer holds (streams with
    none left out)."""
    query = "SELECT origin, epoch, folded FROM vector WHERE folded > 0"
    return {(o, e): int(s) for o, e, s in Tx(conn).rows(query)}


def compact(conn: Connection, floor: Vector, most: int) -> int:
    """Drop the events of each stream up to `floor` (never beyond what this agent holds
    without a gap), at most `most` of them; returns how many were dropped. Their deltas stay
    in the pools (`folded` notes them); the stream's `folded` mark moves up."""
    tx = Tx(conn)
    held = vector(conn)
    done = folded(conn)
    dropped = 0
    for stream in sorted(floor):
        start = done.get(stream, 0)
        upto = min(floor[stream], held.get(stream, 0), start + most - dropped)
        if upto <= start:
            continue
        where = "WHERE origin = ? AND epoch = ? AND seq <= ?"
        args = (*stream, upto)
        sums = tx.rows(
            "SELECT sku, SUM(CASE WHEN kind <> ? THEN delta ELSE 0 END), COUNT(*) "
            f"FROM event {where} GROUP BY sku",
            (INTRODUCE, *args),
        )
        tx.many(
            "UPDATE pool SET folded = folded + ? WHERE sku = ?",
            ((int(total), sku) for sku, total, _ in sums if total),
        )
        tx.run(f"DELETE FROM event {where}", args)
        tx.run("UPDATE vector SET folded = ? WHERE origin = ? AND epoch = ?", (upto, *stream))
        dropped += sum(int(n) for _, _, n in sums)
        if dropped >= most:
            break
    return dropped


async def install_snapshot(
    session: AsyncSession,
    head: SnapshotHead,
    identity: Identity,
    now: float,
    sign: Signer,
    carry: bool = False,
) -> tuple[int, str]:
    """`install` in the session's transaction."""
    return await _on_session(session, lambda conn: install(conn, head, identity, now, sign, carry))
