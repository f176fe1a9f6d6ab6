"""A member speaks only for itself, and nobody takes over a join (issue 13), tried as an
attacker would against real agent processes on loopback.

A compromised member is one shop's own `agent.key` in the attacker's hands: every request
below is correctly signed with it. Each attempt of the issue's table must now be refused with
a clear reason, and change nothing: counts, vectors and member lists stay as they were, and
the honest members go on syncing.

The table's rows, and where each is tried: events of another origin, events in the
receiver's own stream, a new key introduced, a member re-keyed (and moved, retired), invented
origins with 2 kB SKUs, a request replayed to another agent, a join taken over, a flood of
join requests and odd domains, deep JSON on /peer, large unsigned bodies on /peer — here;
deep JSON on the admin API and on webhooks with a valid HMAC, non-UTF-8 credentials, large
bodies on /api, /webhooks and /login, an empty admin token, a cookie reused after a log-out
and a restart, and markup in what the CLI prints — in `tests/test_hygiene.py` and
`tests/test_fuzz.py`.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import requests
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import trust
from agent.demo import free_port
from agent.models import EventRow
from agent.signing import fingerprint, load_private_key, public_key_b64, sign_request
from agent.wire import event_to_wire
from tests.support.cluster import Cluster, ShopHandle
from tests.support.live import Live

T = TypeVar("T")


@pytest.fixture(scope="module")
def trio(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three shops in one group: a (master), b joined a, c joined b."""

    async def up() -> Cluster:
        cluster = Cluster(tmp_path_factory.mktemp("trust"), 3, skus=6)
        await cluster.__aenter__()
        a, b, c = cluster.shops
        await cluster.join(b, a)
        await cluster.join(c, b)
        await cluster.wait_idle()
        return cluster

    cluster = live.run(up(), timeout=180)
    try:
        yield cluster
    finally:
        live.run(cluster.__aexit__(None, None, None))


def key_of(shop: ShopHandle) -> Ed25519PrivateKey:
    return load_private_key(shop.data_dir / "agent.key")


def key_id(key: Ed25519PrivateKey) -> str:
    return fingerprint(public_key_b64(key))


def post_signed(
    key: Ed25519PrivateKey, to: ShopHandle, path: str, body: Any, *, audience: str | None = None
) -> tuple[int, dict[str, Any], tuple[bytes, dict[str, str]]]:
    """POST `body` to `to`'s `path`, signed with `key` for `audience` (default: `to`)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = sign_request(
        "POST",
        path,
        raw,
        private_key=key,
        key_id=key_id(key),
        audience=audience or key_id(key_of(to)),
        created=int(time.time()),
    )
    headers["Content-Type"] = "application/json"
    status, answer = send(to, path, raw, headers)
    return status, answer, (raw, headers)


def send(to: ShopHandle, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    answer = requests.post(to.agent_url + path, data=raw, headers=headers, timeout=60)
    return answer.status_code, answer.json()


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`shopsync ARGS` as a shop owner runs it, for the agent in `data_dir`."""
    env = {**os.environ, "COLUMNS": "200", "SHOPSYNC_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def run(live: Live, coro: Coroutine[Any, Any, T]) -> T:
    return live.run(coro, timeout=120)


def snapshot(live: Live, shops: list[ShopHandle]) -> list[Any]:
    """What an attack must not change: every shop's pools, vector and member list."""

    async def read() -> list[Any]:
        out = []
        for shop in shops:
            status = await shop.get("/api/status")
            peers = (await shop.get("/api/peers"))["peers"]
            out.append(
                (
                    await shop.pools(),
                    status["vector"],
                    sorted((p["domain"], p["fingerprint"], p["agent_url"]) for p in peers),
                )
            )
        return out

    return run(live, read())


def stream(live: Live, shop: ShopHandle, origin: ShopHandle) -> tuple[str, int]:
    """(epoch, highest seq) of `origin`'s current stream as `shop` holds it."""
    epoch = run(live, origin.get("/api/status"))["epoch"]
    vector = run(live, shop.get("/api/status"))["vector"]
    seqs = [v["seq"] for v in vector if (v["origin"], v["epoch"]) == (origin.domain, epoch)]
    return epoch, max(seqs, default=0)


def forged(
    origin: str, epoch: str, seq: int, *, signer: Ed25519PrivateKey, sku: str = "SKU-00001"
) -> list[Any]:
    event = EventRow(
        origin=origin,
        epoch=epoch,
        seq=seq,
        sku=sku,
        kind="change",
        delta=-30,
        cause="forged",
        at=time.time(),
    )
    event.proof = trust.sign_event(signer, event)
    return event_to_wire(event)


def test_a_member_cannot_forge_events_of_another_origin(live: Live, trio: Cluster) -> None:
    a, b, c = trio.shops
    before = snapshot(live, trio.shops)
    epoch, seq = stream(live, a, c)
    events = [forged(c.domain, epoch, seq + n, signer=key_of(b)) for n in (1, 2, 3)]
    status, answer, _ = post_signed(key_of(b), a, "/peer/events", {"events": events})
    assert (status, answer["error"]) == (403, "events_refused")
    assert f"not signed by {c.domain}" in answer["message"]
    assert snapshot(live, trio.shops) == before


def test_a_member_cannot_write_into_the_receivers_own_stream(live: Live, trio: Cluster) -> None:
    a, b, _ = trio.shops
    epoch, seq = stream(live, a, a)
    was = run(live, a.pools())["SKU-00002"]
    for signer in (key_of(b), key_of(a)):  # forged by b; and even with a real signature of a
        event = forged(a.domain, epoch, seq + 5, signer=signer)
        status, answer, _ = post_signed(key_of(b), a, "/peer/events", {"events": [event]})
        assert (status, answer["error"]) == (403, "events_refused")
        assert "own stream" in answer["message"] or "not signed" in answer["message"]
    # a's own sales keep flowing: the next seq is free, nothing collides
    assert run(live, a.buy("SKU-00002", 2))
    counts = run(live, trio.converged())
    assert counts["SKU-00002"] == was - 2  # reached b and c, counted once
    status = run(live, a.get("/api/status"))
    entries = run(live, a.get("/api/log?kind=write_failed&limit=10"))["entries"]
    assert entries == [] and status["stats"]["events"] >= 1


def test_a_member_cannot_introduce_a_key_it_did_not_admit(live: Live, trio: Cluster) -> None:
    a, b, c = trio.shops
    before = snapshot(live, trio.shops)
    stranger = Ed25519PrivateKey.generate()
    public, url, now = public_key_b64(stranger), "http://127.0.0.1:9", time.time()
    member = {
        "domain": "stranger.example.com",
        "agent_url": url,
        "public_key": public,
        "state": "active",
        "changed_at": now,
        "proof": trust.sign(
            stranger,
            trust.statement_message("stranger.example.com", url, public, "active", now),
        ),
        # "admitted by c", but signed by b
        "admission": {
            "by": c.domain,
            "at": now,
            "url": url,
            "signature": trust.sign(
                key_of(b),
                trust.admission_message("stranger.example.com", url, public, now, c.domain),
            ),
        },
    }
    for record in (member, {k: v for k, v in member.items() if k != "admission"}):
        status, answer, _ = post_signed(key_of(b), a, "/peer/introduce", {"member": record})
        assert (status, answer["error"]) == (403, "not_admitted")
    status, answer, _ = post_signed(stranger, a, "/peer/snapshot", {})
    assert status == 401 and answer["error"] == "unknown_key"
    assert snapshot(live, trio.shops) == before


def test_a_member_cannot_rekey_move_or_retire_another(live: Live, trio: Cluster) -> None:
    a, b, c = trio.shops
    before = snapshot(live, trio.shops)
    mine = Ed25519PrivateKey.generate()
    later = time.time() + 250  # in the future, within the allowed skew
    attempts = []
    for public, state, url, signer in (
        (public_key_b64(mine), "active", c.agent_url, mine),  # re-keyed to the attacker's key
        (public_key_b64(key_of(c)), "left", c.agent_url, key_of(b)),  # c "left"
        (public_key_b64(key_of(c)), "active", "http://127.0.0.1:9", key_of(b)),  # moved
    ):
        proof = trust.sign(signer, trust.statement_message(c.domain, url, public, state, later))
        attempts.append(
            {
                "domain": c.domain,
                "agent_url": url,
                "public_key": public,
                "state": state,
                "changed_at": later,
                "proof": proof,
            }
        )
    for record in attempts:
        status, answer, _ = post_signed(key_of(b), a, "/peer/introduce", {"member": record})
        assert status == 403, answer
        status, answer, _ = post_signed(key_of(b), a, "/peer/state", {"member": record})
        assert (status, answer["error"]) == (403, "not_own_record")
    assert snapshot(live, trio.shops) == before
    was = run(live, a.pools())["SKU-00003"]
    assert run(live, c.buy("SKU-00003", 1))  # the real c still syncs
    assert run(live, trio.converged())["SKU-00003"] == was - 1


def test_invented_origins_and_oversized_fields_are_refused(live: Live, trio: Cluster) -> None:
    a, b, _ = trio.shops
    before = snapshot(live, trio.shops)
    long_sku = [forged(f"o{n}.invented.example", "e", 1, signer=key_of(b)) for n in range(50)]
    for event in long_sku:
        event[3] = "S" * 2048
    status, answer, _ = post_signed(key_of(b), a, "/peer/events", {"events": long_sku})
    assert (status, answer["error"]) == (400, "bad_request") and "sku" in answer["message"]
    invented = [
        forged(f"o{n}.invented.example", f"{n:08x}", 1, signer=key_of(b)) for n in range(5000)
    ]
    status, answer, _ = post_signed(key_of(b), a, "/peer/events", {"events": invented})
    assert (status, answer["error"]) == (403, "events_refused")
    assert "is not a member" in answer["message"]
    assert snapshot(live, trio.shops) == before  # the vector did not grow by one entry
    started = time.monotonic()
    status, _, _ = post_signed(key_of(b), a, "/peer/pull", {"have": []})
    assert status == 200 and time.monotonic() - started < 2.0


def test_a_request_signed_for_one_agent_is_refused_by_another(live: Live, trio: Cluster) -> None:
    a, b, c = trio.shops
    _, _, (raw, headers) = post_signed(key_of(b), a, "/peer/pull", {"have": []})
    status, answer = send(c, "/peer/pull", raw, headers)  # the same bytes, to c
    assert (status, answer["error"]) == (401, "wrong_audience")
    status, answer = send(a, "/peer/pull", raw, headers)  # and to a again
    assert (status, answer["error"]) == (401, "replayed_nonce")


def test_oversized_unsigned_bodies_are_refused_before_they_are_read(
    live: Live, trio: Cluster
) -> None:
    a = trio.shops[0]
    pid = a.shop.agent.proc.pid  # type: ignore[union-attr]
    before = _rss_mb(pid)
    body = b"x" * (15 * 1024**2)

    async def flood() -> list[int]:
        async with aiohttp.ClientSession() as http:

            async def one(path: str) -> int:
                try:
                    async with http.post(a.agent_url + path, data=io.BytesIO(body)) as resp:
                        return resp.status
                except aiohttp.ClientError:  # the agent may close before the upload ends
                    return 0

            paths = ["/peer/events", "/peer/join", "/peer/pull", "/peer/welcome"] * 10
            return await asyncio.gather(*(one(p) for p in paths))

    statuses = run(live, flood())
    assert set(statuses) <= {401, 413, 0} and statuses.count(0) < len(statuses)
    assert _rss_mb(pid) - before < 100, (before, _rss_mb(pid))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_deep_json_from_a_member_or_a_joiner_is_a_400(live: Live, trio: Cluster) -> None:
    a, b, _ = trio.shops
    deep = b"[" * 100_000 + b"]" * 100_000
    status, answer, _ = post_signed(key_of(b), a, "/peer/events", deep)
    assert (status, answer["error"]) == (400, "bad_json") and "nested" in answer["message"]
    nested = b'{"domain": "x.example.com", "public_key": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    stranger = Ed25519PrivateKey.generate()
    status, answer, _ = post_signed(stranger, a, "/peer/join", nested)
    assert status in (400, 401) and set(answer) == {"error", "message"}


Handler = Callable[[web.Request], Awaitable[web.Response]]


class FakeAgent:
    """An attacker's HTTP server on loopback answering some /peer paths as it likes."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.runner: web.AppRunner | None = None

    async def serve(self, routes: dict[str, Handler]) -> None:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_post(path, handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class LyingMember(FakeAgent):
    """A compromised member's agent at its own URL: every pull answer says it folded (compacted)
    more of its own stream than any member holds, to make the puller re-import the group's
    counts from its snapshot."""

    def __init__(self, port: int, vector: list[Any], folded: list[Any]) -> None:
        super().__init__(port)
        self.vector, self.folded = vector, folded
        self.pulls = 0

    async def start(self) -> None:
        async def pull(request: web.Request) -> web.Response:
            self.pulls += 1
            answer = {"events": [], "more": False, "vector": self.vector, "folded": self.folded}
            return web.json_response(answer)

        async def push(request: web.Request) -> web.Response:
            return web.json_response({"vector": self.vector})

        await self.serve({"/peer/pull": pull, "/peer/events": push})


def test_one_members_claim_of_folded_history_does_not_make_another_re_import(
    live: Live, trio: Cluster
) -> None:
    a, b, c = trio.shops
    before = snapshot(live, [a, b])
    epoch, seq = stream(live, a, c)
    status = run(live, c.get("/api/status"))
    vector = [[v["origin"], v["epoch"], v["seq"]] for v in status["vector"]]
    claim = [[c.domain, epoch, seq + 50]]
    vector = [v for v in vector if (v[0], v[1]) != (c.domain, epoch)] + claim
    run(live, c.stop_agent())
    liar = LyingMember(int(c.agent_url.rsplit(":", 1)[1]), vector, claim)
    run(live, liar.start())
    try:

        async def disputed() -> bool:
            entries = (await a.get("/api/log?kind=fold_disputed&limit=10"))["entries"]
            return any(e["peer"] == c.domain for e in entries)

        run(live, trio.until(disputed, timeout=60, what="a's fold_disputed entry"))
        entry = run(live, a.get("/api/log?kind=fold_disputed&limit=10"))["entries"][0]
        assert f"up to #{seq + 50}" in entry["message"] and "no other member" in entry["message"]
        assert liar.pulls >= 1
        run(live, asyncio.sleep(2.0))  # pulls go on: still no re-import
        for shop in (a, b):
            kinds = run(live, shop.get("/api/log?kind=history_folded&limit=10"))["entries"]
            assert kinds == [], kinds
        assert snapshot(live, [a, b]) == before
    finally:
        run(live, liar.stop())
        run(live, c.start_agent())
    run(live, trio.wait_idle())


# -- joins -------------------------------------------------------------------------------------


class Impostor(FakeAgent):
    """An outsider's agent: its own key and URL, claiming another shop's domain; it answers
    the master's welcome as an attacker would, without the key that asked to join."""

    def __init__(self) -> None:
        super().__init__(free_port())
        self.key = Ed25519PrivateKey.generate()
        self.url = f"http://127.0.0.1:{self.port}"
        self.welcomed = 0

    async def start(self, domain: str) -> None:
        async def welcome(request: web.Request) -> web.Response:
            self.welcomed += 1
            return web.json_response({"confirmed": True, "domain": domain})

        await self.serve({"/peer/welcome": welcome})


@pytest.fixture(scope="module")
def pair(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master and a shop that has not joined yet."""

    async def up() -> Cluster:
        cluster = Cluster(tmp_path_factory.mktemp("joins"), 2, skus=3)
        return await cluster.__aenter__()

    cluster = live.run(up(), timeout=180)
    try:
        yield cluster
    finally:
        live.run(cluster.__aexit__(None, None, None))


def join_body(key: Ed25519PrivateKey, domain: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "domain": domain,
        "agent_url": url,
        "public_key": public_key_b64(key),
        "fingerprint": key_id(key),
        "nonce": "n" * 24,
        **extra,
    }


def test_a_join_cannot_be_taken_over_by_an_impostor(live: Live, pair: Cluster) -> None:
    master, joiner = pair.shops
    impostor = Impostor()
    run(live, impostor.start(joiner.domain))
    try:
        run(live, joiner.post("/api/join", {"target": master.agent_url}))
        real = run(live, joiner.get("/api/status"))["fingerprint"]
        body = join_body(impostor.key, joiner.domain, impostor.url)
        status, answer, _ = post_signed(impostor.key, master, "/peer/join", body)
        assert status == 202, answer
        pending = run(live, master.get("/api/requests"))["requests"]
        assert sorted(r["fingerprint"] for r in pending) == sorted([real, key_id(impostor.key)])
        assert {r["domain"] for r in pending} == {joiner.domain}
        assert {r["claims"] for r in pending} == {2}
        listing = cli("requests", data_dir=master.data_dir)
        assert real in listing.stdout and key_id(impostor.key) in listing.stdout
        assert f"several requests claim {joiner.domain}" in listing.stdout
        refused = cli("accept", joiner.domain, data_dir=master.data_dir)
        assert refused.returncode == 1 and "--fingerprint" in refused.stderr, refused
        path = f"/api/requests/{joiner.domain}/accept"
        status, answer = run(live, master.api("POST", path, {}))
        assert (status, answer["error"]) == (409, "ambiguous_request")
        assert "--fingerprint" in answer["message"]
        # the owner picks the impostor by mistake: its unsigned answer is not a confirmation
        status, answer = run(live, master.api("POST", path, {"fingerprint": key_id(impostor.key)}))
        assert (status, answer["error"]) == (502, "not_confirmed") and impostor.welcomed == 1
        assert run(live, master.get("/api/peers"))["peers"] == []
        # the real one, by its fingerprint, as the owner would
        accepted = cli("accept", joiner.domain, "--fingerprint", real, data_dir=master.data_dir)
        assert accepted.returncode == 0 and real in accepted.stdout, accepted
        run(live, pair.until(lambda: _imported(joiner), what="import"))
        peers = run(live, master.get("/api/peers"))["peers"]
        assert [(p["domain"], p["fingerprint"]) for p in peers] == [(joiner.domain, real)]
        left = run(live, master.get("/api/requests"))["requests"]
        assert [r["fingerprint"] for r in left] == [key_id(impostor.key)]
        reject = f"/api/requests/{joiner.domain}/reject"
        status, answer = run(
            live, master.api("POST", reject, {"fingerprint": key_id(impostor.key)})
        )
        assert status == 200 and answer["fingerprints"] == [key_id(impostor.key)]
    finally:
        run(live, impostor.stop())


async def _imported(shop: ShopHandle) -> bool:
    status = await shop.get("/api/status")
    return status.get("import", {}).get("state") == "done"


def test_join_requests_are_bounded_and_validated(live: Live, pair: Cluster) -> None:
    master = pair.shops[0]
    before = {r["fingerprint"] for r in run(live, master.get("/api/requests"))["requests"]}
    spammer = Ed25519PrivateKey.generate()
    for bad_domain, error in (("[/]crash.example.com", 400), ("x" * 300 + ".example.com", 400)):
        body = join_body(spammer, bad_domain, "http://127.0.0.1:9")
        status, answer, _ = post_signed(spammer, master, "/peer/join", body)
        assert status == error and "domain" in answer["message"], answer
    huge = join_body(spammer, "a" * (1024**2), "http://127.0.0.1:9")
    status, answer, _ = post_signed(spammer, master, "/peer/join", huge)
    assert (status, answer["error"]) == (413, "body_too_large")
    statuses = []
    for n in range(12):  # one key asking again and again, for ever other domains
        body = join_body(spammer, f"spam{n}.example.com", "http://127.0.0.1:9")
        statuses.append(post_signed(spammer, master, "/peer/join", body)[0])
    assert 429 in statuses and statuses.count(202) <= 10
    pending = run(live, master.get("/api/requests"))["requests"]
    mine = [r for r in pending if r["fingerprint"] == key_id(spammer)]
    assert len(mine) == 1  # a key has one request at a time: its latest
    assert {r["fingerprint"] for r in pending} - {key_id(spammer)} == before
