"""Compaction by causal stability (DESIGN §7): history every member holds is folded away.

An event is stable once every current member holds it: each member's vector (as it last
answered this agent: `peer.acked`) covers its seq. Its delta is already in its pool, so the
event row can go; the pool's `folded` part notes the sum, and the stream's `folded` mark the
highest seq gone, which this agent can no longer send (a pull from below it is told so).
Storage then grows with the catalogue, not with the sales history.

Who holds compaction back:
- every member that has not left, with the vector it last answered (one never heard from
  holds everything back: its vector is empty);
- but not a member out of touch for longer than the horizon (default 7 days): it would hold
  history forever. It is named in the sync log; when it returns, its peers tell it what they
  folded and it re-imports (`JoinImport.rebase`) instead of pulling. Only while this agent
  and the members in touch with it are a majority of the group, though: otherwise this
  agent may be on the smaller side of a split (every member out of touch: it is the one cut
  off, most likely), and it folds nothing. Two sides of a split that both folded what the
  other lacks could never be joined again: each would be the other's stale snapshot
  (`ledger.StaleSnapshot`), and they would re-import from each other without end (seed
  203260: a group of four split two against two for longer than the horizon). Two
  majorities always share a member, who holds both sides' history;
- every snapshot made for a joiner (`snapshots.Hold`), until the joiner is a member whose
  acknowledged vector covers the snapshot's (from then on its acknowledgements hold
  compaction back, as any member's), or it left, or an hour passed (or the horizon, if
  shorter): the joiner pulls what is beyond its snapshot, perhaps before this agent counts it
  a member, and perhaps after this agent restarted (seed 413728);
- a shop that left its group keeps everything: a rejoin counts its own changes the group
  lacks from its events (`ledger.group_lacks`). Nor does a shop in no group, or one importing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from functools import partial

import structlog
from sqlalchemy import Connection

from agent import ledger, synclog
from agent.clock import Clock
from agent.db import Database
from agent.importer import LEFT_GROUP, REBASE
from agent.ledger import Vector
from agent.models import Identity
from agent.snapshots import Hold
from agent.sql import Tx
from agent.syncmode import SyncMode
from agent.wire import vector_from_wire

__all__ = ["DEFAULT_HORIZON", "DEFAULT_INTERVAL", "Compactor", "Floor", "floor"]

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL = 60.0  # seconds between compaction passes
DEFAULT_HORIZON = 7 * 86400.0  # a member out of touch longer stops holding history back
BATCH = 20_000  # events dropped per transaction (a pass never holds the write lock long)


@dataclasses.dataclass(frozen=True, slots=True)
class Floor:
    """What may be folded: per stream, the highest seq every member counted holds; and the
    members left out for being away longer than the horizon (domain, last seen)."""

    seqs: Vector
    away: list[tuple[str, float]]


def floor(conn: Connection, own_domain: str, now: float, horizon: float) -> Floor | None:
    """The compaction floor, or None when nothing may be folded at all (in no group, or
    left one)."""
    tx = Tx(conn)
    held = tx.rows('SELECT 1 FROM agent_state WHERE "key" IN (?, ?)', (LEFT_GROUP, REBASE))
    if held:  # left (a rejoin counts from the events), or re-importing (its snapshot must
        # count all this agent folds: `ledger.rebase`)
        return None
    members = tx.rows(
        "SELECT domain, last_contact, joined_at, acked FROM peer "
        "WHERE state <> 'left' AND domain <> ? ORDER BY domain",
        (own_domain,),
    )
    if not members:
        return None
    seqs = ledger.vector(conn)
    away = []
    counted = 0
    for domain, last_contact, joined_at, acked in members:
        seen = max(float(last_contact or 0.0), float(joined_at or 0.0))
        if now - seen > horizon:
            away.append((domain, seen))
            continue
        counted += 1
        theirs = vector_from_wire(json.loads(acked or "[]"))
        seqs = {stream: min(seq, theirs.get(stream, 0)) for stream, seq in seqs.items()}
    if 2 * (counted + 1) <= len(members) + 1:  # no majority in touch, itself included:
        # this side of a split folds nothing (and so keeps history for the members away)
        return Floor({}, [])
    return Floor({s: n for s, n in seqs.items() if n > 0}, away)


def binding(conn: Connection, holds: list[Hold], now: float, horizon: float) -> list[Vector]:
    """The vectors of the snapshot holds that still bind. A hold ends once its joiner is a
    member whose acknowledged vector covers the snapshot's (the floor counts that member's
    acknowledgements from then on), once the joiner left, and once it is older than the
    horizon: a joiner silent that long is treated as a member away that long (it re-imports)."""
    holds = [h for h in holds if now - h.made <= horizon]
    if not holds:
        return []
    joiners = sorted({h.joiner for h in holds})
    marks = ", ".join("?" * len(joiners))
    rows = Tx(conn).rows(
        f"SELECT domain, state, acked FROM peer WHERE domain IN ({marks})", joiners
    )
    members = {d: (state, vector_from_wire(json.loads(acked or "[]"))) for d, state, acked in rows}
    vectors = []
    for hold in holds:
        state, acked = members.get(hold.joiner, ("", {}))
        if state == "left" or (state and ledger.covers(acked, hold.vector)):
            continue
        vectors.append(hold.vector)
    return vectors


class Compactor:
    """Folds stable history every `interval` seconds (the agent's task)."""

    def __init__(
        self,
        *,
        db: Database,
        identity: Identity,
        clock: Clock,
        mode: SyncMode,
        interval: float = DEFAULT_INTERVAL,
        horizon: float = DEFAULT_HORIZON,
        batch: int = BATCH,
        snapshots: Callable[[], list[Hold]] = list,
    ) -> None:
        self.db, self.identity, self.clock, self.mode = db, identity, clock, mode
        self.interval, self.horizon, self.batch = interval, horizon, batch
        #: The holds of the snapshots made for joiners (`Spool.held`): a joiner pulls what
        #: is beyond its snapshot, and may not be a member here yet (its welcome's answer
        #: lost, say), so its snapshot holds compaction back as a member would.
        self.snapshots = snapshots
        self.announced: set[str] = set()  # members named in the log as beyond the horizon
        self.dropped = 0  # events folded since start

    async def run(self) -> None:
        while True:
            await self.clock.sleep(self.interval)
            await self.compact()

    async def compact(self) -> int:
        """One pass: fold what every counted member holds; returns how many events went."""
        if self.mode.importing:  # a join, until the master's snapshot is this agent's base
            return 0
        total = 0
        while True:
            now = self.clock.now()
            held = self.snapshots()
            dropped = await self.db.run(partial(self._unit, now=now, snapshots=held))
            total += dropped
            if dropped < self.batch:
                break
        self.dropped += total
        if total:
            log.info("history_compacted", events=total)
        return total

    def _unit(self, conn: Connection, *, now: float, snapshots: list[Hold]) -> int:
        found = floor(conn, self.identity.domain, now, self.horizon)
        if found is None:
            return 0
        seqs = found.seqs
        for vector in binding(conn, snapshots, now, self.horizon):
            seqs = {stream: min(seq, vector.get(stream, 0)) for stream, seq in seqs.items()}
        entries = []
        for domain, seen in found.away:
            if domain in self.announced:
                continue
            self.announced.add(domain)
            days = (now - seen) / 86400
            entries.append(
                synclog.entry(
                    "member_away",
                    now,
                    peer=domain,
                    message=f"out of touch for {days:.1f} days, longer than the history "
                    f"horizon ({self.horizon / 86400:g} days): this shop no longer keeps "
                    "history for it; when it returns it re-imports the group's counts",
                )
            )
        for domain in self.announced - {d for d, _ in found.away}:
            self.announced.discard(domain)  # back in touch: named again if it goes again
        synclog.insert(conn, entries)
        return ledger.compact(conn, seqs, self.batch)
