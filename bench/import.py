"""Import benchmark: how long a joining shop takes to take over the master's counts.

Two emulated Shopify shops with N SKUs each (the master holds 100 of each, the joiner 80, so
every SKU must be written) and two agent processes on loopback. The clock runs from the
master's accept until the joining shop shows the master's count for every SKU. Next to it, the
minimum the rate limit allows: the time the cost bucket needs to pay for ceil(N / 250)
`inventorySetQuantities` calls at 10 points each, at the restore rate (the catalogue read is
taken as free: the plugin lists it with a bulk operation, which costs no points). The ratio of
the two says how close the import runs to the platform's limit. Figures: import time,
minimum, ratio, snapshot time, the joining agent's CPU seconds and peak RSS, throttled answers.

    .venv/bin/python bench/import.py [--quick] [--skus N] [--restore-rate 100|200|1000|2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the root

from bench._harness import Node, converged, emit_json, out, post_json, proc_usage, wait_idle

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
    p.add_argument("--workdir", help="keep the agents' data here")
    args = p.parse_args()
    args.skus = args.skus or (5000 if args.quick else 100_000)
    return args


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    plan = PLANS[args.restore_rate]
    master = Node(workdir, 0, skus=args.skus, available=100, plan=plan)
    joiner = Node(workdir, 1, skus=args.skus, available=80, plan=plan)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            await asyncio.gather(master.start(), joiner.start())
            setup = time.monotonic()
            await wait_idle(http, [master, joiner], 300 + args.skus * 0.02)
            setup_s = time.monotonic() - setup
            stats0 = await joiner.emu_stats(http)
            cpu0 = proc_usage(joiner.agent_pid).cpu_s  # its set-up's (first pass) CPU apart
            await post_json(
                http, f"{joiner.agent_url}/api/join", {"target": master.agent_url}, joiner.token
            )
            started = time.monotonic()
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
            for _ in range(3000):  # the last writes' echoes settle within a few seconds
                if await converged(http, [master, joiner]):
                    break
                await asyncio.sleep(0.2)
            import_s = time.monotonic() - started
            stats1 = await joiner.emu_stats(http)
            usage = proc_usage(joiner.agent_pid)
        finally:
            await asyncio.gather(master.stop(), joiner.stop(), return_exceptions=True)
    calls = math.ceil(args.skus / BATCH)
    minimum = calls * MUTATION_COST / args.restore_rate
    return {
        "skus": args.skus,
        "plan": plan,
        "restore_rate": args.restore_rate,
        "import_s": round(import_s, 2),
        "snapshot_s": None if snapshot_s is None else round(snapshot_s, 2),
        "minimum_s": round(minimum, 2),
        "ratio": round(import_s / minimum, 2),
        "write_calls_min": calls,
        "throttled": stats1["throttled"] - stats0["throttled"],
        "api_requests": stats1["requests"] - stats0["requests"],
        "agent_cpu_s": round(usage.cpu_s, 2),
        "agent_import_cpu_s": round(usage.cpu_s - cpu0, 2),
        "agent_peak_rss_mb": round(usage.peak_rss_mb, 1),
        "setup_s": round(setup_s, 1),
    }


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
        f"({figures['restore_rate']} points/s)"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("accept → every SKU shows the master's count", f"{figures['import_s']} s"),
        ("  of which snapshot fetched and installed", f"{figures['snapshot_s']} s"),
        (
            f"minimum at the rate limit ({figures['write_calls_min']} writes x 10 points)",
            f"{figures['minimum_s']} s",
        ),
        ("ratio (measured / minimum)", f"{figures['ratio']}"),
        (
            "platform API requests / throttled answers",
            f"{figures['api_requests']} / {figures['throttled']}",
        ),
        (
            "joining agent CPU (in all / during the import) / peak RSS",
            f"{figures['agent_cpu_s']} s / {figures['agent_import_cpu_s']} s / "
            f"{figures['agent_peak_rss_mb']} MB",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)
    emit_json("import", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
