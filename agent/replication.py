"""Replication (DESIGN §7): at least once on the wire, exactly once in effect.

Per peer, a link pushes this agent's own events in seq order, in batches, and pulls every
event the peer holds that this agent lacks — from any origin (anti-entropy), so a change
reaches everyone even when its origin went down right after telling one peer. The inbox keys
events on (origin, epoch, seq) and applies each once, in one transaction with the pool and the
vector. Failures back off exponentially with jitter and nothing is dropped: a peer away for
hours gets everything when it returns, from whoever is up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import random
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
import structlog
from sqlalchemy import Connection
from sqlmodel import select

from agent import ledger, synclog, trust
from agent.clock import Clock
from agent.db import QUICK_ROWS, Database
from agent.folds import Dispute, FoldClaims
from agent.group_rules import RuleBook
from agent.ledger import Vector
from agent.models import EventRow, Identity, PeerRow
from agent.roster import Roster
from agent.sql import Tx
from agent.syncmode import SyncMode
from agent.transport import PeerCaller
from agent.wire import event_from_wire, event_to_wire, vector_from_wire, vector_to_wire

__all__ = ["EventsRefused", "PullAnswer", "Replicator", "behind"]

log = structlog.get_logger(__name__)

CONTACT_REFRESH = 10.0  # seconds between writes of an unchanged peer contact
IDLE_PULL_FACTOR = 4  # a pull that keeps finding nothing waits up to 4 times pull_interval
BATCH = 500


class EventsRefused(Exception):
    """Events of a batch were refused (no proof of origin); the others were applied."""

    def __init__(self, reasons: list[str], vector: Vector) -> None:
        super().__init__(reasons[0])
        self.reasons, self.vector = reasons, vector


def behind(mine: Vector, theirs: Vector) -> int:
    """How many events this agent holds that the other lacks (by contiguous seqs)."""
    return sum(max(0, seq - theirs.get(key, 0)) for key, seq in mine.items())


class Replicator:
    """The outbox senders and inbox of one agent."""

    def __init__(
        self,
        *,
        db: Database,
        identity: Identity,
        clock: Clock,
        call: PeerCaller,
        on_pool_change: Callable[[set[str]], None],
        on_applied: Callable[[list[EventRow], float], None] | None = None,
        roster: Roster,
        rules: RuleBook,
        mode: SyncMode,
        pull_interval: float = 2.0,
        rng: random.Random | None = None,
        on_history_folded: Callable[[str, str], None] | None = None,
    ) -> None:
        self.db = db
        self.identity = identity
        self.clock = clock
        self.call = call
        self.on_pool_change = on_pool_change
        self.on_applied = on_applied
        self.roster = roster  # the members' keys; this agent's own record goes with every pull
        self.rules = rules  # rules records travel with every pull answer, like the members
        self.pull_interval = pull_interval
        self.rng = rng or random.Random()
        self.links: dict[str, PeerLink] = {}
        self.claims = FoldClaims()  # what peers folded beyond this agent: when to re-import
        #: Told the peer (domain, URL) to re-import from when every peer folded history this
        #: agent lacks.
        self.on_history_folded = on_history_folded
        self.contacts: dict[str, tuple[str, float]] = {}  # peer -> (acked noted, when)
        # own events as committed, without a gap in seq: a push of the newest needs no read
        self._recent: collections.deque[EventRow] = collections.deque(maxlen=BATCH)
        self.mode = mode  # running, paused, importing or maintenance: asked, never set here
        mode.on_release(self.wake_all)
        roster.on_change(self.ensure_link)

    async def start(self) -> None:
        """Start a link for every active peer."""
        async with self.db.sessions() as session:
            peers = list(await session.exec(select(PeerRow)))
        for peer in peers:
            await self.ensure_link(peer)

    async def stop(self) -> None:
        for link in list(self.links.values()):
            await link.stop()
        self.links.clear()

    async def ensure_link(self, peer: PeerRow) -> None:
        """Start (or stop) the link to `peer` according to its state."""
        link = self.links.get(peer.domain)
        if peer.state == "active" and peer.domain != self.identity.domain:
            if link is None:
                link = PeerLink(self, peer.domain, peer.agent_url, peer.fingerprint)
                self.links[peer.domain] = link
                link.start()
            else:
                link.agent_url, link.key_id = peer.agent_url, peer.fingerprint
        elif link is not None:
            await self.links.pop(peer.domain).stop()

    def notify_local(self, rows: Iterable[EventRow] = ()) -> None:
        """New local events (`rows`, just committed): wake every link to push them."""
        recent = self._recent
        for row in sorted(rows, key=lambda r: r.seq):
            last = recent[-1] if recent else None
            if last is not None and (row.epoch != last.epoch or row.seq != last.seq + 1):
                recent.clear()  # kept only while it runs without a gap
            recent.append(row)
        if not self.mode.sending_own:
            return
        for link in self.links.values():
            link.wake.set()

    def wake_all(self) -> None:
        for link in self.links.values():
            link.wake.set()

    # -- inbox ---------------------------------------------------------------------------------

    async def receive(self, events: list[EventRow], peer: str, *, kind: str) -> Vector:
        """Apply a batch from `peer` (each event once); returns this agent's vector after.

        An event is taken only with its origin's proof: an origin that is a member (or was
        one), whose key signed the event. None may claim this agent's own current stream,
        of which it is the only writer. Refused events are skipped, the rest applied, the
        refusal logged; then EventsRefused says why.
        """
        now = self.clock.now()
        keys = await self.roster.origin_keys()
        own = self.own_stream()

        def admit(event: EventRow) -> str | None:
            if (event.origin, event.epoch) == own:
                return f"event {event.seq} claims this shop's own stream ({event.origin})"
            key = keys.get(event.origin)
            if key is None:
                return f"origin {event.origin[:80]} is not a member"
            if not trust.signed_by(key, trust.event_message(event), event.proof):
                return f"event {event.seq} of {event.origin} is not signed by {event.origin}"
            return None

        refused: list[tuple[EventRow, str]] = []
        applied: list[EventRow] = []

        def work(conn: Connection) -> Vector:
            new = ledger.apply(conn, events, now, admit, refused)
            applied[:] = new
            changed = {e.sku for e in new}
            entries = []
            if new:
                entries.append(
                    synclog.entry(
                        kind,
                        now,
                        peer=peer,
                        message=synclog.received_message(len(new), len(events), len(changed)),
                    )
                )
            if refused:
                entries.append(
                    synclog.entry(
                        "events_refused",
                        now,
                        peer=peer,
                        message=f"{len(refused)} of {len(events)} events refused: {refused[0][1]}",
                    )
                )
            synclog.insert(conn, entries)
            return ledger.vector(conn)

        vector = await self.db.run(work, quick=len(events) <= QUICK_ROWS)
        if applied:
            if self.on_applied is not None:
                self.on_applied(applied, now)
            self.on_pool_change({e.sku for e in applied})
        if refused:
            log.warning("events_refused", peer=peer, events=len(refused), reason=refused[0][1])
            raise EventsRefused([reason for _, reason in refused], vector)
        return vector

    async def events_since(self, have: Vector, limit: int = BATCH) -> tuple[list[EventRow], bool]:
        """Events this agent holds beyond `have`, any origin, in seq order per origin."""
        answer = await self.pull_answer(have, limit)
        return answer.events, answer.more

    async def pull_answer(self, have: Vector, limit: int = BATCH) -> PullAnswer:
        """What a peer pulling with vector `have` gets: the events this agent holds beyond it
        (any origin, at most `limit`, in seq order per origin), whether more wait, this
        agent's vector, and the streams it cannot serve from `have` (their events up to the
        `folded` seq are compacted here: the puller gets them elsewhere, or re-imports), read
        in one session.

        One indexed range query per (origin, epoch) this agent knows: the cost follows the
        number of shops and of missing events, never the size of the catalogue or history.
        """
        held_back, own = self.mode.held_back, self.own_stream()

        def work(conn: Connection) -> PullAnswer:
            out: list[EventRow] = []
            mine = ledger.vector(conn)
            gone = ledger.folded(conn)
            folded = {s: seq for s, seq in gone.items() if have.get(s, 0) < seq}
            for origin, epoch in sorted(mine):
                if held_back and (origin, epoch) == own:
                    continue  # maintenance: this shop's own changes wait until it ends
                if (origin, epoch) in folded:
                    continue  # a gap the puller cannot fill from here
                out.extend(
                    ledger.events_after(
                        conn, origin, epoch, have.get((origin, epoch), 0), limit - len(out) + 1
                    )
                )
                if len(out) > limit:
                    return PullAnswer(out[:limit], True, mine, folded)
            return PullAnswer(out, False, mine, folded)

        return await self.db.read(work, quick=limit <= QUICK_ROWS)

    def after_pull(
        self, peer: str, folded: Vector, theirs: Vector, mine: Vector, kept: Vector
    ) -> tuple[PeerLink | None, tuple[Dispute, ...]]:
        """Note a pull answer from `peer`: its vector (`theirs`) and the streams it folded
        (`folded`), judged against this agent's vector now (`mine`) and what it folded itself
        (`kept`) by `FoldClaims`. Returns
        the link to re-import from when a gap of this agent's can be filled by no peer and
        the claim holds up (else None), and the claims newly found unbacked. The peers that
        may still fill a gap are asked at once."""
        away = {domain: link.away_since for domain, link in self.links.items()}
        verdict = self.claims.heard(
            peer, folded, theirs, mine, away, self.clock.monotonic(), kept=kept
        )
        for domain in verdict.ask:  # ask them now rather than at their next pull
            link = self.links[domain]
            link.next_pull = 0.0
            link.wake.set()
        source = self.links.get(verdict.source) if verdict.source is not None else None
        return source, verdict.disputed

    async def report_disputes(self, disputed: Iterable[Dispute]) -> None:
        """Tell the owner, once per claim, of a fold no other member backs (`FoldClaims`)."""
        now = self.clock.now()
        entries = []
        for peer, (origin, _epoch), seq, why in disputed:
            log.warning("fold_disputed", peer=peer, origin=origin, seq=seq, why=why)
            entries.append(
                synclog.entry(
                    "fold_disputed",
                    now,
                    peer=peer,
                    message=f"{peer} says it folded {origin}'s changes up to #{seq}, which this "
                    f"shop lacks, but {why}: not re-importing the group's counts on its word "
                    "alone. If it is right (the members that held them left the group), leave "
                    "the group and join again",
                )
            )
        if entries:
            await self.db.run(lambda conn: synclog.insert(conn, entries))

    def forget_gaps(self) -> None:
        """After a re-import: what peers folded is judged afresh."""
        self.claims.forget()

    def own_stream(self) -> tuple[str, str]:
        return (self.identity.domain, self.identity.epoch)

    async def notice(self, theirs: Vector, peer: str) -> None:
        """A peer's vector holds more of this agent's current stream than this agent does:
        its database was restored from a backup. Its next events would take seqs the group
        already holds for other changes, so it starts a new epoch at once; the lost part of
        the old one (signed by this agent, and no longer its current stream) then comes back
        by anti-entropy like any other origin's events."""
        own = self.own_stream()
        if theirs.get(own, 0) == 0:
            return
        async with self.db.transaction() as session:
            mine = await ledger.load_vector(session)
            if self.own_stream() != own or theirs[own] <= mine.get(own, 0):
                return
            identity = await session.get(Identity, 1)
            assert identity is not None
            identity.epoch = self.identity.epoch = uuid.uuid4().hex[:16]
            synclog.record(
                session,
                "restored",
                self.clock.now(),
                peer=peer,
                message=f"{peer} holds this shop's changes up to {theirs[own]}, this database "
                f"only up to {mine.get(own, 0)}: restored from a backup? New changes start a "
                "new stream; the rest comes back from the group",
            )
        log.warning("own_stream_behind", peer=peer, held=mine.get(own, 0), theirs=theirs[own])

    async def own_events_after(self, seq: int, limit: int = BATCH) -> list[EventRow]:
        """This agent's events after `seq` in its current stream, at most `limit`: from the
        ones just committed when they reach back that far, else from the database."""
        origin, epoch = self.own_stream()
        recent = self._recent
        if recent and recent[0].epoch == epoch and recent[0].seq <= seq + 1 <= recent[-1].seq:
            first = seq + 1 - recent[0].seq  # its seqs run without a gap: an index, no search
            return list(itertools.islice(recent, first, first + limit))
        return await self.db.read(
            lambda conn: ledger.events_after(conn, origin, epoch, seq, limit),
            quick=limit <= QUICK_ROWS,
        )

    # -- bookkeeping ---------------------------------------------------------------------------

    async def record_contact(
        self, domain: str, *, acked: Vector | None = None, error: str = "", sent: str = ""
    ) -> None:
        """Note a peer's answer (its vector) or failure, and a batch sent, in one transaction.

        A pull every few seconds mostly brings the vector already noted: that is written again
        only every `CONTACT_REFRESH` seconds (the "last contact" an admin sees).
        """
        wire = None if acked is None else json.dumps(vector_to_wire(acked))
        noted = self.contacts.get(domain)
        if (
            not sent
            and not error
            and noted is not None
            and noted[0] == wire
            and self.clock.monotonic() - noted[1] < CONTACT_REFRESH
        ):
            return
        self.contacts.pop(domain, None)
        now = self.clock.now()

        def work(conn: Connection) -> bool:
            tx = Tx(conn)
            entries = [synclog.entry("batch_sent", now, peer=domain, message=sent)] if sent else []
            row = tx.one("SELECT last_error FROM peer WHERE domain = ?", (domain,))
            if row is not None and error:
                if row[0] != error:
                    entries.append(
                        synclog.entry("peer_unreachable", now, peer=domain, message=error[:300])
                    )
                tx.run("UPDATE peer SET last_error = ? WHERE domain = ?", (error, domain))
            elif row is not None:
                if row[0]:
                    entries.append(synclog.entry("peer_reconnected", now, peer=domain))
                tx.run(
                    "UPDATE peer SET last_error = '', last_contact = ?, acked = COALESCE(?, acked) "
                    "WHERE domain = ?",
                    (float(now), wire, domain),
                )
            synclog.insert(conn, entries)
            return row is not None and not error

        if await self.db.run(work, quick=True) and wire is not None:
            self.contacts[domain] = (wire, self.clock.monotonic())


@dataclasses.dataclass(frozen=True, slots=True)
class PullAnswer:
    """This agent's answer to a peer's pull (`Replicator.pull_answer`)."""

    events: list[EventRow]
    more: bool
    vector: Vector
    folded: Vector  # streams compacted beyond the puller's vector: not served from here


class PeerRefused(Exception):
    """The peer answered, but refused (paused, not yet a member, bad request)."""

    def __init__(self, message: str, *, expected: bool = False) -> None:
        super().__init__(message)
        self.expected = expected  # paused or importing: wait, but nothing is wrong


def _refused(what: str, status: int, body: dict[str, Any]) -> PeerRefused:
    error = str(body.get("error", ""))
    return PeerRefused(
        f"{what} answered {status}: {error}",
        expected=status == 503 and error in ("paused", "importing"),
    )


class PeerLink:
    """Push and pull with one peer, forever, backing off while it is away."""

    def __init__(self, replicator: Replicator, domain: str, agent_url: str, key_id: str) -> None:
        self.r = replicator
        self.domain = domain
        self.agent_url = agent_url
        self.key_id = key_id  # the audience of every signed call to the peer
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.acked_own = 0
        self.failures = 0
        self.next_pull = 0.0
        self.quiet_pulls = 0  # pulls in a row that brought nothing
        self.away_since: float | None = None  # monotonic time of the first failure in a row

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"peer-link:{self.domain}")

    async def _load_acked(self) -> None:
        query = "SELECT acked FROM peer WHERE domain = ?"
        row = await self.r.db.read(lambda conn: Tx(conn).one(query, (self.domain,)), quick=True)
        if row is not None:
            acked = vector_from_wire(json.loads(row[0] or "[]"))
            self.acked_own = acked.get((self.r.identity.domain, self.r.identity.epoch), 0)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def run(self) -> None:
        await self._load_acked()
        self.wake.set()
        while True:
            wait = min(self.r.pull_interval, self.next_pull - self.r.clock.monotonic())
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
            # that lands as the wake fires, and the link would outlive its agent's shutdown
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, wait)):
                    await self.wake.wait()
            self.wake.clear()
            if not self.r.mode.exchanging:
                continue
            try:
                if not self.r.mode.held_back:
                    await self.push()
                if self.r.clock.monotonic() >= self.next_pull:
                    news = await self.pull()
                    self.quiet_pulls = 0 if news else self.quiet_pulls + 1
                    self.next_pull = self.r.clock.monotonic() + self.pull_every()
                self.failures = 0
                self.away_since = None
            except (aiohttp.ClientError, TimeoutError, OSError, PeerRefused, ValueError) as exc:
                self.quiet_pulls = 0
                self.next_pull = 0.0  # back in touch: pull at once
                self.failures += 1
                if self.away_since is None:
                    self.away_since = self.r.clock.monotonic()
                if not getattr(exc, "expected", False):
                    await self.r.record_contact(self.domain, error=f"{type(exc).__name__}: {exc}")
                delay = min(60.0, 0.25 * 2 ** min(self.failures, 8)) * (0.5 + self.r.rng.random())
                log.info("peer_backoff", peer=self.domain, error=str(exc), retry_in=round(delay, 2))
                await self.r.clock.sleep(delay)
                self.wake.set()

    async def push(self) -> None:
        """Send own events the peer has not acknowledged, in seq order, in batches."""
        while True:
            events = await self.r.own_events_after(self.acked_own)
            if not events:
                return
            status, body = await self.r.call(
                self.agent_url,
                self.key_id,
                "POST",
                "/peer/events",
                {"events": [event_to_wire(e) for e in events]},
            )
            if status != 200:
                raise _refused("push", status, body)
            vector = vector_from_wire(body.get("vector"))
            own = self.r.own_stream()
            acked = vector.get(own, 0)
            if acked > events[-1].seq:  # more than this batch: forwarded, or a restore
                await self.r.notice(vector, self.domain)
                if self.r.own_stream() != own:
                    self.acked_own = 0
                    return
            if acked <= self.acked_own and acked < events[-1].seq:
                raise PeerRefused(f"peer did not take events after seq {acked}")
            self.acked_own = acked
            sent = f"{len(events)} events up to seq {events[-1].seq}"
            await self.r.record_contact(self.domain, acked=vector, sent=sent)
            if len(events) < BATCH:
                return

    def pull_every(self) -> float:
        """The pull is the backstop of the pushes: every `pull_interval` while it brings
        events, then twice and four times as long while it finds nothing new."""
        return self.r.pull_interval * min(IDLE_PULL_FACTOR, 2**self.quiet_pulls)

    async def pull(self) -> bool:
        """Fetch every event the peer holds that this agent lacks, any origin; True if any."""
        news = False
        while True:
            mine = await self.r.db.read(ledger.vector, quick=True)
            request = {"have": vector_to_wire(mine), "member": self.r.roster.me()}
            status, body = await self.r.call(
                self.agent_url, self.key_id, "POST", "/peer/pull", request
            )
            if status != 200:
                raise _refused("pull", status, body)
            raw_events = body.get("events", [])
            if not isinstance(raw_events, list) or len(raw_events) > BATCH * 10:
                raise ValueError("a pull answer's events must be a list")
            events = [event_from_wire(raw) for raw in raw_events]
            theirs = vector_from_wire(body.get("vector", []))
            if theirs.get(self.r.own_stream(), 0) > mine.get(self.r.own_stream(), 0):
                await self.r.notice(theirs, self.domain)
            # members first: events of a shop admitted since are verified by its key
            if isinstance(body.get("members"), list):
                await self.r.roster.merge_members(body["members"], self.domain)
            if isinstance(body.get("rules"), list):  # every shop's rules and the group's
                await self.r.rules.heard(body["rules"], self.domain)
            if events:
                news = True
                try:
                    await self.r.receive(events, self.domain, kind="batch_received")
                except EventsRefused as exc:  # the rest was applied
                    raise PeerRefused(f"refused events from {self.domain}: {exc}") from None
            folded = vector_from_wire(body.get("folded", []))
            kept: Vector = {}
            if folded or self.r.claims.gaps:  # judged against this agent's vector now, not the one
                # it asked with: what the peer folded, it may have acknowledged since
                mine, kept = await self.r.db.read(_vector_and_folded)
            source, disputed = self.r.after_pull(self.domain, folded, theirs, mine, kept)
            if disputed:
                await self.r.report_disputes(disputed)
            if source is not None and self.r.on_history_folded is not None:
                self.r.on_history_folded(source.domain, source.agent_url)
            await self.r.record_contact(self.domain, acked=theirs)
            self.acked_own = max(
                self.acked_own, theirs.get((self.r.identity.domain, self.r.identity.epoch), 0)
            )
            if not body.get("more"):
                return news


def _vector_and_folded(conn: Connection) -> tuple[Vector, Vector]:
    """This agent's vector and what it folded of each stream, read together."""
    return ledger.vector(conn), ledger.folded(conn)
