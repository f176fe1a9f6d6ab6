"""Peering and replication between real agent processes over real HTTP."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.signing import fingerprint, load_private_key, public_key_b64, sign_request
from tests.support.cluster import Cluster, SharedCluster, ShopHandle, shared_fixtures

# Every test here runs on the module's event loop, where the shared trio's processes live.
pytestmark = pytest.mark.asyncio(loop_scope="module")

# The trio's SKUs, each used by one test only: SKU-00001…10 the concurrent purchases (and the
# forged requests, which only read SKU-00001), 11…15 the killed peer, 16…19 the peer down for
# the burst, 20 and 21 the pause, 22 the third shop's sale, 23 the activity. Every test starts
# them at 100.
TRIO_SKUS = 23


async def _form_trio(workdir: Path) -> Cluster:
    cluster = Cluster(workdir, 3, skus=TRIO_SKUS)
    await cluster.__aenter__()
    try:
        a, b, c = cluster.shops
        await cluster.join(b, a)
        await cluster.join(c, b)  # the third shop asks any member: b introduces it to a
    except BaseException:
        await cluster.__aexit__(None, None, None)
        raise
    return cluster


# trio: three shops in one group, idle: a (master), b joined a, c joined b
group, trio = shared_fixtures("trio", _form_trio)


@pytest_asyncio.fixture(loop_scope="module")
async def trio_to_spend(group: SharedCluster) -> AsyncIterator[Cluster]:
    """The trio, for a test that changes it for good (a shop leaves): discarded after it."""
    yield await group.get()
    await group.discard()


async def test_join_accept_import_then_sales_in_both_directions(tmp_path: Path) -> None:
    async with Cluster(tmp_path, 2, skus=5) as cluster:
        master, joiner = cluster.shops
        assert set((await joiner.inventory()).values()) == {80}  # its old stock
        await joiner.post("/api/join", {"target": master.agent_url})
        requests = (await master.get("/api/requests"))["requests"]
        assert [r["domain"] for r in requests] == [joiner.domain]
        assert requests[0]["fingerprint"].startswith("SHA256:")
        await master.post(f"/api/requests/{joiner.domain}/accept")
        counts = await cluster.converged()
        assert set(counts.values()) == {100}  # the master's counts were imported
        assert await joiner.buy("SKU-00001", 3)
        assert await master.buy("SKU-00002", 5)
        await master.edit("SKU-00003", 42)
        counts = await cluster.converged()
        assert counts["SKU-00001"] == 97 and counts["SKU-00002"] == 95
        assert counts["SKU-00003"] == 42
        for shop in cluster.shops:
            assert await shop.inventory() == {
                "SKU-00001": 97,
                "SKU-00002": 95,
                "SKU-00003": 42,
                "SKU-00004": 100,
                "SKU-00005": 100,
            }
        kinds = {e["kind"] for e in (await master.get("/api/log?limit=500"))["entries"]}
        assert {"join_request", "accept", "batch_received", "write"} <= kinds


async def test_third_shop_joins_through_any_member_and_all_connect(trio: Cluster) -> None:
    c = trio.shops[2]
    for shop in trio.shops:
        peers = {p["domain"] for p in (await shop.get("/api/peers"))["peers"]}
        assert peers == {s.domain for s in trio.shops} - {shop.domain}
    assert await c.buy("SKU-00022", 4)
    counts = await trio.converged()
    assert counts["SKU-00022"] == 96
    await trio.until(lambda: _all_caught_up(trio), what="events behind = 0")


async def _all_caught_up(cluster: Cluster) -> bool:
    for shop in cluster.shops:
        for peer in (await shop.get("/api/peers"))["peers"]:
            if peer["events_behind"] or peer["state"] != "connected":
                return False
    return True


async def test_concurrent_purchases_across_three_shops_are_all_counted(trio: Cluster) -> None:
    rng = random.Random(4)
    skus = [f"SKU-{n:05d}" for n in range(1, 11)]
    others = {s: n for s, n in (await trio.shops[0].inventory()).items() if s not in skus}
    orders = [(rng.choice(trio.shops), rng.choice(skus)) for _ in range(200)]
    results = await asyncio.gather(*(shop.buy(sku) for shop, sku in orders))
    bought: dict[str, int] = {}
    for (_, sku), ok in zip(orders, results, strict=True):
        bought[sku] = bought.get(sku, 0) + ok
    assert sum(bought.values()) == 200
    await trio.converged()
    for shop in trio.shops:
        assert await shop.inventory() == {**others, **{s: 100 - bought.get(s, 0) for s in skus}}


async def test_peer_killed_mid_stream_converges_with_nothing_lost_or_doubled(
    trio: Cluster,
) -> None:
    a, b, c = trio.shops
    sales = asyncio.gather(
        *(rs.buy(f"SKU-{11 + i % 5:05d}") for i, rs in enumerate([a, b, c] * 30))
    )
    await asyncio.sleep(0.1)
    await b.kill_agent()
    assert all(await sales)
    for i in range(15):  # b's shop keeps selling while its agent is dead
        assert await b.buy(f"SKU-{11 + i % 5:05d}")
    await b.start_agent()
    counts = await trio.converged()
    assert sum(100 - counts[f"SKU-{n:05d}"] for n in range(11, 16)) == 105


async def test_peer_down_for_the_whole_burst_catches_up_even_with_the_origin_down(
    trio: Cluster,
) -> None:
    a, b, c = trio.shops
    await c.stop_agent()
    for i in range(20):
        assert await a.buy(f"SKU-{16 + i % 4:05d}")
    # a's events reach b; then a goes away too, before c is back
    for n in range(16, 20):  # every one of a's sales, not only the first SKU's
        await trio.until(lambda n=n: _has_pool(b, f"SKU-{n:05d}", 95), what="b has a's sales")
    await a.stop_agent()
    await c.start_agent()
    await trio.until(lambda: _has_pool(c, "SKU-00016", 95), what="c caught up from b")
    await trio.until(
        lambda: _shows(c, {f"SKU-{n:05d}": 95 for n in range(16, 20)}),
        what="c's shop shows a's sales",
    )
    await a.start_agent()
    await trio.converged()


async def _shows(shop: ShopHandle, counts: dict[str, int]) -> bool:
    inventory = await shop.inventory()
    return all(inventory.get(sku) == value for sku, value in counts.items())


async def _has_pool(shop: ShopHandle, sku: str, value: int) -> bool:
    try:
        return (await shop.pools()).get(sku) == value
    except OSError:
        return False


def _signed(
    key: Ed25519PrivateKey,
    path: str,
    body: dict,
    *,
    audience: str,
    created: float | None = None,
    nonce: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    headers = sign_request(
        "POST",
        path,
        raw,
        private_key=key,
        key_id=fingerprint(public_key_b64(key)),
        audience=audience,
        created=int(created if created is not None else time.time()),
        nonce=nonce,
    )
    return raw, {**headers, "Content-Type": "application/json"}


async def test_forged_stale_replayed_and_non_member_requests_are_refused(trio: Cluster) -> None:
    a, b, _ = trio.shops
    http = trio.http
    assert http is not None
    status = await a.get("/api/status")
    before, to_a = status["events"], status["fingerprint"]
    event = ["x.example.com", "e", 1, "SKU-00001", "change", -50, None, None, "", 0, ""]
    body = {"events": [event]}
    stranger = Ed25519PrivateKey.generate()
    member_key = load_private_key(b.data_dir / "agent.key")

    async def post(raw: bytes, headers: dict[str, str], path: str = "/peer/events") -> int:
        async with http.post(a.agent_url + path, data=raw, headers=headers) as resp:
            assert "error" in await resp.json()
            return resp.status

    assert await post(*_signed(stranger, "/peer/events", body, audience=to_a)) == 401  # unknown
    raw, headers = _signed(member_key, "/peer/events", body, audience=to_a)
    assert await post(raw.replace(b"-50", b"-51"), headers) == 401  # forged body
    stale = _signed(member_key, "/peer/events", body, audience=to_a, created=time.time() - 400)
    assert await post(*stale) == 401
    raw, headers = _signed(member_key, "/peer/pull", {"have": []}, audience=to_a)
    async with http.post(a.agent_url + "/peer/pull", data=raw, headers=headers) as resp:
        assert resp.status == 200
    assert await post(raw, headers, "/peer/pull") == 401  # the same request replayed
    # a member's snapshot: its head, then its one page; a snapshot not kept here is 410
    raw, headers = _signed(member_key, "/peer/snapshot", {"paged": True}, audience=to_a)
    async with http.post(a.agent_url + "/peer/snapshot", data=raw, headers=headers) as resp:
        assert resp.status == 200
        head = await resp.json()
    assert head["pool_count"] == len(await a.pools()) and head["pages"] == 1
    page = {"snapshot": head["snapshot"], "page": 0}
    raw, headers = _signed(member_key, "/peer/snapshot_page", page, audience=to_a)
    async with http.post(a.agent_url + "/peer/snapshot_page", data=raw, headers=headers) as resp:
        assert resp.status == 200
        assert len((await resp.json())["pools"]) == head["pool_count"]
    gone = {"snapshot": "0123456789abcdef", "page": 0}
    signed = _signed(member_key, "/peer/snapshot_page", gone, audience=to_a)
    assert await post(*signed, "/peer/snapshot_page") == 410
    moved = _signed(member_key, "/peer/state", {}, audience=to_a)
    assert await post(*moved, "/peer/events") == 401  # signed for another path
    await asyncio.sleep(0.2)
    assert (await a.get("/api/status"))["events"] == before
    assert (await a.pools())["SKU-00001"] == (await b.pools())["SKU-00001"]


async def test_a_pending_request_never_receives_data(tmp_path: Path) -> None:
    async with Cluster(tmp_path, 2, skus=3) as cluster:
        master, joiner = cluster.shops
        await joiner.post("/api/join", {"target": master.agent_url})
        http = cluster.http
        assert http is not None
        key = load_private_key(joiner.data_dir / "agent.key")
        to_master = (await master.get("/api/status"))["fingerprint"]
        for path, body in (
            ("/peer/pull", {"have": []}),
            ("/peer/snapshot", {}),
            ("/peer/snapshot", {"paged": True}),
            ("/peer/snapshot_page", {"snapshot": "0123456789abcdef", "page": 0}),
            ("/peer/events", {"events": []}),
        ):
            raw, headers = _signed(key, path, body, audience=to_master)
            async with http.post(master.agent_url + path, data=raw, headers=headers) as resp:
                answer = await resp.json()
                assert resp.status in (401, 403), path  # an unknown key: nothing is served
                assert set(answer) == {"error", "message"}
        await master.post(f"/api/requests/{joiner.domain}/reject")
        assert (await master.get("/api/requests"))["requests"] == []
        assert (await joiner.get("/api/peers"))["peers"] == []
        status, body = await master.api("POST", f"/api/requests/{joiner.domain}/accept", {})
        assert status == 404 and body["error"] == "no_request"


async def test_pause_holds_sync_and_resume_sends_what_happened(trio: Cluster) -> None:
    a, _, c = trio.shops
    await c.post("/api/pause")
    assert await c.buy("SKU-00020", 6)
    assert await a.buy("SKU-00021", 2)
    await asyncio.sleep(1.5)
    assert (await a.pools())["SKU-00020"] == 100  # c's sale is held back
    assert (await c.inventory())["SKU-00021"] == 100  # a's sale did not reach c
    await c.post("/api/resume")
    counts = await trio.converged()
    assert counts["SKU-00020"] == 94 and counts["SKU-00021"] == 98


async def test_activity_counts_changes_made_and_received_and_their_latency(trio: Cluster) -> None:
    a, b, c = trio.shops
    await trio.wait_idle()
    before = [(await s.get("/api/activity"))["totals"] for s in trio.shops]
    for left in (99, 98, 97):  # one sale at a time: each its own change
        assert await b.buy("SKU-00023")

        async def counted(want: int = left) -> bool:
            return (await b.pools())["SKU-00023"] == want

        await trio.until(counted, what=f"b to count {left}")
    assert (await trio.converged())["SKU-00023"] == 97
    await trio.wait_idle()
    answers = [await s.get("/api/activity") for s in trio.shops]
    after = [answer["totals"] for answer in answers]

    def grew(key: str) -> list[int]:
        return [now[key] - then[key] for now, then in zip(after, before, strict=True)]

    assert grew("local") == [0, 3, 0]  # made at b
    assert grew("received") == [3, 0, 3]  # and applied once at each other member
    assert grew("latency_events") == [3, 0, 3]
    for answer in (answers[0], answers[2]):
        measured = [m for m in answer["minutes"] if m["latency_max_ms"] is not None]
        assert measured and all(
            0 <= m["latency_p50_ms"] <= m["latency_max_ms"] for m in measured
        ), answer
        assert sum(m["received"] for m in answer["minutes"]) == answer["totals"]["received"]
    for shop in (a, c):  # the count over time, as each member holds it, ends at the pool
        history = (await shop.get("/api/explain?sku=SKU-00023"))["history"]
        assert [p["pool"] for p in history][-4:] == [100, 99, 98, 97], history


async def test_a_member_cannot_join_another_group_before_leaving(trio_to_spend: Cluster) -> None:
    trio = trio_to_spend  # c leaves the group: the trio is formed anew for any later test
    a, _, c = trio.shops
    status, body = await c.api("POST", "/api/join", {"target": a.agent_url})
    assert status == 409 and "leave" in body["message"]
    await c.post("/api/leave")
    await trio.until(lambda: _peer_state(a, c.domain, "left"), what="a sees c left")
    assert (await c.get("/api/peers"))["peers"] == []


async def _peer_state(shop: ShopHandle, domain: str, state: str) -> bool:
    peers = {p["domain"]: p["state"] for p in (await shop.get("/api/peers"))["peers"]}
    return peers.get(domain) == state
