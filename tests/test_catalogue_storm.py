"""A merchant's bulk edit of products: the agent looks up the products named, not the catalogue.

Each edited product sends the platform's `products/update` webhook (the emulators do, as
Shopify and SHOPLINE do). Before, every one of them started a full catalogue pass; now they are
gathered for a short window and looked up in batches, so the cost is bounded by the products
edited, not by the webhooks times the catalogue.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, ShopHandle

PRODUCTS = 1000
# Platform requests a lookup of n items costs: Shopify one GraphQL call per 200 items;
# SHOPLINE one inventory_items call per 250 and one levels call per 50.
LOOKUP_REQUESTS = {
    "shopify": lambda n: math.ceil(n / 200),
    "shopline": lambda n: math.ceil(n / 250) + math.ceil(n / 50),
}


async def _stats(shop: ShopHandle) -> dict[str, int]:
    status, body = await shop.emu("GET", "/_emulator/stats")
    assert status == 200
    return body  # type: ignore[no-any-return]


async def _delivered(shop: ShopHandle, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hooks = (await _stats(shop))["webhooks"]
        if hooks["delivered"] >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"webhooks not delivered: {hooks}")


@pytest.mark.parametrize("channel", ["shopify", "shopline"])
async def test_a_bulk_edit_of_1000_products_costs_a_bounded_number_of_reads(
    tmp_path: Path, channel: str
) -> None:
    async with Cluster(tmp_path, 1, skus=PRODUCTS, channel=channel) as solo:
        shop = solo.shops[0]
        skus = sorted(await shop.inventory())
        before, status = await _stats(shop), await shop.get("/api/status")
        status_code, answer = await shop.emu(
            "POST", "/_emulator/products/update", {"skus": skus, "title": "Summer sale"}
        )
        assert (status_code, answer) == (200, {"updated": PRODUCTS})
        # ... and in the same minute, two SKUs are changed: one to a new code, one to a
        # code another product has (a duplicate, no longer synced)
        for old, new in ((skus[0], "RENAMED-1"), (skus[1], skus[2])):
            assert (await shop.emu("POST", "/_emulator/products/update",
                                   {"sku": old, "new_sku": new}))[0] == 200  # fmt: skip
        await _delivered(shop, before["webhooks"]["delivered"] + PRODUCTS + 2)
        await solo.wait_idle()
        after, status_after = await _stats(shop), await shop.get("/api/status")

        requests = after["requests"] - before["requests"]
        bound = 2 * LOOKUP_REQUESTS[channel](PRODUCTS + 2)  # two windows at most
        print(f"{channel}: {requests} platform requests for {PRODUCTS} product webhooks")
        assert requests <= bound, (requests, bound)
        assert after["writes"] == before["writes"]  # product edits move no stock
        assert status_after["stats"]["passes"] == status["stats"]["passes"]
        assert status_after["stats"]["lookup_ids"] - status["stats"]["lookup_ids"] >= PRODUCTS

        renamed = (await shop.get("/api/pools?sku=RENAMED-1"))["pools"]
        assert [(p["sku"], p["pool"]) for p in renamed] == [("RENAMED-1", 100)]  # synced anew
        duplicates = await shop.get("/api/duplicates")
        assert skus[2] in str(duplicates)
