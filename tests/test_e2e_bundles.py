"""Bundles between real agent processes, set as a shop owner would: `shopsync bundles`.

A case of six packs of sausages sold in two shops, the packs on their own in all three: a
sale of a case takes six packs everywhere, and a sale of packs lowers how many cases every
shop offers. One of the two shops selling cases joins the group after the bundle was set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, ShopHandle
from tests.test_e2e_rules import cli

PACK = "SKU-00001"  # a pack of sausages, sold in every shop
CASE = "CASE-6"  # six packs, sold in shops a and b


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Shops a and c in a group; b, its own shop for now."""
    async with Cluster(tmp_path, 3, skus=2) as cluster:
        a, _b, c = cluster.shops
        await cluster.join(c, a)
        yield cluster


async def _shows(cluster: Cluster, want: dict[tuple[ShopHandle, str], int], what: str) -> None:
    async def check() -> bool:
        for (shop, sku), count in want.items():
            if (await shop.inventory()).get(sku) != count:
                return False
        return True

    try:
        await cluster.until(check, timeout=60, what=what)
    except AssertionError:
        shown = {(s.domain, k): (await s.inventory()).get(k) for s, k in want}
        raise AssertionError(f"{what}: shops show {shown}") from None


async def _count(shop: ShopHandle, sku: str, count: int) -> bool:
    return (await shop.inventory()).get(sku) == count


async def test_a_case_of_six_packs_in_two_shops_and_packs_sold_in_a_third(trio: Cluster) -> None:
    a, b, c = trio.shops
    code, out, err = await cli(c, "bundles", "add", CASE, f"{PACK}:6")
    assert code == 0, err
    assert CASE in out and f"6 x {PACK}" in out
    await a.edit(PACK, 20)
    await trio.until(lambda: _count(c, PACK, 20), what="20 packs at c")
    # the case is a product of a, and of b, which joins the group now: its own counts are
    # wrong, and b's is no pool of the group's, whatever b's import finds first
    for shop in (a, b):
        await shop.emu("POST", "/_emulator/products", {"sku": CASE, "available": 9})
    await trio.join(b, a)
    for shop in trio.shops:  # set at c, held by every member

        async def holds(shop: ShopHandle = shop) -> bool:
            bundles = (await shop.get("/api/bundles"))["bundles"]
            return [(x["sku"], x["components"], x["in_use"]) for x in bundles] == [
                (CASE, [{"sku": PACK, "quantity": 6}], True)
            ]

        await trio.until(holds, timeout=30, what=f"{shop.domain} to hold the bundle")
    cases = {(a, CASE): 3, (b, CASE): 3}
    await _shows(trio, {(a, PACK): 20, (b, PACK): 20, (c, PACK): 20, **cases}, "20 packs: 3 cases")
    assert await c.buy(PACK, 3)  # three loose packs at c: two cases left
    await _shows(
        trio, {(a, PACK): 17, (b, PACK): 17, (c, PACK): 17, (a, CASE): 2, (b, CASE): 2}, "17 packs"
    )
    assert await a.buy(CASE, 1)  # a case at a takes six packs everywhere
    await _shows(
        trio, {(a, PACK): 11, (b, PACK): 11, (c, PACK): 11, (a, CASE): 1, (b, CASE): 1}, "11 packs"
    )
    for shop in trio.shops:
        pools = await shop.pools()
        assert pools[PACK] == 11 and pools.get(CASE) is None  # a bundle has no pool of its own
    (row,) = (await a.get(f"/api/pools?sku={CASE}"))["pools"]  # the products page's row
    assert (row["published"], row["target"]) == (1, 1)
    assert row["bundle"] == [{"sku": PACK, "quantity": 6}]
    status, said = await a.api("GET", f"/api/explain?sku={CASE}")
    assert status == 404 and f"bundle of 6 x {PACK}" in said["message"]
    changes = (await a.get(f"/api/log?kind=change&sku={CASE}&limit=5"))["entries"]
    assert [e["delta"] for e in changes] == [-1]
    # bad input: one clear line, nothing changed
    code, out, err = await cli(c, "bundles", "add", "KIT", "NO-SUCH-SKU:2")
    assert code != 0 and "NO-SUCH-SKU is not a SKU" in err and "Traceback" not in err
    code, out, err = await cli(c, "bundles", "add", "KIT", f"{PACK}:zero")
    assert code == 2 and "quantity" in err
    code, out, err = await cli(c, "bundles", "add", "BOX", f"{CASE}:2")
    assert code != 0 and "a component must be a stocked SKU" in err
    assert len((await c.get("/api/bundles"))["bundles"]) == 1
    # removed at c: every member sells the case as a SKU of its own again
    code, out, err = await cli(c, "bundles", "remove", CASE)
    assert code == 0, err
    for shop in trio.shops:

        async def dropped(shop: ShopHandle = shop) -> bool:
            return (await shop.get("/api/bundles"))["bundles"] == []

        await trio.until(dropped, timeout=30, what=f"{shop.domain} to drop the bundle")
    assert await b.buy(PACK, 1)
    await _shows(trio, {(a, PACK): 10, (b, PACK): 10, (c, PACK): 10}, "10 packs")
    assert (await a.inventory())[CASE] == 1  # no longer follows the packs
    # a SKU of its own now, from the one case the packs allowed when it was removed: a case
    # sold at a reaches b, and takes no pack
    for shop in trio.shops:
        assert (await shop.pools())[CASE] == 1
    assert await a.buy(CASE, 1)
    await _shows(trio, {(a, CASE): 0, (b, CASE): 0, (a, PACK): 10}, "the case sold everywhere")
    removed = (await c.get(f"/api/log?sku={CASE}&limit=5"))["entries"]
    assert any("no longer a bundle" in e["message"] for e in removed), removed
