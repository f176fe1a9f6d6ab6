"""Warehouses between real agent processes, set up as a shop owner would: a `[locations]`
table in the config, then `shopsync locations`.

Shop b has two locations: its primary sells from the group's default warehouse, as shop a's
does; its second (Shopify location 2) from a warehouse of its own, "north". A sale at either
location takes from its own warehouse only, and a's shop, which sells from the default one,
follows the default one alone. Then b's owner links location 2 to north first, then the
default warehouse: it shows both, a sale there larger than north holds takes the rest from
the default one (and a's count with it), and stock added there by hand is refused, since
nobody can tell whose stock was counted.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from agent.demo import Shop
from tests.support.cluster import Cluster, ShopHandle
from tests.test_e2e_rules import cli
from tests.test_hygiene import _log_in

TEA = "SKU-00001"
NORTH = f"{TEA}@@north"  # the ledger's key of TEA in warehouse north
LINKS = '\n[locations]\nprimary = ["main"]\n"2" = ["north"]\n'


def _two_locations(shop: Shop) -> None:
    if shop.index == 1:  # shop b: a shop with a second location, linked to north
        shop.emulator.args += ["--locations", "2"]
        shop.config_extra = LINKS


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path, 2, skus=2, prepare=_two_locations) as cluster:
        a, b = cluster.shops
        await cluster.join(b, a)
        await cluster.converged()
        yield cluster


async def _at(shop: ShopHandle, location: int) -> dict[str, int]:
    return (await shop.emu("GET", f"/_emulator/inventory?location={location}"))[1]


async def _sell(shop: ShopHandle, sku: str, n: int, location: int) -> None:
    order = {"line_items": [{"sku": sku, "quantity": n}], "location": location}
    status, answer = await shop.emu("POST", "/_emulator/orders", order)
    assert status == 201, answer


async def _shows(cluster: Cluster, want: dict[str, Any], what: str) -> None:
    """Wait until `want` holds: ("a", 1) → a's count of TEA at location 1; "pool:KEY" → a's
    pool of a ledger key."""
    a, b = cluster.shops

    async def seen() -> dict[str, Any]:
        pools = await a.pools()  # a sells from the default warehouse only: keys as they are
        out: dict[str, Any] = {}
        for name in want:
            if name.startswith("pool:"):
                out[name] = pools.get(name[5:])
            else:
                shop, location = name.split("@")
                out[name] = (await _at(a if shop == "a" else b, int(location))).get(TEA)
        return out

    async def check() -> bool:
        return await seen() == want

    try:
        await cluster.until(check, timeout=60, what=what)
    except AssertionError:
        raise AssertionError(f"{what}: {await seen()}, not {want}") from None


async def test_a_second_location_sells_from_its_own_warehouse_then_from_two(
    pair: Cluster,
) -> None:
    a, b = pair.shops
    main = (await _at(a, 1))[TEA]  # the group's count of TEA in the default warehouse
    assert (await _at(b, 1))[TEA] == main and TEA not in await _at(b, 2)
    # b's owner stocks TEA at location 2: north's first stock, not the default warehouse's
    status, _ = await b.emu(
        "POST", "/_emulator/inventory", {"sku": TEA, "available": 7, "location": 2}
    )
    assert status == 200
    await _shows(pair, {"pool:" + NORTH: 7, "a@1": main, "b@1": main, "b@2": 7}, "north holds 7")
    await _sell(b, TEA, 2, location=2)  # north's
    await _shows(pair, {"pool:" + NORTH: 5, "a@1": main, "b@1": main, "b@2": 5}, "north sold 2")
    await _sell(b, TEA, 3, location=1)  # the default warehouse's: a follows, location 2 not
    main -= 3
    await _shows(pair, {"pool:" + NORTH: 5, "a@1": main, "b@1": main, "b@2": 5}, "main sold 3")

    # location 2 sells from north, then from the default warehouse: a dry run first, on the
    # command line and on the Rules page
    code, out, err = await cli(b, "locations", "set", "2", "north", "main", "--dry-run")
    assert code == 0, err
    assert "dry run" in out and f"{TEA}: 5 → {5 + main}" in out
    status, _, session = await _log_in(b, b.shop.token)
    assert status == 303 and session
    cookie = {"Cookie": f"shopsync_session={session}"}
    async with b.http.get(b.agent_url + "/rules", headers=cookie) as page:
        html = await page.text()
    assert 'id="location-form"' in html and "north" in html
    csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    form = {"csrf": csrf, "location": "2", "warehouses": "north, main", "dry_run": "yes"}
    url = b.agent_url + "/rules/locations"
    async with b.http.post(url, data=form, headers=cookie, allow_redirects=False) as page:
        assert page.status == 303
        flash = unquote(page.cookies["shopsync_flash"].value)  # what the next page says
    assert "Dry run, nothing changed: 1 of 1 listings there would change" in flash
    assert f"{TEA} 5 → {5 + main}" in flash
    assert (await _at(b, 2))[TEA] == 5  # nothing changed
    code, out, err = await cli(b, "locations", "set", "2", "north,main")
    assert code == 0, err
    assert "applied" in out
    assert 'primary = ["main"]' in (b.data_dir / "shopsync.toml").read_text()  # kept as written
    await _shows(
        pair, {"pool:" + NORTH: 5, "a@1": main, "b@1": main, "b@2": 5 + main}, "2 shows both"
    )
    listed = {
        (p["sku"], p.get("location"), tuple(p.get("sells_from", ())))
        for p in (await b.get("/api/pools"))["pools"]
    }
    assert (TEA, "2", ("north", "main")) in listed and (TEA, "primary", ("main",)) in listed
    async with b.http.get(b.agent_url + "/products", headers=cookie) as page:
        html = await page.text()
    assert "at 2, from north then main" in html and "at primary, from main" in html

    await _sell(b, TEA, 8, location=2)  # north's 5, then 3 of the default warehouse's
    main -= 3
    await _shows(pair, {"pool:" + NORTH: 0, "a@1": main, "b@1": main, "b@2": main}, "8 sold at 2")

    # stock added by hand at location 2, which sells from two warehouses: whose is it? It
    # is refused, and the count shown back (stock gone is counted, from north first)
    status, _ = await b.emu(
        "POST", "/_emulator/inventory", {"sku": TEA, "available": main + 40, "location": 2}
    )
    assert status == 200
    await _shows(pair, {"pool:" + NORTH: 0, "a@1": main, "b@1": main, "b@2": main}, "edit undone")
    refused = (await b.get("/api/log?kind=change_refused"))["entries"]
    assert refused and refused[0]["sku"] == TEA
    assert "link 2 to one warehouse" in refused[0]["message"]
    assert "shopsync locations set 2 north --dry-run" in refused[0]["message"]  # the fix


async def test_a_bad_location_link_is_refused_and_changes_nothing(pair: Cluster) -> None:
    _, b = pair.shops
    before = (b.data_dir / "shopsync.toml").read_text()
    code, _out, err = await cli(b, "locations", "set", "2", "north wing")
    assert code != 0 and "no warehouse name" in err and "Traceback" not in err
    status, body = await b.api(
        "POST", "/api/locations", {"location": "2", "warehouses": ["a", "a"]}
    )
    assert status == 400 and "twice" in body["message"]
    status, body = await b.api("POST", "/api/locations", {"location": "9", "warehouses": []})
    assert status == 404
    assert (b.data_dir / "shopsync.toml").read_text() == before
    code, out, err = await cli(b, "locations")
    assert code == 0, err
    assert "primary" in out and "north" in out
