"""Join by request and accept, introduce newcomers, leave and pause (DESIGN §6).

1. The joiner resolves the master (agent URL, or shop domain), remembers the master's key and
   a nonce, and posts a signed join request. The master stores it as pending: nothing is
   trusted and nothing is sent until its owner accepts.
2. On accept the master calls the joiner back at the URL it claimed, with the nonce and the
   member list. The joiner checks the nonce and the master's key against its own request, and
   confirms; this proves it controls that URL and key. Then it imports the master's snapshot.
3. The master introduces the newcomer to every other member with a signed call; member lists
   also travel with every pull (last change wins per member), so an introduction or a leave
   that could not be delivered directly still reaches everyone.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlmodel import col, delete, select

from agent import synclog
from agent.clock import Clock
from agent.db import Database, read_state, write_state
from agent.discovery import DiscoveryError, resolve_target
from agent.models import (
    EventRow,
    Identity,
    ItemRow,
    JoinRequest,
    PeerRow,
    PoolRow,
    VectorEntry,
)
from agent.replication import Replicator, event_from_wire, vector_from_wire

if TYPE_CHECKING:
    from agent.importer import Importer
from agent.signing import SigningError, fingerprint, load_public_key_b64
from agent.web.peer_auth import signed_request

__all__ = ["PeerError", "Peering", "REQUEST_TTL"]

log = structlog.get_logger(__name__)

REQUEST_TTL = 7 * 24 * 3600.0
LIVE = ("active", "paused")


class PeerError(Exception):
    """A peering step cannot be done; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def _member(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise PeerError(400, "bad_member", "a member is an object")
    for name in ("domain", "agent_url", "public_key"):
        if not isinstance(raw.get(name), str) or not raw[name]:
            raise PeerError(400, "bad_member", f"member {name} must be a non-empty string")
    try:
        load_public_key_b64(raw["public_key"])
    except SigningError as exc:
        raise PeerError(400, "bad_member", str(exc)) from None
    state = raw.get("state", "active")
    if state not in ("active", "paused", "left"):
        raise PeerError(400, "bad_member", f"unknown member state {state!r}")
    changed = raw.get("changed_at", 0.0)
    if not isinstance(changed, int | float):
        raise PeerError(400, "bad_member", "changed_at must be a number")
    return {**raw, "state": state, "changed_at": float(changed)}


async def _outgoing_request(session: Any, key_id: str) -> JoinRequest | None:
    """This agent's own join request to the master whose key is `key_id` (pending, or already
    accepted: a welcome may arrive twice)."""
    query = select(JoinRequest).where(
        JoinRequest.direction == "outgoing",
        JoinRequest.fingerprint == key_id,
        col(JoinRequest.state).in_(("pending", "accepted")),
    )
    return (await session.exec(query)).first()


class Peering:
    """This agent's side of membership. I/O (HTTP, clock, database) is injected."""

    def __init__(
        self,
        *,
        db: Database,
        identity: Identity,
        public_url: str,
        clock: Clock,
        http: aiohttp.ClientSession,
        private_key: Ed25519PrivateKey,
        on_joined: Callable[[set[str]], None],
    ) -> None:
        self.db = db
        self.identity = identity
        self.public_url = public_url
        self.clock = clock
        self.http = http
        self.private_key = private_key
        self.key_id = fingerprint(identity.public_key)
        self.on_joined = on_joined
        self.replicator: Replicator | None = None
        self.importer: Importer | None = None
        self.import_task: asyncio.Task[None] | None = None

    # -- signed calls ---------------------------------------------------------------------------

    async def call(self, agent_url: str, method: str, path: str, body: Any) -> tuple[int, dict]:
        """A signed request to another agent."""
        return await signed_request(
            self.http,
            method,
            f"{agent_url.rstrip('/')}{path}",
            json_body=body,
            private_key=self.private_key,
            key_id=self.key_id,
            clock=self.clock,
        )

    def describe(self) -> dict[str, Any]:
        """What `/.well-known/shopsync` says about this agent."""
        return {
            "domain": self.identity.domain,
            "agent_url": self.public_url,
            "public_key": self.identity.public_key,
            "fingerprint": self.key_id,
        }

    def me(self) -> dict[str, Any]:
        return {**self.describe(), "state": "active", "changed_at": self.identity.created_at}

    # -- keys, for the signature middleware -----------------------------------------------------

    async def member_key(self, key_id: str) -> Ed25519PublicKey | None:
        async with self.db.sessions() as session:
            peer = (
                await session.exec(select(PeerRow).where(PeerRow.fingerprint == key_id))
            ).first()
        if peer is None or peer.state not in LIVE:
            return None
        return load_public_key_b64(peer.public_key)

    async def is_member(self, key_id: str) -> bool:
        return await self.member_key(key_id) is not None

    async def welcome_key(self, key_id: str) -> Ed25519PublicKey | None:
        """The key of a master this agent asked to join (only it may send the welcome)."""
        async with self.db.sessions() as session:
            request = await _outgoing_request(session, key_id)
        return None if request is None else load_public_key_b64(request.public_key)

    # -- state ---------------------------------------------------------------------------------

    async def get_state(self, key: str, default: Any = None) -> Any:
        return await self.db.get_state(key, default)

    async def set_state(self, key: str, value: Any) -> None:
        await self.db.set_state(key, value)

    async def in_group(self) -> bool:
        async with self.db.sessions() as session:
            peer = (await session.exec(select(PeerRow).where(col(PeerRow.state).in_(LIVE)))).first()
        return peer is not None

    # -- the joiner ----------------------------------------------------------------------------

    async def send_join(self, target: str) -> dict[str, Any]:
        """Send a join request to the agent of `target` (agent URL or shop domain)."""
        if await self.in_group():
            raise PeerError(
                409,
                "already_in_group",
                "this shop already belongs to a group: leave it first (shopsync leave)",
            )
        try:
            master = await resolve_target(self.http, target)
        except DiscoveryError as exc:
            raise PeerError(502, "not_found", str(exc)) from None
        if master["domain"] == self.identity.domain:
            raise PeerError(400, "self", "that is this shop's own agent")
        try:
            master_fp = fingerprint(master["public_key"])
        except SigningError as exc:
            raise PeerError(502, "bad_master", str(exc)) from None
        nonce = secrets.token_urlsafe(24)
        now = self.clock.now()
        async with self.db.transaction() as session:
            await session.exec(delete(JoinRequest).where(JoinRequest.direction == "outgoing"))  # type: ignore[call-overload]
            session.add(
                JoinRequest(
                    domain=master["domain"],
                    direction="outgoing",
                    agent_url=master["agent_url"],
                    public_key=master["public_key"],
                    fingerprint=master_fp,
                    nonce=nonce,
                    received_at=now,
                )
            )
            synclog.record(
                session,
                "join_request_sent",
                now,
                peer=master["domain"],
                message=f"to {master['agent_url']}",
            )
        body = {**self.describe(), "nonce": nonce}
        try:
            status, answer = await self.call(master["agent_url"], "POST", "/peer/join", body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerError(
                502, "unreachable", f"cannot reach {master['agent_url']}: {exc}"
            ) from None
        if status != 202:
            raise PeerError(
                502,
                answer.get("error", "refused"),
                f"{master['domain']} refused the request: {answer.get('message', status)}",
            )
        return {
            "status": "pending",
            "domain": master["domain"],
            "agent_url": master["agent_url"],
            "fingerprint": master_fp,
        }

    async def on_welcome(self, key_id: str, body: Any) -> dict[str, Any]:
        """The master accepted: check the nonce, take the member list, then import."""
        if not isinstance(body, dict) or not isinstance(body.get("nonce"), str):
            raise PeerError(400, "bad_request", "welcome needs a nonce")
        members = [_member(m) for m in body.get("members", [])]
        async with self.db.transaction() as session:
            request = await _outgoing_request(session, key_id)
            if request is None or not secrets.compare_digest(request.nonce, body["nonce"]):
                raise PeerError(403, "unexpected_welcome", "no pending join request matches")
            if request.state == "accepted":
                # the same welcome again (its answer was lost, or it arrived twice): confirm
                # again while still in that group, or the master never adds this shop
                master = await session.get(PeerRow, request.domain)
                if master is None or master.state not in LIVE:
                    raise PeerError(403, "unexpected_welcome", "no pending join request matches")
                return {"confirmed": True, **self.describe()}
            if self.clock.now() - request.received_at > REQUEST_TTL:
                request.state = "expired"
                raise PeerError(410, "expired", "the join request expired")
            if (await session.exec(select(PeerRow).where(col(PeerRow.state).in_(LIVE)))).first():
                raise PeerError(409, "already_in_group", "this shop joined another group")
            request.state = "accepted"
            now = self.clock.now()
            for member in members:
                if member["domain"] != self.identity.domain:
                    await self._upsert_peer(session, member, now, force=True)
            synclog.record(
                session,
                "joined",
                now,
                peer=request.domain,
                message=f"accepted into a group of {len(members) + 1}",
            )
            master = (request.domain, request.agent_url)
        state = {
            "state": "running",
            "phase": "snapshot",
            "master": master[0],
            "master_url": master[1],
            "started_at": self.clock.now(),
        }
        await self.set_state("import", state)
        self.start_import(*master)
        return {"confirmed": True, **self.describe()}

    @property
    def importing(self) -> bool:
        """True from the welcome until the master's snapshot is this agent's base."""
        return self.import_task is not None and not self.import_task.done()

    def start_import(self, domain: str, agent_url: str) -> None:
        """Take the master's snapshot in the background (also to resume one after a crash)."""
        if self.replicator is not None:
            self.replicator.importing = True
        self.import_task = asyncio.create_task(self._import_from(domain, agent_url))

    async def resume_import(self) -> None:
        """On start: finish a join that a crash interrupted.

        Before the snapshot was installed, the snapshot is taken again. After it was, it is
        never taken again: since the install, the shop's own sales are events of the new base,
        and a second install would drop those not yet sent. The join goes on from the install.
        """
        state = await self.get_state("import", {})
        if state.get("phase") != "snapshot" or not state.get("master_url"):
            return
        log.info("import_resumed", peer=state["master"], installed=bool(state.get("installed")))
        if not state.get("installed"):
            self.start_import(state["master"], state["master_url"])
            return
        if self.replicator is not None:
            self.replicator.importing = True
        report = await self.get_state("import_report", None)
        async with self.db.sessions() as session:
            skus = set(await session.exec(select(PoolRow.sku)))
        self.import_task = asyncio.create_task(self._after_install(state["master"], report, skus))

    async def _import_from(self, domain: str, agent_url: str) -> None:
        """Take the master's snapshot as this agent's base, then sync live (DESIGN §8)."""
        delay = 0.2
        while True:
            try:
                status, snap = await self.call(agent_url, "POST", "/peer/snapshot", {})
                if status == 200:
                    break
                error = f"snapshot answered {status}: {snap.get('error')}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = str(exc)
            log.info("snapshot_retry", peer=domain, error=error)
            await self.clock.sleep(delay)
            delay = min(30.0, delay * 2)
        report = None
        while self.importer is not None:
            try:  # the pre-flight lists the shop: a 429/5xx must not end the import
                await self.importer.hold_for_import()
                pools = {row[0]: row[1] + row[4] for row in snap["pools"] if row[1] is not None}
                report = await self.importer.preflight(pools)
                break
            except Exception as exc:
                log.warning("preflight_retry", peer=domain, error=str(exc))
                await self.clock.sleep(delay)
                delay = min(30.0, delay * 2)
        skus = await self.install_snapshot(snap, domain, report)
        await self._after_install(domain, report, skus)

    async def _after_install(
        self, domain: str, report: dict[str, Any] | None, skus: set[str]
    ) -> None:
        """The snapshot is this agent's base: sync live, and write the cut-over counts."""
        if self.replicator is not None:
            self.replicator.importing = False
            await self.replicator.start()
        if self.importer is not None:
            await self.importer.start(reason="join", master=domain, report=report, mark=False)
        self.on_joined(skus)

    async def install_snapshot(
        self, snap: dict[str, Any], master: str, report: dict[str, Any] | None = None
    ) -> set[str]:
        """Replace this agent's solo ledger by the master's snapshot, in one transaction.

        A new epoch starts: events of the shop's life before the join are not the group's.
        Items whose SKU the group knows wait for their cut-over write; the others will be
        introduced as new products. The same transaction notes in the import's state that the
        snapshot is installed (with the pre-flight `report`), so that a restart goes on from
        here instead of installing a snapshot again.
        """
        vector = vector_from_wire(snap["vector"])
        extra = [event_from_wire(e) for e in snap.get("extra_events", [])]
        now = self.clock.now()
        async with self.db.transaction() as session:
            for table in (EventRow, PoolRow, VectorEntry):
                await session.exec(delete(table))  # type: ignore[call-overload]
            skus = set()
            for sku, base, created, origin, deltas in snap["pools"]:
                session.add(
                    PoolRow(
                        sku=sku,
                        base=base,
                        base_created=created,
                        base_origin=origin,
                        deltas=deltas,
                        updated_at=now,
                    )
                )
                skus.add(sku)
            for (origin, epoch), seq in vector.items():
                session.add(VectorEntry(origin=origin, epoch=epoch, seq=seq))
            for event in extra:
                session.add(event)  # already folded into the pools: held, not applied again
            identity = await session.get(Identity, 1)
            assert identity is not None
            identity.epoch = self.identity.epoch = uuid.uuid4().hex[:16]
            for item in await session.exec(select(ItemRow)):
                if item.sku in skus:
                    item.cutover_pending = item.excluded is None
                else:
                    item.published, item.cutover_pending = None, False
            synclog.record(
                session,
                "import",
                now,
                peer=master,
                message=f"snapshot of {len(skus)} SKUs taken as this shop's base",
            )
            state = await read_state(session, "import", {})
            await write_state(session, "import", {**state, "installed": True})
            await write_state(session, "import_report", report or {})
        return skus

    # -- the master ----------------------------------------------------------------------------

    async def on_join_request(self, key_id: str, body: Any) -> dict[str, Any]:
        """Store a join request as pending (nothing is trusted yet)."""
        member = _member(body)
        if fingerprint(member["public_key"]) != key_id:
            raise PeerError(401, "key_mismatch", "the request is not signed by the key it carries")
        if not isinstance(body.get("nonce"), str) or not 16 <= len(body["nonce"]) <= 128:
            raise PeerError(400, "bad_request", "a join request carries a nonce")
        if member["domain"] == self.identity.domain:
            raise PeerError(409, "same_domain", "a shop cannot join itself")
        now = self.clock.now()
        async with self.db.transaction() as session:
            peer = await session.get(PeerRow, member["domain"])
            if peer is not None and peer.state in LIVE:
                raise PeerError(409, "already_member", f"{member['domain']} is already a member")
            existing = await session.get(JoinRequest, (member["domain"], "incoming"))
            if existing is not None:
                await session.delete(existing)
                await session.flush()
            session.add(
                JoinRequest(
                    domain=member["domain"],
                    direction="incoming",
                    agent_url=member["agent_url"],
                    public_key=member["public_key"],
                    fingerprint=key_id,
                    nonce=body["nonce"],
                    received_at=now,
                )
            )
            synclog.record(
                session,
                "join_request",
                now,
                peer=member["domain"],
                message=f"from {member['agent_url']}, key {key_id}",
            )
        return {"status": "pending", "domain": self.identity.domain}

    async def list_requests(self) -> list[dict[str, Any]]:
        """Pending incoming requests; expired ones are marked so on the way."""
        now = self.clock.now()
        async with self.db.transaction() as session:
            rows = list(
                await session.exec(
                    select(JoinRequest).where(
                        JoinRequest.direction == "incoming", JoinRequest.state == "pending"
                    )
                )
            )
            out = []
            for row in rows:
                if now - row.received_at > REQUEST_TTL:
                    row.state = "expired"
                    synclog.record(session, "join_request_expired", now, peer=row.domain)
                    continue
                out.append(
                    {
                        "domain": row.domain,
                        "agent_url": row.agent_url,
                        "fingerprint": row.fingerprint,
                        "received_at": row.received_at,
                    }
                )
        return sorted(out, key=lambda r: r["received_at"])

    async def _pending(self, domain: str) -> JoinRequest:
        for request in await self.list_requests():
            if request["domain"] == domain:
                async with self.db.sessions() as session:
                    row = await session.get(JoinRequest, (domain, "incoming"))
                assert row is not None
                return row
        raise PeerError(404, "no_request", f"no pending join request from {domain}")

    async def accept(self, domain: str) -> dict[str, Any]:
        """Accept a pending request: call the joiner back, add it, introduce it to all.

        The member row is written just before the callback, so that the joiner's snapshot
        request, which may arrive before the callback's answer, is served; if the joiner does
        not confirm, the row is removed again and the request stays pending.
        """
        request = await self._pending(domain)
        members = [self.me(), *await self.members_wire()]
        now = self.clock.now()
        newcomer = {
            "domain": domain,
            "agent_url": request.agent_url,
            "public_key": request.public_key,
            "state": "active",
            "changed_at": now,
        }
        async with self.db.transaction() as session:
            previous = await session.get(PeerRow, domain)
            if previous is not None:
                await session.delete(previous)
                await session.flush()
            await self._upsert_peer(session, newcomer, now, force=True)
        try:
            body = {"nonce": request.nonce, "members": members}
            status, answer = await self.call(request.agent_url, "POST", "/peer/welcome", body)
            if status != 200 or answer.get("domain") != domain:
                raise PeerError(
                    502,
                    "not_confirmed",
                    f"{domain} did not confirm: {answer.get('message', status)}",
                )
        except (aiohttp.ClientError, TimeoutError, OSError, PeerError) as exc:
            async with self.db.transaction() as session:
                await session.exec(delete(PeerRow).where(PeerRow.domain == domain))  # type: ignore[call-overload]
            if isinstance(exc, PeerError):
                raise
            raise PeerError(
                502, "unreachable", f"cannot reach {request.agent_url}: {exc}"
            ) from None
        async with self.db.transaction() as session:
            row = await session.get(JoinRequest, (domain, "incoming"))
            if row is not None:
                row.state = "accepted"
            peer = await self._upsert_peer(session, newcomer, now, force=True)
            synclog.record(session, "accept", now, peer=domain, message="join request accepted")
        if self.replicator is not None:
            await self.replicator.ensure_link(peer)
        introduced = []
        for other in members[1:]:
            if other["state"] != "active":
                continue
            try:
                status, _ = await self.call(
                    other["agent_url"], "POST", "/peer/introduce", {"member": newcomer}
                )
                if status == 200:
                    introduced.append(other["domain"])
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.info("introduce_deferred", peer=other["domain"], error=str(exc))
        return {"accepted": domain, "introduced": introduced}

    async def reject(self, domain: str) -> dict[str, Any]:
        request = await self._pending(domain)
        async with self.db.transaction() as session:
            row = await session.get(JoinRequest, (request.domain, "incoming"))
            assert row is not None
            row.state = "rejected"
            synclog.record(session, "reject", self.clock.now(), peer=domain)
        return {"rejected": domain}

    # -- members -------------------------------------------------------------------------------

    async def members_wire(self) -> list[dict[str, Any]]:
        async with self.db.sessions() as session:
            peers = list(await session.exec(select(PeerRow)))
        return [
            {
                "domain": p.domain,
                "agent_url": p.agent_url,
                "public_key": p.public_key,
                "state": p.state,
                "changed_at": p.changed_at,
            }
            for p in peers
        ]

    async def _upsert_peer(
        self, session: Any, member: dict[str, Any], now: float, *, force: bool = False
    ) -> PeerRow:
        peer = await session.get(PeerRow, member["domain"])
        if peer is None:
            peer = PeerRow(
                domain=member["domain"],
                agent_url=member["agent_url"],
                public_key=member["public_key"],
                fingerprint=fingerprint(member["public_key"]),
                state=member["state"],
                changed_at=member["changed_at"],
                joined_at=now,
            )
            session.add(peer)
        elif force or member["changed_at"] > peer.changed_at:
            peer.agent_url, peer.public_key = member["agent_url"], member["public_key"]
            peer.fingerprint = fingerprint(member["public_key"])
            peer.state, peer.changed_at = member["state"], member["changed_at"]
        return peer

    async def merge_members(self, members: list[Any], via: str) -> None:
        """Fold a member list heard from a peer: newer changes win, per member.

        Every pull brings the peer's list, nearly always what this agent already holds, so it
        is compared first in one read; only news takes the write lock.
        """
        heard = []
        for raw in members:
            try:
                member = _member(raw)
            except PeerError as exc:
                log.warning("member_ignored", peer=via, error=exc.message)
                continue
            if member["domain"] != self.identity.domain:
                heard.append(member)
        async with self.db.sessions() as session:
            known = {p.domain: p.changed_at for p in await session.exec(select(PeerRow))}
        news = [
            m
            for m in heard
            if (m["domain"] not in known and m["state"] != "left")
            or (m["domain"] in known and m["changed_at"] > known[m["domain"]])
        ]
        if not news:
            return
        changed = []
        now = self.clock.now()
        async with self.db.transaction() as session:
            for member in news:
                before = await session.get(PeerRow, member["domain"])
                old = None if before is None else (before.state, before.changed_at)
                if before is None and member["state"] == "left":
                    continue
                peer = await self._upsert_peer(session, member, now)
                if old != (peer.state, peer.changed_at):
                    kind = "introduce" if before is None else f"member_{peer.state}"
                    synclog.record(session, kind, now, peer=peer.domain, message=f"via {via}")
                    changed.append(peer)
        if self.replicator is not None:
            for peer in changed:
                await self.replicator.ensure_link(peer)

    async def on_introduce(self, key_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise PeerError(400, "bad_request", "body must be an object")
        await self.merge_members([body.get("member")], via=key_id)
        return {"ok": True}

    async def on_member_state(self, key_id: str, body: Any) -> dict[str, Any]:
        """A member tells its own new state: "left", "paused" or "active"."""
        async with self.db.sessions() as session:
            sender = (
                await session.exec(select(PeerRow).where(PeerRow.fingerprint == key_id))
            ).first()
        if sender is None or not isinstance(body, dict):
            raise PeerError(400, "bad_request", "unknown sender")
        state = body.get("state")
        if state not in ("left", "paused", "active"):
            raise PeerError(400, "bad_state", "state must be left, paused or active")
        changed = body.get("changed_at")
        if not isinstance(changed, int | float):
            changed = self.clock.now()
        member = {
            "domain": sender.domain,
            "agent_url": sender.agent_url,
            "public_key": sender.public_key,
            "state": state,
            "changed_at": changed,
        }
        await self.merge_members([member], via=sender.domain)
        return {"ok": True}

    async def heard_from(self, key_id: str) -> str:
        """A member's sync call arrived: its domain (the key id if unknown). A member we took
        for paused is syncing again (its resume may have been lost): it is active."""
        async with self.db.sessions() as session:
            peer = (
                await session.exec(select(PeerRow).where(PeerRow.fingerprint == key_id))
            ).first()
        if peer is None:
            return key_id
        if peer.state == "paused":
            member = {
                "domain": peer.domain,
                "agent_url": peer.agent_url,
                "public_key": peer.public_key,
                "state": "active",
                "changed_at": self.clock.now(),
            }
            await self.merge_members([member], via=peer.domain)
        return peer.domain

    # -- this agent's own membership -------------------------------------------------------------

    async def _tell_all(self, state: str) -> list[str]:
        told = []
        for member in await self.members_wire():
            if member["state"] == "left":
                continue
            try:
                body = {"state": state, "changed_at": self.clock.now()}
                status, _ = await self.call(member["agent_url"], "POST", "/peer/state", body)
                if status == 200:
                    told.append(member["domain"])
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
        return told

    async def leave(self) -> dict[str, Any]:
        if not await self.in_group():
            raise PeerError(409, "not_in_group", "this shop is not in a group")
        told = await self._tell_all("left")
        if self.replicator is not None:
            await self.replicator.stop()
        async with self.db.transaction() as session:
            await session.exec(delete(PeerRow))  # type: ignore[call-overload]
            synclog.record(
                session,
                "leave",
                self.clock.now(),
                message=f"left the group; told {', '.join(told) or 'nobody'}",
            )
        return {"left": True, "told": told}

    async def set_paused(self, paused: bool) -> dict[str, Any]:
        await self.set_state("paused", paused)
        if self.replicator is not None:
            self.replicator.paused = paused
            if not paused:
                self.replicator.wake_all()
        told = await self._tell_all("paused" if paused else "active")
        async with self.db.transaction() as session:
            synclog.record(
                session,
                "pause" if paused else "resume",
                self.clock.now(),
                message=f"told {', '.join(told) or 'nobody'}",
            )
        return {"paused": paused, "told": told}
