"""A master's snapshots for joiners, served a page at a time (DESIGN §8).

A joiner asks for a snapshot (``/peer/snapshot`` with ``{"paged": true}``). The master reads
its pools, its vector and the events held beyond the vector in one read transaction, one
consistent cut of its ledger, and writes the pools to a spool file, one page per line. The
answer is the snapshot's head: its id, the vector, the extra events and how many pages and
pools there are. The joiner then asks for each page (``/peer/snapshot_page``) and stages it
in its database with its progress, so a download killed half-way resumes at its next page,
and neither side ever holds the whole catalogue in memory.

A spooled snapshot is kept for `keep` seconds after it was made (a joiner that crashed has
that long to resume), and at most `most` are kept; a page of one that is gone is answered
410 and the joiner starts again. Sales go on meanwhile: the page file is the cut, the writers
never wait for it.

Each snapshot made holds compaction back at its vector (`Hold`, `held`): its joiner pulls the
events beyond it, perhaps before this agent counts it a member (the answer to its welcome
lost, say). The holds are stored with the agent's state and outlive a restart, which the pages
do not: a joiner that installed its snapshot still needs the events beyond it (seed 413728).
A hold ends once its joiner is a member whose acknowledged vector covers the snapshot's (from
then on that member's own acknowledgements hold compaction back, as any member's do), once it
has left, or after `keep` (`agent.compaction`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from agent import ledger
from agent.clock import Clock
from agent.db import Database, put_state
from agent.wire import event_to_wire, pool_to_wire, vector_from_wire, vector_to_wire

__all__ = ["PAGE_SIZE", "Hold", "SnapshotGone", "Spool"]

PAGE_SIZE = 5000  # pools per page: about 350 kB of JSON
KEEP = 3600.0  # seconds a spooled snapshot stays available to a joiner resuming its download
HOLDS = "snapshot_holds"  # agent_state: the holds of the snapshots made, for a restart
MOST_HOLDS = 64  # holds kept at most (the newest): joiners asking again and again stay bounded


class SnapshotGone(LookupError):
    """The snapshot asked for is not (or no longer) spooled here."""


@dataclasses.dataclass(frozen=True, slots=True)
class Hold:
    """A snapshot made for `joiner` at `made`: compaction keeps what is beyond `vector`."""

    joiner: str
    made: float
    vector: ledger.Vector

    def to_wire(self) -> dict[str, Any]:
        return {"joiner": self.joiner, "made": self.made, "vector": vector_to_wire(self.vector)}

    @classmethod
    def from_wire(cls, raw: Any) -> Hold:
        """Raises KeyError, TypeError or ValueError on a malformed one."""
        return cls(str(raw["joiner"]), float(raw["made"]), vector_from_wire(raw["vector"]))


@dataclasses.dataclass(slots=True)
class _Spooled:
    path: Path
    made: float
    offsets: list[int]  # where each page's line starts in the file
    vector: ledger.Vector  # what the snapshot counts: the joiner pulls what is beyond it


class Spool:
    """The snapshots this agent made for joiners: their pages on disk, their heads answered."""

    def __init__(
        self,
        directory: Path | None,
        clock: Clock,
        *,
        page_size: int = PAGE_SIZE,
        keep: float = KEEP,
        most: int = 4,
        rng: random.Random | None = None,
    ) -> None:
        self._directory = directory
        self._own_directory = directory is None  # a temporary one, removed on close
        self.clock = clock
        self.page_size = page_size
        self.keep = keep
        self.most = most
        self._rng = rng or random.SystemRandom()
        self._spooled: dict[str, _Spooled] = {}
        self._holds: list[Hold] = []  # of every snapshot made, spooled or whole, oldest first

    def _dir(self) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="shopsync-spool-"))
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self._directory

    def clear(self) -> None:
        """Remove every spool file (at start: no joiner can ask for a previous run's ids)."""
        self._spooled.clear()
        if self._directory is not None and self._directory.is_dir():
            for path in self._directory.glob("*.pages"):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove the spool files (and the directory, if it was a temporary one)."""
        self.clear()
        if self._own_directory and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    async def make(self, db: Database, *, joiner: str) -> dict[str, Any]:
        """Spool a snapshot of the ledger for `joiner`; its head, in wire form."""
        self._expire(self.most - 1)
        snapshot_id = f"{self._rng.getrandbits(64):016x}"
        path = self._dir() / f"{snapshot_id}.pages"
        try:
            head, offsets, pools = await db.read(lambda conn: self._write(conn, path))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._spooled[snapshot_id] = _Spooled(path, self.clock.now(), offsets, head.vector)
        await self._hold(db, joiner, head.vector)
        return {
            "snapshot": snapshot_id,
            "pages": len(offsets),
            "pool_count": pools,
            "vector": vector_to_wire(head.vector),
            "extra_events": [event_to_wire(e) for e in head.extra],
        }

    def _write(self, conn: Connection, path: Path) -> tuple[ledger.SnapshotHead, list[int], int]:
        """In the database thread, in one read transaction: the pages to `path`, the head."""
        offsets: list[int] = []
        pools = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            for page in ledger.pool_pages(conn, self.page_size):
                offsets.append(out.tell())
                line = json.dumps([pool_to_wire(p) for p in page], separators=(",", ":"))
                out.write(line.encode() + b"\n")
                pools += len(page)
        return ledger.snapshot_head(conn), offsets, pools

    def page(self, snapshot_id: str, number: int) -> list[Any]:
        """Page `number` (from 0) of a spooled snapshot, in wire form."""
        self._expire(self.most)
        spooled = self._spooled.get(snapshot_id)
        if spooled is None:
            raise SnapshotGone(f"snapshot {snapshot_id!r} is not (or no longer) kept here")
        if not 0 <= number < len(spooled.offsets):
            raise ValueError(f"page {number} is not in 0…{len(spooled.offsets) - 1}")
        with spooled.path.open("rb") as pages:
            pages.seek(spooled.offsets[number])
            page: list[Any] = json.loads(pages.readline())
            return page

    def held(self) -> list[Hold]:
        """The holds of the snapshots made within `keep` (`agent.compaction` judges which
        still bind: those whose joiner is not yet a member that acknowledged them)."""
        now = self.clock.now()
        self._holds = [h for h in self._holds if now - h.made <= self.keep]
        return list(self._holds)

    async def sent_whole(self, db: Database, joiner: str, vector: ledger.Vector) -> None:
        """A whole snapshot (the form of releases before paging) was sent: it holds
        compaction back like a spooled one."""
        await self._hold(db, joiner, vector)

    async def _hold(self, db: Database, joiner: str, vector: ledger.Vector) -> None:
        """Add a snapshot's hold, and store them all (they outlive a restart)."""
        held = [*self.held(), Hold(joiner, self.clock.now(), vector)][-MOST_HOLDS:]
        self._holds = held
        value = [h.to_wire() for h in held]
        await db.run(lambda conn: put_state(conn, HOLDS, value))

    async def restore(self, db: Database) -> None:
        """At start: the holds a previous run stored, those still within `keep` (the pages
        are gone: `clear`; a joiner still downloading asks anew)."""
        holds = []
        for raw in await db.get_state(HOLDS, []) or []:
            try:
                holds.append(Hold.from_wire(raw))
            except (KeyError, TypeError, ValueError):
                continue  # unreadable: it cannot hold anything back
        self._holds = holds
        self.held()  # drops those past `keep`

    def _expire(self, most: int) -> None:
        """Drop what is older than `keep`, and all but the newest `most`."""
        now = self.clock.now()
        newest_first = sorted(self._spooled.items(), key=lambda kv: kv[1].made, reverse=True)
        for rank, (snapshot_id, spooled) in enumerate(newest_first):
            if rank >= most or now - spooled.made > self.keep:
                del self._spooled[snapshot_id]
                spooled.path.unlink(missing_ok=True)
