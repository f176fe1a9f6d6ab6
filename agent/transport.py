"""How signed peer calls go out and come in, whatever carries them (HTTP, or the simulation).

Out: a `Transport` sends `(agent_url, audience, method, path, body)` as one signed request and
returns the peer's status and JSON object; `HttpTransport` does it over aiohttp.
In: `admit` is the door every peer request passes before a handler sees it — signature,
audience, freshness, body size, membership — in an order that refuses a hostile request as
early and as cheaply as possible. The aiohttp middleware (`agent.web.peer_auth`) and the
simulated network (`tests/sim`) both call it, so the simulation proves the real checks.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from yarl import URL

from agent import jsonsafe
from agent.signing import (
    NonceCache,
    SignatureError,
    SigningError,
    VerifiedRequest,
    fingerprint,
    load_public_key_b64,
    precheck,
    sign_request,
    verify_request,
)

if TYPE_CHECKING:
    import aiohttp
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from agent.clock import Clock

__all__ = [
    "HttpTransport",
    "KeyResolver",
    "MemberCheck",
    "OpenKeyResolver",
    "PeerCaller",
    "Refused",
    "Transport",
    "admit",
    "encode_body",
    "key_from_json_body",
    "signed_request",
]

#: `resolve_key(key_id)`: the public key of a known peer, or None. May be sync or async.
KeyResolver = Callable[[str], "Ed25519PublicKey | Awaitable[Ed25519PublicKey | None] | None"]
#: `resolve_open_key(key_id, path, body)`: on an open path, a key taken from the request
#: itself (the join request carries its sender's key), or None. May be sync or async.
OpenKeyResolver = Callable[
    [str, str, bytes], "Ed25519PublicKey | Awaitable[Ed25519PublicKey | None] | None"
]
#: `is_member(key_id)`: whether this verified key may use the non-open peer paths.
MemberCheck = Callable[[str], "bool | Awaitable[bool]"]


#: A signed call to a peer: (agent_url, audience key id, method, path, body) -> (status, json).
PeerCaller = Callable[[str, str, str, str, Any], Awaitable[tuple[int, dict[str, Any]]]]


class Refused(Exception):
    """A peer request refused at the door: `status`, an `error` code, a `message`."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.status, self.error, self.message = status, error, message


class Transport(Protocol):
    """Sends one signed call to another agent."""

    async def call(
        self, agent_url: str, audience: str, method: str, path: str, body: Any
    ) -> tuple[int, dict[str, Any]]:
        """Send `body` (JSON) to `agent_url` + `path`, signed for the agent whose key id is
        `audience`; the peer's HTTP status and JSON object (``{}`` if none). HTTP error
        statuses are returned; a peer that cannot be reached raises (aiohttp.ClientError,
        TimeoutError or OSError)."""
        ...


def encode_body(body: Any) -> bytes:
    """The exact bytes a JSON body is sent, digested and signed as."""
    return b"" if body is None else json.dumps(body, separators=(",", ":")).encode()


async def signed_request(
    session: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    *,
    json_body: Any = None,
    private_key: Ed25519PrivateKey,
    key_id: str,
    audience: str,
    clock: Clock,
) -> tuple[int, dict[str, Any]]:
    """Send a signed request to a peer; return its status and JSON object (``{}`` if none).

    `audience` is the receiving agent's key id: the signature is good at that agent only.
    The body is serialised once and those exact bytes are digested, signed and sent. HTTP
    error statuses are returned, not raised (the caller decides); network errors propagate as
    aiohttp exceptions. Redirects are not followed: a signature covers one path only.
    `url` must be absolute; a JSON reply that is not an object also yields ``{}``.
    """
    target = URL(url)
    if not target.absolute:
        raise ValueError(f"peer URL must be absolute, got {str(url)!r}")
    body = encode_body(json_body)
    # raw_path_qs is exactly what aiohttp puts on the request line, and what the peer sees.
    headers = sign_request(
        method,
        target.raw_path_qs,
        body,
        private_key=private_key,
        key_id=key_id,
        audience=audience,
        created=int(clock.now()),
    )
    if json_body is not None:
        headers["Content-Type"] = "application/json"
    async with session.request(
        method, target, data=body, headers=headers, allow_redirects=False
    ) as response:
        raw = await response.read()
        status = response.status
    try:
        data = jsonsafe.loads(raw) if raw else {}
    except ValueError:
        data = {}
    return status, data if isinstance(data, dict) else {}


class HttpTransport:
    """Signed calls over one shared aiohttp session, as this agent's key."""

    def __init__(
        self, http: aiohttp.ClientSession, *, private_key: Ed25519PrivateKey, clock: Clock
    ) -> None:
        from agent.signing import public_key_b64

        self.http = http
        self.private_key = private_key
        self.key_id = fingerprint(public_key_b64(private_key))
        self.clock = clock

    async def call(
        self, agent_url: str, audience: str, method: str, path: str, body: Any
    ) -> tuple[int, dict[str, Any]]:
        return await signed_request(
            self.http,
            method,
            f"{agent_url.rstrip('/')}{path}",
            json_body=body,
            private_key=self.private_key,
            key_id=self.key_id,
            audience=audience,
            clock=self.clock,
        )


def key_from_json_body(field: str = "public_key") -> OpenKeyResolver:
    """An OpenKeyResolver for self-signed requests such as ``POST /peer/join``.

    It returns the key given as base64 in the JSON body's `field` if the request's `keyid`
    is that key's `fingerprint`, which binds the claimed key id to the key that signed.
    """

    def resolve(key_id: str, path: str, body: bytes) -> Ed25519PublicKey | None:
        try:
            pub_b64 = jsonsafe.loads(body)[field]
            if fingerprint(pub_b64) == key_id:
                return load_public_key_b64(pub_b64)
        except (ValueError, TypeError, KeyError, SigningError):
            pass
        return None

    return resolve


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    return await result if inspect.isawaitable(result) else result


async def admit(
    *,
    method: str,
    target: str,
    headers: Mapping[str, str],
    read: Callable[[int], Awaitable[bytes]],
    resolve_key: KeyResolver,
    nonces: NonceCache,
    now: Callable[[], float],
    is_member: MemberCheck,
    audience: str,
    open_paths: Collection[str] = frozenset(),
    resolve_open_key: OpenKeyResolver | None = None,
    max_skew: int = 300,
    not_before: float = 0.0,
    member_limit: int = 16 * 1024**2,
    open_limit: int = 64 * 1024,
) -> tuple[VerifiedRequest, bytes]:
    """Let a peer request in, or raise `Refused` (or SignatureError) saying why.

    `target` is the path and query as on the request line. In order, cheapest first:
    1. from the headers alone (`agent.signing.precheck`): signature syntax, the audience (must
       be `audience`, this agent's key id), `created` within ±`max_skew` s of now and not
       before `not_before` (this agent's start: its nonce cache forgot what came before);
    2. the key: `resolve_key(key_id)`; outside `open_paths` an unknown key is refused here,
       before a byte of the body is read;
    3. the body, by `read(limit)`: at most `member_limit` bytes, or `open_limit` on an open
       path (it raises Refused itself for 413/408);
    4. on an open path, a key `resolve_key` does not know comes from the request
       (`resolve_open_key(key_id, path, body)`, by default `key_from_json_body()`);
    5. digest, signature and nonce (`agent.signing.verify_request`);
    6. outside the open paths, membership: `is_member(key_id)`, else 403 ``not_a_member``.
    Returns what the signature proves and the body.
    """
    path = target.partition("?")[0]
    is_open = path in open_paths
    key_id = precheck(
        headers, now=now(), audience=audience, max_skew=max_skew, not_before=not_before
    )
    key = await _call(resolve_key, key_id)
    if key is None and not is_open:
        raise SignatureError(401, "unknown_key", f"no known key with keyid {key_id!r}")
    body = await read(open_limit if is_open else member_limit)
    if key is None:
        key = await _call(resolve_open_key or key_from_json_body(), key_id, path, body)
    verified = verify_request(
        method,
        target,
        headers,
        body,
        resolve_key=lambda _key_id: key,
        now=now(),
        nonces=nonces,
        audience=audience,
        max_skew=max_skew,
        not_before=not_before,
    )
    if not is_open and not await _call(is_member, verified.key_id):
        raise Refused(403, "not_a_member", f"key {key_id} is not a member of this group")
    return verified, body
