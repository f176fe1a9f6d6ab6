"""Ingest benchmark: how fast one solo agent turns a burst of shop sales into events.

One emulator process and one agent process on loopback, no group. A burst of N storefront
purchases over K SKUs is fired as fast as the emulator's control API takes them; the clock
runs from the first purchase until the agent's pool equals the shop's count for every SKU and
the agent reports idle. Figures: changes/s, events recorded, platform API requests per change,
throttled answers, the agent's CPU seconds and peak RSS. The platform's real rate limits stay
on (the plan is printed). `--channel shopline|pisell` runs Shopify too, side by side.

    .venv/bin/python bench/ingest.py [--quick] [--channel shopify|shopline|pisell]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the root

from bench._harness import Node, converged, emit_json, err, out, proc_usage, wait_idle

CHANNELS = ("shopify", "shopline", "pisell")
# The emulators' rate limits (the platforms' own), to print next to the figures.
LIMITS = {
    ("shopify", "standard"): "2000 points, 100/s; 3 per id read, 10 per write call",
    ("shopify", "advanced"): "4000 points, 200/s",
    ("shopify", "plus"): "20000 points, 1000/s",
    ("shopline", "standard"): "40 requests, 4/s",
    ("pisell", "standard"): "20 requests, 5/s",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; `--quick` shrinks the burst so the run stays under a minute."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small burst (whole run < 1 min)")
    p.add_argument("--channel", default="shopify", choices=CHANNELS)
    p.add_argument("--purchases", type=int, help="burst size (default 2000, --quick 500)")
    p.add_argument("--skus", type=int, help="SKUs the burst spreads over (default 200, quick 100)")
    p.add_argument("--plan", default="standard", help="the emulated plan (default standard)")
    p.add_argument("--concurrency", type=int, default=32, help="purchases in flight at once")
    p.add_argument("--timeout", type=float, help="seconds to wait for the agent to catch up")
    p.add_argument("--workdir", help="keep data and logs here (default: a temp dir)")
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)
    args.purchases = args.purchases or (500 if args.quick else 2000)
    args.skus = args.skus or (100 if args.quick else 200)
    args.timeout = args.timeout or (40.0 if args.quick else 300.0)
    if args.purchases < 1 or args.skus < 1 or args.concurrency < 1:
        p.error("--purchases, --skus and --concurrency must be at least 1")
    return args


async def _burst(
    http: aiohttp.ClientSession, node: Node, skus: list[str], n: int, workers: int, seed: int
) -> int:
    """Fire `n` one-unit purchases at random SKUs, `workers` at a time; returns those taken."""
    rng = random.Random(seed)
    queue = [rng.choice(skus) for _ in range(n)]
    taken = 0

    async def worker() -> None:
        nonlocal taken
        while queue:
            accepted = await node.buy(http, queue.pop())  # add after the await: no lost update
            taken += accepted

    await asyncio.gather(*(worker() for _ in range(min(workers, n))))
    return taken


async def _wait_caught_up(http: aiohttp.ClientSession, node: Node, timeout: float) -> bool:
    """Poll until the pools equal the shop's counts and the agent is idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await node.status(http)
        if status["idle"] and await converged(http, [node]):
            return True
        await asyncio.sleep(0.05)
    return False


async def run_channel(channel: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One emulator + one agent on `channel`: the burst and its figures."""
    node = Node(
        workdir / channel,
        0,
        channel=channel,
        skus=args.skus,
        available=args.purchases + 100,  # never short: every purchase must be taken
        plan=args.plan,
    )
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            err.print(f"[bold]{channel}[/]: starting emulator and agent")
            await node.start()
            if not await wait_idle(http, [node], timeout=120):
                raise RuntimeError(f"{channel}: the agent did not finish its first reconciliation")
            skus = sorted(await node.inventory(http))
            status0, stats0 = await node.status(http), await node.emu_stats(http)
            cpu0 = proc_usage(node.agent_pid).cpu_s
            emu_cpu0 = proc_usage(node.emulator_pid).cpu_s
            err.print(f"{channel}: burst of {args.purchases} purchases over {len(skus)} SKUs")
            started = time.monotonic()
            taken = await _burst(http, node, skus, args.purchases, args.concurrency, args.seed)
            fired = time.monotonic() - started
            ok = await _wait_caught_up(http, node, args.timeout)
            elapsed = time.monotonic() - started
            status1, stats1 = await node.status(http), await node.emu_stats(http)
            usage = proc_usage(node.agent_pid)
            emu_cpu = proc_usage(node.emulator_pid).cpu_s - emu_cpu0
        finally:
            await node.stop()
    requests = stats1["requests"] - stats0["requests"]
    reads = status1["stats"]["reads"] - status0["stats"]["reads"]
    read_ids = status1["stats"]["read_ids"] - status0["stats"]["read_ids"]
    writes = status1["stats"]["writes"] - status0["stats"]["writes"]
    return {
        "ok": ok and taken == args.purchases,
        "plan": args.plan,
        "limit": LIMITS.get((channel, args.plan), ""),
        "purchases": taken,
        "skus": len(skus),
        "fire_s": round(fired, 3),
        "fire_per_s": round(taken / fired, 1) if fired else None,
        "seconds": round(elapsed, 3),
        "changes_per_s": round(taken / elapsed, 1) if ok else None,
        "events": status1["events"] - status0["events"],
        "reads": reads,
        "read_ids": read_ids,
        "ids_per_read": round(read_ids / reads, 1) if reads else None,
        "writes": writes,
        "api_requests": requests,
        "requests_per_change": round(requests / taken, 4) if taken else None,
        "throttled": stats1["throttled"] - stats0["throttled"],
        "bucket_refused": stats1["bucket_refused"] - stats0["bucket_refused"],
        "webhooks": stats1["webhooks"]["delivered"] - stats0["webhooks"]["delivered"],
        "cpu_s": round(usage.cpu_s - cpu0, 2),
        "peak_rss_mb": round(usage.peak_rss_mb, 1),
        "emulator_cpu_s": round(emu_cpu, 2),
    }


_ROWS = [
    ("ok", "converged", "{}"),
    ("plan", "plan", "{}"),
    ("limit", "rate limit (kept on)", "{}"),
    ("purchases", "purchases taken", "{}"),
    ("skus", "SKUs", "{}"),
    ("fire_per_s", "purchases fired per s", "{}"),
    ("seconds", "first purchase → caught up (s)", "{:.2f}"),
    ("changes_per_s", "changes ingested per s", "{}"),
    ("events", "events recorded", "{}"),
    ("reads", "read calls (ids per call)", "{}"),
    ("read_ids", "ids read", "{}"),
    ("writes", "write calls", "{}"),
    ("api_requests", "platform API requests", "{}"),
    ("requests_per_change", "API requests per change", "{:.3f}"),
    ("throttled", "throttled answers", "{}"),
    ("bucket_refused", "bucket refusals", "{}"),
    ("webhooks", "webhooks delivered", "{}"),
    ("cpu_s", "agent CPU s", "{:.2f}"),
    ("peak_rss_mb", "agent peak RSS MB", "{:.1f}"),
    ("emulator_cpu_s", "emulator CPU s", "{:.2f}"),
]


def print_table(results: dict[str, dict[str, Any]]) -> None:
    """One column per channel, one row per figure."""
    table = Table(title="ingest: one agent, a burst of storefront purchases")
    table.add_column("figure")
    for channel in results:
        table.add_column(channel, justify="right")
    for key, label, fmt in _ROWS:
        cells = []
        for figures in results.values():
            value = figures.get(key)
            if key == "reads" and figures.get("ids_per_read") is not None:
                cells.append(f"{value} ({figures['ids_per_read']})")
            else:
                cells.append("-" if value is None else fmt.format(value))
        table.add_row(label, *cells)
    out.print(table)
    out.print(
        "Caught up = every pool equals the shop's count and the agent reports idle "
        "(polled every 50 ms). Events < purchases: sales of one SKU that land in one "
        "coalesced read become one event."
    )


async def main(argv: list[str] | None = None) -> int:
    """Run the requested channel (and Shopify next to it); table, then the JSON line."""
    args = parse_args(argv)
    channels = ["shopify"] if args.channel == "shopify" else ["shopify", args.channel]
    results: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        workdir = (
            Path(args.workdir)
            if args.workdir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ingest-")))
        )
        for channel in channels:
            try:
                results[channel] = await run_channel(channel, args, workdir)
            except Exception as exc:  # the system under test broke: say so, still emit JSON
                err.print(f"[red]{channel}: {exc}[/]")
                results[channel] = {"ok": False, "error": str(exc)}
    print_table(results)
    main_figures = results[args.channel]
    figures: dict[str, Any] = {"channel": args.channel, "quick": args.quick, **main_figures}
    figures["ok"] = all(r.get("ok") for r in results.values())
    if len(results) > 1:
        figures["channels"] = results
    emit_json("ingest", figures)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
