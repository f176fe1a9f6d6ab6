"""Join by request and accept, introduce newcomers, leave and pause (DESIGN §6).

1. The joiner resolves the master (agent URL, or shop domain), remembers the master's key and
   a nonce, and posts a signed join request. The master stores it as pending, beside any
   other request claiming the same domain: nothing is trusted and nothing is sent until its
   owner accepts one, by domain and key fingerprint.
2. On accept the master signs the shop's admission and calls the joiner back at the URL it
   claimed, with the nonce, the admission and the member list. The joiner checks the nonce and
   the master's key against its own request and confirms with a signature of the key it asked
   with; this proves it holds that URL and key. Then it imports the master's snapshot.
3. The master introduces the newcomer to every other member with its signed admission; member
   records also travel with every pull. A record changes only by its proofs
   (`agent.membership.judge`): a member speaks only for itself.
The master's side of a join lives in `agent.joins`, the joiner's import in
`agent.join_import`; both are parts of `Peering`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlmodel import col, delete, select

from agent import ledger, synclog, trust
from agent.clock import Clock
from agent.db import Database, write_state
from agent.discovery import DiscoveryError, resolve_target
from agent.join_import import JoinImport
from agent.joins import (
    MAX_PENDING,
    REQUEST_TTL,
    JoinDesk,
    PeerError,
    parse_member,
    said,
    write_peer,
)
from agent.membership import (
    LIVE,
    Admission,
    Member,
    admission_from_wire,
    judge,
    member_from_row,
    member_from_wire,
)
from agent.models import (
    EventRow,
    Identity,
    JoinRequest,
    PeerRow,
)
from agent.replication import Replicator
from agent.signing import SigningError, fingerprint, load_public_key_b64
from agent.sql import Tx
from agent.syncmode import SyncMode
from agent.transport import Transport

if TYPE_CHECKING:
    from agent.importer import Importer

__all__ = ["MAX_PENDING", "PeerError", "Peering", "REQUEST_TTL"]

log = structlog.get_logger(__name__)

_ME = "me"  # agent_state key of this agent's own signed member record


async def _outgoing_request(session: Any, key_id: str) -> JoinRequest | None:
    """This agent's own join request to the master whose key is `key_id` (pending, or already
    accepted: a welcome may arrive twice)."""
    query = select(JoinRequest).where(
        JoinRequest.direction == "outgoing",
        JoinRequest.fingerprint == key_id,
        col(JoinRequest.state).in_(("pending", "accepted")),
    )
    return (await session.exec(query)).first()


class Peering(JoinDesk, JoinImport):
    """This agent's side of membership. I/O (transport, clock, database) is injected."""

    def __init__(
        self,
        *,
        db: Database,
        identity: Identity,
        public_url: str,
        clock: Clock,
        transport: Transport,
        http: aiohttp.ClientSession | None,
        private_key: Ed25519PrivateKey,
        on_joined: Callable[[set[str]], None],
        mode: SyncMode,
        max_skew: float = 300.0,
    ) -> None:
        self.db = db
        self.mode = mode
        self.identity = identity
        self.public_url = public_url
        self.clock = clock
        self.transport = transport
        self.http = http  # for finding a master by its domain
        self.private_key = private_key
        self.key_id = fingerprint(identity.public_key)
        self.on_joined = on_joined
        self.max_skew = max_skew
        self.replicator: Replicator | None = None
        self.importer: Importer | None = None
        self.import_task: asyncio.Task[None] | None = None
        self._me: Member | None = None
        self._keys: dict[str, Ed25519PublicKey] | None = None  # origin -> key, while unchanged
        self._refusals: set[tuple[str, str]] = set()  # member refusals logged once each

    # -- signed calls ---------------------------------------------------------------------------

    async def call(
        self, agent_url: str, audience: str, method: str, path: str, body: Any
    ) -> tuple[int, dict]:
        """A signed request to another agent, for it alone (`audience`: its key id)."""
        return await self.transport.call(agent_url, audience, method, path, body)

    def sign(self, message: bytes) -> str:
        return trust.sign(self.private_key, message)

    def sign_event(self, event: EventRow) -> str:
        """This agent's proof of origin for one of its own events."""
        return trust.sign_event(self.private_key, event)

    def describe(self) -> dict[str, Any]:
        """What `/.well-known/shopsync` says about this agent."""
        return {
            "domain": self.identity.domain,
            "agent_url": self.public_url,
            "public_key": self.identity.public_key,
            "fingerprint": self.key_id,
        }

    def me(self) -> dict[str, Any]:
        """This agent's own member record, with its signed statement (and admission)."""
        assert self._me is not None, "Peering.load() runs at start"
        return {**self._me.to_wire(), "fingerprint": self.key_id}

    # -- this agent's own record ---------------------------------------------------------------

    async def load(self) -> None:
        """At start: this agent's own signed record, stated anew when its URL or state moved
        (a new public_url in the config, or a record from before statements were signed);
        and a proof for any of its own events stored without one."""
        current = self._own_record(await self.db.get_state(_ME, None))
        wanted = "paused" if self.mode.paused else "active"
        if current is not None and current.state == "left":
            wanted = "left"  # until a welcome into a group
        if current is None or (current.agent_url, current.state) != (self.public_url, wanted):
            async with self.db.transaction() as session:
                current = self._stated(wanted, current)
                await write_state(session, _ME, current.to_wire())
        self._me = current
        await self._sign_own_backlog()

    def _own_record(self, raw: Any) -> Member | None:
        """The stored record of this agent, if it is whole and signed by this agent's key."""
        try:
            member = member_from_wire(raw)
        except ValueError:
            return None
        own_key = load_public_key_b64(self.identity.public_key)
        if member.public_key != self.identity.public_key or not trust.signed_by(
            own_key, member.statement(), member.proof
        ):
            return None
        return member

    def _stated(
        self, state: str, previous: Member | None = None, admission: Admission | None = None
    ) -> Member:
        """A new signed statement of this agent's own, newer than the last one."""
        last = previous or self._me
        changed = self.clock.now()
        if last is not None and changed <= last.changed_at:
            changed = last.changed_at + 0.001
        member = Member(
            domain=self.identity.domain,
            agent_url=self.public_url,
            public_key=self.identity.public_key,
            state=state,
            changed_at=changed,
            admission=admission if admission is not None or last is None else last.admission,
        )
        return dataclasses.replace(member, proof=self.sign(member.statement()))

    async def _restate(self, state: str, admission: Admission | None = None) -> Member:
        async with self.db.transaction() as session:
            member = self._stated(state, admission=admission)
            await write_state(session, _ME, member.to_wire())
        self._me = member
        return member

    async def _sign_own_backlog(self) -> None:
        """Events made before events were signed get their proof now (the agent's own only:
        a peer's unsigned events are never forwarded)."""
        async with self.db.sessions() as session:
            rows = await ledger.unsigned_own(session, self.identity)
        if not rows:
            return
        async with self.db.transaction() as session:
            for row in rows:
                stored = await session.get(EventRow, (row.origin, row.epoch, row.seq))
                if stored is not None and not stored.proof:
                    stored.proof = self.sign_event(stored)
        log.info("own_events_signed", events=len(rows))

    # -- keys, for the signature middleware and the inbox ---------------------------------------

    async def member_key(self, key_id: str) -> Ed25519PublicKey | None:
        """The key of the live member whose key id is `key_id` (every peer request asks)."""
        query = "SELECT state, public_key FROM peer WHERE fingerprint = ? LIMIT 1"
        row = await self.db.read(lambda conn: Tx(conn).one(query, (key_id,)))
        if row is None or row[0] not in LIVE:
            return None
        return load_public_key_b64(row[1])

    async def is_member(self, key_id: str) -> bool:
        return await self.member_key(key_id) is not None

    async def welcome_key(self, key_id: str) -> Ed25519PublicKey | None:
        """The key of a master this agent asked to join (only it may send the welcome)."""
        async with self.db.sessions() as session:
            request = await _outgoing_request(session, key_id)
        return None if request is None else load_public_key_b64(request.public_key)

    async def origin_keys(self) -> dict[str, Ed25519PublicKey]:
        """The key of every origin whose events this agent takes: itself and every member,
        former ones included (their events may still be on their way)."""
        if self._keys is None:
            async with self.db.sessions() as session:
                rows = list(await session.exec(select(PeerRow.domain, PeerRow.public_key)))
            keys = {domain: load_public_key_b64(key) for domain, key in rows}
            keys[self.identity.domain] = load_public_key_b64(self.identity.public_key)
            self._keys = keys
        return self._keys

    def _members_changed(self) -> None:
        self._keys = None

    async def _audience(self, domain: str) -> str:
        """The key id of member `domain` (whom a signed call is for)."""
        async with self.db.sessions() as session:
            peer = await session.get(PeerRow, domain)
        if peer is None:
            raise PeerError(404, "not_a_member", f"{domain} is not a member")
        return peer.fingerprint

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
            if self.http is None:
                raise DiscoveryError("this agent cannot look up other agents")
            master = await resolve_target(self.http, target)
        except DiscoveryError as exc:
            raise PeerError(502, "not_found", str(exc)) from None
        try:
            domain = trust.check_domain(master["domain"], "the master's domain")
            agent_url = trust.check_agent_url(master["agent_url"], "the master's agent_url")
            master_fp = fingerprint(master["public_key"])
        except (ValueError, SigningError) as exc:
            raise PeerError(502, "bad_master", str(exc)) from None
        if domain == self.identity.domain:
            raise PeerError(400, "self", "that is this shop's own agent")
        nonce = secrets.token_urlsafe(24)
        now = self.clock.now()
        async with self.db.transaction() as session:
            await session.exec(delete(JoinRequest).where(col(JoinRequest.direction) == "outgoing"))
            session.add(
                JoinRequest(
                    domain=domain,
                    direction="outgoing",
                    agent_url=agent_url,
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
                peer=domain,
                message=f"to {agent_url}, its key {master_fp}",
            )
        body = {**self.describe(), "nonce": nonce}
        try:
            status, answer = await self.call(agent_url, master_fp, "POST", "/peer/join", body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerError(502, "unreachable", f"cannot reach {agent_url}: {exc}") from None
        if status != 202:
            raise PeerError(
                502,
                str(answer.get("error", "refused"))[:40],
                f"{domain} refused the request: {str(answer.get('message', status))[:300]}",
            )
        return {
            "status": "pending",
            "domain": domain,
            "agent_url": agent_url,
            "fingerprint": master_fp,
            "own_fingerprint": self.key_id,
        }

    async def on_welcome(self, key_id: str, body: Any) -> dict[str, Any]:
        """The master accepted: check the nonce and the admission, take the member list,
        confirm with this agent's key, then import."""
        if not isinstance(body, dict) or not isinstance(body.get("nonce"), str):
            raise PeerError(400, "bad_request", "welcome needs a nonce")
        raw_members = body.get("members", [])
        if not isinstance(raw_members, list) or len(raw_members) > 1000:
            raise PeerError(400, "bad_request", "members must be a list")
        members = [parse_member(m) for m in raw_members]
        try:
            admission = admission_from_wire(body.get("admission"))
        except ValueError as exc:
            raise PeerError(400, "bad_request", f"malformed admission: {exc}") from None
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
                return self._confirmation(request)
            if self.clock.now() - request.received_at > REQUEST_TTL:
                raise PeerError(410, "expired", "the join request expired")
            if (await session.exec(select(PeerRow).where(col(PeerRow.state).in_(LIVE)))).first():
                raise PeerError(409, "already_in_group", "this shop joined another group")
            mine = Member(self.identity.domain, self.public_url, self.identity.public_key)
            master_key = load_public_key_b64(request.public_key)
            if admission is not None and (
                admission.by != request.domain
                or not trust.signed_by(
                    master_key, mine.admission_message(admission), admission.signature
                )
            ):
                raise PeerError(403, "bad_admission", "the admission is not the master's")
            request.state = "accepted"
            now = self.clock.now()
            for member in members:
                if member.domain == self.identity.domain:
                    continue
                stored, reason = judge(
                    member,
                    None,
                    admitters={},
                    now=now,
                    max_skew=self.max_skew,
                    trusted=True,
                )
                if stored is None:
                    raise PeerError(400, "bad_member", reason)
                old = await session.get(PeerRow, member.domain)
                write_peer(session, old, stored, now)
            me = self._stated("active", admission=admission)
            await write_state(session, _ME, me.to_wire())
            synclog.record(
                session,
                "joined",
                now,
                peer=request.domain,
                message=f"accepted into a group of {len(members) + 1}",
            )
            joining = (request.domain, request.agent_url)
        self._me = me
        self._members_changed()
        state = {
            "state": "running",
            "phase": "snapshot",
            "master": joining[0],
            "master_url": joining[1],
            "started_at": self.clock.now(),
        }
        await self.set_state("import", state)
        self.start_import(*joining)
        return self._confirmation(request)

    def _confirmation(self, request: JoinRequest) -> dict[str, Any]:
        """The answer to a welcome, signed so that the master knows it is from this key."""
        message = trust.welcome_message(
            request.nonce, request.fingerprint, self.identity.domain, self.identity.public_key
        )
        return {
            "confirmed": True,
            **self.describe(),
            "member": self.me(),
            "confirmation": self.sign(message),
        }

    # -- members -------------------------------------------------------------------------------

    async def members_wire(self) -> list[dict[str, Any]]:
        async with self.db.sessions() as session:
            peers = list(await session.exec(select(PeerRow)))
        return [member_from_row(p).to_wire() for p in peers]

    async def merge_members(
        self, members: list[Any], via: str, *, only: str | None = None
    ) -> list[str]:
        """Fold member records heard from `via`, each as `agent.membership.judge` allows;
        returns why records were refused. `only` limits the records to that one domain (a
        member telling its own state).

        Every pull brings the peer's list, nearly always what this agent already holds, so it
        is compared first in one read; only news takes the write lock. A record admitted by a
        member this list also introduces is judged again once that member is in.
        """
        heard: list[Member] = []
        refusals: list[str] = []
        for raw in members[:1000]:
            try:
                member = member_from_wire(raw)
            except ValueError as exc:
                refusals.append(str(exc))
                continue
            if member.domain != self.identity.domain and only in (None, member.domain):
                heard.append(member)
        async with self.db.sessions() as session:
            rows = {p.domain: p for p in await session.exec(select(PeerRow))}
        known = {d: said(member_from_row(r)) for d, r in rows.items()}
        heard = [m for m in heard if known.get(m.domain) != said(m)]
        if heard:
            changed, refused = await self._fold(heard, via)
            refusals += refused
            if self.replicator is not None:
                for peer in changed:
                    await self.replicator.ensure_link(peer)
        self._log_refusals(refusals, via)
        return refusals

    async def _fold(self, heard: list[Member], via: str) -> tuple[list[PeerRow], list[str]]:
        now = self.clock.now()
        changed: list[PeerRow] = []
        refusals: list[str] = []
        async with self.db.transaction() as session:
            rows = {p.domain: p for p in await session.exec(select(PeerRow))}
            known = {d: member_from_row(r) for d, r in rows.items()}
            admitters = {
                d: load_public_key_b64(m.public_key) for d, m in known.items() if m.state in LIVE
            }
            admitters[self.identity.domain] = load_public_key_b64(self.identity.public_key)
            waiting = heard
            while waiting:
                later: list[Member] = []
                for member in waiting:
                    stored, reason = judge(
                        member,
                        known.get(member.domain),
                        admitters=admitters,
                        now=now,
                        max_skew=self.max_skew,
                    )
                    if stored is None:
                        if reason.endswith("not admitted by a member"):
                            later.append(member)
                        elif reason:
                            refusals.append(reason)
                        continue
                    before = known.get(member.domain)
                    row = write_peer(session, rows.get(member.domain), stored, now)
                    rows[member.domain] = row
                    known[member.domain] = stored
                    if stored.state in LIVE:
                        admitters[member.domain] = load_public_key_b64(stored.public_key)
                    kind = "introduce" if before is None else f"member_{stored.state}"
                    if before is None or before.state != stored.state:
                        synclog.record(session, kind, now, peer=member.domain, message=f"via {via}")
                    changed.append(row)
                if len(later) == len(waiting):
                    refusals += [f"{m.domain}: not admitted by a member" for m in later]
                    break
                waiting = later
        if changed:
            self._members_changed()
        return changed, refusals

    def _log_refusals(self, refusals: list[str], via: str) -> None:
        """Each refused record once in the operator log (lists come with every pull)."""
        for reason in refusals:
            if (via, reason) in self._refusals:
                continue
            if len(self._refusals) > 10_000:
                self._refusals.clear()
            self._refusals.add((via, reason))
            log.warning("member_refused", peer=via, reason=reason[:300])

    async def _sender(self, key_id: str) -> PeerRow:
        async with self.db.sessions() as session:
            sender = (
                await session.exec(select(PeerRow).where(PeerRow.fingerprint == key_id))
            ).first()
        if sender is None:
            raise PeerError(403, "not_a_member", "unknown sender")
        return sender

    async def on_introduce(self, key_id: str, body: Any) -> dict[str, Any]:
        """A member introduces a shop it admitted: taken only with a valid admission."""
        if not isinstance(body, dict) or not isinstance(body.get("member"), dict):
            raise PeerError(400, "bad_request", "an introduction carries a member")
        sender = await self._sender(key_id)
        member = parse_member(body["member"])
        refused = await self.merge_members([body["member"]], via=sender.domain)
        if refused:
            raise PeerError(403, "not_admitted", refused[0])
        async with self.db.sessions() as session:
            row = await session.get(PeerRow, member.domain)
        if row is None:
            raise PeerError(403, "not_admitted", f"{member.domain}: not admitted by a member")
        return {"ok": True}

    async def on_member_state(self, key_id: str, body: Any) -> dict[str, Any]:
        """A member tells its own new state ("left", "paused", "active") in a record signed
        by itself; a record about anybody else is refused."""
        if not isinstance(body, dict) or not isinstance(body.get("member"), dict):
            raise PeerError(400, "bad_request", "a state change carries the member's own record")
        await self.heard_from(key_id, body["member"], strict=True)
        return {"ok": True}

    async def heard_from(self, key_id: str, record: Any = None, *, strict: bool = False) -> str:
        """A member's call arrived, maybe with its own record: fold that record in (the
        sender speaks for itself only) and return the sender's domain."""
        sender = await self._sender(key_id)
        if isinstance(record, dict):
            member = parse_member(record)
            if member.domain != sender.domain or member.public_key != sender.public_key:
                raise PeerError(403, "not_own_record", "a member may only speak for itself")
            refused = await self.merge_members([record], via=sender.domain, only=sender.domain)
            if refused and strict:
                raise PeerError(403, "bad_statement", refused[0])
        return sender.domain

    # -- this agent's own membership -------------------------------------------------------------

    async def _tell_all(self) -> list[str]:
        """Send this agent's own (new) record to every member that has not left."""
        told = []
        body = {"member": self.me()}
        for member in await self.members_wire():
            if member["state"] == "left":
                continue
            try:
                audience = fingerprint(member["public_key"])
                status, _ = await self.call(
                    member["agent_url"], audience, "POST", "/peer/state", body
                )
                if status == 200:
                    told.append(member["domain"])
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
        return told

    async def leave(self) -> dict[str, Any]:
        if not await self.in_group():
            raise PeerError(409, "not_in_group", "this shop is not in a group")
        await self._restate("left")
        told = await self._tell_all()
        if self.replicator is not None:
            await self.replicator.stop()
        async with self.db.transaction() as session:
            await session.exec(delete(PeerRow))
            synclog.record(
                session,
                "leave",
                self.clock.now(),
                message=f"left the group; told {', '.join(told) or 'nobody'}",
            )
        self._members_changed()
        return {"left": True, "told": told}

    async def set_paused(self, paused: bool) -> dict[str, Any]:
        await self.mode.set_paused(paused)
        if self._me is not None and self._me.state != "left":
            await self._restate("paused" if paused else "active")
        told = await self._tell_all()
        async with self.db.transaction() as session:
            synclog.record(
                session,
                "pause" if paused else "resume",
                self.clock.now(),
                message=f"told {', '.join(told) or 'nobody'}",
            )
        return {"paused": paused, "told": told}
