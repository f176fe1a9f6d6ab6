"""A run of webhooks refused for their signature is an alert, until a valid one arrives; so
are credentials the platform refuses, until it accepts them again.

An agent whose webhook secret is not the platform's refuses every delivery; it still
reconciles on its periodic passes, so without an alert the owner would see a calm overview.
An agent whose token the platform refuses (the app uninstalled, the token revoked) can neither
read nor write the shop; its sync log would fill with failures no one looks at.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.cluster import Cluster, ShopHandle


@pytest.fixture
async def solo(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with Cluster(tmp_path, 1, skus=5) as cluster:
        yield cluster


def shopsync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=60
    )


async def deliver(http: aiohttp.ClientSession, shop: ShopHandle, secret: bytes) -> int:
    """One `inventory_levels/update` delivery signed with `secret`, as the platform sends it."""
    body = json.dumps({"inventory_item_id": 1, "location_id": 1, "available": 3}).encode()
    signature = base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()
    headers = {"X-Shopify-Hmac-Sha256": signature, "X-Shopify-Topic": "inventory_levels/update"}
    async with http.post(shop.agent_url + "/webhooks/shopify", data=body, headers=headers) as r:
        return r.status


async def overview(shop: ShopHandle) -> str:
    """The overview page, as an owner logged in with the admin token sees it."""
    jar = aiohttp.CookieJar(unsafe=True)  # the agent listens on an IP address
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.get(shop.agent_url + "/login") as resp:
            form = await resp.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        login = {"csrf": csrf.group(1), "next": "/", "token": shop.shop.token}
        async with browser.post(shop.agent_url + "/login", data=login) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.text()


async def test_refused_signatures_are_an_alert_until_a_valid_webhook_arrives(
    solo: Cluster,
) -> None:
    shop, http = solo.shops[0], solo.http
    assert http is not None
    assert (await shop.get("/api/status"))["alerts"] == []
    assert "No alerts: nothing oversold" in await overview(shop)

    for _ in range(4):  # the platform signs with a secret the agent does not have
        assert await deliver(http, shop, b"rotated-app-secret") == 401

    async def raised() -> bool:  # the refusals wake the alerts at once; they look, then tell
        return bool((await shop.get("/api/status"))["alerts"])

    await solo.until(raised, timeout=10, what="the refusals to raise an alert")
    status = await shop.get("/api/status")
    [alert] = status["alerts"]
    assert alert["kind"] == "webhooks_refused" and alert["subject"] == ""
    assert "4 webhooks refused (bad signature) in the last 15 minutes" in alert["message"]
    assert "check the webhook secret" in alert["message"]
    text = shopsync("status", "--data-dir", str(shop.data_dir))
    assert text.returncode == 0, text.stderr
    assert "4 webhooks refused (bad signature)" in " ".join(text.stdout.split())
    as_json = shopsync("status", "--data-dir", str(shop.data_dir), "--json")
    assert json.loads(as_json.stdout)["alerts"][0]["message"] == alert["message"]
    page = await overview(shop)
    assert "4 webhooks refused (bad signature)" in page
    assert "No alerts: nothing oversold" not in page

    # the secret is fixed at the platform: a valid delivery (a sale's webhook) clears it
    sku = sorted(await shop.inventory())[0]
    assert await shop.buy(sku)
    await solo.until(
        lambda: _no_alerts(shop), timeout=20, what="the alert to clear after a valid webhook"
    )
    assert "webhooks refused" not in await overview(shop)
    assert await deliver(http, shop, b"emulator-secret") == 200


async def _no_alerts(shop: ShopHandle) -> bool:
    return (await shop.get("/api/status"))["alerts"] == []


async def test_refused_credentials_are_an_alert_until_the_platform_accepts_them(
    solo: Cluster,
) -> None:
    shop = solo.shops[0]
    sku = sorted(await shop.inventory())[0]
    assert (await shop.emu("POST", "/_emulator/credentials", {"revoked": True})) == (
        200,
        {"revoked": True},
    )
    before = (await shop.pools())[sku]
    # the sale is counted from its level webhook, without a call to the platform
    assert await shop.buy(sku)

    async def counted() -> bool:
        return (await shop.pools())[sku] == before - 1

    await solo.until(counted, timeout=30, what="the sale to be counted")
    # the agent's next call to the platform (here a re-read an admin asks for) is refused
    assert (await shop.post("/api/resync", {"skus": [sku]}))["queued"] == [sku]

    async def alerts() -> list[dict[str, str]]:
        return list((await shop.get("/api/alerts"))["alerts"])

    async def raised() -> bool:
        return [a["kind"] for a in await alerts()] == ["credentials_failing"]

    await solo.until(raised, timeout=30, what="the refused credentials to raise an alert")
    [alert] = await alerts()
    assert "Shopify refused the access token (HTTP 401)" in alert["message"], alert
    assert "credentials failing" in await overview(shop)
    text = shopsync("status", "--data-dir", str(shop.data_dir))
    assert "credentials_failing" in text.stdout or "credentials failing" in text.stdout
    logged = (await shop.get("/api/log?kind=alert&limit=5"))["entries"]
    assert any("credentials_failing" in e["message"] for e in logged), logged

    # the merchant installs the app again: the next call goes through and the alert clears
    assert (await shop.emu("POST", "/_emulator/credentials", {"revoked": False}))[0] == 200
    assert await shop.buy(sku)
    await solo.until(lambda: _no_alerts(shop), timeout=30, what="the alert to clear")
    pools = await shop.pools()
    assert pools[sku] == (await shop.inventory())[sku]  # both sales counted, nothing lost
    code, body = await shop.emu("POST", "/_emulator/credentials", {"revoked": "yes"})
    assert code == 400 and "revoked must be true or false" in json.dumps(body)
