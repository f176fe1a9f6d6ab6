"""One agent process following its emulated Shopify shop, driven through the CLI and HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, ShopHandle, shared_fixtures


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


shared = pytest.mark.asyncio(loop_scope="module")  # the tests on the module's one agent


async def _form_solo(workdir: Path) -> Cluster:
    cluster = Cluster(workdir, 1, skus=50)
    await cluster.__aenter__()
    return cluster


# solo: one agent and its shop of 50 SKUs, idle, shared by the tests marked `shared`: they
# read, or change SKUs no other of them touches (SKU-00001 and 2; SKU-00011 to 20)
group, solo = shared_fixtures("solo", _form_solo)


@pytest.fixture
async def own_solo(tmp_path: Path) -> AsyncIterator[Cluster]:
    """One agent and its shop of 50 SKUs, for a test that sells every SKU."""
    async with Cluster(tmp_path, 1, skus=50) as cluster:
        yield cluster


async def _events(shop: ShopHandle) -> int:
    return int((await shop.get("/api/status"))["events"])


@shared
async def test_purchases_and_manual_edits_become_events_in_the_sync_log(solo: Cluster) -> None:
    shop = solo.shops[0]
    assert await shop.buy("SKU-00001", 2)
    await shop.edit("SKU-00002", 40)
    await solo.wait_idle()
    out = cli("log", "--data-dir", str(shop.data_dir), "--json", "--limit", "20")
    assert out.returncode == 0, out.stderr
    entries = [json.loads(line) for line in out.stdout.splitlines()]
    changes = {
        (e["sku"], e["before"], e["delta"], e["after"]) for e in entries if e["kind"] == "change"
    }
    assert ("SKU-00001", 100, -2, 98) in changes
    assert ("SKU-00002", 100, -60, 40) in changes
    out = cli("log", "--data-dir", str(shop.data_dir), "--sku", "SKU-00002", "--json")
    assert {json.loads(line)["sku"] for line in out.stdout.splitlines()} == {"SKU-00002"}
    assert (await shop.pools())["SKU-00001"] == 98


@shared
async def test_bad_webhook_signature_is_refused_with_401_and_changes_nothing(
    solo: Cluster,
) -> None:
    shop = solo.shops[0]
    before = await _events(shop)
    body = json.dumps({"inventory_item_id": 1, "location_id": 1, "available": 0}).encode()
    good = base64.b64encode(hmac.new(b"wrong-secret", body, hashlib.sha256).digest()).decode()
    for signature in (good, "", "not-base64!"):
        async with solo.http.post(  # type: ignore[union-attr]
            shop.agent_url + "/webhooks/shopify",
            data=body,
            headers={
                "X-Shopify-Hmac-Sha256": signature,
                "X-Shopify-Topic": "inventory_levels/update",
            },
        ) as resp:
            assert resp.status == 401
            assert "error" in await resp.json()
    await asyncio.sleep(0.3)
    assert await _events(shop) == before


async def test_burst_of_500_purchases_on_50_skus_ends_with_pools_equal_to_the_shop(
    own_solo: Cluster,
) -> None:
    solo = own_solo
    shop = solo.shops[0]
    skus = sorted(await shop.inventory())
    _, stats0 = await shop.emu("GET", "/_emulator/stats")
    before = await _events(shop)
    results = await asyncio.gather(*(shop.buy(skus[i % 50]) for i in range(500)))
    await solo.wait_idle()
    counts, pools = await shop.inventory(), await shop.pools()
    assert all(results)
    assert counts == {sku: pools[sku] for sku in counts}
    assert sum(100 - c for c in counts.values()) == 500  # each purchase counted exactly once
    assert await _events(shop) - before <= 500  # coalesced, never more events than changes
    _, stats1 = await shop.emu("GET", "/_emulator/stats")
    assert stats1["throttled"] - stats0["throttled"] <= 3


@shared
async def test_agent_killed_during_a_burst_loses_nothing(solo: Cluster) -> None:
    shop = solo.shops[0]
    skus = sorted(await shop.inventory())[10:20]  # SKU-00011 to 20: this test's own
    first = asyncio.gather(*(shop.buy(skus[i % 10]) for i in range(100)))
    await asyncio.sleep(0.05)
    await shop.kill_agent()
    await first
    for i in range(50):  # sales while the agent is down: only reconciliation can find them
        assert await shop.buy(skus[i % 10])
    await shop.start_agent()
    await solo.wait_idle()
    counts, pools = await shop.inventory(), await shop.pools()
    assert {s: counts[s] for s in skus} == {s: pools[s] for s in skus}
    assert sum(100 - counts[s] for s in skus) == 150


def test_init_writes_private_files_and_prints_json(tmp_path: Path) -> None:
    data = tmp_path / "agent"
    out = cli(
        "init",
        "--data-dir",
        str(data),
        "--domain",
        "dk.example.com",
        "--listen",
        "127.0.0.1:8765",
        "--public-url",
        "https://sync.example.com",
        "--channel",
        "shopify",
        "--channel-option",
        "api_url=http://127.0.0.1:1",
        "--channel-option",
        "access_token=shpat_x",
        "--channel-option",
        "webhook_secret=s",
        "--json",
        "--no-check",  # no shop at api_url: this test is about the files
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) == {"domain", "admin_token", "fingerprint", "config"}
    assert result["fingerprint"].startswith("SHA256:")
    for name in ("shopsync.toml", "agent.key"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    assert "shpat_x" not in out.stderr
    again = cli(
        "init",
        "--data-dir",
        str(data),
        "--domain",
        "dk.example.com",
        "--listen",
        "127.0.0.1:8765",
        "--public-url",
        "https://sync.example.com",
        "--channel",
        "shopify",
        "--channel-option",
        "api_url=http://127.0.0.1:1",
        "--channel-option",
        "access_token=x",
        "--channel-option",
        "webhook_secret=s",
    )
    assert again.returncode == 2 and "already holds an agent" in again.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["run"], "--data-dir"),
        (["status", "--data-dir", "/nonexistent/x"], "not found"),
        (
            [
                "init",
                "--data-dir",
                "D",
                "--domain",
                "a b",
                "--listen",
                "x",
                "--public-url",
                "u",
                "--channel",
                "shopify",
            ],
            "domain",
        ),
        (
            [
                "init",
                "--data-dir",
                "D",
                "--domain",
                "a.example.com",
                "--listen",
                "127.0.0.1:1",
                "--public-url",
                "http://x",
                "--channel",
                "nope",
            ],
            "unknown channel",
        ),
        (
            [
                "init",
                "--data-dir",
                "D",
                "--domain",
                "a.example.com",
                "--listen",
                "127.0.0.1:1",
                "--public-url",
                "http://x",
                "--channel",
                "shopify",
                "--channel-option",
                "bogus=1",
            ],
            "unknown channel option",
        ),
        (["emulator", "shopify", "--port", "0", "--shop", "x"], "--port"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_get_one_clear_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    out = cli(*[a.replace("D", str(tmp_path / "d")) if a == "D" else a for a in args])
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert message in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "d" / "shopsync.toml").exists()


@shared
async def test_status_json_reports_the_shop(solo: Cluster) -> None:
    shop = solo.shops[0]
    out = cli("status", "--data-dir", str(shop.data_dir), "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["domain"] == shop.domain and status["items"] == 50
    out = cli("status", "--data-dir", str(shop.data_dir))
    assert shop.domain in out.stdout


@shared
async def test_pools_page_through_a_search_in_sku_order(solo: Cluster) -> None:
    shop = solo.shops[0]
    everything = await shop.get("/api/pools")
    skus = [p["sku"] for p in everything["pools"]]
    assert skus == [f"SKU-{n:05d}" for n in range(1, 51)] and everything["total"] == 50

    pages = [await shop.get(f"/api/pools?limit=20&offset={at}") for at in (0, 20, 40, 60)]
    assert [len(p["pools"]) for p in pages] == [20, 20, 10, 0]
    assert {p["total"] for p in pages} == {50}
    assert [row for page in pages for row in page["pools"]] == everything["pools"]

    found = await shop.get("/api/pools?q=sku-0002&limit=5&offset=5")  # any case
    assert found["total"] == 10  # SKU-00020 to SKU-00029
    assert [p["sku"] for p in found["pools"]] == [f"SKU-000{n}" for n in range(25, 30)]
    one = await shop.get("/api/pools?sku=SKU-00007")
    assert [p["sku"] for p in one["pools"]] == ["SKU-00007"] and one["total"] == 1

    for query in ("limit=0", "limit=1001", "limit=ten", "offset=-1"):
        status, body = await shop.api("GET", f"/api/pools?{query}")
        assert status == 400, query
        assert body["error"] == "bad_parameter" and body["message"], body


def test_the_commands_run_on_uvloop_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """`shopsync` runs on uvloop where it is installed (a dependency on Linux and macOS), and
    on asyncio's own loop with `SHOPSYNC_EVENT_LOOP=asyncio`."""
    from agent.cli import run_loop

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_loop(loop_module()).startswith("uvloop")
    monkeypatch.setenv("SHOPSYNC_EVENT_LOOP", "asyncio")
    assert run_loop(loop_module()).startswith("asyncio")
