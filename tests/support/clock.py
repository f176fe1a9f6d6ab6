"""Clocks for tests: one a thousand times faster than real time (for backoffs), one that moves
only when a test moves it."""

from __future__ import annotations

import asyncio
import time


class FastClock:
    """Virtual seconds pass 1000x faster than real ones; `now` starts at a fixed epoch."""

    speed = 1000.0

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.start = start
        self.real0 = time.monotonic()
        self.offset = 0.0

    def monotonic(self) -> float:
        return (time.monotonic() - self.real0) * self.speed + self.offset

    def now(self) -> float:
        return self.start + self.monotonic()

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class StillClock:
    """A clock that stands still unless a test moves it (`t`, or a `sleep`)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
