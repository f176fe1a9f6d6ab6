"""The /peer sub-app: signed agent-to-agent calls (join, welcome, events, pull, snapshot…)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import jsonsafe, peer_service
from agent.roster import PeerError
from agent.signing import MemoryNonceCache, fingerprint
from agent.web import keys
from agent.web.api import json_error
from agent.web.peer_auth import PEER_KEY, peer_auth_middleware

__all__ = ["JoinRateLimit", "create_peer_app", "well_known"]


class JoinRateLimit:
    """At most `limit` signed join requests per client address per `window` seconds (in
    memory: a restart forgets, which only lets a few more through)."""

    def __init__(self, limit: int = 10, window: float = 600.0, *, max_addresses: int = 10_000):
        self.limit, self.window, self.max_addresses = limit, window, max_addresses
        self.seen: dict[str, deque[float]] = {}

    def allow(self, address: str, now: float) -> bool:
        if len(self.seen) > self.max_addresses:  # a flood of addresses: start afresh
            self.seen.clear()
        times = self.seen.setdefault(address, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True


def create_peer_app(parent: web.Application) -> web.Application:
    """The /peer sub-app with its signature middleware."""
    clock = parent[keys.CLOCK]
    joins = JoinRateLimit()

    def audience() -> str:
        return fingerprint(parent[keys.IDENTITY].public_key)

    async def resolve_key(key_id: str) -> Ed25519PublicKey | None:
        return await parent[keys.AGENT].roster.member_key(key_id)

    async def resolve_open_key(key_id: str, path: str, body: bytes) -> Ed25519PublicKey | None:
        return await peer_service.open_key(parent[keys.AGENT])(key_id, path, body)

    async def is_member(key_id: str) -> bool:
        return await parent[keys.AGENT].roster.is_member(key_id)

    @web.middleware
    async def limit_joins(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == "/peer/join" and not joins.allow(
            request.remote or "?", time.monotonic()
        ):
            response = json_error(
                429, "too_many_requests", "too many join requests from this address; wait"
            )
            response.headers["Retry-After"] = str(int(joins.window))
            return response
        return await handler(request)

    app = web.Application(
        middlewares=[
            peer_auth_middleware(
                resolve_key=resolve_key,
                nonces=MemoryNonceCache(clock),
                clock=clock,
                is_member=is_member,
                audience=audience,
                open_paths=peer_service.OPEN_PATHS,
                resolve_open_key=resolve_open_key,
                not_before=int(clock.now()),
                member_limit=peer_service.MEMBER_LIMIT,
                open_limit=peer_service.OPEN_LIMIT,
            ),
            limit_joins,  # inside the door: only correctly signed requests count
        ],
    )
    for name in peer_service.ROUTES:
        app.router.add_post(f"/{name}", _route(name))
    return app


def _route(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def route(request: web.Request) -> web.Response:
        try:
            body = jsonsafe.loads(await request.read() or b"{}")
        except ValueError as exc:
            return json_error(400, "bad_json", str(exc))
        if not isinstance(body, dict):
            return json_error(400, "bad_json", "body must be a JSON object")
        try:
            result = await request.config_dict[keys.AGENT].serve_peer(
                request[PEER_KEY].key_id, name, body
            )
        except PeerError as exc:
            return json_error(exc.status, exc.error, exc.message)
        except (ValueError, KeyError, TypeError, OverflowError) as exc:  # e.g. seq ≥ 2**63
            return json_error(400, "bad_request", f"malformed request: {exc}"[:500])
        status = 202 if request.path == "/peer/join" else 200
        return web.json_response(result, status=status)

    return route


async def well_known(request: web.Request) -> web.Response:
    """`/.well-known/shopsync`: who this agent is, for joiners resolving a domain."""
    return web.json_response(request.app[keys.AGENT].roster.describe())
