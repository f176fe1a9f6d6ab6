"""The floor of `bench/latency.py`: a naive relay between emulated Shopify shops.

On each shop's webhook it reads the item named in it and writes that count, as is, to the same
SKU in every other shop. No ledger, no deltas, no durability, no batching, no peers: one
process that holds every shop's token. It is what the platform hops alone cost on this
machine (webhook, read, write), through the same Shopify plugin the agents use, and it is
*not* correct (two sales of one SKU in two shops at once lose one; a crash loses what was in
flight). shopsync's latency is compared with it.

    python bench/relay.py --port P --shop API_URL [--shop API_URL …]

Prints ``ready URL`` once every shop is listed and subscribed (as the agents do).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the root

from agent.channel import ChannelError, WebhookRejected, Write
from agent.cli import run_loop
from agent.clock import SystemClock
from plugins.shopify.channel import ShopifyChannel, ShopifySettings

TOKEN, SECRET = "emulator-token", "emulator-secret"  # what `agent.demo.init_agent` configures


class Relay:
    """Every shop's channel, its SKU ↔ item maps, and the count last seen or written."""

    def __init__(self, channels: list[ShopifyChannel]) -> None:
        self.channels = channels
        self.sku_of: list[dict[str, str]] = [{} for _ in channels]
        self.item_of: list[dict[str, str]] = [{} for _ in channels]
        self.known: list[dict[str, int]] = [{} for _ in channels]  # shop -> sku -> count
        self.tasks: set[asyncio.Task[None]] = set()

    async def load(self) -> None:
        for i, channel in enumerate(self.channels):
            await channel.start()
            async for item in channel.list_items():
                if item.sku:
                    self.sku_of[i][item.item_id] = item.sku
                    self.item_of[i][item.sku] = item.item_id
                    self.known[i][item.sku] = item.available

    async def hook(self, request: web.Request) -> web.Response:
        shop = int(request.match_info["shop"])
        body = await request.read()
        try:
            hint = self.channels[shop].verify_webhook(request.headers, body)
        except WebhookRejected:
            return web.json_response({"error": "bad_signature"}, status=401)
        if hint.item_ids:
            task = asyncio.create_task(self.relay(shop, list(hint.item_ids)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return web.json_response({"ok": True})

    async def relay(self, shop: int, item_ids: list[str]) -> None:
        try:
            counts = await self.channels[shop].read(item_ids)
        except ChannelError:
            return
        for item_id, count in counts.items():
            sku = self.sku_of[shop].get(item_id)
            if sku is None or count is None or self.known[shop].get(sku) == count:
                continue  # unknown, or the echo of a write of ours
            self.known[shop][sku] = count
            await asyncio.gather(
                *(
                    self.copy(other, sku, count)
                    for other in range(len(self.channels))
                    if other != shop
                )
            )

    async def copy(self, shop: int, sku: str, count: int) -> None:
        item_id = self.item_of[shop].get(sku)
        if item_id is None or self.known[shop].get(sku) == count:
            return
        expected = self.known[shop].get(sku, 0)
        self.known[shop][sku] = count
        for _attempt in range(3):
            try:
                result = (
                    await self.channels[shop].write(
                        [Write(item_id, expected, count)], key=str(uuid.uuid4())
                    )
                )[0]
            except ChannelError:
                return
            if result.status != "conflict" or result.available is None:
                return
            expected = result.available  # someone moved it: overwrite anyway (naive)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--shop", action="append", required=True, help="an emulator's API URL")
    args = parser.parse_args()
    clock = SystemClock()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        channels = [
            ShopifyChannel(
                ShopifySettings(api_url=url, access_token=TOKEN, webhook_secret=SECRET),
                http=http,
                clock=clock,
            )
            for url in args.shop
        ]
        relay = Relay(channels)
        await relay.load()
        app = web.Application()
        app.router.add_post("/hook/{shop}", relay.hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        base = f"http://127.0.0.1:{args.port}"
        for i, channel in enumerate(channels):
            await channel.subscribe(f"{base}/hook/{i}")
        print(f"ready {base}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    run_loop(main())  # the agents' event loop (uvloop where installed): a like-for-like floor
