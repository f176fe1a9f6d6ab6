"""Catalogue-storm benchmark: what a merchant's bulk edit of products costs the agent.

One emulator process and one agent process on loopback, no group. After the first pass, the
merchant bulk-edits E products of a catalogue of N (`POST /_emulator/products/update`): the
platform sends one `products/update` webhook per product, as Shopify and SHOPLINE do. The
figures are the platform API requests the agent spent from the edit until it is idle again,
the full catalogue passes and item lookups it ran, and the time that took. The platforms'
rate limits stay on. `--channel` picks one platform; by default Shopify and SHOPLINE run.

    .venv/bin/python bench/catalogue.py [--quick] [--channel shopify|shopline]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the root

from bench._harness import Node, emit_json, err, out, post_json, wait_idle

CHANNELS = ("shopify", "shopline")


async def _storm(workdir: Path, channel: str, products: int, edited: int) -> dict[str, Any]:
    node = Node(workdir, 0, channel=channel, skus=products, available=100)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            err.print(f"[dim]{channel}: starting a shop of {products} products…[/]")
            await node.start(timeout=120)
            if await wait_idle(http, [node], timeout=300) is None:
                raise RuntimeError(f"{channel}: the agent never became idle after start")
            before, status = await node.emu_stats(http), await node.status(http)
            skus = sorted(await node.inventory(http))[:edited]
            err.print(f"[dim]{channel}: bulk-editing {len(skus)} products…[/]")
            started = time.monotonic()
            await post_json(
                http,
                f"{node.emu_url}/_emulator/products/update",
                {"skus": skus, "title": "Summer sale"},
            )
            # every webhook delivered (or given up), then the agent idle again
            deadline = started + 600
            while time.monotonic() < deadline:
                hooks = (await node.emu_stats(http))["webhooks"]
                done = hooks["delivered"] + hooks["failed"] + hooks["dropped"]
                if done >= before["webhooks"]["delivered"] + len(skus):
                    break
                await asyncio.sleep(0.1)
            quiet = await wait_idle(http, [node], timeout=600)
            seconds = (quiet or time.monotonic()) - started
            after, status_after = await node.emu_stats(http), await node.status(http)
        finally:
            await node.stop()
    stats0, stats1 = status["stats"], status_after["stats"]
    return {
        "channel": channel,
        "products": products,
        "edited": edited,
        "requests": after["requests"] - before["requests"],
        "throttled": after["throttled"] - before["throttled"],
        "passes": stats1.get("passes", 0) - stats0.get("passes", 0),
        "lookups": stats1.get("lookups", 0) - stats0.get("lookups", 0),
        "reads": stats1.get("reads", 0) - stats0.get("reads", 0),
        "seconds": round(seconds, 2),
        "idle": quiet is not None,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a catalogue of 500, 250 edited")
    parser.add_argument("--channel", choices=CHANNELS, help="only this platform")
    parser.add_argument("--products", type=int, help="products in the shop")
    parser.add_argument("--edited", type=int, help="products the bulk edit changes")
    args = parser.parse_args()
    products = args.products or (500 if args.quick else 2000)
    edited = min(products, args.edited or (250 if args.quick else 1000))
    channels = [args.channel] if args.channel else list(CHANNELS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="shopsync-bench-") as tmp:
        for channel in channels:
            rows.append(await _storm(Path(tmp) / channel, channel, products, edited))
    table = Table(title=f"A bulk edit of {edited} products in a catalogue of {products}")
    for name in ("platform", "API requests", "429s", "full passes", "lookups", "reads", "s"):
        table.add_column(name, justify="left" if name == "platform" else "right")
    for row in rows:
        table.add_row(
            row["channel"],
            str(row["requests"]),
            str(row["throttled"]),
            str(row["passes"]),
            str(row["lookups"]),
            str(row["reads"]),
            f"{row['seconds']:.1f}" + ("" if row["idle"] else " (not idle)"),
        )
    out.print(table)
    emit_json("catalogue", {"products": products, "edited": edited, "runs": rows})


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
