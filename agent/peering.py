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
The member records themselves live in `agent.roster`, the master's side of a join in
`agent.joins`, the joiner's import in `agent.join_import`; `agent.agent.Agent` builds them all.
"""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import col, delete, select

from agent import synclog, trust
from agent.clock import Clock
from agent.db import Database, write_state
from agent.discovery import DiscoveryError, resolve_target
from agent.importer import JOIN_OPTIONS, LEFT_GROUP, WHILE_OUT_CHOICES
from agent.join_import import JoinImport
from agent.joins import MAX_PENDING, REQUEST_TTL
from agent.membership import LIVE, Member, admission_from_wire, judge
from agent.models import Identity, JoinRequest, PeerRow
from agent.replication import Replicator
from agent.roster import OWN_RECORD, PeerError, Roster, parse_member, write_peer
from agent.signing import SigningError, fingerprint, load_public_key_b64
from agent.syncmode import SyncMode
from agent.transport import PeerCaller

__all__ = ["MAX_PENDING", "PeerError", "Peering", "REQUEST_TTL"]

log = structlog.get_logger(__name__)


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
    """This agent's own membership: join a group, introduce, leave, pause."""

    def __init__(
        self,
        *,
        db: Database,
        identity: Identity,
        clock: Clock,
        call: PeerCaller,
        roster: Roster,
        mode: SyncMode,
        replicator: Replicator,
        join_import: JoinImport,
        http: aiohttp.ClientSession | None,
    ) -> None:
        self.db = db
        self.identity = identity
        self.clock = clock
        self.call = call
        self.roster = roster
        self.mode = mode
        self.replicator = replicator
        self.join_import = join_import
        self.http = http  # for finding a master by its domain

    async def welcome_key(self, key_id: str) -> Ed25519PublicKey | None:
        """The key of a master this agent asked to join (only it may send the welcome)."""
        async with self.db.sessions() as session:
            request = await _outgoing_request(session, key_id)
        return None if request is None else load_public_key_b64(request.public_key)

    # -- the joiner ----------------------------------------------------------------------------

    async def send_join(self, target: str, *, while_out: str = "count") -> dict[str, Any]:
        """Send a join request to the agent of `target` (agent URL or shop domain).

        `while_out` matters if this shop joins the group it left before: "count" the changes
        it made while out (sales, edits) into the group's counts, or "discard" them (the
        group's counts win)."""
        if while_out not in WHILE_OUT_CHOICES:
            raise PeerError(
                400, "bad_while_out", "while_out must be count or discard (default count)"
            )
        if await self.roster.in_group():
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
            await write_state(session, JOIN_OPTIONS, {"while_out": while_out})
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
        body = {**self.roster.describe(), "nonce": nonce}
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
            "own_fingerprint": self.roster.key_id,
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
            mine = Member(self.identity.domain, self.roster.public_url, self.identity.public_key)
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
                    max_skew=self.roster.max_skew,
                    trusted=True,
                )
                if stored is None:
                    raise PeerError(400, "bad_member", reason)
                old = await session.get(PeerRow, member.domain)
                write_peer(session, old, stored, now)
            me = self.roster.stated("active", admission=admission)
            await write_state(session, OWN_RECORD, me.to_wire())
            synclog.record(
                session,
                "joined",
                now,
                peer=request.domain,
                message=f"accepted into a group of {len(members) + 1}",
            )
            joining = (request.domain, request.agent_url)
            # the import is noted with the membership, in one transaction: an agent killed
            # right after it takes the snapshot on restart, never runs as a member without
            # the group's base (its own history from before would count as the group's)
            state = {
                "state": "running",
                "phase": "snapshot",
                "master": joining[0],
                "master_url": joining[1],
                "started_at": now,
            }
            await write_state(session, "import", state)
        self.roster.adopt(me)
        self.roster.forget()
        self.join_import.start(*joining)
        return self._confirmation(request)

    def _confirmation(self, request: JoinRequest) -> dict[str, Any]:
        """The answer to a welcome, signed so that the master knows it is from this key."""
        message = trust.welcome_message(
            request.nonce, request.fingerprint, self.identity.domain, self.identity.public_key
        )
        return {
            "confirmed": True,
            **self.roster.describe(),
            "member": self.roster.me(),
            "confirmation": self.roster.sign(message),
        }

    # -- members -------------------------------------------------------------------------------

    async def on_introduce(self, key_id: str, body: Any) -> dict[str, Any]:
        """A member introduces a shop it admitted: taken only with a valid admission."""
        if not isinstance(body, dict) or not isinstance(body.get("member"), dict):
            raise PeerError(400, "bad_request", "an introduction carries a member")
        sender = await self.roster.sender(key_id)
        member = parse_member(body["member"])
        refused = await self.roster.merge_members([body["member"]], via=sender.domain)
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
        await self.roster.heard_from(key_id, body["member"], strict=True)
        return {"ok": True}

    # -- this agent's own membership -------------------------------------------------------------

    async def _tell_all(self) -> list[str]:
        """Send this agent's own (new) record to every member that has not left."""
        return await self.roster.tell_all(self.call, "/peer/state", {"member": self.roster.me()})

    async def leave(self) -> dict[str, Any]:
        if not await self.roster.in_group():
            raise PeerError(409, "not_in_group", "this shop is not in a group")
        await self.roster.restate("left")
        told = await self._tell_all()
        await self.replicator.stop()
        async with self.db.transaction() as session:
            members = [p.domain for p in await session.exec(select(PeerRow))]
            # which group this shop left, and with which stream of its own: if it joins that
            # group again, the changes of that stream the group lacks are what it did while
            # out (and what it never got to send): agent.join_import
            left = {"at": self.clock.now(), "epoch": self.identity.epoch, "members": members}
            await write_state(session, LEFT_GROUP, left)
            await session.exec(delete(PeerRow))
            synclog.record(
                session,
                "leave",
                self.clock.now(),
                message=f"left the group; told {', '.join(told) or 'nobody'}",
            )
        self.roster.forget()
        return {"left": True, "told": told}

    async def set_paused(self, paused: bool) -> dict[str, Any]:
        await self.mode.set_paused(paused)
        if self.roster.own_state not in (None, "left"):
            await self.roster.restate("paused" if paused else "active")
        told = await self._tell_all()
        async with self.db.transaction() as session:
            synclog.record(
                session,
                "pause" if paused else "resume",
                self.clock.now(),
                message=f"told {', '.join(told) or 'nobody'}",
            )
        return {"paused": paused, "told": told}
