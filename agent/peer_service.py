"""What an agent answers its peers, whatever carries the call.

The `/peer` sub-app (`agent/web/peer.py`) lets a request in through `agent.transport.admit`
with this agent's resolvers (`door_keys`: members' keys, the joiner's own key on
``/peer/join``, the master's on ``/peer/welcome``), then hands the verified key id and the
JSON body to `serve`; the deterministic simulation (`tests/sim`) does both the same way over
its simulated network, signatures included. A refusal is a `PeerError` (status, error code,
message); a malformed body raises ValueError, KeyError or TypeError, which the transport
answers with 400.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agent import ledger
from agent.replication import EventsRefused
from agent.roster import PeerError
from agent.snapshots import SnapshotGone
from agent.transport import key_from_json_body
from agent.wire import (
    event_from_wire,
    event_to_wire,
    snapshot_to_wire,
    vector_from_wire,
    vector_to_wire,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from agent.agent import Agent

__all__ = ["MAX_EVENTS", "OPEN_PATHS", "ROUTES", "open_key", "serve"]

#: Where the key of a non-member comes from on an open path (key id, path, body).
AsyncKeyResolver = Callable[[str, str, bytes], "Awaitable[Ed25519PublicKey | None]"]
MAX_EVENTS = 5000
#: The calls a non-member may make: a join request (self-signed) and the master's welcome.
OPEN_PATHS = frozenset({"/peer/join", "/peer/welcome"})
MEMBER_LIMIT = 16 * 1024**2  # a batch of 5,000 events with their proofs is about 3 MB
OPEN_LIMIT = 64 * 1024  # a join request, or a welcome with a few hundred members


def open_key(agent: Agent) -> AsyncKeyResolver:
    """Where the key of a non-member comes from on the open paths: the welcome is signed by
    the master this agent asked to join; a join request by the key it carries."""
    from_body = key_from_json_body("public_key")

    async def resolve(key_id: str, path: str, body: bytes) -> Ed25519PublicKey | None:
        if path == "/peer/welcome":
            return await agent.peering.welcome_key(key_id)
        # key_from_json_body's resolver is synchronous: its answer is the key, not awaitable
        return from_body(key_id, path, body)  # type: ignore[return-value]

    return resolve


Handler = Callable[["Agent", str, dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve(agent: Agent, sender: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """Answer peer call `name` (``events``, ``pull``…) from the holder of key `sender`."""
    handler = ROUTES.get(name)
    if handler is None:
        raise PeerError(404, "not_found", f"no peer call {name!r}")
    return await handler(agent, sender, body)


async def _syncing(agent: Agent, sender: str, record: Any = None) -> str:
    """Refuse while sync is paused or the import runs; the sender's domain otherwise (after
    folding in the sender's own member record, if it sent one)."""
    refusal = agent.mode.refusal()
    if refusal is not None:
        raise PeerError(503, *refusal)
    return await agent.roster.heard_from(sender, record)


async def join(agent: Agent, sender: str, body: dict[str, Any]) -> Any:
    return await agent.joins.on_join_request(sender, body)


async def welcome(agent: Agent, sender: str, body: dict[str, Any]) -> Any:
    return await agent.peering.on_welcome(sender, body)


async def introduce(agent: Agent, sender: str, body: dict[str, Any]) -> Any:
    return await agent.peering.on_introduce(sender, body)


async def state(agent: Agent, sender: str, body: dict[str, Any]) -> Any:
    return await agent.peering.on_member_state(sender, body)


async def rules(agent: Agent, sender: str, body: dict[str, Any]) -> Any:
    """A member's admin set rules (its own shop's, or the group's): each record is taken if it
    is newer and signed by a live member about itself or the group."""
    domain = await agent.roster.heard_from(sender)
    refused = await agent.rules.heard(body.get("records"), domain)
    if refused:
        raise PeerError(403, "rules_refused", refused[0])
    return {"ok": True}


async def events(agent: Agent, sender: str, body: dict[str, Any]) -> dict[str, Any]:
    domain = await _syncing(agent, sender)
    raw = body.get("events")
    if not isinstance(raw, list) or len(raw) > MAX_EVENTS:
        raise PeerError(400, "bad_events", f"events must be a list of at most {MAX_EVENTS}")
    batch = [event_from_wire(e) for e in raw]
    try:
        vector = await agent.replicator.receive(batch, domain, kind="batch_received")
    except EventsRefused as exc:
        more = f" (and {len(exc.reasons) - 1} more)" if len(exc.reasons) > 1 else ""
        raise PeerError(403, "events_refused", f"{exc.reasons[0]}{more}") from None
    return {"vector": vector_to_wire(vector)}


async def pull(agent: Agent, sender: str, body: dict[str, Any]) -> dict[str, Any]:
    await _syncing(agent, sender, body.get("member"))
    have = vector_from_wire(body.get("have", []))
    answer = await agent.replicator.pull_answer(have)
    return {
        "events": [event_to_wire(e) for e in answer.events],
        "more": answer.more,
        "vector": vector_to_wire(answer.vector),
        "folded": vector_to_wire(answer.folded),
        "members": [agent.roster.me(), *await agent.roster.members_wire()],
        "rules": agent.rules.wire(),
    }


async def snapshot(agent: Agent, sender: str, body: dict[str, Any]) -> dict[str, Any]:
    """`{"paged": true}`: the head of a snapshot spooled for the joiner to take page by page;
    `{}` (what releases before paging ask): the whole snapshot in one answer."""
    joiner = await _syncing(agent, sender)
    members = [agent.roster.me(), *await agent.roster.members_wire()]
    # the group's rules and bundles come with it: the joiner's import already knows which of
    # its products are bundles (their sales are their components')
    held = {"members": members, "rules": agent.rules.wire()}
    if body.get("paged") is True:
        return {**await agent.spool.make(agent.db, joiner=joiner), **held}
    snap = await agent.db.read(ledger.snapshot)
    await agent.spool.sent_whole(agent.db, joiner, snap.vector)
    return {**snapshot_to_wire(snap), **held}


async def snapshot_page(agent: Agent, sender: str, body: dict[str, Any]) -> dict[str, Any]:
    """`{"snapshot": id, "page": n}`: page n (from 0) of a spooled snapshot's pools."""
    await _syncing(agent, sender)
    snapshot_id, number = body.get("snapshot"), body.get("page")
    if not isinstance(snapshot_id, str) or isinstance(number, bool) or not isinstance(number, int):
        raise PeerError(400, "bad_request", "give the snapshot's id and a page number")
    try:
        pools = agent.spool.page(snapshot_id, number)
    except SnapshotGone as exc:
        raise PeerError(410, "snapshot_gone", f"{exc}: ask for a new snapshot") from None
    return {"snapshot": snapshot_id, "page": number, "pools": pools}


ROUTES: dict[str, Handler] = {
    "join": join,
    "welcome": welcome,
    "introduce": introduce,
    "state": state,
    "rules": rules,
    "events": events,
    "pull": pull,
    "snapshot": snapshot,
    "snapshot_page": snapshot_page,
}
