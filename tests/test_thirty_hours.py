"""Thirty emulated hours on each platform: tokens expire and are renewed, counts stay exact.

A real agent process runs against a real emulator process. The emulator's clock moves an hour
at a time (`POST /_emulator/clock/advance`), with a sale after every step; the agent's clock
runs on, so only the platform's 401 tells it a token expired (Shopify's client-credentials
tokens live 24 h, SHOPLINE's app tokens 10 h; Pisell's signed requests carry no expiring
token). Halfway, the platform deletes the agent's webhook subscriptions (as after failed
deliveries): the agent's next check, every `webhook_check_interval`, creates them again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.demo import Shop, init_agent
from tests.support.cluster import ShopHandle

HOURS = 30
SKUS = 5
CHECK_INTERVAL = 2.0  # seconds between the agent's subscription checks, for this test
CREDENTIALS = {
    "shopify": ("client_id=emulator-client-id", "client_secret=emulator-secret", "bulk=false"),
    "shopline": ("app_key=emulator-client-id", "app_secret=emulator-secret"),
    "pisell": ("access_token=emulator-token", "webhook_secret=emulator-secret"),
}
# renewals over 30 h, one each time the token expired: Shopify at 24 h; SHOPLINE at 10, 20, 30 h
RENEWALS = {"shopify": 1, "shopline": 3, "pisell": 0}
TOPICS = {"shopify": 6, "shopline": 6, "pisell": 3}  # the subscriptions each channel makes


class Run(Shop):
    """One emulator process and one agent process (the demo's), with an app's credentials."""

    def __init__(self, workdir: Path, channel: str) -> None:
        super().__init__(0, channel, workdir, SKUS)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def start(self) -> None:
        await self.emulator.start()
        # init's checks pass against the emulator, or it writes nothing and fails
        self.token = await init_agent(
            self.data_dir, self.domain, self.agent_port, self.channel, self.emu_url,
            credentials=CREDENTIALS[self.channel],
        )  # fmt: skip
        config = self.data_dir / "shopsync.toml"
        text = config.read_text().replace(
            "webhook_check_interval = 3600.0", f"webhook_check_interval = {CHECK_INTERVAL}", 1
        )
        config.write_text(text)
        await self.agent.start()

    async def stop(self) -> None:
        await super().stop()
        await self.http.close()

    async def emu(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await ShopHandle(self, self.http).emu(method, path, body)

    async def api(self, path: str) -> Any:
        return await ShopHandle(self, self.http).get(path)

    async def settled(self, timeout: float = 30) -> dict[str, int]:
        """Until the agent's pool equals the shop's count for every SKU; returns the counts."""
        deadline = time.monotonic() + timeout
        while True:
            shop = (await self.emu("GET", "/_emulator/inventory"))[1]
            pools = {p["sku"]: p["pool"] for p in (await self.api("/api/pools"))["pools"]}
            if shop and pools == shop:
                return dict(shop)
            if time.monotonic() > deadline:
                raise AssertionError(f"the agent did not follow the shop: {pools} vs {shop}")
            await asyncio.sleep(0.05)

    async def subscriptions(self) -> list[str]:
        return sorted(s["topic"] for s in (await self.emu("GET", "/_emulator/webhooks"))[1]
                      ["subscriptions"])  # fmt: skip


@pytest.mark.parametrize("channel", ["shopify", "shopline", "pisell"])
async def test_thirty_emulated_hours_renew_tokens_and_end_with_exact_counts(
    tmp_path: Path, channel: str
) -> None:
    run = Run(tmp_path, channel)
    try:
        await run.start()
        start = await run.settled()
        skus = sorted(start)
        deadline = time.monotonic() + 30
        while len(subscribed := await run.subscriptions()) < TOPICS[channel]:
            assert time.monotonic() < deadline, f"subscribed to {subscribed} only"
            await asyncio.sleep(0.1)  # one topic at a time, paced
        sold: dict[str, int] = dict.fromkeys(skus, 0)
        for hour in range(1, HOURS + 1):
            await run.emu("POST", "/_emulator/clock/advance", {"seconds": 3600})
            sku = skus[hour % SKUS]
            status, _ = await run.emu(
                "POST", "/_emulator/orders", {"line_items": [{"sku": sku, "quantity": 1}]}
            )
            assert status == 201
            sold[sku] += 1
            await run.settled()
            if hour == HOURS // 2:  # the platform gives up on the agent's subscriptions
                _, deleted = await run.emu("POST", "/_emulator/webhooks/delete", {})
                assert deleted["deleted"] == len(subscribed)
                deadline = time.monotonic() + 3 * CHECK_INTERVAL + 5
                while await run.subscriptions() != subscribed:
                    assert time.monotonic() < deadline, "subscriptions were not re-created"
                    await asyncio.sleep(0.1)
        await run.emu("POST", "/_emulator/clock/advance", {"seconds": 3600})  # Pisell's pull
        end = await run.settled()
        assert {s: start[s] - end[s] for s in skus} == sold  # every sale counted, once
        renewals = (await run.api("/api/log?kind=token_renewed&limit=100"))["entries"]
        assert len(renewals) == RENEWALS[channel], renewals
        assert all("renewed after the platform refused" in e["message"] for e in renewals)
        # the platform granted those, besides the first token of init's check and of the agent
        issued = (await run.emu("GET", "/_emulator/tokens"))[1]["issued"]
        assert issued == (RENEWALS[channel] + 2 if RENEWALS[channel] else 0)
    finally:
        await run.stop()
