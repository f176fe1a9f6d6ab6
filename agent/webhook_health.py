"""Webhook health: subscriptions kept alive, and refused deliveries turned into an alert.

Platforms delete subscriptions whose deliveries keep failing (Shopify after a delivery fails
its 8 retries over 4 h, SHOPLINE after 19 over 48 h), for example while the agent was down.
`Channel.subscribe` is idempotent and re-creates only what is missing, so calling it on a
period heals a deleted subscription within one period; reconciliation covers the gap.

A webhook secret that does not match the platform's (a rotated app secret, a typo) makes the
agent refuse every delivery: it still reconciles, but only on its periodic passes, and nothing
else would say so. `Refusals` notes each refused signature and each accepted delivery; a run
of refusals with no accepted delivery since is an alert on the status page and in
`shopsync status`, until a valid delivery arrives.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from agent.channel import Channel
    from agent.clock import Clock

__all__ = ["RECHECK_INTERVAL", "REFUSALS_WINDOW", "Refusals", "keep_subscribed"]

log = structlog.get_logger(__name__)

RECHECK_INTERVAL = 3600.0  # well inside Shopify's 4 h of retries before it deletes
REFUSALS_WINDOW = 900.0  # seconds of refused deliveries an alert counts
REFUSALS_ALERT = 3  # refusals in the window, none accepted since, that make an alert
_FIRST_DELAY = 1.0
_MAX_DELAY = 60.0


async def keep_subscribed(
    channel: Channel,
    url: str,
    *,
    clock: Clock,
    shop: str,
    interval: float = RECHECK_INTERVAL,
) -> None:
    """Subscribe `channel` at `url`, retrying with backoff while that fails, then re-verify
    (and re-create what is missing) every `interval` seconds. Runs until cancelled."""
    delay = _FIRST_DELAY
    subscribed = False
    while True:
        try:
            await channel.subscribe(url)
        except Exception as exc:  # the platform is down or refuses: try again, never give up
            log.warning("subscribe_failed", shop=shop, error=str(exc), retry_in=delay)
            await clock.sleep(delay)
            delay = min(_MAX_DELAY, delay * 2)
            continue
        if not subscribed:
            log.info("webhooks_subscribed", shop=shop, url=url)
            subscribed = True
        else:
            log.debug("webhooks_verified", shop=shop, url=url)
        delay = _FIRST_DELAY
        await clock.sleep(interval)


class Refusals:
    """Deliveries refused for their signature, since the last accepted one (in memory)."""

    def __init__(
        self, clock: Clock, *, window: float = REFUSALS_WINDOW, threshold: int = REFUSALS_ALERT
    ) -> None:
        self.clock = clock
        self.window = window
        self.threshold = threshold
        self._refused: collections.deque[float] = collections.deque()

    def refused(self) -> None:
        """A delivery's signature did not match (or was missing)."""
        self._refused.append(self.clock.now())
        self._forget_old()

    def accepted(self) -> bool:
        """A delivery passed verification: the secret works, whatever came before. True if
        refusals were held (an alert may clear)."""
        held = bool(self._refused)
        self._refused.clear()
        return held

    def alert(self) -> dict[str, Any] | None:
        """The alert while `threshold` or more deliveries were refused within the window and
        none was accepted since; else None."""
        self._forget_old()
        count = len(self._refused)
        if count < self.threshold:
            return None
        minutes = round(self.window / 60)
        return {
            "kind": "webhooks_refused",
            "count": count,
            "minutes": minutes,
            "since": self._refused[0],
            "message": (
                f"{count} webhooks refused (bad signature) in the last {minutes} minutes "
                "— check the webhook secret (webhook_secret, or the app's client secret)"
            ),
        }

    def _forget_old(self) -> None:
        oldest = self.clock.now() - self.window
        while self._refused and self._refused[0] < oldest:
            self._refused.popleft()
