"""The /peer sub-app: signed agent-to-agent calls (join, welcome, events, pull, snapshot…)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.peering import PeerError, Peering
from agent.replication import (
    Replicator,
    event_from_wire,
    event_to_wire,
    vector_from_wire,
    vector_to_wire,
)
from agent.signing import MemoryNonceCache
from agent.web import keys
from agent.web.api import json_error
from agent.web.peer_auth import PEER_KEY, key_from_json_body, peer_auth_middleware

__all__ = ["create_peer_app", "well_known"]

OPEN_PATHS = frozenset({"/peer/join", "/peer/welcome"})
MAX_EVENTS = 5000

Handler = Callable[[web.Request, Peering, Any], Awaitable[dict[str, Any]]]


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
    for name, handler in ROUTES.items():
        app.router.add_post(f"/{name}", _wrap(handler))
    return app


def _wrap(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def route(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return json_error(400, "bad_json", "body is not valid JSON")
        if not isinstance(body, dict):
            return json_error(400, "bad_json", "body must be a JSON object")
        try:
            result = await handler(request, request.config_dict[keys.PEERING], body)
        except PeerError as exc:
            return json_error(exc.status, exc.error, exc.message)
        except (ValueError, KeyError, TypeError, OverflowError) as exc:  # e.g. seq ≥ 2**63
            return json_error(400, "bad_request", f"malformed request: {exc}")
        status = 202 if request.path == "/peer/join" else 200
        return web.json_response(result, status=status)

    return route


def _sender(request: web.Request) -> str:
    return request[PEER_KEY].key_id


async def _replicator(request: web.Request) -> Replicator:
    replicator = request.config_dict[keys.REPLICATOR]
    if replicator.paused:
        raise PeerError(503, "paused", "sync is paused at this shop; try again later")
    if replicator.importing:
        raise PeerError(503, "importing", "this shop is importing the group's counts")
    await request.config_dict[keys.PEERING].mark_heard(_sender(request))
    return replicator


async def join(request: web.Request, peering: Peering, body: Any) -> dict[str, Any]:
    return await peering.on_join_request(_sender(request), body)


async def welcome(request: web.Request, peering: Peering, body: Any) -> dict[str, Any]:
    return await peering.on_welcome(_sender(request), body)


async def introduce(request: web.Request, peering: Peering, body: Any) -> dict[str, Any]:
    return await peering.on_introduce(_sender(request), body)


async def state(request: web.Request, peering: Peering, body: Any) -> dict[str, Any]:
    return await peering.on_member_state(_sender(request), body)


async def events(request: web.Request, peering: Peering, body: Any) -> dict[str, Any]:
    replicator = await _replicator(request)
    raw = body.get("events")
    if not isinstance(raw, list) or len(raw) > MAX_EVENTS:
        raise PeerError(400, "bad_events", f"events must be a list of at most {MAX_EVENTS}")
    batch = [event_from_wire(e) for e in raw]
    sender = await peering.domain_of(_sender(request))
    vector = await replicator.receive(batch, sender, kind="batch_received")
    return {"vector": vector_to_wire(vector)}


async def pull(request: web.Request, peering: Peering, body: Any) -> dict[str, Any]:
    replicator = await _replicator(request)
    have = vector_from_wire(body.get("have", []))
    found, more = await replicator.events_since(have)
    async with replicator.db.sessions() as session:
        from agent import ledger

        mine = await ledger.load_vector(session)
    return {
        "events": [event_to_wire(e) for e in found],
        "more": more,
        "vector": vector_to_wire(mine),
        "members": [peering.me(), *await peering.members_wire()],
    }


async def snapshot(request: web.Request, peering: Peering, body: Any) -> dict[str, Any]:
    replicator = await _replicator(request)
    return {**await replicator.snapshot(), "members": [peering.me(), *await peering.members_wire()]}


ROUTES: dict[str, Handler] = {
    "join": join,
    "welcome": welcome,
    "introduce": introduce,
    "state": state,
    "events": events,
    "pull": pull,
    "snapshot": snapshot,
}


async def well_known(request: web.Request) -> web.Response:
    """`/.well-known/shopsync`: who this agent is, for joiners resolving a domain."""
    return web.json_response(request.app[keys.PEERING].describe())
