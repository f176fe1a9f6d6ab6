"""Fuzzing a live agent: schemathesis on `/api` and `/peer` from the OpenAPI document, and
random bodies and signatures on `/webhooks/{channel}` (issue 6 part 5).

The agents are real processes (`tests.support.cluster.Cluster`), run from an event loop in a
background thread, because schemathesis calls them synchronously (requests) from the tests.
"""

from __future__ import annotations

import base64
import json
import os
import random
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi import checks as oas

from agent import peer_service
from agent.signing import fingerprint, load_private_key, public_key_b64, sign_request
from agent.web import api
from agent.web.openapi import DOCUMENT
from plugins.pisell import wire as pisell_wire
from plugins.shopify.webhooks import signature as shopify_signature
from tests.support.cluster import Cluster, ShopHandle
from tests.support.live import Live

T = TypeVar("T")

SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
SCHEMA.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    with_security_parameters=False,  # the admin token is added to every call below
)
# SHOPSYNC_FUZZ_EXAMPLES=500 (and SHOPSYNC_FUZZ_RANDOM=1 for new cases) for a longer run by hand.
FUZZ = settings(
    max_examples=int(os.environ.get("SHOPSYNC_FUZZ_EXAMPLES", "25")),
    deadline=None,
    # the same cases every run, so a CI failure replays locally
    derandomize=not os.environ.get("SHOPSYNC_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=list(HealthCheck),
)
CONFORMANCE = [
    not_a_server_error,
    oas.status_code_conformance,
    oas.content_type_conformance,
    oas.response_headers_conformance,
    oas.response_schema_conformance,
]
# Leaving the group would end the fixture's group: tested once, last, in its own test.
ADMIN = SCHEMA.include(path_regex="^/api/").exclude(path="/api/leave")
PEER = SCHEMA.include(path_regex="^/peer/")


# The members' database, as a parameter: it also gives each operation's schemathesis test its
# own node id (`…[GET /api/status][sqlite]`). Without one, pytest 9.2 names them all after the
# function, and xdist, which hands tests out by node id, would run one per function.
@pytest.fixture(scope="module", params=["sqlite"])
def pair(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ShopHandle]]:
    """Two agents in one group (b joined a): a member's API answers everything but leave."""

    async def up() -> Cluster:
        cluster = Cluster(tmp_path_factory.mktemp("fuzz"), 2, skus=5)
        await cluster.__aenter__()
        a, b = cluster.shops
        await cluster.join(b, a)
        await cluster.wait_idle()
        return cluster

    cluster = live.run(up())
    try:
        yield cluster.shops
    finally:
        live.run(cluster.__aexit__(None, None, None))


def _auth(shop: ShopHandle) -> dict[str, str]:
    return {"Authorization": f"Bearer {shop.shop.token}"}


def test_every_api_and_peer_route_is_documented() -> None:
    routes = {
        f"{route.method} /api{route.resource.canonical}"  # type: ignore[union-attr]
        for route in api.create_api_app(None).router.routes()  # type: ignore[arg-type]
        if route.method != "HEAD"
    } | {f"POST /peer/{name}" for name in peer_service.ROUTES}
    documented = {
        f"{method.upper()} {path}"
        for path, ops in DOCUMENT["paths"].items()
        for method in ops
        if path.startswith(("/api/", "/peer/"))
    }
    assert routes == documented


def test_the_document_is_served_with_the_admin_token(live: Live, pair: list[ShopHandle]) -> None:
    url = pair[0].agent_url + "/api/openapi.json"
    assert live.http.get(url).status_code == 401
    answer = live.http.get(url, headers=_auth(pair[0]))
    assert answer.status_code == 200 and answer.json() == DOCUMENT


@ADMIN.parametrize()
@FUZZ
def test_admin_api_never_fails_and_answers_as_documented(
    case: schemathesis.Case, live: Live, pair: list[ShopHandle]
) -> None:
    shop = pair[0]
    case.call_and_validate(
        base_url=shop.agent_url,
        session=live.http,
        headers=_auth(shop),
        checks=[*CONFORMANCE, oas.negative_data_rejection, oas.ignored_auth],
        timeout=30,
    )


@PEER.parametrize()
@FUZZ
def test_unsigned_peer_requests_are_refused_with_a_json_error(
    case: schemathesis.Case, live: Live, pair: list[ShopHandle]
) -> None:
    response = case.call_and_validate(
        base_url=pair[0].agent_url, session=live.http, checks=CONFORMANCE, timeout=30
    )
    assert response.status_code in (401, 403), response.text
    assert set(response.json()) == {"error", "message"}


_B64 = st.binary(min_size=0, max_size=80).map(lambda b: base64.b64encode(b).decode())
_TOKEN = st.text(string.ascii_letters + string.digits + "+/=:;,\"'() -_.", max_size=60).map(
    lambda s: s.strip() or "x"  # a header value cannot start or end with a space
)


@st.composite
def _signature_headers(draw: st.DrawFn) -> dict[str, str]:
    """Headers shaped like a real signature (RFC 9421), with every part possibly wrong."""
    components = draw(
        st.lists(st.sampled_from(['"@method"', '"@path"', '"@query"', '"content-digest"']))
    )
    params = {
        "created": draw(st.one_of(st.integers(-(2**70), 2**70).map(str), _TOKEN)),
        "nonce": '"' + draw(_TOKEN) + '"',
        "keyid": '"SHA256:' + draw(_B64) + '"',
        "alg": draw(st.sampled_from(['"ed25519"', '"rsa"', "ed25519", '""'])),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(params)), unique=True))
    label = draw(st.sampled_from(["sig1", "sig2", ""]))
    sig_input = f"{label}=({' '.join(components)})" + "".join(f";{k}={params[k]}" for k in chosen)
    return {
        "Signature-Input": draw(st.one_of(st.just(sig_input), _TOKEN)),
        "Signature": draw(st.sampled_from(["sig1", "sig2", ""])) + "=:" + draw(_B64) + ":",
        "Content-Digest": draw(st.sampled_from(["sha-256", "sha-512", "md5"]))
        + "=:"
        + draw(_B64)
        + ":",
    }


@given(
    path=st.sampled_from(sorted(peer_service.ROUTES)),
    headers=_signature_headers(),
    body=st.one_of(st.binary(max_size=200), st.just(b'{"events": []}')),
)
@FUZZ
def test_forged_signature_headers_are_refused_with_a_json_error(
    live: Live, pair: list[ShopHandle], path: str, headers: dict[str, str], body: bytes
) -> None:
    response = live.http.post(
        f"{pair[0].agent_url}/peer/{path}", data=body, headers=headers, timeout=30
    )
    assert response.status_code in (401, 403), response.text
    assert set(response.json()) == {"error", "message"}


# /peer/state could mark the signer left or paused, which would end the fixture's group.
SIGNED = SCHEMA.include(path_regex="^/peer/").exclude(path="/peer/state")


@SIGNED.parametrize()
@FUZZ
def test_signed_garbage_from_a_member_gets_a_json_answer_never_a_server_error(
    case: schemathesis.Case, live: Live, pair: list[ShopHandle]
) -> None:
    a, b = pair
    key = load_private_key(b.data_dir / "agent.key")
    if case.body is NOT_SET:
        raw = b""
    elif isinstance(case.body, bytes):
        raw = case.body
    else:
        raw = json.dumps(case.body).encode()
    path = case.formatted_path
    headers = _signed_now(key, path, raw, to=a)
    response = live.http.post(
        a.agent_url + path,
        data=raw,
        headers={**headers, "Content-Type": "application/json"},
        timeout=30,
    )
    case.validate_response(response, checks=CONFORMANCE)
    assert response.status_code < 500 or response.json()["error"] == "importing", response.text


def _signed_now(key: Any, path: str, raw: bytes, *, to: ShopHandle) -> dict[str, str]:
    """Signature headers of a POST to `path` at shop `to` by the holder of `key`, dated now."""
    return sign_request(
        "POST",
        path,
        raw,
        private_key=key,
        key_id=fingerprint(public_key_b64(key)),
        audience=_key_id(to),
        created=int(time.time()),
    )


_KEY_IDS: dict[str, str] = {}


def _key_id(shop: ShopHandle) -> str:
    """The key id of a shop's agent (the audience of a request to it), from its key file."""
    if shop.domain not in _KEY_IDS:
        key = load_private_key(shop.data_dir / "agent.key")
        _KEY_IDS[shop.domain] = fingerprint(public_key_b64(key))
    return _KEY_IDS[shop.domain]


#: JSON nested 100,000 deep: the interpreter's parser gives up (RecursionError) long before.
DEEP = b"[" * 100_000 + b"]" * 100_000


def test_deep_json_on_every_admin_path_is_a_400_or_ignored_never_a_server_error(
    live: Live, pair: list[ShopHandle]
) -> None:
    a = pair[0]
    headers = {**_auth(a), "Content-Type": "application/json"}
    tried = 0
    for path, operations in sorted(DOCUMENT["paths"].items()):  # pause comes before resume
        if not path.startswith("/api/") or path == "/api/leave":  # leave ends the group
            continue
        url = a.agent_url + path.replace("{domain}", "nobody.example.com")
        for method, operation in operations.items():
            answer = live.http.request(method, url, data=DEEP, headers=headers, timeout=30)
            tried += 1
            if "requestBody" in operation:  # it reads its body: the depth is refused
                assert answer.status_code == 400, (method, path, answer.text)
                assert answer.json() == {
                    "error": "bad_json",
                    "message": "JSON nested deeper than 64 levels",
                }
            else:  # a body it never reads changes nothing
                assert answer.status_code < 500, (method, path, answer.text)
    assert tried > 15, tried  # the document lists them all (the loop filtered none out)
    assert live.run(a.get("/api/status"))["paused"] is False


def test_out_of_range_numbers_are_a_400_not_a_server_error(
    live: Live, pair: list[ShopHandle]
) -> None:
    a, b = pair
    answer = live.http.get(f"{a.agent_url}/api/log?before_id={10**30}", headers=_auth(a))
    assert answer.status_code == 400 and answer.json()["error"] == "bad_parameter"
    key = load_private_key(b.data_dir / "agent.key")
    event = ["x.example.com", "e1", 2**70, "SKU-00001", "change", 1, None, None, "", 0, ""]
    for path, body in (
        ("/peer/events", {"events": [event]}),
        ("/peer/state", {"state": "active", "changed_at": 2**2000}),
        ("/peer/pull", []),
    ):
        raw = json.dumps(body).encode()
        headers = _signed_now(key, path, raw, to=a)
        answer = live.http.post(a.agent_url + path, data=raw, headers=headers, timeout=30)
        assert answer.status_code == 400, (path, answer.text)
        assert set(answer.json()) == {"error", "message"}


WEBHOOK_HEADERS = {
    "shopify": ["X-Shopify-Hmac-Sha256", "X-Shopify-Topic", "X-Shopify-Webhook-Id"],
    "shopline": ["X-Shopline-Hmac-Sha256", "X-Shopline-Topic", "X-Shopline-Webhook-Id"],
    "pisell": ["X-Pisell-Signature", "X-Pisell-Timestamp", "X-Pisell-Topic", "X-Pisell-Event-Id"],
}
PRINTABLE = string.ascii_letters + string.digits + string.punctuation


def _signed(channel: str, body: bytes) -> dict[str, str]:
    """Headers of a delivery of `body`, signed with the emulators' webhook secret."""
    if channel == "pisell":
        return pisell_wire.webhook_headers(
            secret="emulator-secret",
            topic=pisell_wire.TOPIC_INVENTORY_LEVEL_UPDATED,
            event_id="deep-1",
            body=body,
            now=time.time(),
        )
    name = channel.capitalize()  # SHOPLINE takes Shopify's base64 form of the same HMAC
    return {
        f"X-{name}-Hmac-Sha256": shopify_signature("emulator-secret", body),
        f"X-{name}-Topic": "inventory_levels/update",
    }


def _random_webhook(rng: random.Random, channel: str) -> tuple[str, bytes, dict[str, str]]:
    """A delivery with a random body and random (never the right) signature headers."""
    kind = rng.randrange(4)
    if kind == 0:
        body = rng.randbytes(rng.randrange(300))
    elif kind == 1:
        body = b""
    else:  # shaped like a real inventory payload, so only the signature stands in the way
        body = json.dumps(
            {
                "inventory_item_id": rng.randrange(1, 10**6),
                "available": rng.randrange(-5, 500),
                "sku": f"SKU-{rng.randrange(1, 6):05d}",
            }
        ).encode()
    headers = {}
    for name in WEBHOOK_HEADERS[channel]:
        if rng.random() < 0.8:
            headers[name] = rng.choice(
                [
                    base64.b64encode(rng.randbytes(32)).decode(),
                    rng.randbytes(32).hex(),
                    str(int(time.time())),
                    "inventory_levels/update",
                    "".join(rng.choices(PRINTABLE, k=rng.randrange(1, 200))),
                ]
            )
    path = channel if rng.random() < 0.85 else rng.choice(["shopifyx", "x", "pisel", "SHOPIFY"])
    return path, body, headers


@pytest.mark.parametrize("channel", ["shopify", "shopline", "pisell"])
def test_webhooks_with_random_bodies_and_signatures_are_refused_and_change_nothing(
    live: Live, tmp_path: Path, channel: str
) -> None:
    seed = int(os.environ.get("SHOPSYNC_FUZZ_SEED") or random.randrange(2**32))
    rng = random.Random(seed)  # printed in every assertion: replay with SHOPSYNC_FUZZ_SEED

    async def up() -> Cluster:
        cluster = Cluster(tmp_path, 1, skus=5, channel=channel)
        await cluster.__aenter__()
        return cluster

    cluster = live.run(up())
    try:
        shop = cluster.shops[0]
        before = live.run(shop.get("/api/status"))["events"]
        last = live.run(shop.get("/api/log?limit=1"))["entries"][0]["id"]
        for _ in range(300):
            path, body, headers = _random_webhook(rng, channel)
            answer = live.http.post(
                f"{shop.agent_url}/webhooks/{path}", data=body, headers=headers, timeout=30
            )
            expected = 401 if path == channel else 404
            assert answer.status_code == expected, (seed, path, headers, body, answer.text)
            assert set(answer.json()) == {"error", "message"}, seed
        for deep in (DEEP, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):  # signed, too deep
            answer = live.http.post(
                f"{shop.agent_url}/webhooks/{channel}",
                data=deep,
                headers=_signed(channel, deep),
                timeout=30,
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"] == "malformed", answer.text
        live.run(cluster.wait_idle(quiet=0.5))
        assert live.run(shop.get("/api/status"))["events"] == before, seed
        entries = live.run(shop.get(f"/api/log?after_id={last}"))["entries"]
        assert [e for e in entries if e["sku"] or e["delta"]] == [], seed
        if channel == "shopify":  # the control: the same endpoint takes a signed delivery
            body = b"{}"
            good = {
                "X-Shopify-Hmac-Sha256": shopify_signature("emulator-secret", body),
                "X-Shopify-Topic": "shop/update",
            }
            answer = live.http.post(f"{shop.agent_url}/webhooks/shopify", data=body, headers=good)
            assert answer.status_code == 200, answer.text
    finally:
        live.run(cluster.__aexit__(None, None, None))


JOIN = SCHEMA.include(path="/peer/join")


@JOIN.parametrize()
@FUZZ
def test_self_signed_join_requests_of_any_shape_get_a_json_answer(
    case: schemathesis.Case, live: Live, pair: list[ShopHandle]
) -> None:
    """Join requests an outsider may send: signed by a fresh key that is also put in the body
    (so they pass the door), every field otherwise as the fuzzer makes it."""
    a = pair[0]
    stranger = Ed25519PrivateKey.generate()
    body = case.body if isinstance(case.body, dict) else {}
    raw = json.dumps({**body, "public_key": public_key_b64(stranger)}).encode()
    headers = sign_request(
        "POST",
        "/peer/join",
        raw,
        private_key=stranger,
        key_id=fingerprint(public_key_b64(stranger)),
        audience=_key_id(a),
        created=int(time.time()),
    )
    answer = live.http.post(a.agent_url + "/peer/join", data=raw, headers=headers, timeout=30)
    assert answer.status_code in (202, 400, 409, 429), answer.text
    assert answer.status_code == 202 or set(answer.json()) == {"error", "message"}


@pytest.mark.parametrize("name", sorted(peer_service.ROUTES))
def test_deep_json_on_every_peer_path_is_a_400(
    live: Live, pair: list[ShopHandle], name: str
) -> None:
    a, b = pair
    path = f"/peer/{name}"
    deep = b'{"x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    key = load_private_key(b.data_dir / "agent.key")
    answer = live.http.post(
        a.agent_url + path, data=deep, headers=_signed_now(key, path, deep, to=a), timeout=30
    )
    if name in ("join", "welcome"):  # open paths: the body is the door's business first
        assert answer.status_code in (400, 401, 413), answer.text
    else:
        assert answer.status_code == 400 and answer.json()["error"] == "bad_json", answer.text
    assert set(answer.json()) == {"error", "message"}


def test_leave_is_answered_once_then_409(live: Live, pair: list[ShopHandle]) -> None:
    """Last: leaving ends the fixture's group (the fuzz above never sends it)."""
    a = pair[0]
    case = SCHEMA["/api/leave"]["POST"].Case()
    first = case.call_and_validate(
        base_url=a.agent_url, session=live.http, headers=_auth(a), checks=CONFORMANCE
    )
    assert first.status_code == 200 and first.json()["left"] is True
    again = case.call_and_validate(
        base_url=a.agent_url, session=live.http, headers=_auth(a), checks=CONFORMANCE
    )
    assert again.status_code == 409 and again.json()["error"] == "not_in_group"
