"""Tests for agent identity keys, signed peer requests and the peer auth middleware."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.signing import (
    MemoryNonceCache,
    SignatureError,
    SigningError,
    fingerprint,
    generate_keypair,
    load_private_key,
    load_public_key_b64,
    public_key_b64,
    save_private_key,
    sign_request,
    verify_request,
)
from agent.web.peer_auth import PEER_KEY, peer_auth_middleware, signed_request
from tests.support.clock import StillClock

NOW = 1_700_000_000
# Fixed keys keep failures reproducible.
ALICE = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
MALLORY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
ALICE_ID = fingerprint(public_key_b64(ALICE))
BODY = b'{"events":[{"sku":"A-1","delta":-1}]}'
TARGET = "/peer/events?since=4&origin=dk.example.com"
# the receiving agent's key id: every request is signed for one agent only
ME = "SHA256:receiving-agent"


class FakeClock(StillClock):
    """A clock that stands still unless a test moves it, at NOW by default."""

    def __init__(self, now: float = NOW) -> None:
        super().__init__(now)


def keys(**known: Ed25519PrivateKey) -> Callable[[str], Ed25519PublicKey | None]:
    """resolve_key over {key_id: private key}; defaults to ALICE under ALICE_ID."""
    table = {k: v.public_key() for k, v in (known or {ALICE_ID: ALICE}).items()}
    return table.get


def sign(
    method: str = "POST",
    target: str = TARGET,
    body: bytes = BODY,
    *,
    key: Ed25519PrivateKey = ALICE,
    key_id: str = ALICE_ID,
    created: int = NOW,
    nonce: str | None = None,
    audience: str = ME,
) -> dict[str, str]:
    return sign_request(
        method,
        target,
        body,
        private_key=key,
        key_id=key_id,
        audience=audience,
        created=created,
        nonce=nonce,
    )


def verify(
    headers: dict[str, str],
    method: str = "POST",
    target: str = TARGET,
    body: bytes = BODY,
    *,
    now: float = NOW,
    nonces: MemoryNonceCache | None = None,
    resolve_key: Callable[[str], Ed25519PublicKey | None] | None = None,
    audience: str = ME,
    not_before: float = 0.0,
) -> Any:
    return verify_request(
        method,
        target,
        headers,
        body,
        resolve_key=resolve_key or keys(),
        now=now,
        nonces=nonces if nonces is not None else MemoryNonceCache(FakeClock()),
        audience=audience,
        not_before=not_before,
    )


def refused(reason: str, fn: Callable[[], object], status: int = 401) -> None:
    with pytest.raises(SignatureError) as info:
        fn()
    assert (info.value.status, info.value.reason) == (status, reason), info.value


# --- signing and verifying --------------------------------------------------------------


def test_signed_request_verifies_and_names_its_signer() -> None:
    verified = verify(sign(nonce="n-1"))
    assert (verified.key_id, verified.created, verified.nonce) == (ALICE_ID, NOW, "n-1")


def test_empty_body_is_digested_and_verifies() -> None:
    headers = sign("GET", "/peer/vector", b"")
    empty_sha = base64.b64encode(hashlib.sha256(b"").digest()).decode()
    assert headers["Content-Digest"] == f"sha-256=:{empty_sha}:"
    assert verify(headers, "GET", "/peer/vector", b"").key_id == ALICE_ID


def test_signature_is_over_the_rfc9421_signature_base() -> None:
    headers = sign("POST", "/peer/join", b"{}", nonce="abc")
    params = '("@method" "@path" "@query" "content-digest" "shopsync-audience")'
    params += f';created={NOW};nonce="abc";keyid="{ALICE_ID}";alg="ed25519"'
    assert headers["Signature-Input"] == f"sig1={params}"
    assert headers["Shopsync-Audience"] == ME
    base = "\n".join(
        [
            '"@method": POST',
            '"@path": /peer/join',
            '"@query": ?',
            f'"content-digest": {headers["Content-Digest"]}',
            f'"shopsync-audience": {ME}',
            f'"@signature-params": {params}',
        ]
    )
    signature = base64.b64decode(headers["Signature"].removeprefix("sig1=:").removesuffix(":"))
    ALICE.public_key().verify(signature, base.encode())  # raises if the base differs


def test_generated_nonces_are_128_bit_and_unique() -> None:
    nonces = {verify(sign()).nonce for _ in range(20)}
    assert len(nonces) == 20
    assert all(len(base64.urlsafe_b64decode(n + "==")) == 16 for n in nonces)


def test_tampered_body_is_refused_as_digest_mismatch() -> None:
    headers = sign()
    refused("digest_mismatch", lambda: verify(headers, body=BODY.replace(b"-1}", b"-9}")))


def test_body_with_matching_forged_digest_is_refused_as_bad_signature() -> None:
    headers = sign()
    forged = b'{"events":[]}'
    headers["Content-Digest"] = sign(body=forged)["Content-Digest"]
    refused("bad_signature", lambda: verify(headers, body=forged))


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", "/peer/leave?since=4&origin=dk.example.com"),
        ("POST", "/peer/events?since=0&origin=dk.example.com"),
        ("POST", "/peer/events"),
        ("PUT", TARGET),
    ],
    ids=["path", "query", "query_dropped", "method"],
)
def test_tampered_method_path_or_query_is_refused(method: str, target: str) -> None:
    headers = sign()
    refused("bad_signature", lambda: verify(headers, method, target))


@pytest.mark.parametrize("offset", [-301, 301])
def test_created_more_than_300s_from_now_is_stale(offset: int) -> None:
    headers = sign(created=NOW + offset)
    refused("stale_timestamp", lambda: verify(headers, now=NOW))


@pytest.mark.parametrize("offset", [-300, -299, 299, 300])
def test_created_within_300s_of_now_is_accepted(offset: int) -> None:
    assert verify(sign(created=NOW + offset), now=NOW).created == NOW + offset


def test_replayed_nonce_is_refused_the_second_time() -> None:
    nonces = MemoryNonceCache(FakeClock())
    headers = sign()
    verify(headers, nonces=nonces)
    refused("replayed_nonce", lambda: verify(headers, nonces=nonces))


def test_same_nonce_under_another_key_is_not_a_replay() -> None:
    nonces = MemoryNonceCache(FakeClock())
    verify(sign(nonce="n"), nonces=nonces)
    mallory_id = fingerprint(public_key_b64(MALLORY))
    other = sign(key=MALLORY, key_id=mallory_id, nonce="n")
    assert verify(other, nonces=nonces, resolve_key=keys(**{mallory_id: MALLORY})).nonce == "n"


def test_failed_verification_does_not_burn_the_nonce() -> None:
    nonces = MemoryNonceCache(FakeClock())
    forged = sign(key=MALLORY, nonce="n")  # Mallory claims Alice's key id
    refused("bad_signature", lambda: verify(forged, nonces=nonces))
    assert verify(sign(nonce="n"), nonces=nonces).nonce == "n"


def test_a_request_signed_for_another_agent_is_refused() -> None:
    headers = sign(audience="SHA256:another-agent")
    refused("wrong_audience", lambda: verify(headers))


def test_a_changed_audience_header_breaks_the_signature() -> None:
    headers = sign(audience="SHA256:another-agent")
    headers["Shopsync-Audience"] = ME  # replayed here with the header rewritten
    refused("bad_signature", lambda: verify(headers))


def test_a_request_signed_before_the_receiver_started_is_refused() -> None:
    refused("stale_timestamp", lambda: verify(sign(created=NOW - 5), not_before=NOW - 1))
    assert verify(sign(created=NOW - 1), not_before=NOW - 1).key_id == ALICE_ID


def test_unknown_key_is_refused() -> None:
    headers = sign(key_id="SHA256:nobody")
    refused("unknown_key", lambda: verify(headers))


def test_other_key_signing_under_a_known_key_id_is_refused() -> None:
    headers = sign(key=MALLORY, key_id=ALICE_ID)
    refused("bad_signature", lambda: verify(headers))


def _signature_over(components: str, base_lines: list[str]) -> dict[str, str]:
    """Headers with a valid Alice signature over a hand-built (too small) component list."""
    params = f'({components});created={NOW};nonce="x";keyid="{ALICE_ID}";alg="ed25519"'
    base = "\n".join([*base_lines, f'"@signature-params": {params}']).encode()
    return {
        "Content-Digest": sign()["Content-Digest"],
        "Shopsync-Audience": ME,
        "Signature-Input": f"sig1={params}",
        "Signature": "sig1=:" + base64.b64encode(ALICE.sign(base)).decode() + ":",
    }


def test_valid_signature_not_covering_the_digest_is_refused() -> None:
    path, query = TARGET.split("?")
    headers = _signature_over(
        '"@method" "@path" "@query"',
        ['"@method": POST', f'"@path": {path}', f'"@query": ?{query}'],
    )
    refused("malformed_signature", lambda: verify(headers))


def _mangle(header: str, old: str, new: str) -> Callable[[dict[str, str]], None]:
    def apply(h: dict[str, str]) -> None:
        h[header] = h[header].replace(old, new)

    return apply


MALFORMED: dict[str, Callable[[dict[str, str]], None]] = {
    "no_signature": lambda h: h.pop("Signature"),
    "no_signature_input": lambda h: h.pop("Signature-Input"),
    "no_content_digest": lambda h: h.pop("Content-Digest"),
    "no_audience": lambda h: h.pop("Shopsync-Audience"),
    "audience_not_covered": _mangle("Signature-Input", ' "shopsync-audience"', ""),
    "garbage_input": lambda h: h.update({"Signature-Input": "garbage"}),
    "garbage_signature": lambda h: h.update({"Signature": "sig1=:not base64!:"}),
    "truncated_signature": lambda h: h.update({"Signature": "sig1=:AAAA:"}),
    "label_mismatch": _mangle("Signature", "sig1=", "sig2="),
    "two_signatures": lambda h: h.update({"Signature": h["Signature"] + ", " + h["Signature"]}),
    "wrong_alg": _mangle("Signature-Input", '"ed25519"', '"rsa-pss-sha512"'),
    "created_not_int": _mangle("Signature-Input", f"created={NOW}", 'created="now"'),
    "created_decimal": _mangle("Signature-Input", f"created={NOW}", f"created={NOW}.5"),
    "no_keyid": _mangle("Signature-Input", f';keyid="{ALICE_ID}"', ""),
    "duplicate_param": _mangle("Signature-Input", ";alg=", ';alg="ed25519";alg='),
    "extra_param": _mangle("Signature-Input", ";alg=", ";expires=1;alg="),
    "missing_component": _mangle("Signature-Input", ' "@query"', ""),
    "duplicated_component": _mangle("Signature-Input", '"@query"', '"@path"'),
    "unclosed_list": _mangle("Signature-Input", ");", ";"),
    "md5_digest": _mangle("Content-Digest", "sha-256", "md5"),
    "digest_bad_base64": lambda h: h.update({"Content-Digest": "sha-256=:%%%:"}),
    "non_ascii": _mangle("Signature-Input", "ed25519", "ed25519\u00e9"),
    "newline_in_digest": _mangle(
        "Content-Digest",
        ":",
        "\n:",
    ),
    "huge_header": lambda h: h.update({"Signature-Input": "a" * 10_000}),
}


@pytest.mark.parametrize("mangle", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_signature_headers_are_refused_with_401(
    mangle: Callable[[dict[str, str]], None],
) -> None:
    headers = sign()
    mangle(headers)
    with pytest.raises(SignatureError) as info:
        verify(headers)
    assert info.value.status == 401
    assert info.value.reason in {"missing_signature", "malformed_signature"}


def test_signature_headers_are_found_case_insensitively() -> None:
    headers = {k.lower(): v for k, v in sign().items()}
    assert verify(headers).key_id == ALICE_ID


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(["Signature-Input", "Signature", "Content-Digest"]),
    text=st.text(max_size=200),
)
def test_arbitrary_header_text_only_ever_raises_signature_error(field: str, text: str) -> None:
    headers = sign()
    headers[field] = text
    with pytest.raises(SignatureError):
        verify(headers)


# --- nonce cache ------------------------------------------------------------------------


def test_nonce_cache_forgets_entries_after_expiry() -> None:
    clock = FakeClock()
    cache = MemoryNonceCache(clock)
    assert cache.seen("k", "n", NOW + 300) is False
    clock.t = NOW + 300  # still acceptable at exactly expires_at
    assert cache.seen("k", "n", NOW + 300) is True
    clock.t = NOW + 301
    assert len(cache) == 0
    assert cache.seen("k", "n", NOW + 601) is False


def test_full_nonce_cache_refuses_with_503_rather_than_forget_a_live_nonce() -> None:
    clock = FakeClock()
    nonces = MemoryNonceCache(clock, max_entries=2)
    verify(sign(nonce="a"), nonces=nonces)
    verify(sign(nonce="b"), nonces=nonces)
    refused("nonce_cache_full", lambda: verify(sign(nonce="c"), nonces=nonces), status=503)
    refused("replayed_nonce", lambda: verify(sign(nonce="a"), nonces=nonces))
    clock.t = NOW + 301  # a and b expire
    later = NOW + 301
    assert verify(sign(nonce="c", created=later), now=later, nonces=nonces).nonce == "c"
    assert len(nonces) == 1


# --- keys -------------------------------------------------------------------------------


def test_private_key_file_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "agent.key"
    old = os.umask(0)
    try:
        save_private_key(ALICE, path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_b64(load_private_key(path)) == public_key_b64(ALICE)
    assert [p.name for p in tmp_path.iterdir()] == ["agent.key"]  # no temporary left behind


def test_saving_over_an_existing_key_is_refused_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "agent.key"
    save_private_key(ALICE, path)
    with pytest.raises(SigningError, match="exists"):
        save_private_key(MALLORY, path)
    assert public_key_b64(load_private_key(path)) == public_key_b64(ALICE)
    save_private_key(MALLORY, path, overwrite=True)
    assert public_key_b64(load_private_key(path)) == public_key_b64(MALLORY)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_loading_a_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "agent.key"
    save_private_key(ALICE, path)
    path.chmod(mode)
    with pytest.raises(SigningError, match=f"mode {mode:04o}"):
        load_private_key(path)


def test_loading_a_missing_or_garbage_key_file_is_a_signing_error(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="cannot read"):
        load_private_key(tmp_path / "absent.key")
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(SigningError, match="not an unencrypted PEM"):
        load_private_key(garbage)


def test_public_key_round_trips_through_base64() -> None:
    text = public_key_b64(ALICE)
    assert len(base64.b64decode(text)) == 32
    assert public_key_b64(load_public_key_b64(text)) == text
    assert public_key_b64(ALICE.public_key()) == text
    assert len({public_key_b64(generate_keypair()) for _ in range(3)}) == 3


@pytest.mark.parametrize("bad", ["", "not base64!", base64.b64encode(b"short").decode(), 42])
def test_bad_public_key_text_is_a_clear_signing_error(bad: Any) -> None:
    with pytest.raises(SigningError, match="public key"):
        load_public_key_b64(bad)


def test_fingerprint_is_stable_openssh_style() -> None:
    pub = public_key_b64(ALICE)
    # sha256 of the raw key bytes; the literal was checked with `openssl pkey` + `openssl dgst`.
    expected = base64.b64encode(hashlib.sha256(base64.b64decode(pub)).digest()).decode()
    assert fingerprint(pub) == "SHA256:" + expected.rstrip("=")
    assert fingerprint(pub) == "SHA256:Vkdap1RjR0wChd9dvyvKtz2mUTWIOem3dIGy6rEHcIw"
    assert fingerprint(public_key_b64(MALLORY)) != fingerprint(pub)


# --- aiohttp: client helper and middleware ----------------------------------------------

MALLORY_ID = fingerprint(public_key_b64(MALLORY))
CAROL = Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
CAROL_ID = fingerprint(public_key_b64(CAROL))


@dataclasses.dataclass
class Peer:
    """A running /peer app and the calls its handlers received."""

    server: TestServer
    calls: list[tuple[str, str]]

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def peer(aiohttp_server: Any, clock: FakeClock) -> Peer:
    """Alice is a member, Mallory a known key but not a member, Carol unknown."""
    calls: list[tuple[str, str]] = []

    async def events(request: web.Request) -> web.Response:
        calls.append(("events", request[PEER_KEY].key_id))
        return web.json_response({"ok": True, "got": await request.json()})

    async def join(request: web.Request) -> web.Response:
        calls.append(("join", request[PEER_KEY].key_id))
        return web.json_response({"pending": True}, status=202)

    async def vector(request: web.Request) -> web.Response:
        calls.append(("vector", request.query["sku"] + request.query["x"]))
        return web.json_response(["not", "an", "object"])

    async def is_member(key_id: str) -> bool:  # async, as a database lookup would be
        return key_id == ALICE_ID

    middleware = peer_auth_middleware(
        resolve_key=keys(**{ALICE_ID: ALICE, MALLORY_ID: MALLORY}),
        nonces=MemoryNonceCache(clock),
        clock=clock,
        is_member=is_member,
        audience=ME,
        open_paths={"/peer/join"},
        member_limit=64 * 1024,
        open_limit=1024,
    )
    app = web.Application(middlewares=[middleware])
    app.router.add_post("/peer/events", events)
    app.router.add_post("/peer/join", join)
    app.router.add_get("/peer/vector", vector)
    return Peer(await aiohttp_server(app), calls)


async def send(
    url: str,
    body: Any,
    key: Ed25519PrivateKey = ALICE,
    key_id: str = ALICE_ID,
    *,
    clock: FakeClock | None = None,
    method: str = "POST",
    audience: str = ME,
) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        return await signed_request(
            session,
            method,
            url,
            json_body=body,
            private_key=key,
            key_id=key_id,
            audience=audience,
            clock=clock or FakeClock(),
        )


async def test_member_request_reaches_the_handler(peer: Peer) -> None:
    body = {"events": [{"sku": "Æ-1 ø", "delta": -1}]}
    status, data = await send(peer.url("/peer/events"), body)
    assert (status, data) == (200, {"ok": True, "got": body})
    assert peer.calls == [("events", ALICE_ID)]


async def test_odd_query_verifies_and_non_object_json_reads_as_empty(peer: Peer) -> None:
    query = "origin=dk.example.com&sku=A%2F1+b&x=%C3%A6&y=/?"
    status, data = await send(peer.url(f"/peer/vector?{query}"), None, method="GET")
    assert (status, data) == (200, {})
    assert peer.calls == [("vector", "A/1 bæ")]


async def test_known_non_member_gets_403_and_the_handler_does_not_run(peer: Peer) -> None:
    status, data = await send(peer.url("/peer/events"), {"events": []}, MALLORY, MALLORY_ID)
    assert (status, data["error"]) == (403, "not_a_member")
    assert data["message"]
    assert peer.calls == []


async def test_unknown_key_gets_401_and_the_handler_does_not_run(peer: Peer) -> None:
    status, data = await send(peer.url("/peer/events"), {"events": []}, CAROL, CAROL_ID)
    assert (status, data["error"]) == (401, "unknown_key")
    assert peer.calls == []


async def test_open_path_admits_a_non_member_with_a_valid_self_signed_key(peer: Peer) -> None:
    body = {"domain": "se.example.com", "public_key": public_key_b64(CAROL), "nonce": "j"}
    status, data = await send(peer.url("/peer/join"), body, CAROL, CAROL_ID)
    assert (status, data) == (202, {"pending": True})
    assert peer.calls == [("join", CAROL_ID)]


@pytest.mark.parametrize(
    ("key_id", "body_key", "error"),
    [
        (CAROL_ID, MALLORY, "unknown_key"),  # presents a key she does not hold
        (MALLORY_ID, CAROL, "bad_signature"),  # claims a known peer's key id
        ("se.example.com", CAROL, "unknown_key"),  # key id is not the body key's fingerprint
        (CAROL_ID, None, "unknown_key"),  # no key in the body at all
    ],
    ids=["body_key_not_hers", "claims_known_key_id", "key_id_not_fingerprint", "no_body_key"],
)
async def test_open_path_refuses_a_key_not_bound_to_the_signer(
    peer: Peer, key_id: str, body_key: Ed25519PrivateKey | None, error: str
) -> None:
    body = {"domain": "se.example.com", "nonce": "j"}
    if body_key is not None:
        body["public_key"] = public_key_b64(body_key)
    status, data = await send(peer.url("/peer/join"), body, CAROL, key_id)
    assert (status, data["error"]) == (401, error)
    assert peer.calls == []


async def test_open_path_does_not_open_other_paths_to_self_signed_keys(peer: Peer) -> None:
    body = {"events": [], "public_key": public_key_b64(CAROL)}
    status, data = await send(peer.url("/peer/events"), body, CAROL, CAROL_ID)
    assert (status, data["error"]) == (401, "unknown_key")
    assert peer.calls == []


async def test_unsigned_request_gets_401_json_not_500(peer: Peer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(peer.url("/peer/events"), json={"events": []}) as response,
    ):
        assert response.status == 401
        assert (await response.json())["error"] == "missing_signature"
    assert peer.calls == []


async def test_garbage_signature_headers_get_401_over_http(peer: Peer) -> None:
    headers = sign("POST", "/peer/events", b"{}")
    headers["Signature-Input"] = 'sig1=("@method";created=x'
    async with (
        aiohttp.ClientSession() as session,
        session.post(peer.url("/peer/events"), data=b"{}", headers=headers) as r,
    ):
        assert (r.status, (await r.json())["error"]) == (401, "malformed_signature")
    assert peer.calls == []


async def test_replayed_request_gets_401_the_second_time(peer: Peer) -> None:
    body = b'{"events":[]}'
    headers = sign("POST", "/peer/events", body)
    statuses = []
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.post(peer.url("/peer/events"), data=body, headers=headers) as r:
                statuses.append((r.status, (await r.json()).get("error")))
    assert statuses == [(200, None), (401, "replayed_nonce")]
    assert peer.calls == [("events", ALICE_ID)]


async def test_body_swapped_in_transit_gets_401(peer: Peer) -> None:
    headers = sign("POST", "/peer/events", b'{"events":[]}')
    async with aiohttp.ClientSession() as session:
        swapped = b'{"events":[{"sku":"A","delta":-100}]}'
        async with session.post(peer.url("/peer/events"), data=swapped, headers=headers) as r:
            assert (r.status, (await r.json())["error"]) == (401, "digest_mismatch")
    assert peer.calls == []


async def test_sender_clock_301s_behind_gets_401_stale(peer: Peer) -> None:
    status, data = await send(peer.url("/peer/events"), {}, clock=FakeClock(NOW - 301))
    assert (status, data["error"]) == (401, "stale_timestamp")
    assert peer.calls == []


async def test_request_for_another_agent_gets_401_wrong_audience(peer: Peer) -> None:
    status, data = await send(peer.url("/peer/events"), {}, audience="SHA256:someone-else")
    assert (status, data["error"]) == (401, "wrong_audience")
    assert peer.calls == []


async def _raw_post(url: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status, await r.json()


async def test_unknown_key_is_refused_before_the_body_is_read(peer: Peer) -> None:
    read = 0

    async def body() -> Any:  # a body that would take long to send, and is never wanted
        nonlocal read
        for _ in range(100):
            read += 1
            yield b"x" * 1024
            await asyncio.sleep(0.01)

    headers = sign("POST", "/peer/events", b"", key=CAROL, key_id=CAROL_ID)
    status, data = await _raw_post(peer.url("/peer/events"), headers, body())
    assert (status, data["error"]) == (401, "unknown_key")
    assert read < 100 and peer.calls == []


@pytest.mark.parametrize(("path", "size"), [("/peer/join", 2048), ("/peer/events", 128 * 1024)])
async def test_bodies_over_the_path_limit_get_413(peer: Peer, path: str, size: int) -> None:
    body = b"{" + b" " * size + b"}"
    key, key_id = (CAROL, CAROL_ID) if path == "/peer/join" else (ALICE, ALICE_ID)
    headers = sign("POST", path, body, key=key, key_id=key_id)
    status, data = await _raw_post(peer.url(path), headers, body)
    assert (status, data["error"]) == (413, "body_too_large")
    assert peer.calls == []
