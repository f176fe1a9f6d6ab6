"""Stock rules between real agent processes, set as a shop owner would: `shopsync rules`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, ShopHandle

SKU = "SKU-00001"


async def cli(shop: ShopHandle, *args: str) -> tuple[int, str, str]:
    """`shopsync ARGS` for the agent of `shop`: exit status, stdout, stderr."""
    env = {**os.environ, "COLUMNS": "200", "SHOPSYNC_DATA_DIR": str(shop.data_dir)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path, 2, skus=3) as cluster:
        a, b = cluster.shops
        await cluster.join(b, a)
        await cluster.converged()
        yield cluster


async def _shows(cluster: Cluster, want: dict[ShopHandle, int], what: str) -> None:
    async def check() -> bool:
        shown = {shop: (await shop.inventory())[SKU] for shop in want}
        return shown == want

    await cluster.until(check, timeout=60, what=what)


async def test_a_buffer_and_a_priority_shop_share_the_last_units(pair: Cluster) -> None:
    a, b = pair.shops
    code, out, err = await cli(b, "rules", "set", "buffer=5")
    assert code == 0, err
    assert "buffer 5" in out
    saved = tomllib.loads((b.data_dir / "shopsync.toml").read_text())
    assert saved["rules"] == {"buffer": 5}  # the owner's config holds it
    code, out, err = await cli(b, "rules", "set", "--priority", a.domain, "--at-most", "3")
    assert code == 0, err
    # every member holds both: b's own rules and the group's rule, set at b for a
    for shop in pair.shops:

        async def knows(shop: ShopHandle = shop) -> bool:
            view = await shop.get("/api/rules")
            return view["priority"] == {"shop": a.domain, "at_most": 3} and view["shops"].get(
                b.domain
            ) == {"buffer": 5}

        await pair.until(knows, timeout=30, what=f"{shop.domain} to hold the rules")
    await a.edit(SKU, 6)
    await _shows(pair, {a: 6, b: 6}, "6 everywhere (above every threshold)")
    assert await b.buy(SKU, 2)
    await _shows(pair, {a: 4, b: 0}, "b's buffer to hold back 4")
    # each write says why: the rule that decided it, and the sale it carries (b's own here;
    # at a, b's sale by its shop, in words, not the platform's topic)
    writes = (await b.get(f"/api/log?kind=write&sku={SKU}&limit=20"))["entries"]
    said = [e["message"] for e in writes if e["message"].startswith("buffer 5: publishing 0 of 4")]
    assert said and " here (-2)" in said[0], writes
    writes = (await a.get(f"/api/log?kind=write&sku={SKU}&limit=20"))["entries"]
    carried = [e for e in writes if f"at {b.domain} (-2)" in e["message"]]
    assert carried and carried[0]["peer"] == b.domain, writes
    assert "/" not in carried[0]["message"], carried  # no raw topic ("orders/create")
    # down to the last units: the priority shop shows what is left, the others nothing
    assert await a.buy(SKU, 1)

    async def counted() -> bool:  # the rules never touch the pool
        return [(await shop.pools())[SKU] for shop in pair.shops] == [3, 3]

    await pair.until(counted, timeout=60, what="the sale to reach every pool")
    await _shows(pair, {a: 3, b: 0}, "the priority shop alone to show 3")
    code, out, err = await cli(b, "rules", "test", SKU)
    assert code == 0, err
    assert f"priority {a.domain} at ≤ 3: publishing 3 of 3" in out
    assert f"priority {a.domain} at ≤ 3: publishing 0 of 3" in out
    code, out, err = await cli(b, "rules", "test", SKU, "--pool", "5", "--json")
    assert code == 0, err
    assert '"publishes": 0' in out and "buffer 5: publishing 0 of 5" in out
    # lifted: every shop publishes the whole pool again
    assert (await cli(a, "rules", "unset", "--no-priority"))[0] == 0
    assert (await cli(b, "rules", "unset", "buffer"))[0] == 0
    await _shows(pair, {a: 3, b: 3}, "the whole pool everywhere again")
    assert "rules" not in tomllib.loads((b.data_dir / "shopsync.toml").read_text())


BAD = [
    (("set", "percent=120"), "percent must be from 0 to 100, got 120"),
    (("set", "buffer=-1"), "buffer must be a whole number of 0 or more, got -1"),
    (("set", "bufer=1"), "NAME one of buffer, percent, plus, max"),
    (("set", "max=3", "--sku", "NOPE-*"), "no SKU matches 'NOPE-*'"),
    (("set", "--priority", "nobody.example.com", "--at-most", "2"), "is not a member"),
    (("set",), "say what"),
    (("test",), "say which SKU"),
]


async def test_bad_rules_get_one_clear_line_and_change_nothing(tmp_path: Path) -> None:
    async with Cluster(tmp_path, 1, skus=2) as cluster:
        shop = cluster.shops[0]
        before = (shop.data_dir / "shopsync.toml").read_bytes()
        for args, message in BAD:
            code, out, err = await cli(shop, "rules", *args)
            assert code != 0 and message in err, (args, code, out, err)
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
            assert (shop.data_dir / "shopsync.toml").read_bytes() == before
            view = await shop.get("/api/rules")
            assert view["rules"] == {} and view["priority"] is None


async def test_a_burst_below_the_threshold_leaves_the_last_units_to_the_priority_shop(
    tmp_path: Path,
) -> None:
    """Three shops, a rule set each way an owner can: c's in its config file, b's with the CLI,
    the group's priority shop through the API behind the Rules page. A burst of simultaneous
    orders at b and c cannot take more than each shows, and once the pool is at the threshold
    only the priority shop shows it. No pool goes below zero."""
    async with Cluster(tmp_path, 3, skus=3) as trio:
        a, b, c = trio.shops
        await trio.join(b, a)
        await trio.join(c, a)
        await trio.converged()
        await c.stop_agent()
        config = c.data_dir / "shopsync.toml"
        config.write_text(config.read_text() + "\n[rules]\npercent = 50\n")
        await c.start_agent()
        assert (await cli(b, "rules", "set", "max=3"))[0] == 0
        told = await c.post("/api/rules/priority", {"priority": {"shop": a.domain, "at_most": 4}})
        assert told["priority"] == {"shop": a.domain, "at_most": 4}

        async def everyone_knows() -> bool:
            views = [await shop.get("/api/rules") for shop in trio.shops]
            return all(
                v["priority"] == {"shop": a.domain, "at_most": 4}
                and v["shops"].get(b.domain) == {"max": 3}
                and v["shops"].get(c.domain) == {"percent": 50}
                for v in views
            )

        await trio.until(everyone_knows, timeout=30, what="every member to hold every rule")
        await a.edit(SKU, 10)
        await _shows(trio, {a: 10, b: 3, c: 5}, "the whole pool at a, b's max, c's half")

        # the burst: more orders than b and c show, all at once
        logged = [len(await _writes(shop)) for shop in (b, c)]
        sold = await asyncio.gather(
            *[b.buy(SKU) for _ in range(4)], *[c.buy(SKU) for _ in range(6)]
        )
        at_b, at_c = sum(sold[:4]), sum(sold[4:])
        # no shop sold what it did not show: 3 at b and 5 at c, plus what the agents gave back
        # during the burst (a sale's count re-published while a later order was still on its
        # way, which a slow machine allows: still within the rule and the pool)
        given_b, given_c = [
            sum(
                max(0, w["after"] - w["before"])
                for w in (await _writes(shop))[n:]
                if w["sku"] == SKU and w["applied"]
            )
            for shop, n in zip((b, c), logged, strict=True)
        ]
        assert 1 <= at_b <= 3 + given_b and 1 <= at_c <= 5 + given_c, (at_b, at_c, given_b, given_c)

        async def settled() -> bool:
            pools = [(await shop.pools())[SKU] for shop in trio.shops]
            return pools == [10 - at_b - at_c] * 3

        await trio.until(settled, timeout=60, what="the burst to reach every pool")
        pool = 10 - at_b - at_c
        assert pool >= 0
        if pool > 3:  # a takes it to the last three units
            assert await a.buy(SKU, pool - 3)
            pool = 3

            async def three() -> bool:
                return [(await shop.pools())[SKU] for shop in trio.shops] == [3, 3, 3]

            await trio.until(three, timeout=60, what="a's sale to reach every pool")
        await _shows(trio, {a: pool, b: 0, c: 0}, "the priority shop alone to show the rest")
        code, out, err = await cli(c, "rules", "test", SKU)  # and says why, for each shop
        assert code == 0, err
        assert f"priority {a.domain} at ≤ 4: publishing {pool} of {pool}" in out, out
        assert out.count(f"priority {a.domain} at ≤ 4: publishing 0 of {pool}") == 2, out
        # why the count is what it is: the account adds up, term by term, at every member
        for shop in trio.shops:
            code, out, err = await cli(shop, "explain", SKU, "--json")
            assert code == 0, err
            account = json.loads(out)
            assert account["pool"] == pool and account["adds_up"] is True
            terms = account["base"]["count"] + account["earlier"]
            assert terms + sum(c["sum"] for c in account["changes"]) == pool
            by_shop = {c["shop"]: c["sum"] for c in account["changes"]}
            assert by_shop[b.domain] == -at_b and by_shop[c.domain] == -at_c
            shown = {s["shop"]: s["publishes"] for s in account["shops"]}
            assert shown == {a.domain: pool, b.domain: 0, c.domain: 0}
            recent = account["recent"]  # every change here, newest first, told in words
            assert sum(e["delta"] for e in recent if e["shop"] == b.domain) == -at_b
            assert all(e["in_words"] and e["in_words"] != e["cause"] for e in recent), recent
        code, out, err = await cli(a, "explain", SKU)
        assert code == 0 and f"{SKU}: pool {pool}" in out and "= pool" in out, (out, err)
        code, out, err = await cli(a, "explain", "NO-SUCH-SKU")
        assert code == 1 and "no shop of the group has told this one of NO-SUCH-SKU" in err
        # what an operator would chart, scraped from a member after the burst
        series = await _scrape(c)
        for origin in (a.domain, b.domain):  # changes that came from the other two shops
            assert series[f'shopsync_propagation_seconds_count{{origin="{origin}"}}'] >= 1
        for peer in (a.domain, b.domain):
            assert series[f'shopsync_peer_events_behind{{peer="{peer}"}}'] >= 0
            assert series[f'shopsync_peer_up{{peer="{peer}"}}'] == 1
            assert series[f'shopsync_peer_last_contact_age_seconds{{peer="{peer}"}}'] < 300
        assert series['shopsync_written_rows_total{result="ok"}'] >= 1  # c's writes of 5, 0, …
        assert series['shopsync_platform_calls_total{call="read"}'] >= 1
        assert series['shopsync_webhooks_total{result="accepted"}'] >= 1
        assert series['shopsync_alerts_open{kind="oversold"}'] == 0
        assert series["shopsync_import_running"] == 0 and series["shopsync_import_total"] >= 0
        assert series['shopsync_platform_requests_total{outcome="requests"}'] >= 1  # Shopify
        assert 'shopsync_platform_requests_total{outcome="throttled"}' in series
        assert 0 <= series["shopsync_rate_budget_ratio"] <= 1


async def _scrape(shop: ShopHandle) -> dict[str, float]:
    """`/metrics` of `shop`'s agent: every sample by its name and labels."""
    headers = {"Authorization": f"Bearer {shop.shop.token}"}
    async with shop.http.get(shop.agent_url + "/metrics", headers=headers) as resp:
        assert resp.status == 200
        text = await resp.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def _writes(shop: ShopHandle) -> list[dict[str, Any]]:
    """The stock writes the shop's platform took through its API, oldest first."""
    status, writes = await shop.emu("GET", "/_emulator/writes")
    assert status == 200
    return writes  # type: ignore[no-any-return]
