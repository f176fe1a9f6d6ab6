"""Recent activity, per minute: changes made here and received from peers, and propagation
latency — what the overview's charts draw (`GET /api/activity`).

The changes come from the sync log (`change` rows: this shop's changes; `batch_received`
rows: the events applied from peers), so they survive a restart for as long as the log is
kept. The latency is measured only in memory, where events from peers are applied
(`LatencyRing`, fed with the Prometheus histogram): it covers the time since the agent
started, at most `KEEP_MINUTES`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from agent import synclog
from agent.db import Database
from agent.sql import Tx

__all__ = ["KEEP_MINUTES", "MAX_HOURS", "LatencyRing", "recent"]

KEEP_MINUTES = 6 * 60  # minutes of latency kept in memory
MAX_HOURS = 24  # the longest window the API answers for

#: Upper bounds (ms) of the latency histogram's buckets, √2 apart: 1 ms to about 12 min. The
#: p50 read from them is within a bucket's width of the true median (and never above the max).
BOUNDS_MS = tuple(2 ** (k / 2) for k in range(40))


def _bucket(ms: float) -> int:
    """The index of the first bound ≥ `ms` (the last bucket takes everything beyond)."""
    if ms <= 1.0:
        return 0
    return min(len(BOUNDS_MS) - 1, math.ceil(2 * math.log2(ms) - 1e-9))


@dataclasses.dataclass(slots=True)
class _Minute:
    """The latencies observed in one minute: how many, the least, the most, a histogram."""

    minute: int
    count: int = 0
    low: float = math.inf
    high: float = 0.0
    buckets: list[int] = dataclasses.field(default_factory=lambda: [0] * len(BOUNDS_MS))

    def add(self, ms: float) -> None:
        self.count += 1
        self.low = min(self.low, ms)
        self.high = max(self.high, ms)
        self.buckets[_bucket(ms)] += 1


def _p50(count: int, low: float, high: float, buckets: list[int]) -> float:
    """The median estimated from the histogram, as Prometheus's histogram_quantile does
    (linear within the bucket it falls in), kept within the least and the most seen."""
    rank, seen = count / 2, 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            lower = 0.0 if i == 0 else BOUNDS_MS[i - 1]
            estimate = lower + (BOUNDS_MS[i] - lower) * (rank - seen) / n
            return min(high, max(low, estimate))
        seen += n
    return high


class LatencyRing:
    """Per-minute propagation latency of the events applied from peers, the last
    `minutes` minutes, in memory.

    Recording costs one slot look-up per applied batch and a bucket increment per event (as
    the Prometheus histogram's observe does); memory is bounded by the ring's length.
    """

    def __init__(self, started: float, minutes: int = KEEP_MINUTES) -> None:
        self.started = started
        self._slots: list[_Minute | None] = [None] * minutes

    def observe(self, now: float, seconds: Iterable[float]) -> None:
        """Record the latencies (seconds) of one batch applied at `now`."""
        minute = int(now // 60)
        index = minute % len(self._slots)
        slot = self._slots[index]
        if slot is None or slot.minute != minute:
            slot = self._slots[index] = _Minute(minute)
        for s in seconds:
            slot.add(s * 1000.0)

    def since(self, now: float) -> float:
        """The time the latencies held at `now` go back to: the start, or the ring's length."""
        return max(self.started, (int(now // 60) - len(self._slots) + 1) * 60.0)

    def _held(self, first: int, last: int) -> list[_Minute]:
        return [s for s in self._slots if s is not None and first <= s.minute <= last]

    def minutes(self, first: int, last: int) -> dict[int, tuple[float, float]]:
        """Per minute number in [first, last] with latencies: (p50 ms, max ms)."""
        return {
            s.minute: (_p50(s.count, s.low, s.high, s.buckets), s.high)
            for s in self._held(first, last)
        }

    def overall(self, first: int, last: int) -> tuple[int, float | None, float | None]:
        """Over the minutes [first, last]: how many latencies, their p50 and max (ms)."""
        held = self._held(first, last)
        count = sum(s.count for s in held)
        if not count:
            return 0, None, None
        merged = [sum(column) for column in zip(*(s.buckets for s in held), strict=True)]
        low, high = min(s.low for s in held), max(s.high for s in held)
        return count, _p50(count, low, high, merged), high


def _counts(conn: Any, first: int) -> tuple[dict[int, int], dict[int, int]]:
    """Per minute number from `first` on: this shop's changes, events received from peers
    (one sync-log row per change; one per batch received, which says how many were new)."""
    rows = Tx(conn).rows(
        'SELECT "at", kind, message FROM sync_log WHERE "at" >= ? AND kind IN (?, ?)',
        (first * 60.0, "change", "batch_received"),
    )
    local: dict[int, int] = {}
    received: dict[int, int] = {}
    for at, kind, message in rows:
        minute = int(at // 60)
        if kind == "change":
            local[minute] = local.get(minute, 0) + 1
        else:
            received[minute] = received.get(minute, 0) + synclog.received_count(message)
    return local, received


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def recent(db: Database, ring: LatencyRing, now: float, hours: int) -> dict[str, Any]:
    """The last `hours` hours (the current minute the last of them), per minute that has
    anything: changes made here (`local`), events received from peers (`received`), and
    the latency p50 and max of those received, while this agent ran."""
    last = int(now // 60)
    first = last - hours * 60 + 1
    local, received = await db.read(lambda conn: _counts(conn, first))
    latency = ring.minutes(first, last)
    minutes = [
        {
            "at": m * 60.0,
            "local": local.get(m, 0),
            "received": received.get(m, 0),
            "latency_p50_ms": _ms(latency[m][0]) if m in latency else None,
            "latency_max_ms": _ms(latency[m][1]) if m in latency else None,
        }
        for m in sorted(set(local) | set(received) | set(latency))
        if first <= m <= last
    ]
    measured, p50, high = ring.overall(first, last)
    return {
        "hours": hours,
        "since": first * 60.0,
        "now": now,
        "latency_since": ring.since(now),
        "totals": {
            "local": sum(local.values()),
            "received": sum(received.values()),
            "latency_events": measured,
            "latency_p50_ms": _ms(p50),
            "latency_max_ms": _ms(high),
        },
        "minutes": minutes,
    }
