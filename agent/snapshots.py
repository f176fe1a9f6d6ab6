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
from agent.db import Database
from agent.wire import event_to_wire, pool_to_wire, vector_to_wire

__all__ = ["PAGE_SIZE", "SnapshotGone", "Spool"]

PAGE_SIZE = 5000  # pools per page: about 350 kB of JSON
KEEP = 3600.0  # seconds a spooled snapshot stays available to a joiner resuming its download


class SnapshotGone(LookupError):
    """The snapshot asked for is not (or no longer) spooled here."""


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
        self._sent: list[tuple[float, ledger.Vector]] = []  # whole snapshots: when, vector

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

    async def make(self, db: Database) -> dict[str, Any]:
        """Spool a snapshot of the ledger; its head, in wire form."""
        self._expire(self.most - 1)
        snapshot_id = f"{self._rng.getrandbits(64):016x}"
        path = self._dir() / f"{snapshot_id}.pages"
        try:
            head, offsets, pools = await db.read(lambda conn: self._write(conn, path))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._spooled[snapshot_id] = _Spooled(path, self.clock.now(), offsets, head.vector)
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

    def held(self) -> list[ledger.Vector]:
        """The vectors of the snapshots kept for joiners (and of whole snapshots sent within
        `keep`): each joiner will pull the events beyond its snapshot's, so compaction keeps
        them (`agent.compaction`)."""
        self._expire(self.most)
        now = self.clock.now()
        self._sent = [(made, v) for made, v in self._sent if now - made <= self.keep]
        return [spooled.vector for spooled in self._spooled.values()] + [v for _, v in self._sent]

    def sent_whole(self, vector: ledger.Vector) -> None:
        """A whole snapshot (the form of releases before paging) was sent: its vector is
        held like a spooled one's for `keep` seconds."""
        self._sent = [*self._sent[-(self.most - 1) :], (self.clock.now(), vector)]

    def _expire(self, most: int) -> None:
        """Drop what is older than `keep`, and all but the newest `most`."""
        now = self.clock.now()
        newest_first = sorted(self._spooled.items(), key=lambda kv: kv[1].made, reverse=True)
        for rank, (snapshot_id, spooled) in enumerate(newest_first):
            if rank >= most or now - spooled.made > self.keep:
                del self._spooled[snapshot_id]
                spooled.path.unlink(missing_ok=True)
