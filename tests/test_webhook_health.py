"""Webhook subscriptions are kept alive: retried while refused, re-verified on a period."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from agent.clock import SystemClock
from agent.emulator import EmulatorOptions
from agent.webhook_health import keep_subscribed
from plugins.shopify.channel import ShopifyChannel, ShopifySettings
from plugins.shopify.emulator import ShopifyEmulator

URL = "https://agent.example.com/webhooks/shopify"


class StopAfter:
    """A clock that records sleeps and ends the loop at the `limit`-th one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sleeps: list[float] = []

    def now(self) -> float:
        return 0.0

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) >= self.limit:
            raise asyncio.CancelledError


class FlakyChannel:
    """A channel whose first `failures` subscribe calls fail."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def subscribe(self, url: str) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("platform down")


async def test_subscribing_is_retried_with_backoff_then_reverified_every_interval() -> None:
    channel, clock = FlakyChannel(failures=2), StopAfter(limit=5)
    with pytest.raises(asyncio.CancelledError):
        await keep_subscribed(channel, URL, clock=clock, shop="s", interval=600)  # type: ignore[arg-type]
    assert clock.sleeps == [1.0, 2.0, 600, 600, 600]
    assert channel.calls == 5  # two refusals, then one subscribe per period


async def test_a_subscription_the_platform_deleted_is_recreated_on_the_next_check(
    aiohttp_client: Any,
) -> None:
    emulator = ShopifyEmulator(EmulatorOptions(token="t", webhook_secret="s", rate_limit=False))
    client = await aiohttp_client(emulator.build_app())
    settings = ShopifySettings.from_options(
        {"api_url": str(client.make_url("")).rstrip("/"), "access_token": "t",
         "webhook_secret": "s"}
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        channel = ShopifyChannel(settings, http=http, clock=SystemClock())
        await channel.subscribe(URL)
        subs = emulator.webhooks.subscriptions
        gone = next(s.id for s in subs.values() if s.topic == "orders/create")
        emulator.webhooks.unsubscribe(gone)  # as Shopify does after failed deliveries
        with pytest.raises(asyncio.CancelledError):
            await keep_subscribed(channel, URL, clock=StopAfter(limit=1), shop="s")  # type: ignore[arg-type]
    assert sorted(s.topic for s in subs.values()).count("orders/create") == 1
    assert len(subs) == 6
