"""One active agent per shop database: a hot standby on PostgreSQL (real processes, the local
PostgreSQL server), and a second agent on one SQLite data directory waiting its turn."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import _pg_create, _pg_drop, _pg_url
from tests.support.cluster import Cluster


@pytest.mark.postgres
async def test_a_standby_takes_over_within_seconds_when_the_active_agent_is_killed(
    tmp_path: Path,
) -> None:
    name = await _pg_create()
    standby: asyncio.subprocess.Process | None = None
    try:
        async with Cluster(tmp_path, 2, skus=6, database_urls=[_pg_url(name)]) as cluster:
            a, b = cluster.shops  # a's agent keeps its ledger in PostgreSQL
            await cluster.join(b, a)
            await cluster.converged()
            # the same agent (config, key, address) started a second time: it waits
            twin = tmp_path / "standby"
            shutil.copytree(a.data_dir, twin)
            with (tmp_path / "logs" / "standby.log").open("ab") as log:
                standby = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "agent.cli", "run", "--data-dir", str(twin),
                    stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True,
                )  # fmt: skip
            assert standby.stdout is not None
            said = (await asyncio.wait_for(standby.stdout.readline(), 60)).decode()
            assert said.startswith("standby: another agent process holds this shop's database")
            assert await a.buy("SKU-00001", 2) and await b.buy("SKU-00002", 1)
            await cluster.until(lambda: _pool(b, "SKU-00001", 98), what="a's sale at b")
            assert standby.returncode is None  # still waiting: the active one runs

            # kill -9 the active agent during sales
            sales = asyncio.gather(*(a.buy("SKU-00003") for _ in range(3)), b.buy("SKU-00004"))
            await a.kill_agent()
            killed = time.monotonic()
            assert all(await sales)
            assert await a.buy("SKU-00005", 4)  # while nobody answers a's webhooks
            ready = (await asyncio.wait_for(standby.stdout.readline(), 60)).decode()
            took = time.monotonic() - killed
            assert ready.startswith("ready "), ready
            assert took < 10, f"the standby took {took:.1f} s to take over"
            assert await a.buy("SKU-00006", 1) and await b.buy("SKU-00001", 1)  # after

            counts = await cluster.converged(timeout=120)
            sold = {"SKU-00001": 3, "SKU-00002": 1, "SKU-00003": 3, "SKU-00004": 1}
            sold |= {"SKU-00005": 4, "SKU-00006": 1}
            assert counts == {sku: 100 - n for sku, n in sold.items()}  # nothing lost
            assert await a.inventory() == counts == await b.inventory()
    finally:
        if standby is not None and standby.returncode is None:
            standby.kill()
            await standby.wait()
        await _pg_drop(name)


async def test_a_second_agent_on_one_sqlite_data_directory_waits_for_the_first(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path, 1, skus=3) as cluster:
        (shop,) = cluster.shops
        with (tmp_path / "logs" / "second.log").open("ab") as log:
            second = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent.cli", "run", "--data-dir", str(shop.data_dir),
                stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True,
            )  # fmt: skip
        try:
            assert second.stdout is not None
            said = (await asyncio.wait_for(second.stdout.readline(), 60)).decode()
            assert said.startswith(f"standby: another agent process runs on {shop.data_dir}")
            assert await shop.buy("SKU-00001", 2)
            await cluster.until(lambda: _pool(shop, "SKU-00001", 98), what="the sale counted")
            await shop.stop_agent()  # a graceful stop lets the lock go at once
            ready = (await asyncio.wait_for(second.stdout.readline(), 60)).decode()
            assert ready.startswith("ready "), ready
            assert await shop.buy("SKU-00001", 1)
            await cluster.until(lambda: _pool(shop, "SKU-00001", 97), what="counted by the second")
        finally:
            if second.returncode is None:
                second.terminate()
                await second.wait()


async def _pool(shop, sku: str, value: int) -> bool:  # type: ignore[no-untyped-def]
    return (await shop.pools()).get(sku) == value
