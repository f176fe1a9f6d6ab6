"""The roster: the group's members as this agent knows them, and this agent's own record.

A member record changes only by its proofs (`agent.membership.judge`): a member speaks only
for itself, and a new member comes in only with a live member's signed admission. The roster
answers the questions every peer request asks (whose key is this, may it speak) and tells
its listeners (the replicator's links) when a record changed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlmodel import col, select

from agent import synclog, trust
from agent.clock import Clock
from agent.db import Database, write_state
from agent.membership import (
    LIVE,
    MEMBER_COLUMNS,
    Admission,
    Member,
    MemberRow,
    judge,
    member_from_row,
    member_from_wire,
)
from agent.models import EventRow, Identity, PeerRow
from agent.signing import fingerprint, load_public_key_b64
from agent.sql import Tx, marks
from agent.transport import PeerCaller

__all__ = ["OWN_RECORD", "PeerError", "Roster", "parse_member", "said", "write_peer"]

log = structlog.get_logger(__name__)

OWN_RECORD = "me"  # agent_state key of this agent's own signed member record
MAX_RECORDS = 1000  # member records taken from one list


@dataclasses.dataclass(frozen=True, slots=True)
class _Listed:
    """What the roster's directory holds of one member row."""

    domain: str
    state: str
    public_key: str  # base64, as stored
    key: Ed25519PublicKey


class PeerError(Exception):
    """A peering step cannot be done; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def parse_member(raw: Any) -> Member:
    try:
        return member_from_wire(raw)
    except ValueError as exc:
        raise PeerError(400, "bad_member", str(exc)) from None


def said(member: Member) -> tuple[Any, ...]:
    """What a member's statement says: a record that says the same brings nothing new."""
    return (member.agent_url, member.public_key, member.state, member.changed_at, member.proof)


def write_peer(session: Any, row: PeerRow | None, member: Member, now: float) -> PeerRow:
    """Store `member` (as `judge` let it through) in its row, made if it is new."""
    if row is None:
        row = PeerRow(
            domain=member.domain,
            agent_url=member.agent_url,
            public_key=member.public_key,
            fingerprint=member.key_id,
            joined_at=now,
        )
        session.add(row)
    row.agent_url, row.public_key = member.agent_url, member.public_key
    row.fingerprint = member.key_id
    row.state, row.changed_at, row.proof = member.state, member.changed_at, member.proof
    row.admission = "" if member.admission is None else json.dumps(member.admission.to_wire())
    return row


#: Told of every member row that changed (the replicator starts or stops its link).
Listener = Callable[[PeerRow], Awaitable[None]]


class Roster:
    """The member list and this agent's own signed record. I/O (database, clock) is injected."""

    def __init__(
        self,
        *,
        db: Database,
        identity: Identity,
        private_key: Ed25519PrivateKey,
        public_url: str,
        clock: Clock,
        max_skew: float = 300.0,
    ) -> None:
        self.db = db
        self.identity = identity
        self.private_key = private_key
        self.public_url = public_url
        self.clock = clock
        self.max_skew = max_skew
        self.key_id = fingerprint(identity.public_key)
        self._me: Member | None = None
        self._keys: dict[str, Ed25519PublicKey] | None = None  # origin -> key, while unchanged
        # key id -> the member row's domain, state and key, while the rows are unchanged: what
        # every peer request asks (whose key, is it live), without a trip to the database
        self._directory: dict[str, _Listed] | None = None
        self._generation = 0  # moves on every `forget`: a load begun before it is not kept
        self._refusals: set[tuple[str, str]] = set()  # member refusals logged once each
        self._listeners: list[Listener] = []

    def on_change(self, listener: Listener) -> None:
        """Call `listener` with every member row that changed (added, re-stated, confirmed)."""
        self._listeners.append(listener)

    async def changed(self, rows: list[PeerRow]) -> None:
        """Member rows changed (committed): forget cached keys, tell the listeners."""
        self.forget()
        for row in rows:
            for listener in self._listeners:
                await listener(row)

    def forget(self) -> None:
        """Member rows changed or went away: the keys are read again when next asked."""
        self._keys = None
        self._directory = None
        self._generation += 1

    async def _listed(self) -> dict[str, _Listed]:
        """Every member row by key id (loaded once per change of the rows)."""
        directory = self._directory
        if directory is None:
            generation = self._generation
            query = "SELECT fingerprint, domain, state, public_key FROM peer"
            rows = await self.db.read(lambda conn: Tx(conn).rows(query), quick=True)
            directory = {
                fp: _Listed(domain, state, public_key, load_public_key_b64(public_key))
                for fp, domain, state, public_key in rows
            }
            if generation == self._generation:  # no change committed while it loaded
                self._directory = directory
        return directory

    # -- this agent ----------------------------------------------------------------------------

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
        assert self._me is not None, "Roster.load() runs at start"
        return {**self._me.to_wire(), "fingerprint": self.key_id}

    @property
    def own_state(self) -> str | None:
        """This agent's own stated state (active, paused, left), once loaded."""
        return None if self._me is None else self._me.state

    async def load(self, *, paused: bool) -> None:
        """At start: this agent's own signed record, stated anew when its URL or state moved
        (a new public_url in the config, or a record from before statements were signed)."""
        current = self._own_record(await self.db.get_state(OWN_RECORD, None))
        wanted = "paused" if paused else "active"
        if current is not None and current.state == "left":
            wanted = "left"  # until a welcome into a group
        if current is None or (current.agent_url, current.state) != (self.public_url, wanted):
            async with self.db.transaction() as session:
                current = self.stated(wanted, current)
                await write_state(session, OWN_RECORD, current.to_wire())
        self._me = current

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

    def stated(
        self, state: str, previous: Member | None = None, admission: Admission | None = None
    ) -> Member:
        """A new signed statement of this agent's own, newer than the last one (not yet
        stored: write it under `OWN_RECORD`, then `adopt` it once committed)."""
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

    def adopt(self, member: Member) -> None:
        """`member` (from `stated`) is stored: it is this agent's record from now on."""
        self._me = member

    async def restate(self, state: str, admission: Admission | None = None) -> Member:
        """State this agent's own new state, stored at once."""
        async with self.db.transaction() as session:
            member = self.stated(state, admission=admission)
            await write_state(session, OWN_RECORD, member.to_wire())
        self.adopt(member)
        return member

    # -- keys, for the peer door and the inbox --------------------------------------------------

    async def member_key(self, key_id: str) -> Ed25519PublicKey | None:
        """The key of the live member whose key id is `key_id` (every peer request asks)."""
        listed = (await self._listed()).get(key_id)
        if listed is None or listed.state not in LIVE:
            return None
        return listed.key

    async def is_member(self, key_id: str) -> bool:
        return await self.member_key(key_id) is not None

    async def origin_keys(self) -> dict[str, Ed25519PublicKey]:
        """The key of every origin whose events this agent takes: itself and every member,
        former ones included (their events may still be on their way)."""
        if self._keys is None:
            query = "SELECT domain, public_key FROM peer"
            rows = await self.db.read(lambda conn: Tx(conn).rows(query), quick=True)
            keys = {domain: load_public_key_b64(key) for domain, key in rows}
            keys[self.identity.domain] = load_public_key_b64(self.identity.public_key)
            self._keys = keys
        return self._keys

    async def live_keys(self) -> dict[str, Ed25519PublicKey]:
        """The key of every live member (active or paused), this agent's own included: who
        may speak for the group now."""
        query = f"SELECT domain, public_key FROM peer WHERE state IN ({marks(len(LIVE))})"
        rows = await self.db.read(lambda conn: Tx(conn).rows(query, sorted(LIVE)), quick=True)
        keys = {domain: load_public_key_b64(key) for domain, key in rows}
        keys[self.identity.domain] = load_public_key_b64(self.identity.public_key)
        return keys

    async def live_domains(self) -> set[str]:
        """The live members' domains, this agent's own included."""
        return set(await self.live_keys())

    async def audience(self, domain: str) -> str:
        """The key id of member `domain` (whom a signed call is for)."""
        query = "SELECT fingerprint FROM peer WHERE domain = ?"
        row = await self.db.read(lambda conn: Tx(conn).one(query, (domain,)), quick=True)
        if row is None:
            raise PeerError(404, "not_a_member", f"{domain} is not a member")
        return str(row[0])

    async def in_group(self) -> bool:
        async with self.db.sessions() as session:
            peer = (await session.exec(select(PeerRow).where(col(PeerRow.state).in_(LIVE)))).first()
        return peer is not None

    async def tell_all(self, call: PeerCaller, path: str, body: Any) -> list[str]:
        """POST `body` to `path` at every member that has not left; the domains that took it
        (one away now gets the news with its next pull)."""
        told = []
        for member in await self.members_wire():
            if member["state"] == "left":
                continue
            try:
                audience = fingerprint(member["public_key"])
                status, _ = await call(member["agent_url"], audience, "POST", path, body)
                if status == 200:
                    told.append(member["domain"])
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
        return told

    async def members_wire(self) -> list[dict[str, Any]]:
        return [member.to_wire() for member in await self.stored_members()]

    async def stored_members(self) -> list[Member]:
        """Every member record this agent holds (one quick read, no ORM objects)."""
        query = f"SELECT {MEMBER_COLUMNS} FROM peer"
        rows = await self.db.read(lambda conn: Tx(conn).rows(query), quick=True)
        return [member_from_row(MemberRow(*row)) for row in rows]

    # -- records heard from members ---------------------------------------------------------------

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
        for raw in members[:MAX_RECORDS]:
            try:
                member = member_from_wire(raw)
            except ValueError as exc:
                refusals.append(str(exc))
                continue
            if member.domain != self.identity.domain and only in (None, member.domain):
                heard.append(member)
        known = {m.domain: said(m) for m in await self.stored_members()}
        heard = [m for m in heard if known.get(m.domain) != said(m)]
        if heard:
            changed, refused = await self._fold(heard, via)
            refusals += refused
            if changed:
                await self.changed(changed)
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

    async def sender(self, key_id: str) -> PeerRow:
        """The member row of the holder of key `key_id` (PeerError 403 if none)."""
        async with self.db.sessions() as session:
            sender = (
                await session.exec(select(PeerRow).where(PeerRow.fingerprint == key_id))
            ).first()
        if sender is None:
            raise PeerError(403, "not_a_member", "unknown sender")
        return sender

    async def heard_from(self, key_id: str, record: Any = None, *, strict: bool = False) -> str:
        """A member's call arrived, maybe with its own record: fold that record in (the
        sender speaks for itself only) and return the sender's domain."""
        sender = (await self._listed()).get(key_id)
        if sender is None:
            raise PeerError(403, "not_a_member", "unknown sender")
        if isinstance(record, dict):
            member = parse_member(record)
            if member.domain != sender.domain or member.public_key != sender.public_key:
                raise PeerError(403, "not_own_record", "a member may only speak for itself")
            refused = await self.merge_members([record], via=sender.domain, only=sender.domain)
            if refused and strict:
                raise PeerError(403, "bad_statement", refused[0])
        return sender.domain
