"""Import, maintenance mode and duplicates, with real agent and emulator processes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from tests.support.cluster import Cluster, ShopHandle


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip


async def _writes(shop: ShopHandle) -> list[dict]:
    return (await shop.emu("GET", "/_emulator/writes"))[1]


async def _import_state(shop: ShopHandle) -> str:
    return (await shop.get("/api/import"))["state"]


async def test_import_of_10000_skus_while_the_shop_keeps_selling_is_exact(tmp_path: Path) -> None:
    """Per SKU the successful write is the cut-over (DESIGN §8): a sale at the joining shop
    before it belonged to its old stock, a sale after it is the group's."""
    async with Cluster(tmp_path, 2, skus=10_000) as cluster:
        master, joiner = cluster.shops
        skus = sorted(await master.inventory())
        rng = random.Random(11)
        await joiner.post("/api/join", {"target": master.agent_url})
        await master.post(f"/api/requests/{joiner.domain}/accept")
        orders: list[tuple[ShopHandle, str, float]] = []

        importing = True

        async def watch() -> None:
            nonlocal importing
            deadline = asyncio.get_running_loop().time() + 180
            while await _import_state(joiner) in ("none", "running"):
                assert asyncio.get_running_loop().time() < deadline, "the import never ended"
                await asyncio.sleep(0.5)
            importing = False

        async def keep_selling() -> None:
            while importing:
                shop = rng.choice((master, joiner))
                sku = rng.choice(skus)
                status, body = await shop.emu(
                    "POST", "/_emulator/orders", {"line_items": [{"sku": sku, "quantity": 1}]}
                )
                if status == 201:
                    orders.append((shop, sku, body["order"]["created_at"]))
                await asyncio.sleep(0.05)  # ~40 sales/s: within what Standard lets us read

        await asyncio.gather(watch(), keep_selling(), keep_selling())
        assert len(orders) > 20
        counts = await cluster.converged(timeout=120)
        cutover: dict[str, float] = {}
        for write in await _writes(joiner):
            if write["applied"]:
                cutover.setdefault(write["sku"], write["at"])
        expected = dict.fromkeys(skus, 100)
        for shop, sku, at in orders:
            if shop is master or at > cutover.get(sku, float("inf")):
                expected[sku] -= 1
        assert counts == expected
        assert await joiner.inventory() == expected == await master.inventory()
        assert len(cutover) == 10_000  # every SKU was written once at the cut-over...
        applied = [w["sku"] for w in await _writes(joiner) if w["applied"]]
        # ...and afterwards only for sales at the master, never twice for one change
        assert len(applied) <= 10_000 + sum(1 for shop, _, _ in orders if shop is master)


async def test_import_killed_half_way_resumes_without_writing_twice(tmp_path: Path) -> None:
    async with Cluster(tmp_path, 2, skus=1000) as cluster:
        master, joiner = cluster.shops
        await joiner.post("/api/join", {"target": master.agent_url})
        # the first writes are applied but their answers lost: the kill lands while the
        # agent still does not know their outcome, the hardest moment for "never twice"
        await joiner.emu("POST", "/_emulator/faults", {"timeout_after_apply": 4})
        await master.post(f"/api/requests/{joiner.domain}/accept")
        await cluster.until(lambda: _some_writes(joiner), what="the import writing", timeout=60)
        await joiner.kill_agent()
        before = len([w for w in await _writes(joiner) if w["applied"]])
        assert before > 0
        await joiner.start_agent()
        await cluster.until(lambda: _done(joiner), what="the import to finish", timeout=120)
        counts = await cluster.converged(timeout=120)
        assert set(counts.values()) == {100}
        applied = [w["sku"] for w in await _writes(joiner) if w["applied"]]
        assert len(applied) == len(set(applied)) == 1000  # each SKU written exactly once
        keys = [w["key"] for w in await _writes(joiner) if w["applied"]]
        assert None not in keys


async def _some_writes(shop: ShopHandle) -> bool:
    return any(w["applied"] for w in await _writes(shop))


async def _done(shop: ShopHandle) -> bool:
    return await _import_state(shop) == "done"


async def test_dry_run_changes_nothing_and_duplicates_stay_untouched(tmp_path: Path) -> None:
    async with Cluster(tmp_path, 2, skus=6) as cluster:
        master, joiner = cluster.shops
        await joiner.emu("POST", "/_emulator/products", {"sku": "SKU-00001", "available": 7})
        await joiner.emu("POST", "/_emulator/products", {"sku": "", "available": 4})
        await joiner.emu("POST", "/_emulator/products", {"sku": "ONLY-HERE", "available": 9})
        await joiner.post("/api/reconcile")
        await cluster.wait_idle()
        await cluster.join(joiner, master)
        await cluster.wait_idle()
        items = (await joiner.emu("GET", "/_emulator/items"))[1]
        twins = [i for i in items if i["sku"] == "SKU-00001"]
        assert sorted(i["available"] for i in twins) == [7, 80]  # untouched by the import
        assert [i["available"] for i in items if i["sku"] == ""] == [4]
        out = cli("duplicates", "--data-dir", str(joiner.data_dir), "--json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert [d["sku"] for d in report["duplicates"]] == ["SKU-00001"]
        assert {i["item_id"] for i in report["duplicates"][0]["items"]} == {
            f"gid://shopify/InventoryItem/{i['inventory_item_id']}" for i in twins
        }
        assert len(report["no_sku"]) == 1
        assert report["missing_here"] == []  # a duplicated SKU is listed as such, not missing
        assert report["only_here"] == ["ONLY-HERE"]
        # the status counts them apart: both twins and the item without a SKU are left out
        status = await joiner.get("/api/status")
        assert (status["items"], status["excluded"]) == (len(items) - 3, 3), status
        # the rest syncs: a sale of another SKU reaches the master
        assert await joiner.buy("SKU-00002", 2)
        await cluster.until(lambda: _pool(master, "SKU-00002", 98), what="sale synced")
        # a dry run of a re-import reports and changes nothing
        await joiner.edit("SKU-00003", 55)
        await cluster.until(lambda: _pool(master, "SKU-00003", 55), what="edit synced")
        writes_before = len(await _writes(joiner))
        out = cli("import", "--data-dir", str(joiner.data_dir), "--dry-run", "--json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)["report"]
        assert report["skus_to_write"] == 0 and report["duplicate_skus"] == 1
        await asyncio.sleep(0.5)
        assert len(await _writes(joiner)) == writes_before


async def _pool(shop: ShopHandle, sku: str, value: int) -> bool:
    return (await shop.pools()).get(sku) == value


async def test_maintenance_holds_local_changes_then_sends_them_all(tmp_path: Path) -> None:
    async with Cluster(tmp_path, 2, skus=4) as cluster:
        master, joiner = cluster.shops
        await cluster.join(joiner, master)
        await cluster.wait_idle()
        out = cli("maintenance", "on", "--data-dir", str(master.data_dir))
        assert out.returncode == 0, out.stderr
        status = await master.get("/api/status")
        assert status["maintenance"] is True
        for _ in range(5):
            assert await master.buy("SKU-00001")
        await master.edit("SKU-00002", 30)
        await asyncio.sleep(1.5)
        assert (await joiner.inventory())["SKU-00001"] == 100  # held
        assert (await master.pools())["SKU-00001"] == 95  # but recorded
        assert await joiner.buy("SKU-00003", 2)  # the other way still flows
        await cluster.until(lambda: _pool(master, "SKU-00003", 98), what="inbound sync")
        out = cli("maintenance", "off", "--data-dir", str(master.data_dir))
        assert out.returncode == 0, out.stderr
        counts = await cluster.converged()
        assert counts["SKU-00001"] == 95 and counts["SKU-00002"] == 30
        assert counts["SKU-00003"] == 98


async def test_new_product_after_joining_takes_the_first_created_count(tmp_path: Path) -> None:
    async with Cluster(tmp_path, 2, skus=2) as cluster:
        master, joiner = cluster.shops
        await cluster.join(joiner, master)
        await cluster.wait_idle()
        await master.emu("POST", "/_emulator/products", {"sku": "NEW-1", "available": 12})
        await asyncio.sleep(0.3)
        await joiner.emu("POST", "/_emulator/products", {"sku": "NEW-1", "available": 3})
        await master.emu("POST", "/_emulator/products", {"sku": "NEW-2", "available": 6})
        await cluster.until(lambda: _pool(joiner, "NEW-1", 12), what="first-created wins")
        await cluster.until(lambda: _has(joiner, "NEW-1", 12), what="joiner shows 12")
        await cluster.until(lambda: _pool(joiner, "NEW-2", 6), what="NEW-2 reached the joiner")
        report = await joiner.get("/api/duplicates")
        assert report["missing_here"] == ["NEW-2"]  # listed as missing, not an error


async def _has(shop: ShopHandle, sku: str, value: int) -> bool:
    return (await shop.inventory()).get(sku) == value


async def test_resync_rereads_and_rewrites_a_doubted_count(tmp_path: Path) -> None:
    async with Cluster(tmp_path, 1, skus=3) as cluster:
        (shop,) = cluster.shops
        await shop.emu("POST", "/_emulator/faults", {"webhook_drop": 1.0})
        await shop.edit("SKU-00002", 61)  # the webhook is lost: the agent does not know yet
        await asyncio.sleep(0.3)
        assert (await shop.pools())["SKU-00002"] == 100
        out = cli("resync", "SKU-00002", "--data-dir", str(shop.data_dir), "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["queued"] == ["SKU-00002"]
        await cluster.until(lambda: _pool(shop, "SKU-00002", 61), what="resync observed it")
        out = cli("resync", "NOPE", "--data-dir", str(shop.data_dir))
        assert out.returncode == 1 and "NOPE" in out.stdout
        out = cli("resync", "--data-dir", str(shop.data_dir))
        assert out.returncode == 2


async def test_a_reimport_does_what_its_dry_run_says_sku_by_sku(tmp_path: Path) -> None:
    """A re-import on a member counts the shop's changes the agent missed as the shop's own
    (they reach every shop), then writes the group's counts: the dry run says so per SKU,
    and the run does exactly that."""
    async with Cluster(tmp_path, 2, skus=5) as cluster:
        master, member = cluster.shops
        await cluster.join(member, master)
        await cluster.wait_idle()
        out = cli("rules", "set", "max=90", "--data-dir", str(member.data_dir))
        assert out.returncode == 0, out.stderr
        await cluster.until(lambda: _shows(member, "SKU-00004", 90), what="the cap applied")
        pools_before = await master.pools()
        # changes the member's agent misses (their webhooks are lost)
        await member.emu("POST", "/_emulator/faults", {"webhook_drop": 1.0})
        await member.edit("SKU-00002", 61)  # a stock count: 29 fewer than the 90 shown
        await member.edit("SKU-00003", 95)  # 5 more, above the cap: the cap is written back
        await asyncio.sleep(0.3)
        await member.emu("POST", "/_emulator/faults", {"webhook_drop": 0.0})
        shop_before = await member.inventory()
        assert (shop_before["SKU-00002"], shop_before["SKU-00003"]) == (61, 95)

        out = cli("import", "--data-dir", str(member.data_dir), "--dry-run")
        assert out.returncode == 0, out.stderr
        assert "this shop's changes are counted first" in out.stdout
        assert "SKU-00002: shop shows 61, last seen 90 (-29): group 100 → 71" in out.stdout
        out = cli("import", "--data-dir", str(member.data_dir), "--dry-run", "--json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)["report"]
        assert report["mode"] == "reimport"
        counted = {r["sku"]: r for r in report["counted"]}
        assert {s: (r["change"], r["group_after"]) for s, r in counted.items()} == {
            "SKU-00002": (-29, 71),
            "SKU-00003": (5, 105),
        }
        writes = {r["sku"]: r["target"] for r in report["to_change"]}
        # 71 is under the cap: this shop shows the group's count; 105 is over it
        assert writes == {"SKU-00002": 71, "SKU-00003": 90}

        out = cli("import", "--data-dir", str(member.data_dir), "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["state"] == "done"
        # the progress carries the run's report; a poll can leave it out (`report=0`)
        progress = await member.get("/api/import")
        assert {r["sku"] for r in progress["dry_run_report"]["to_change"]} == set(writes)
        short = await member.get("/api/import?report=0")
        assert short["dry_run_report"] is None
        assert {k: v for k, v in short.items() if k != "dry_run_report"} == {
            k: v for k, v in progress.items() if k != "dry_run_report"
        }
        status, body = await member.api("GET", "/api/import?report=maybe")
        assert status == 400 and body == {
            "error": "bad_parameter",
            "message": "report must be 1 or 0",
        }
        await cluster.wait_idle()
        member_shop, master_shop = await member.inventory(), await master.inventory()
        master_pools = await master.pools()
        for sku, pool in pools_before.items():
            assert pool is not None
            group = counted[sku]["group_after"] if sku in counted else pool
            assert master_pools[sku] == group, sku
            assert master_shop[sku] == group, sku  # the master has no rules
            assert pool == 100
            assert member_shop[sku] == writes.get(sku, shop_before[sku]), sku


async def _shows(shop: ShopHandle, sku: str, count: int) -> bool:
    return (await shop.inventory()).get(sku) == count
