"""A leaky bucket, the rate limit every emulated platform enforces in its own unit."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["LeakyBucket"]


class LeakyBucket:
    """Holds up to `capacity` units and regains `restore_rate` per second.

    Shopify counts cost points (2000, 100/s on Standard); SHOPLINE and Pisell count requests.
    `enabled=False` makes every take succeed (tests that are not about rate limits).
    """

    def __init__(
        self,
        capacity: float,
        restore_rate: float,
        *,
        clock: Callable[[], float],
        enabled: bool = True,
    ) -> None:
        self.capacity = float(capacity)
        self.restore_rate = float(restore_rate)
        self.enabled = enabled
        self._clock = clock
        self._level = float(capacity)
        self._at = clock()
        self.refused = 0
        self.taken = 0.0

    def available(self) -> float:
        """Units available now."""
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._at) * self.restore_rate)
        self._at = now
        return self._level

    def try_take(self, cost: float) -> bool:
        """Take `cost` units if they are there; count a refusal otherwise."""
        if not self.enabled:
            self.taken += cost
            return True
        if self.available() >= cost:
            self._level -= cost
            self.taken += cost
            return True
        self.refused += 1
        return False

    def reserve(self, cost: float) -> float | None:
        """Queue a request of `cost` units, as SHOPLINE's bucket does: None (a refusal, counted)
        when the bucket is full; else the seconds until what is queued ahead of it has leaked
        out and it runs (0 for an empty bucket)."""
        if not self.enabled:
            self.taken += cost
            return 0.0
        available = self.available()
        if available < cost:
            self.refused += 1
            return None
        ahead = self.capacity - available
        self._level -= cost
        self.taken += cost
        return ahead / self.restore_rate

    def refund(self, units: float) -> None:
        """Give back units charged in advance but not spent (Shopify's actual < requested)."""
        if units > 0:
            self.available()
            self._level = min(self.capacity, self._level + units)
            self.taken -= units

    def wait_time(self, cost: float) -> float:
        """Seconds until `cost` units will be available."""
        missing = cost - self.available()
        return 0.0 if missing <= 0 else missing / self.restore_rate
