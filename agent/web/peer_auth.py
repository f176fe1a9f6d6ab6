"""aiohttp glue for signed `/peer/*` requests: a signing client call and a verifying middleware."""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from yarl import URL

from agent.signing import (
    NonceCache,
    SignatureError,
    SigningError,
    VerifiedRequest,
    fingerprint,
    load_public_key_b64,
    sign_request,
    signature_key_id,
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
    "PEER_KEY",
    "KeyResolver",
    "MemberCheck",
    "OpenKeyResolver",
    "key_from_json_body",
    "peer_auth_middleware",
    "signed_request",
]

log = structlog.get_logger(__name__)

#: Where the middleware leaves the verified signature for the handler: `request[PEER_KEY]`.
#: A typed key rather than the string "peer", which aiohttp warns about (NotAppKeyWarning).
PEER_KEY = web.RequestKey("peer", VerifiedRequest)

#: `resolve_key(key_id)`: the public key of a known peer, or None. May be sync or async.
KeyResolver = Callable[[str], "Ed25519PublicKey | Awaitable[Ed25519PublicKey | None] | None"]
#: `resolve_open_key(key_id, request, body)`: on an open path, a key taken from the request
#: itself (the join request carries its sender's key), or None. May be sync or async.
OpenKeyResolver = Callable[
    [str, web.Request, bytes], "Ed25519PublicKey | Awaitable[Ed25519PublicKey | None] | None"
]
#: `is_member(key_id)`: whether this verified key may use the non-open peer paths.
MemberCheck = Callable[[str], "bool | Awaitable[bool]"]


async def signed_request(
    session: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    *,
    json_body: Any = None,
    private_key: Ed25519PrivateKey,
    key_id: str,
    clock: Clock,
) -> tuple[int, dict[str, Any]]:
    """Send a signed request to a peer; return its status and JSON object (``{}`` if none).

    The body is serialised once and those exact bytes are digested, signed and sent. HTTP
    error statuses are returned, not raised (the caller decides); network errors propagate as
    aiohttp exceptions. Redirects are not followed: a signature covers one path only.
    `url` must be absolute; a JSON reply that is not an object also yields ``{}``.
    """
    target = URL(url)
    if not target.absolute:
        raise ValueError(f"peer URL must be absolute, got {str(url)!r}")
    body = b"" if json_body is None else json.dumps(json_body, separators=(",", ":")).encode()
    # raw_path_qs is exactly what aiohttp puts on the request line, and what the peer sees.
    headers = sign_request(
        method,
        target.raw_path_qs,
        body,
        private_key=private_key,
        key_id=key_id,
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
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    return status, data if isinstance(data, dict) else {}


def key_from_json_body(field: str = "public_key") -> OpenKeyResolver:
    """An OpenKeyResolver for self-signed requests such as ``POST /peer/join``.

    It returns the key given as base64 in the JSON body's `field` if the request's `keyid`
    is that key's `fingerprint`, which binds the claimed key id to the key that signed.
    """

    def resolve(key_id: str, request: web.Request, body: bytes) -> Ed25519PublicKey | None:
        try:
            pub_b64 = json.loads(body)[field]
            if fingerprint(pub_b64) == key_id:
                return load_public_key_b64(pub_b64)
        except (ValueError, TypeError, KeyError, SigningError):
            pass
        return None

    return resolve


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    return await result if inspect.isawaitable(result) else result


def _refuse(status: int, error: str, message: str) -> web.Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return web.json_response({"error": error, "message": message}, status=status, headers=headers)


def peer_auth_middleware(
    *,
    resolve_key: KeyResolver,
    nonces: NonceCache,
    clock: Clock,
    is_member: MemberCheck,
    open_paths: Collection[str] = frozenset(),
    resolve_open_key: OpenKeyResolver | None = None,
    max_skew: int = 300,
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A middleware that lets only correctly signed requests reach the handlers.

    Every request must carry a signature made by `signed_request` (see
    `agent.signing.verify_request`); otherwise it is answered 401 ``{"error": reason,
    "message": ...}`` (503 ``nonce_cache_full`` when the nonce cache is full) and the handler
    never runs. The key is `resolve_key(key_id)`. A verified key for which `is_member(key_id)`
    is false gets 403 ``{"error": "not_a_member", ...}``.

    `open_paths` are full request paths (``/peer/join``, including any sub-app prefix) that a
    non-member may use: there membership is not checked, and a key `resolve_key` does not know
    is taken from the request by `resolve_open_key(key_id, request, body)`, by default
    `key_from_json_body("public_key")`. Such a request is still fully verified (digest,
    time, signature, nonce), so it proves its sender holds the key it presents.

    On success the handler finds the VerifiedRequest at `request[PEER_KEY]`; the body has
    been read and stays available through `request.read()`/`request.json()`.
    """
    open_resolver = resolve_open_key or key_from_json_body()

    @web.middleware
    async def peer_auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body = await request.read()
        is_open = request.path in open_paths
        key_id: str | None = None
        try:
            key_id = signature_key_id(request.headers)
            # Resolved here, where we may await (a database lookup); verify_request is sync.
            key = await _call(resolve_key, key_id)
            if key is None and is_open:
                key = await _call(open_resolver, key_id, request, body)
            verified = verify_request(
                request.method,
                request.raw_path,
                request.headers,
                body,
                resolve_key=lambda _key_id: key,
                now=clock.now(),
                nonces=nonces,
                max_skew=max_skew,
            )
        except SignatureError as e:
            log.info("peer_request_refused", reason=e.reason, path=request.path, key_id=key_id)
            return _refuse(e.status, e.reason, e.message)
        if not is_open and not await _call(is_member, verified.key_id):
            log.info(
                "peer_request_refused", reason="not_a_member", path=request.path, key_id=key_id
            )
            return _refuse(403, "not_a_member", f"key {key_id} is not a member of this group")
        request[PEER_KEY] = verified
        return await handler(request)

    return peer_auth
