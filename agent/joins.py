"""The master's side of a join: requests stored side by side, accepted by domain and key.

A join request is self-signed by the key it carries. It waits as pending — beside any other
request claiming the same domain, never instead of one — until the owner accepts it (by
fingerprint, when two claim a domain) or rejects it; nothing is sent to it before. On
accept the master signs the shop's admission, calls it back at the URL it claimed, and takes
the answer only if it is signed by the key that asked; then it introduces the newcomer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
import structlog
from sqlmodel import col, delete, select

from agent import synclog, trust
from agent.clock import Clock
from agent.db import Database
from agent.membership import LIVE, Admission, Member, member_from_wire
from agent.models import Identity, JoinRequest, PeerRow
from agent.roster import PeerError, Roster, write_peer
from agent.signing import SigningError, fingerprint, load_public_key_b64
from agent.transport import PeerCaller

__all__ = ["MAX_PENDING", "REQUEST_TTL", "JoinDesk"]

log = structlog.get_logger(__name__)

REQUEST_TTL = 7 * 24 * 3600.0
MAX_PENDING = 32  # incoming join requests waiting for an answer, from every key together


class JoinDesk:
    """The master's side of joins: incoming requests, accepted or rejected by the owner."""

    def __init__(
        self,
        *,
        db: Database,
        identity: Identity,
        clock: Clock,
        call: PeerCaller,
        roster: Roster,
    ) -> None:
        self.db = db
        self.identity = identity
        self.clock = clock
        self.call = call
        self.roster = roster

    async def on_join_request(self, key_id: str, body: Any) -> dict[str, Any]:
        """Store a join request as pending (nothing is trusted yet).

        Requests claiming one domain are kept side by side; a key has one request at a time
        (a new one from it replaces its own earlier one); at most `MAX_PENDING` wait at once.
        """
        if not isinstance(body, dict):
            raise PeerError(400, "bad_request", "a join request is an object")
        try:
            domain = trust.check_domain(body.get("domain"))
            agent_url = trust.check_agent_url(body.get("agent_url"))
            public_key = body.get("public_key")
            if not isinstance(public_key, str):
                raise ValueError("public_key must be a string")
            load_public_key_b64(public_key)
        except (ValueError, SigningError) as exc:
            raise PeerError(400, "bad_request", str(exc)) from None
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128 or not nonce.isprintable():
            raise PeerError(400, "bad_request", "a join request carries a nonce of 16-128 chars")
        if fingerprint(public_key) != key_id:
            raise PeerError(401, "key_mismatch", "the request is not signed by the key it carries")
        if domain == self.identity.domain:
            raise PeerError(409, "same_domain", "a shop cannot join itself")
        now = self.clock.now()
        async with self.db.transaction() as session:
            await self._purge_requests(session, now)
            peer = await session.get(PeerRow, domain)
            if peer is not None and peer.state in LIVE:
                raise PeerError(409, "already_member", f"{domain} is already a member")
            mine = await session.exec(
                select(JoinRequest).where(
                    JoinRequest.direction == "incoming",
                    JoinRequest.fingerprint == key_id,
                    JoinRequest.state == "pending",
                )
            )
            for row in mine:
                await session.delete(row)
            await session.flush()
            pending = list(
                await session.exec(
                    select(JoinRequest.domain).where(
                        JoinRequest.direction == "incoming", JoinRequest.state == "pending"
                    )
                )
            )
            if len(pending) >= MAX_PENDING:
                raise PeerError(
                    429,
                    "too_many_requests",
                    f"{len(pending)} join requests are waiting for this shop's owner; "
                    "try again once they are answered",
                )
            old = await session.get(JoinRequest, (domain, "incoming", key_id))
            if old is not None:  # answered before (rejected, expired): asking again is new
                await session.delete(old)
                await session.flush()
            session.add(
                JoinRequest(
                    domain=domain,
                    direction="incoming",
                    agent_url=agent_url,
                    public_key=public_key.strip(),
                    fingerprint=key_id,
                    nonce=nonce,
                    received_at=now,
                )
            )
            others = sum(1 for d in pending if d == domain)
            synclog.record(
                session,
                "join_request",
                now,
                peer=domain,
                message=f"from {agent_url}, key {key_id}"
                + (f"; {others} other request(s) claim this domain" if others else ""),
            )
        return {"status": "pending", "domain": self.identity.domain}

    async def _purge_requests(self, session: Any, now: float) -> None:
        """Forget incoming requests nobody answered within `REQUEST_TTL`, and answered ones
        (rejected, expired) older than that; accepted ones stay with their member."""
        expired = await session.exec(
            select(JoinRequest).where(
                JoinRequest.direction == "incoming",
                JoinRequest.state != "accepted",
                col(JoinRequest.received_at) < now - REQUEST_TTL,
            )
        )
        for row in expired:
            if row.state == "pending":
                synclog.record(session, "join_request_expired", now, peer=row.domain)
            await session.delete(row)

    async def list_requests(self) -> list[dict[str, Any]]:
        """Pending incoming requests, oldest first; `claims` counts the requests (this one
        included) that claim its domain: more than one means compare fingerprints."""
        now = self.clock.now()
        async with self.db.transaction() as session:
            await self._purge_requests(session, now)
            rows = list(
                await session.exec(
                    select(JoinRequest).where(
                        JoinRequest.direction == "incoming", JoinRequest.state == "pending"
                    )
                )
            )
        claims: dict[str, int] = {}
        for row in rows:
            claims[row.domain] = claims.get(row.domain, 0) + 1
        out = [
            {
                "domain": row.domain,
                "agent_url": row.agent_url,
                "fingerprint": row.fingerprint,
                "received_at": row.received_at,
                "claims": claims[row.domain],
            }
            for row in rows
        ]
        return sorted(out, key=lambda r: (r["received_at"], r["fingerprint"]))

    async def _pending(self, domain: str, key_id: str | None) -> list[JoinRequest]:
        """The pending request(s) of `domain`: the one with fingerprint `key_id`, or all."""
        now = self.clock.now()
        async with self.db.transaction() as session:
            await self._purge_requests(session, now)
            query = select(JoinRequest).where(
                JoinRequest.direction == "incoming",
                JoinRequest.state == "pending",
                JoinRequest.domain == domain,
            )
            if key_id is not None:
                query = query.where(JoinRequest.fingerprint == key_id)
            rows = list(await session.exec(query))
        if not rows:
            which = f" with key {key_id}" if key_id else ""
            raise PeerError(404, "no_request", f"no pending join request from {domain}{which}")
        return rows

    async def accept(self, domain: str, key_id: str | None = None) -> dict[str, Any]:
        """Accept a pending request (by domain, and fingerprint when several claim it): sign
        its admission, call the joiner back, add it, introduce it to all.

        The member row is written just before the callback, so that the joiner's snapshot
        request, which may arrive before the callback's answer, is served; if the joiner does
        not confirm with the key it asked with, the row is removed and the request stays
        pending.
        """
        rows = await self._pending(domain, key_id)
        if len(rows) > 1:
            prints = ", ".join(r.fingerprint for r in rows)
            raise PeerError(
                409,
                "ambiguous_request",
                f"{len(rows)} requests claim {domain} (keys {prints}): ask its owner for the "
                "fingerprint `shopsync status` shows there, and accept with --fingerprint",
            )
        request = rows[0]
        members = [self.roster.me(), *await self.roster.members_wire()]
        now = self.clock.now()
        admission = Admission(by=self.identity.domain, at=now, url=request.agent_url, signature="")
        joiner = Member(domain, request.agent_url, request.public_key)
        admission = dataclasses.replace(
            admission, signature=self.roster.sign(joiner.admission_message(admission))
        )
        newcomer = dataclasses.replace(joiner, changed_at=now, admission=admission)
        async with self.db.transaction() as session:
            previous = await session.get(PeerRow, domain)
            if previous is not None:
                await session.delete(previous)
                await session.flush()
            write_peer(session, None, newcomer, now)
        self.roster.forget()
        try:
            body = {"nonce": request.nonce, "members": members, "admission": admission.to_wire()}
            status, answer = await self.call(
                request.agent_url, request.fingerprint, "POST", "/peer/welcome", body
            )
            confirmed = self._confirmed(request, status, answer)
        except (aiohttp.ClientError, TimeoutError, OSError, PeerError) as exc:
            async with self.db.transaction() as session:
                await session.exec(delete(PeerRow).where(col(PeerRow.domain) == domain))
            self.roster.forget()
            if isinstance(exc, PeerError):
                raise
            raise PeerError(
                502, "unreachable", f"cannot reach {request.agent_url}: {exc}"
            ) from None
        async with self.db.transaction() as session:
            row = await session.get(JoinRequest, (domain, "incoming", request.fingerprint))
            if row is not None:
                row.state = "accepted"
            peer = await session.get(PeerRow, domain)
            peer = write_peer(session, peer, confirmed, now)
            synclog.record(
                session,
                "accept",
                now,
                peer=domain,
                message=f"join request accepted, key {request.fingerprint}",
            )
        await self.roster.changed([peer])
        introduced = []
        for other in members[1:]:
            if other["state"] != "active":
                continue
            try:
                status, _ = await self.call(
                    other["agent_url"],
                    fingerprint(other["public_key"]),
                    "POST",
                    "/peer/introduce",
                    {"member": confirmed.to_wire()},
                )
                if status == 200:
                    introduced.append(other["domain"])
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.info("introduce_deferred", peer=other["domain"], error=str(exc))
        return {"accepted": domain, "fingerprint": request.fingerprint, "introduced": introduced}

    def _confirmed(self, request: JoinRequest, status: int, answer: dict[str, Any]) -> Member:
        """The joiner's record from its answer to the welcome, if it is signed by the key
        that asked to join (else PeerError: the callback reached somebody else)."""
        if status != 200 or answer.get("domain") != request.domain:
            raise PeerError(
                502,
                "not_confirmed",
                f"{request.domain} did not confirm: {str(answer.get('message', status))[:300]}",
            )
        message = trust.welcome_message(
            request.nonce, self.roster.key_id, request.domain, request.public_key
        )
        key = load_public_key_b64(request.public_key)
        if not trust.signed_by(key, message, answer.get("confirmation")):
            raise PeerError(
                502,
                "not_confirmed",
                f"the answer from {request.agent_url} is not signed by the key that asked to join",
            )
        now = self.clock.now()
        fallback = Member(request.domain, request.agent_url, request.public_key, changed_at=now)
        try:
            heard = member_from_wire(answer.get("member"))
        except ValueError:
            return fallback
        valid = (
            heard.domain == request.domain
            and heard.public_key == request.public_key
            and heard.changed_at <= now + self.roster.max_skew
            and trust.signed_by(key, heard.statement(), heard.proof)
        )
        return heard if valid else fallback

    async def reject(self, domain: str, key_id: str | None = None) -> dict[str, Any]:
        """Reject the request of `domain` with fingerprint `key_id`, or every one of it."""
        rows = await self._pending(domain, key_id)
        async with self.db.transaction() as session:
            for request in rows:
                row = await session.get(JoinRequest, (domain, "incoming", request.fingerprint))
                if row is not None:
                    row.state = "rejected"
                synclog.record(
                    session,
                    "reject",
                    self.clock.now(),
                    peer=domain,
                    message=f"key {request.fingerprint}",
                )
        return {"rejected": domain, "fingerprints": [r.fingerprint for r in rows]}
