"""Real emulator and agent processes on loopback, driven over HTTP like a user would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from agent.demo import Process, Shop

__all__ = ["CALL_REPORT", "Cluster", "SharedCluster", "ShopHandle", "shared_fixtures"]

#: Where tests/conftest.py keeps each test's outcome (its "call" report), for `SharedCluster`.
CALL_REPORT = pytest.StashKey[pytest.TestReport]()


class ShopHandle:
    """One shop (emulator process + agent process) and HTTP helpers to drive and inspect it."""

    def __init__(self, shop: Shop, http: aiohttp.ClientSession) -> None:
        self.shop = shop
        self.http = http

    @property
    def domain(self) -> str:
        return self.shop.domain

    @property
    def agent_url(self) -> str:
        return self.shop.agent_url

    @property
    def emu_url(self) -> str:
        return self.shop.emu_url

    @property
    def data_dir(self) -> Path:
        return self.shop.data_dir

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.shop.token}"}
        async with self.http.request(
            method, self.agent_url + path, json=body, headers=headers
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def get(self, path: str) -> Any:
        status, body = await self.api("GET", path)
        assert status == 200, (path, status, body)
        return body

    async def post(self, path: str, body: Any = None) -> Any:
        status, answer = await self.api("POST", path, body or {})
        assert status < 300, (path, status, answer)
        return answer

    async def emu(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.emu_url + path, json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    async def buy(self, sku: str, quantity: int = 1) -> bool:
        status, _ = await self.emu(
            "POST", "/_emulator/orders", {"line_items": [{"sku": sku, "quantity": quantity}]}
        )
        return status == 201

    async def edit(self, sku: str, available: int) -> None:
        status, _ = await self.emu(
            "POST", "/_emulator/inventory", {"sku": sku, "available": available}
        )
        assert status == 200

    async def inventory(self) -> dict[str, int]:
        return (await self.emu("GET", "/_emulator/inventory"))[1]

    async def pools(self) -> dict[str, int | None]:
        return {p["sku"]: p["pool"] for p in (await self.get("/api/pools"))["pools"]}

    async def kill_agent(self) -> None:
        self.shop.agent.kill()
        assert self.shop.agent.proc is not None
        await self.shop.agent.proc.wait()

    async def stop_agent(self) -> None:
        await self.shop.agent.stop()

    async def start_agent(self) -> None:
        self.shop.agent = Process(
            self.shop.agent.name, self.shop.agent.args, self.shop.agent.log_path
        )
        await self.shop.agent.start()


class Cluster:
    """N shops on one platform; `join(a, b)` makes shop a join b's group with b's accept."""

    def __init__(
        self,
        workdir: Path,
        n: int,
        *,
        skus: int = 10,
        channel: str = "shopify",
        database_urls: Sequence[str] = (),
        prepare: Callable[[Shop], None] | None = None,
    ):
        self.workdir = workdir
        self.prepare = prepare  # called with each shop before it starts (emulator flags, config)
        self.specs = [(i, channel) for i in range(n)]
        self.skus = skus
        self.database_urls = database_urls  # shop i's PostgreSQL database, if given
        self.shops: list[ShopHandle] = []
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Cluster:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        shops = [Shop(i, ch, self.workdir, self.skus) for i, ch in self.specs]
        for shop, url in zip(shops, self.database_urls, strict=False):
            shop.database_url = url
        for shop in shops if self.prepare else ():
            self.prepare(shop)  # type: ignore[misc]
        try:
            await asyncio.gather(*(s.start() for s in shops))
        except BaseException:
            await asyncio.gather(*(s.stop() for s in shops), return_exceptions=True)
            await self.http.close()
            raise
        self.shops = [ShopHandle(s, self.http) for s in shops]
        await self.wait_idle(timeout=60 + self.skus / 100)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(s.shop.stop() for s in self.shops), return_exceptions=True)
        if self.http is not None:
            await self.http.close()

    async def join(self, joiner: ShopHandle, member: ShopHandle) -> None:
        await joiner.post("/api/join", {"target": member.agent_url})
        await member.post(f"/api/requests/{joiner.domain}/accept")
        await self.until(lambda: _import_done(joiner), what=f"{joiner.domain} import")

    async def until(self, check, *, timeout: float = 30.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await check():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    async def wait_idle(self, timeout: float = 60.0, quiet: float = 1.0) -> None:
        """Until every running agent reports idle for `quiet` seconds in a row."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        while time.monotonic() < deadline:
            states = []
            for shop in self.shops:
                if shop.shop.agent.proc is None or shop.shop.agent.proc.returncode is not None:
                    continue
                states.append(await shop.get("/api/status"))
            if all(s["idle"] and s["ready"] and s["last_reconcile"] for s in states):
                since = since or time.monotonic()
                if time.monotonic() - since >= quiet:
                    return
            else:
                since = None
            await asyncio.sleep(0.1)
        raise AssertionError("agents did not become idle")

    async def converged(self, timeout: float = 60.0) -> dict[str, int]:
        """Wait until every shop shows the same count per SKU as the group's pool; return it."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            counts = [await s.inventory() for s in self.shops]
            pools = [await s.pools() for s in self.shops]
            if all(p == pools[0] for p in pools) and all(
                c.get(sku) == max(0, v)
                for c in counts
                for sku, v in pools[0].items()
                if v is not None
            ):
                return {k: v for k, v in pools[0].items() if v is not None}
            last = (counts, pools)
            await asyncio.sleep(0.2)
        raise AssertionError(f"shops did not converge: {last}")


class SharedCluster:
    """One test module's group of shops, formed when a test first asks for it and handed on
    from test to test, so that the module forms it once instead of once per test.

    Every test is handed the group idle (`Cluster.wait_idle`), as a fresh one would be; a
    test that failed, left an agent stopped, or used the group up (`discard`) has it formed
    anew for the next test. A module's fixture lends it to each test (`lent`). The tests
    sharing a group keep apart by using SKUs of their own.
    """

    def __init__(self, form: Callable[[], Awaitable[Cluster]]) -> None:
        self._form = form
        self.cluster: Cluster | None = None

    async def __aenter__(self) -> SharedCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.discard()

    async def get(self) -> Cluster:
        if self.cluster is not None and not all(_running(s) for s in self.cluster.shops):
            await self.discard()
        if self.cluster is None:
            self.cluster = await self._form()
        await self.cluster.wait_idle()
        return self.cluster

    @contextlib.asynccontextmanager
    async def lent(self, test: pytest.Item) -> AsyncIterator[Cluster]:
        """The group, for the fixture of `test`: handed on after it if the test passed."""
        yield await self.get()
        report = test.stash.get(CALL_REPORT, None)
        if report is None or not report.passed:
            await self.discard()

    async def discard(self) -> None:
        """Stop the group's processes; the next `get` forms a new group."""
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            await cluster.__aexit__(None, None, None)


def shared_fixtures(name: str, form: Callable[[Path], Awaitable[Cluster]]) -> tuple[Any, Any]:
    """The two fixtures of a module's shared group, to assign to the module's names `group`
    and NAME: `group`, the module's `SharedCluster` (formed by `form(workdir)`); NAME, the
    group lent to one test. The tests that use them run on the module's event loop, where the
    group lives (`pytest.mark.asyncio(loop_scope="module")`)."""

    @pytest_asyncio.fixture(scope="module", loop_scope="module", name="group")
    async def group(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SharedCluster]:
        async with SharedCluster(lambda: form(tmp_path_factory.mktemp(name))) as shared:
            yield shared

    @pytest_asyncio.fixture(loop_scope="module", name=name)
    async def lend(group: SharedCluster, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
        async with group.lent(request.node) as cluster:
            yield cluster

    return group, lend


def _running(shop: ShopHandle) -> bool:
    proc = shop.shop.agent.proc
    return proc is not None and proc.returncode is None


async def _import_done(shop: ShopHandle) -> bool:
    status = await shop.get("/api/status")
    return status.get("import", {}).get("state") == "done"
