"""aiohttp glue for signed `/peer/*` requests: the door (`agent.transport.admit`) as middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from agent.signing import NonceCache, SignatureError, VerifiedRequest
from agent.transport import (
    KeyResolver,
    MemberCheck,
    OpenKeyResolver,
    Refused,
    admit,
    key_from_json_body,
    signed_request,
)
from agent.web.bodies import read_body

if TYPE_CHECKING:
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


def _refuse(status: int, error: str, message: str) -> web.Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return web.json_response({"error": error, "message": message}, status=status, headers=headers)


def peer_auth_middleware(
    *,
    resolve_key: KeyResolver,
    nonces: NonceCache,
    clock: Clock,
    is_member: MemberCheck,
    audience: str | Callable[[], str],
    open_paths: Collection[str] = frozenset(),
    resolve_open_key: OpenKeyResolver | None = None,
    max_skew: int = 300,
    not_before: float = 0.0,
    member_limit: int = 16 * 1024**2,
    open_limit: int = 64 * 1024,
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A middleware that lets only correctly signed requests reach the handlers.

    Every request passes `agent.transport.admit` (see there for the order of the checks),
    signed for this agent: `audience` is its key id, or a callable giving it. A refusal is
    answered with its status (401 for signatures, 403 ``not_a_member``, 413/408 for bodies,
    503 ``nonce_cache_full``) and ``{"error": reason, "message": ...}``; the handler never
    runs. The headers are judged before the body is read, so a request with a bad signature,
    another audience, a stale time or (outside `open_paths`) an unknown key costs no body.

    On success the handler finds the VerifiedRequest at `request[PEER_KEY]`; the body has
    been read and stays available through `request.read()`/`request.json()`.
    """

    @web.middleware
    async def peer_auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        async def read(limit: int) -> bytes:
            return await read_body(request, limit)

        try:
            verified, _ = await admit(
                method=request.method,
                target=request.raw_path,
                headers=request.headers,
                read=read,
                resolve_key=resolve_key,
                nonces=nonces,
                now=clock.now,
                is_member=is_member,
                audience=audience() if callable(audience) else audience,
                open_paths=open_paths,
                resolve_open_key=resolve_open_key,
                max_skew=max_skew,
                not_before=not_before,
                member_limit=member_limit,
                open_limit=open_limit,
            )
        except SignatureError as e:
            log.info("peer_request_refused", reason=e.reason, path=request.path)
            return _refuse(e.status, e.reason, e.message)
        except Refused as e:
            log.info("peer_request_refused", reason=e.error, path=request.path)
            return _refuse(e.status, e.error, e.message)
        request[PEER_KEY] = verified
        return await handler(request)

    return peer_auth
