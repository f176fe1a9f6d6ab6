"""`shopsync demo`: real emulator and agent processes on loopback, trading, then a verdict."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.table import Table

from agent.channel import ConfigError
from agent.console import console

__all__ = ["Process", "free_port", "init_agent", "run_demo"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A `shopsync` child process whose stdout announces `ready URL`."""

    def __init__(
        self, name: str, args: list[str], log_path: Path, *, program: list[str] | None = None
    ) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.program = program or [sys.executable, "-m", "agent.cli"]  # what runs the args
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self, timeout: float = 30.0) -> str:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *self.program,
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self.proc.stdout.readline()
                    if not line:
                        raise RuntimeError(
                            f"{self.name} exited before it was ready; see {self.log_path}"
                        )
                    text = line.decode().strip()
                    if text.startswith("ready "):
                        self.url = text.split(" ", 1)[1]
                        return self.url
        except TimeoutError:
            raise RuntimeError(
                f"{self.name} not ready within {timeout} s; see {self.log_path}"
            ) from None

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


async def _run_cli(*args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"shopsync {args[0]} failed: {err.decode().strip()}")
    return json.loads(out.decode().strip().splitlines()[-1])


#: How demo agents authenticate at their emulators: the emulators' static token.
STATIC_CREDENTIALS = ("access_token=emulator-token", "webhook_secret=emulator-secret")


async def init_agent(
    data_dir: Path,
    domain: str,
    agent_port: int,
    channel: str,
    emu_url: str,
    credentials: tuple[str, ...] = STATIC_CREDENTIALS,
    database_url: str = "",
) -> str:
    """`shopsync init` for the agent of an emulated shop on loopback (its checks run against
    the emulator, which must be up); its admin token. `credentials` are NAME=VALUE options;
    `database_url` a PostgreSQL database instead of SQLite in the data directory."""
    options = [arg for option in credentials for arg in ("--channel-option", option)]
    if database_url:
        options += ["--database-url", database_url]
    init = await _run_cli(
        "init",
        "--data-dir",
        str(data_dir),
        "--domain",
        domain,
        "--listen",
        f"127.0.0.1:{agent_port}",
        "--public-url",
        f"http://127.0.0.1:{agent_port}",
        "--channel",
        channel,
        "--channel-option",
        f"api_url={emu_url}",
        *options,
        "--json",
    )
    return str(init["admin_token"])


class Shop:
    """One emulated shop and its agent."""

    def __init__(self, index: int, channel: str, workdir: Path, skus: int) -> None:
        self.index = index
        self.channel = channel
        self.domain = f"shop{index + 1}-{channel}.example.com"
        self.data_dir = workdir / self.domain
        self.emu_port, self.agent_port = free_port(), free_port()
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
                "--seed",
                str(index),
                "--available",
                str(100 - 20 * index),
            ],
            workdir / "logs" / f"{self.domain}.emulator.log",
        )
        self.agent = Process(
            f"agent {self.domain}",
            ["run", "--data-dir", str(self.data_dir)],
            workdir / "logs" / f"{self.domain}.agent.log",
        )
        self.token = ""
        self.config_extra = ""  # appended to its shopsync.toml before its agent first starts
        self.database_url = ""  # PostgreSQL instead of SQLite in the data directory

    @property
    def emu_url(self) -> str:
        return f"http://127.0.0.1:{self.emu_port}"

    @property
    def agent_url(self) -> str:
        return f"http://127.0.0.1:{self.agent_port}"

    async def start(self) -> None:
        await self.emulator.start()  # `shopsync init` checks the shop: it must be up first
        self.token = await init_agent(
            self.data_dir,
            self.domain,
            self.agent_port,
            self.channel,
            self.emu_url,
            database_url=self.database_url,
        )
        if self.config_extra:
            with (self.data_dir / "shopsync.toml").open("a") as config:
                config.write(self.config_extra)
        await self.agent.start()

    async def stop(self) -> None:
        await self.agent.stop()
        await self.emulator.stop()


async def _get(http: aiohttp.ClientSession, url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as resp:
        resp.raise_for_status()
        return await resp.json()


async def wait_idle(
    http: aiohttp.ClientSession, shops: list[Shop], timeout: float, quiet: float = 1.0
) -> bool:
    """Wait until every agent has reported idle for `quiet` seconds in a row."""
    deadline = time.monotonic() + timeout
    idle_since: float | None = None
    while time.monotonic() < deadline:
        states = [await _get(http, f"{s.agent_url}/api/status", s.token) for s in shops]
        if all(st["idle"] and st["ready"] and st["last_reconcile"] for st in states):
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= quiet:
                return True
        else:
            idle_since = None
        await asyncio.sleep(0.2)
    return False


async def _trade(
    http: aiohttp.ClientSession,
    shops: list[Shop],
    skus: list[str],
    seconds: float,
    rng: random.Random,
) -> int:
    changes = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        shop = rng.choice(shops)
        sku = rng.choice(skus)
        body: dict[str, Any]
        if rng.random() < 0.8:
            body = {"line_items": [{"sku": sku, "quantity": rng.randint(1, 3)}]}
            path = "/_emulator/orders"
        else:
            body = {"sku": sku, "available": rng.randint(20, 150)}
            path = "/_emulator/inventory"
        async with http.post(shop.emu_url + path, json=body) as resp:
            changes += resp.status < 300
        await asyncio.sleep(rng.uniform(0.02, 0.08))
    return changes


async def _burst(
    http: aiohttp.ClientSession, shops: list[Shop], skus: list[str], n: int, rng: random.Random
) -> int:
    async def buy(shop: Shop, sku: str) -> bool:
        body = {"line_items": [{"sku": sku, "quantity": 1}]}
        async with http.post(shop.emu_url + "/_emulator/orders", json=body) as resp:
            return resp.status < 300

    jobs = [buy(rng.choice(shops), rng.choice(skus)) for _ in range(n)]
    results = await asyncio.gather(*jobs)
    return sum(results)


async def run_demo(args: argparse.Namespace) -> int:
    """The scenario; prints a table and a last JSON line, exit 0 when converged."""
    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    if len(channels) == 1:
        channels *= 3  # a group of three shops on one platform
    if not 1 < len(channels) <= 5:
        raise ConfigError("--channels names one platform, or 2 to 5 comma-separated")
    if args.skus < 1 or args.duration < 0:
        raise ConfigError("--skus must be at least 1 and --duration not negative")
    quiet = args.json
    clock = _Phases()
    rng = random.Random(7)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    terminated: list[int] = []

    def terminate(signum: int = signal.SIGTERM) -> None:  # stop like Ctrl-C: children too
        terminated.append(signum)
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    with contextlib.ExitStack() as stack:
        stack.callback(loop.remove_signal_handler, signal.SIGTERM)
        workdir = (
            Path(args.workdir)
            if args.workdir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shopsync-demo-")))
        )
        shops = [Shop(i, c, workdir, args.skus) for i, c in enumerate(channels)]
        if not quiet:
            kept = "kept" if args.workdir else "removed at the end (--workdir DIR keeps them)"
            console.print(f"data and logs in {workdir} ({kept})")
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            try:
                for shop in shops:
                    await shop.start()
                    if not quiet:
                        console.print(
                            f"[bold]{shop.domain}[/] emulator {shop.emu_url}, "
                            f"agent {shop.agent_url}, data {shop.data_dir}"
                        )
                if not await wait_idle(http, shops, timeout=60):
                    raise RuntimeError("the agents did not finish their first reconciliation")
                await _form_group(http, shops, quiet)
                if not await wait_idle(http, shops, timeout=120):
                    raise RuntimeError("the joining shops did not finish their import")
                clock.mark("setup")
                skus = sorted(await _get(http, shops[0].emu_url + "/_emulator/inventory"))
                if not quiet:
                    console.print(f"trading for {args.duration:.0f} s: purchases and manual edits")
                changes = await _trade(http, shops, skus, args.duration, rng)
                burst_skus = skus[:50]
                if not quiet:
                    console.print(f"burst: 500 purchases on {len(burst_skus)} SKUs at once")
                changes += await _burst(http, shops, burst_skus, 500, rng)
                clock.mark("trading")
                settled = await wait_idle(http, shops, timeout=60)
                clock.mark("settling")
                summary = await _verdict(http, shops, skus, changes, clock, settled, quiet)
                if args.keep_running:
                    _print_endpoints(shops)
                    await asyncio.Event().wait()
                return 0 if summary["converged"] else 1
            except asyncio.CancelledError:
                if not terminated:
                    raise
                return 128 + terminated[0]
            finally:
                for shop in shops:
                    await shop.stop()


class _Phases:
    """Seconds spent in each part of the demo, and in all."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.seconds: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = round(now - self.last, 1)
        self.last = now

    def total(self) -> float:
        return round(time.monotonic() - self.started, 1)


async def _post(http: aiohttp.ClientSession, shop: Shop, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {shop.token}"}
    async with http.post(f"{shop.agent_url}{path}", json=body or {}, headers=headers) as resp:
        answer = await resp.json()
        if resp.status >= 300:
            raise RuntimeError(f"{shop.domain} {path}: {answer.get('message', resp.status)}")
        return answer


async def _form_group(http: aiohttp.ClientSession, shops: list[Shop], quiet: bool) -> None:
    """Shop 2 joins shop 1, shop 3 joins shop 2 (any member will do), and so on."""
    for joiner, master in zip(shops[1:], shops, strict=False):
        await _post(http, joiner, "/api/join", {"target": master.agent_url})
        await _post(http, master, f"/api/requests/{joiner.domain}/accept")
        if not quiet:
            console.print(f"{joiner.domain} joined through {master.domain}")
        for _ in range(600):  # the joiner imports the master's counts
            status = await _get(http, f"{joiner.agent_url}/api/status", joiner.token)
            if status.get("import", {}).get("state") == "done":
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"{joiner.domain} did not finish importing")


async def _verdict(
    http: aiohttp.ClientSession,
    shops: list[Shop],
    skus: list[str],
    changes: int,
    clock: _Phases,
    settled: bool,
    quiet: bool,
) -> dict[str, Any]:
    table = Table(title="counts per SKU (shop / pool)")
    table.add_column("sku")
    counts: dict[str, dict[str, int]] = {}
    pools: dict[str, dict[str, int | None]] = {}
    for shop in shops:
        table.add_column(shop.domain)
        counts[shop.domain] = await _get(http, shop.emu_url + "/_emulator/inventory")
        body = await _get(http, f"{shop.agent_url}/api/pools", shop.token)
        pools[shop.domain] = {p["sku"]: p["pool"] for p in body["pools"]}
    converged = settled
    for sku in skus:
        cells = []
        group = {pools[s.domain].get(sku) for s in shops}
        for shop in shops:
            have, pool = counts[shop.domain].get(sku), pools[shop.domain].get(sku)
            ok = len(group) == 1 and have == (max(0, pool) if pool is not None else None)
            converged &= ok
            cells.append(f"{have} / {pool}" if ok else f"[red]{have} / {pool}[/]")
        table.add_row(sku, *cells)
    summary = {
        "converged": converged,
        "shops": len(shops),
        "skus": len(skus),
        "changes": changes,
        "seconds": clock.total(),  # all of it, set-up included (as before)
        **{f"{phase}_seconds": s for phase, s in clock.seconds.items()},
    }
    if not quiet:
        console.print(table)
    print(json.dumps(summary), flush=True)
    return summary


def _print_endpoints(shops: list[Shop]) -> None:
    for shop in shops:
        console.print(
            f"{shop.domain}: admin {shop.agent_url}/ token {shop.token}; emulator {shop.emu_url}"
        )
    console.print(
        f"try the CLI on a shop: SHOPSYNC_DATA_DIR={shops[0].data_dir} shopsync status "
        "(or log, peers, rules show …)"
    )
    console.print("Ctrl-C (or SIGTERM) stops everything.")
