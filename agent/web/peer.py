"""The /peer sub-app: signed agent-to-agent calls (join, welcome, events, pull, snapshot…)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import peer_service
from agent.peering import PeerError
from agent.signing import MemoryNonceCache
from agent.web import keys
from agent.web.api import json_error
from agent.web.peer_auth import PEER_KEY, key_from_json_body, peer_auth_middleware

__all__ = ["create_peer_app", "well_known"]

OPEN_PATHS = frozenset({"/peer/join", "/peer/welcome"})


def create_peer_app(parent: web.Application) -> web.Application:
    """The /peer sub-app with its signature middleware."""
    clock = parent[keys.CLOCK]
    body_key = key_from_json_body("public_key")

    async def resolve_key(key_id: str) -> Ed25519PublicKey | None:
        return await parent[keys.PEERING].member_key(key_id)

    async def resolve_open_key(
        key_id: str, request: web.Request, body: bytes
    ) -> Ed25519PublicKey | None:
        if request.path == "/peer/welcome":
            return await parent[keys.PEERING].welcome_key(key_id)
        result = body_key(key_id, request, body)
        return await result if hasattr(result, "__await__") else result  # type: ignore[misc]

    async def is_member(key_id: str) -> bool:
        return await parent[keys.PEERING].is_member(key_id)

    app = web.Application(
        client_max_size=32 * 1024**2,
        middlewares=[
            peer_auth_middleware(
                resolve_key=resolve_key,
                nonces=MemoryNonceCache(clock),
                clock=clock,
                is_member=is_member,
                open_paths=OPEN_PATHS,
                resolve_open_key=resolve_open_key,
            )
        ],
    )
    for name in peer_service.ROUTES:
        app.router.add_post(f"/{name}", _route(name))
    return app


def _route(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def route(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return json_error(400, "bad_json", "body is not valid JSON")
        if not isinstance(body, dict):
            return json_error(400, "bad_json", "body must be a JSON object")
        try:
            result = await peer_service.serve(
                request.config_dict[keys.PEERING],
                request.config_dict[keys.REPLICATOR],
                request[PEER_KEY].key_id,
                name,
                body,
            )
        except PeerError as exc:
            return json_error(exc.status, exc.error, exc.message)
        except (ValueError, KeyError, TypeError, OverflowError) as exc:  # e.g. seq ≥ 2**63
            return json_error(400, "bad_request", f"malformed request: {exc}")
        status = 202 if request.path == "/peer/join" else 200
        return web.json_response(result, status=status)

    return route


async def well_known(request: web.Request) -> web.Response:
    """`/.well-known/shopsync`: who this agent is, for joiners resolving a domain."""
    return web.json_response(request.app[keys.PEERING].describe())
