"""Import benchmark: how long a joining shop takes to take over the master's counts.

Two emulated Shopify shops with N SKUs each (the master holds 100 of each, the joiner 80, so
every SKU must be written) and two agent processes on loopback. The clock runs from the
master's accept until the joining shop shows the master's count for every SKU: the time of the
last write that changed a count, from the shop's own write log, once a check of every pool and
every count has agreed (the time the agent says the import is done, and the time that check
passed, are printed next to it: the check of 2 x N pools and counts takes seconds at 100,000
SKUs, while the joiner's first full pass loads its shop). Next to it, the
minimum the rate limit allows: the time the cost bucket needs to pay for ceil(N / 250)
`inventorySetQuantities` calls at 10 points each, at the restore rate (the catalogue read is
taken as free: the plugin lists it with a bulk operation, which costs no points). The ratio of
the two says how close the import runs to the platform's limit. That minimum counts every
call against the restore rate, as the issue that set the goal did; a full bucket (2,000
points on Standard) pays for the first 200 calls at once, so small imports come in below 1,
and the floor with the bucket spent first is printed too. Figures: import time,
minimum, ratio, snapshot time, the joining agent's CPU seconds and peak RSS, throttled answers.

    .venv/bin/python bench/import.py [--quick] [--skus N] [--restore-rate 100|200|1000|2000]
                                     [--engine sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the root

from bench._harness import (
    PG_ADMIN,
    Node,
    converged,
    emit_json,
    out,
    pg_databases,
    pg_reachable,
    post_json,
    proc_usage,
    wait_idle,
)

PLANS = {100: "standard", 200: "advanced", 1000: "plus", 2000: "enterprise"}
BATCH, MUTATION_COST = 250, 10


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5,000 SKUs instead of 100,000")
    p.add_argument("--skus", type=int, help="catalogue size (default 100000; quick 5000)")
    p.add_argument(
        "--restore-rate",
        type=int,
        default=100,
        choices=sorted(PLANS),
        help="the cost bucket's restore rate in points/s (Shopify's plans; default Standard)",
    )
    p.add_argument(
        "--engine",
        default="sqlite",
        choices=("sqlite", "postgresql"),
        help="the agents' database: SQLite files (default) or two fresh databases on the "
        "PostgreSQL server at $SHOPSYNC_BENCH_PG (default the local one)",
    )
    p.add_argument("--workdir", help="keep the agents' data here")
    args = p.parse_args()
    args.skus = args.skus or (5000 if args.quick else 100_000)
    return args


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if args.engine == "sqlite":
        return await _run(args, workdir, "", "")
    if not await pg_reachable():
        raise SystemExit(f"bench/import.py: PostgreSQL at {PG_ADMIN} cannot be reached")
    names = [f"shopsync_bench_import_{os.getpid()}_{role}" for role in ("master", "joiner")]
    async with pg_databases(names) as (master_url, joiner_url):
        return await _run(args, workdir, master_url, joiner_url)


async def _run(
    args: argparse.Namespace, workdir: Path, master_url: str, joiner_url: str
) -> dict[str, Any]:
    plan = PLANS[args.restore_rate]
    master = Node(workdir, 0, skus=args.skus, available=100, plan=plan, database_url=master_url)
    joiner = Node(workdir, 1, skus=args.skus, available=80, plan=plan, database_url=joiner_url)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            await asyncio.gather(master.start(), joiner.start())
            setup = time.monotonic()
            await wait_idle(http, [master, joiner], 300 + args.skus * 0.02)
            setup_s = time.monotonic() - setup
            stats0 = await joiner.emu_stats(http)
            cpu0 = proc_usage(joiner.agent_pid).cpu_s  # its set-up's (first pass) CPU apart
            emu0 = proc_usage(joiner.emulator_pid).cpu_s
            await post_json(
                http, f"{joiner.agent_url}/api/join", {"target": master.agent_url}, joiner.token
            )
            started, started_at = time.monotonic(), time.time()
            await post_json(
                http,
                f"{master.agent_url}/api/requests/{joiner.domain}/accept",
                token=master.token,
            )
            snapshot_s = None
            while True:
                state = await joiner.import_progress(http)
                if snapshot_s is None and state.get("phase") == "writing":
                    snapshot_s = time.monotonic() - started
                if state.get("state") == "done":
                    break
                await asyncio.sleep(0.05)
            done_s = time.monotonic() - started
            usage = proc_usage(joiner.agent_pid)  # before the checks below load it
            emu_cpu = proc_usage(joiner.emulator_pid).cpu_s - emu0
            stats1 = await joiner.emu_stats(http)
            for _ in range(3000):  # the last writes' echoes settle within a few seconds
                if await converged(http, [master, joiner]):
                    break
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError("the joining shop never showed the master's counts")
            verified_s = time.monotonic() - started
            shown_s = await shown_after(http, joiner, started_at)
        finally:
            await asyncio.gather(master.stop(), joiner.stop(), return_exceptions=True)
    calls = math.ceil(args.skus / BATCH)
    minimum = calls * MUTATION_COST / args.restore_rate
    # what the bucket held at the accept pays for the first calls at once (Shopify's bucket
    # is 20 x the restore rate): the floor no client can beat
    bucket = float(stats0.get("bucket_available") or 0.0)
    floor = max(0.0, calls * MUTATION_COST - bucket) / args.restore_rate
    # the shop's own record says when it showed the last SKU's count; where it cannot tell,
    # the moment the check above saw every SKU right
    import_s = verified_s if shown_s is None else shown_s
    return {
        "skus": args.skus,
        "engine": args.engine,
        "plan": plan,
        "restore_rate": args.restore_rate,
        "import_s": round(import_s, 2),
        "done_s": round(done_s, 2),
        "verified_s": round(verified_s, 2),
        "snapshot_s": None if snapshot_s is None else round(snapshot_s, 2),
        "minimum_s": round(minimum, 2),
        "ratio": round(import_s / minimum, 2),
        "bucket_at_start": round(bucket),
        "minimum_full_bucket_s": round(floor, 2),
        "write_calls_min": calls,
        "throttled": stats1["throttled"] - stats0["throttled"],
        "api_requests": stats1["requests"] - stats0["requests"],
        "agent_cpu_s": round(usage.cpu_s, 2),
        "agent_import_cpu_s": round(usage.cpu_s - cpu0, 2),
        "agent_peak_rss_mb": round(usage.peak_rss_mb, 1),
        "emulator_import_cpu_s": round(emu_cpu, 2),
        "setup_s": round(setup_s, 1),
    }


async def shown_after(http: aiohttp.ClientSession, node: Node, since: float) -> float | None:
    """Seconds from `since` (Unix time) until the shop showed its present count for every SKU
    it changed: per SKU, the emulator's time of the last API write that changed it (the shop's
    own record, not when a poll happened to look). None if a SKU's count was changed otherwise
    (not by a write, or not to what it shows now), where the write log cannot tell."""
    shown = await node.inventory(http)
    last: dict[str, dict[str, Any]] = {}
    for write in await node.writes(http):
        if write["at"] >= since and write["applied"] and write["before"] != write["after"]:
            last[write["sku"]] = write
    if any(shown.get(sku) != write["after"] for sku, write in last.items()):
        return None
    return max((w["at"] for w in last.values()), default=since) - since


def main() -> int:
    args = parse()
    with contextlib.ExitStack() as stack:
        workdir = (
            Path(args.workdir)
            if args.workdir
            else Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="shopsync-bench-import-"))
            )
        )
        figures = asyncio.run(run(args, workdir))
    table = Table(
        title=f"import of {figures['skus']:,} SKUs, Shopify {figures['plan']} plan "
        f"({figures['restore_rate']} points/s), {figures['engine']}"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("accept → every SKU shows the master's count (shop's log)", f"{figures['import_s']} s"),
        (
            "  the agent says done / a check of every count agrees",
            f"{figures['done_s']} s / {figures['verified_s']} s",
        ),
        ("  of which snapshot fetched and installed", f"{figures['snapshot_s']} s"),
        (
            f"minimum at the rate limit ({figures['write_calls_min']} writes x 10 points)",
            f"{figures['minimum_s']} s",
        ),
        ("ratio (measured / minimum)", f"{figures['ratio']}"),
        (
            f"  minimum if the bucket's {figures['bucket_at_start']} points are spent first",
            f"{figures['minimum_full_bucket_s']} s",
        ),
        (
            "platform API requests / throttled answers",
            f"{figures['api_requests']} / {figures['throttled']}",
        ),
        (
            "joining agent CPU (in all / during the import) / peak RSS",
            f"{figures['agent_cpu_s']} s / {figures['agent_import_cpu_s']} s / "
            f"{figures['agent_peak_rss_mb']} MB",
        ),
        ("joining shop's emulator CPU during the import", f"{figures['emulator_import_cpu_s']} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)
    emit_json("import", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
