"""Keeping a channel's webhook subscriptions alive: subscribe, then check them again and again.

Platforms delete subscriptions whose deliveries keep failing (Shopify after a delivery fails
its 8 retries over 4 h, SHOPLINE after 19 over 48 h), for example while the agent was down.
`Channel.subscribe` is idempotent and re-creates only what is missing, so calling it on a
period heals a deleted subscription within one period; reconciliation covers the gap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from agent.channel import Channel
    from agent.clock import Clock

__all__ = ["RECHECK_INTERVAL", "keep_subscribed"]

log = structlog.get_logger(__name__)

RECHECK_INTERVAL = 3600.0  # well inside Shopify's 4 h of retries before it deletes
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
