"""A join's snapshot downloaded in pages and resumed after a kill, and a shop that joins its
group again after leaving, with real agent and emulator processes (apart from
test_e2e_import.py, so that the suite's two workers share the load)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, ShopHandle


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip


async def _done(shop: ShopHandle) -> bool:
    return (await shop.get("/api/import"))["state"] == "done"


async def _downloaded(shop: ShopHandle, pages: int) -> bool:
    snapshot = (await shop.get("/api/import")).get("snapshot")
    return snapshot is not None and snapshot["pages_done"] >= pages


async def test_a_join_killed_while_downloading_the_snapshot_resumes_at_its_next_page(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path, 2, skus=2000) as cluster:
        master, joiner = cluster.shops
        await master.stop_agent()
        config = master.data_dir / "shopsync.toml"
        text = config.read_text()
        assert "snapshot_page_size = 5000" in text  # what `shopsync init` wrote
        config.write_text(text.replace("snapshot_page_size = 5000", "snapshot_page_size = 4"))
        await master.start_agent()
        await joiner.post("/api/join", {"target": master.agent_url})
        await master.post(f"/api/requests/{joiner.domain}/accept")
        await cluster.until(lambda: _downloaded(joiner, 20), what="the download", timeout=60)
        await joiner.kill_agent()
        await master.edit("SKU-00007", 61)  # after the cut: it comes by replication
        await joiner.start_agent()
        await cluster.until(lambda: _done(joiner), what="the import to finish", timeout=120)
        counts = await cluster.converged(timeout=120)
        assert counts == {**dict.fromkeys(await master.inventory(), 100), "SKU-00007": 61}
        assert await joiner.inventory() == counts
        log = (await joiner.get("/api/log?kind=import&limit=50"))["entries"]
        resumed = [e["message"] for e in log if "resumed" in e["message"]]
        assert len(resumed) == 1, log
        page = int(resumed[0].split("resumed at page ")[1].split()[0])
        assert 21 <= page <= 500, resumed  # where it stopped, not page 1 again
        assert resumed[0].endswith("of 500 (2000 SKUs)")


@pytest.mark.parametrize("while_out", ["count", "discard"])
async def test_a_shop_that_left_and_joins_again_counts_or_discards_what_it_did_while_out(
    tmp_path: Path, while_out: str
) -> None:
    async with Cluster(tmp_path, 2, skus=5) as cluster:
        master, joiner = cluster.shops
        await cluster.join(joiner, master)
        await joiner.post("/api/leave")
        assert await joiner.buy("SKU-00001", 3)  # sold while out of the group
        await joiner.edit("SKU-00003", 110)  # a stocktake while out: +10
        assert await master.buy("SKU-00002", 2)  # the group sells meanwhile
        await cluster.wait_idle()
        for bad in ("maybe", 1, None):  # refused in words, and no request is sent
            body = {"target": master.agent_url, "while_out": bad}
            status, answer = await joiner.api("POST", "/api/join", body)
            assert (status, answer["error"]) == (400, "bad_while_out"), answer
        assert (await master.get("/api/requests"))["requests"] == []
        if while_out == "count":  # the default, through the API
            await joiner.post("/api/join", {"target": master.agent_url})
        else:  # the owner's choice, through the CLI
            joined = cli(
                "join", "--data-dir", str(joiner.data_dir), master.agent_url,
                "--while-out", "discard",
            )  # fmt: skip
            assert joined.returncode == 0, joined.stderr
        await master.post(f"/api/requests/{joiner.domain}/accept")
        await cluster.until(lambda: _done(joiner), what="the join's import", timeout=60)
        counts = await cluster.converged()
        report = (await joiner.get("/api/import"))["dry_run_report"]
        moved = {"SKU-00001": -3, "SKU-00003": 10}
        expected = {f"SKU-0000{i}": 100 for i in range(1, 6)} | {"SKU-00002": 98}
        if while_out == "count":
            assert (report["mode"], report["while_out"]) == ("rejoin", "count")
            assert {r["sku"]: r["change"] for r in report["counted"]} == moved
            assert report["discarded"] == []
            expected |= {"SKU-00001": 97, "SKU-00003": 110}
        else:
            assert (report["mode"], report["while_out"]) == ("join", "discard")
            assert {r["sku"]: r["change"] for r in report["discarded"]} == moved
            assert report["counted"] == []
        assert counts == expected
        assert await master.inventory() == expected == await joiner.inventory()
        log = (await joiner.get("/api/log?kind=change&limit=50"))["entries"]
        carried = {e["sku"]: e["delta"] for e in log if "while out" in e["message"]}
        assert carried == (moved if while_out == "count" else {})  # each counted one logged
