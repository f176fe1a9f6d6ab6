"""Shared helpers of the benchmarks: emulator + agent processes on loopback, and their figures.

Everything here drives real processes (`python -m agent.cli emulator|init|run`) over HTTP;
nothing of the system under test runs in the benchmark's own process.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console

from agent.config import load_settings, write_settings
from agent.demo import Process, free_port, init_agent

__all__ = [
    "PG_ADMIN",
    "Node",
    "ProcUsage",
    "converged",
    "emit_json",
    "err",
    "form_group",
    "get_json",
    "out",
    "percentile",
    "pg_databases",
    "pg_each",
    "pg_reachable",
    "post_json",
    "proc_usage",
    "wait_idle",
]

# tables: stdout, before the one JSON line; wide enough for the tables when piped to a file
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False)  # progress: stderr, so stdout stays tidy

#: The PostgreSQL server the benchmarks' PostgreSQL rows use (a database it may create in).
PG_ADMIN = os.environ.get("SHOPSYNC_BENCH_PG", "postgresql://127.0.0.1:5432/test")

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Children run in their own session (Ctrl-C does not reach them): kill any left at exit.
_STARTED: list[Node] = []
atexit.register(lambda: [node.kill() for node in _STARTED])


class ProcUsage:
    """CPU seconds (user + system) and peak resident set of a process, read from /proc."""

    def __init__(self, cpu_s: float, peak_rss_mb: float) -> None:
        self.cpu_s = cpu_s
        self.peak_rss_mb = peak_rss_mb


def proc_usage(pid: int | None) -> ProcUsage:
    """The usage of `pid` so far; zeros where /proc cannot tell (not Linux, process gone)."""
    if pid is None:
        return ProcUsage(0.0, 0.0)
    cpu, rss = 0.0, 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        # fields after the parenthesised command name; utime and stime are fields 14 and 15
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
    return ProcUsage(cpu, rss)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    cuts = statistics.quantiles(values, n=1000, method="inclusive")
    index = min(len(cuts) - 1, max(0, round(q * 10) - 1))
    return cuts[index] if q < 100 else float(max(values))


def emit_json(bench: str, figures: dict[str, Any]) -> None:
    """The last line of stdout: `{"bench": NAME, ...figures}`."""
    sys.stdout.flush()
    print(json.dumps({"bench": bench, **figures}), flush=True)


async def get_json(http: aiohttp.ClientSession, url: str, token: str | None = None) -> Any:
    """GET a JSON answer, raising on a non-2xx status."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as resp:
        resp.raise_for_status()
        return await resp.json()


async def post_json(
    http: aiohttp.ClientSession, url: str, body: Any = None, token: str | None = None
) -> Any:
    """POST JSON, raising with the answer's message on a non-2xx status."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(url, json=body or {}, headers=headers) as resp:
        answer = await resp.json()
        if resp.status >= 300:
            raise RuntimeError(f"POST {url}: {resp.status} {answer}")
        return answer


async def pg_reachable() -> bool:
    """Whether `PG_ADMIN` answers (a benchmark skips its PostgreSQL rows, and says so, if not)."""
    import asyncpg

    try:
        conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    except Exception:  # any failure to connect
        return False
    await conn.close()
    return True


def pg_url(name: str, *, driver: str = "") -> str:
    """The URL of database `name` on `PG_ADMIN`'s server (`driver` "asyncpg" for SQLAlchemy)."""
    base = PG_ADMIN.rsplit("/", 1)[0]
    if driver:
        base = base.replace("postgresql://", f"postgresql+{driver}://", 1)
    return f"{base}/{name}"


@contextlib.asynccontextmanager
async def pg_databases(names: Sequence[str]) -> Any:
    """Fresh PostgreSQL databases `names` for one run, dropped after it (with any session
    still open on them); yields their `postgresql://` URLs."""
    await pg_each(names, PG_DROP)
    await pg_each(names, PG_CREATE)
    try:
        yield [pg_url(name) for name in names]
    finally:
        await pg_each(names, PG_DROP)


PG_CREATE = "CREATE DATABASE {name}"
PG_DROP = "DROP DATABASE IF EXISTS {name} WITH (FORCE)"  # with any session still open on it


async def pg_each(names: Sequence[str], statement: str) -> None:
    """Run `statement` (`PG_CREATE`, `PG_DROP`) for each database of `names` on `PG_ADMIN`."""
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        for name in names:
            await conn.execute(statement.format(name=f'"{name}"'))
    finally:
        await conn.close()


class Node:
    """One emulated shop (an emulator process) and its agent (an agent process)."""

    def __init__(
        self,
        workdir: Path,
        index: int,
        *,
        channel: str = "shopify",
        skus: int = 100,
        available: int = 1000,
        plan: str = "standard",
        emulator_args: Iterable[str] = (),
        database_url: str = "",
        agent_settings: dict[str, Any] | None = None,
    ) -> None:
        self.index = index
        self.database_url = database_url  # "": SQLite in the data directory
        # `[agent]` settings of its shopsync.toml, set after `init` as an owner would edit them
        self.agent_settings = dict(agent_settings or {})
        self.channel = channel
        self.plan = plan
        self.domain = f"bench{index + 1}-{channel}.example.com"
        self.data_dir = workdir / self.domain
        self.emu_port, self.agent_port = free_port(), free_port()
        logs = workdir / "logs"
        self.emulator = Process(
            f"{channel} emulator",
            [
                "emulator",
                channel,
                "--port",
                str(self.emu_port),
                "--shop",
                self.domain,
                "--skus",
                str(skus),
                "--available",
                str(available),
                "--plan",
                plan,
                "--seed",
                str(index),
                *emulator_args,
            ],
            logs / f"{self.domain}.emulator.log",
        )
        self.agent = Process(
            f"agent {self.domain}",
            ["--log-level", "warning", "run", "--data-dir", str(self.data_dir)],
            logs / f"{self.domain}.agent.log",
        )
        self.token = ""

    @property
    def emu_url(self) -> str:
        """The emulator's base URL."""
        return f"http://127.0.0.1:{self.emu_port}"

    @property
    def agent_url(self) -> str:
        """The agent's base URL."""
        return f"http://127.0.0.1:{self.agent_port}"

    @property
    def agent_pid(self) -> int | None:
        """The agent process id (the python process itself: it is exec'd directly)."""
        return self.agent.proc.pid if self.agent.proc is not None else None

    @property
    def emulator_pid(self) -> int | None:
        """The emulator process id."""
        return self.emulator.proc.pid if self.emulator.proc is not None else None

    async def start(self, timeout: float = 60.0) -> None:
        """Start the emulator, create the agent's data directory, start the agent."""
        _STARTED.append(self)
        await self.emulator.start(timeout)
        self.token = await init_agent(
            self.data_dir,
            self.domain,
            self.agent_port,
            self.channel,
            self.emu_url,
            database_url=self.database_url,
        )
        if self.agent_settings:
            settings = load_settings(self.data_dir)
            for name, value in self.agent_settings.items():
                setattr(settings, name, value)
            write_settings(settings)
        await self.agent.start(timeout)

    async def stop(self) -> None:
        """Stop the agent, then the emulator."""
        await self.agent.stop()
        await self.emulator.stop()

    def kill(self) -> None:
        """Kill both processes at once (a benchmark interrupted)."""
        self.agent.kill()
        self.emulator.kill()

    # -- what the benchmarks read --------------------------------------------------------------

    async def status(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """The agent's `GET /api/status`."""
        return await get_json(http, f"{self.agent_url}/api/status", self.token)

    async def import_progress(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """The agent's `GET /api/import` without its pre-flight report: what the import's
        polls need, without the counts over whole tables that `/api/status` makes (about 40 ms
        at 100,000 SKUs) or the report's lists of SKUs to encode at every poll."""
        url = f"{self.agent_url}/api/import?report=0"
        progress: dict[str, Any] = await get_json(http, url, self.token)
        return progress

    async def pools(self, http: aiohttp.ClientSession) -> dict[str, int | None]:
        """The agent's pool per SKU."""
        body = await get_json(http, f"{self.agent_url}/api/pools", self.token)
        return {p["sku"]: p["pool"] for p in body["pools"]}

    async def inventory(self, http: aiohttp.ClientSession) -> dict[str, int]:
        """The shop's count per SKU, as the emulator holds it."""
        return await get_json(http, f"{self.emu_url}/_emulator/inventory")

    async def emu_stats(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """The emulator's request, throttle and webhook counters."""
        return await get_json(http, f"{self.emu_url}/_emulator/stats")

    async def writes(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        """The emulator's log of platform API writes."""
        return await get_json(http, f"{self.emu_url}/_emulator/writes")

    async def log_entries(
        self, http: aiohttp.ClientSession, kind: str, after_id: int = 0
    ) -> list[dict[str, Any]]:
        """Every sync-log entry of `kind` with an id above `after_id`, oldest first."""
        entries: list[dict[str, Any]] = []
        while True:
            page = await get_json(
                http,
                f"{self.agent_url}/api/log?kind={kind}&after_id={after_id}&limit=1000",
                self.token,
            )
            rows = page["entries"]
            entries.extend(rows)
            if len(rows) < 1000:
                return entries
            after_id = rows[-1]["id"]

    async def buy(self, http: aiohttp.ClientSession, sku: str, quantity: int = 1) -> bool:
        """One storefront purchase; True if the shop took it."""
        body = {"line_items": [{"sku": sku, "quantity": quantity}]}
        async with http.post(f"{self.emu_url}/_emulator/orders", json=body) as resp:
            await resp.read()
            return resp.status < 300


async def wait_idle(
    http: aiohttp.ClientSession,
    nodes: Sequence[Node],
    timeout: float,
    quiet: float = 0.5,
    interval: float = 0.1,
) -> float | None:
    """Wait until every agent has been ready, reconciled and idle for `quiet` seconds.

    Returns the monotonic time the quiet spell began, or None on timeout. Only the cheap
    `/api/status` is polled: heavier endpoints would slow the agents being measured.
    """
    deadline = time.monotonic() + timeout
    idle_since: float | None = None
    while time.monotonic() < deadline:
        states = await asyncio.gather(*(n.status(http) for n in nodes))
        if all(s["idle"] and s["ready"] and s["last_reconcile"] for s in states):
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= quiet:
                return idle_since
        else:
            idle_since = None
        await asyncio.sleep(interval)
    return None


async def converged(http: aiohttp.ClientSession, nodes: Sequence[Node]) -> bool:
    """Every agent holds the same pools, and every shop shows max(0, pool) for every SKU."""
    pools = await asyncio.gather(*(n.pools(http) for n in nodes))
    counts = await asyncio.gather(*(n.inventory(http) for n in nodes))
    if any(p != pools[0] for p in pools[1:]):
        return False
    for shop in counts:
        for sku, pool in pools[0].items():
            if pool is not None and shop.get(sku) != max(0, pool):
                return False
    return True


async def form_group(
    http: aiohttp.ClientSession, nodes: Sequence[Node], timeout: float = 900.0
) -> list[dict[str, float]]:
    """Node 2 joins node 1, node 3 joins node 2, …; returns each joiner's import timings.

    `snapshot_s` runs from the accept until the master's snapshot is the joiner's base (its
    import leaves the phase `snapshot`: downloaded, the pre-flight's listing of the joiner's
    shop, installed); `cutover_s` from there until the joiner is idle and its shop shows the
    group's count for every SKU (the cut-over writes at the platform's rate).
    """
    timings = []
    for joiner, master in zip(nodes[1:], nodes, strict=False):
        await post_json(
            http, f"{joiner.agent_url}/api/join", {"target": master.agent_url}, joiner.token
        )
        started = time.monotonic()
        await post_json(
            http, f"{master.agent_url}/api/requests/{joiner.domain}/accept", token=master.token
        )
        deadline = started + timeout
        while True:
            progress = await joiner.import_progress(http)
            state = progress.get("state")
            if state == "done" or (state == "running" and progress.get("phase") != "snapshot"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{joiner.domain} did not finish importing (state {state})")
            await asyncio.sleep(0.05)
        installed = time.monotonic()
        while True:
            # poll the cheap status until idle; the pools (heavy on a big catalogue) only then
            idle_since = await wait_idle(http, [joiner], max(1.0, deadline - time.monotonic()))
            if idle_since is not None and await converged(http, [master, joiner]):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{joiner.domain} did not write the group's counts in time")
            await asyncio.sleep(1.0)
        timings.append({"snapshot_s": installed - started, "cutover_s": idle_since - installed})
    return timings
