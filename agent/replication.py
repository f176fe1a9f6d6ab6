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
import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog
from sqlmodel import col, select

from agent import ledger, synclog
from agent.clock import Clock
from agent.db import Database
from agent.ledger import Vector
from agent.models import EventRow, Identity, PeerRow, PoolRow

__all__ = ["PeerCaller", "Replicator", "event_from_wire", "event_to_wire", "vector_from_wire"]

log = structlog.get_logger(__name__)

CONTACT_REFRESH = 10.0  # seconds between writes of an unchanged peer contact
IDLE_PULL_FACTOR = 4  # a pull that keeps finding nothing waits up to 4 times pull_interval
BATCH = 500
# signed call to a peer: (agent_url, method, path, body) -> (status, json)
PeerCaller = Callable[[str, str, str, Any], Any]


def event_to_wire(e: EventRow) -> list[Any]:
    """Compact list form of an event for the wire."""
    return [
        e.origin,
        e.epoch,
        e.seq,
        e.sku,
        e.kind,
        e.delta,
        e.count,
        e.item_created,
        e.cause,
        e.at,
    ]


def event_from_wire(raw: Any) -> EventRow:
    """Parse one event; ValueError on anything malformed."""
    if not isinstance(raw, list) or len(raw) != 10:
        raise ValueError("an event is a list of 10 fields")
    origin, epoch, seq, sku, kind, delta, count, created, cause, at = raw
    if not all(isinstance(v, str) and v for v in (origin, epoch, sku, kind)):
        raise ValueError("origin, epoch, sku and kind must be non-empty strings")
    if not isinstance(seq, int) or seq < 1 or not isinstance(delta, int):
        raise ValueError("seq must be a positive integer and delta an integer")
    if kind == ledger.INTRODUCE and (
        not isinstance(count, int) or not isinstance(created, int | float)
    ):
        raise ValueError("an introduce carries its count and creation time")
    return EventRow(
        origin=origin,
        epoch=epoch,
        seq=seq,
        sku=sku,
        kind=kind,
        delta=delta,
        count=count,
        item_created=None if created is None else float(created),
        cause=str(cause or "")[:200],
        at=float(at or 0),
    )


def vector_to_wire(vector: Vector) -> list[list[Any]]:
    return [[o, e, s] for (o, e), s in sorted(vector.items())]


def vector_from_wire(raw: Any) -> Vector:
    """Parse `[[origin, epoch, seq], …]`; ValueError on anything malformed."""
    if not isinstance(raw, list):
        raise ValueError("a vector is a list of [origin, epoch, seq]")
    out: Vector = {}
    for entry in raw:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], str)
            or not isinstance(entry[1], str)
            or not isinstance(entry[2], int)
        ):
            raise ValueError("a vector entry is [origin, epoch, seq]")
        out[(entry[0], entry[1])] = entry[2]
    return out


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
        on_members: Callable[[list[Any], str], Awaitable[None]] | None = None,
        pull_interval: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.identity = identity
        self.clock = clock
        self.call = call
        self.on_pool_change = on_pool_change
        self.on_members = on_members
        self.pull_interval = pull_interval
        self.rng = rng or random.Random()
        self.links: dict[str, PeerLink] = {}
        self.contacts: dict[str, tuple[str, float]] = {}  # peer -> (acked noted, when)
        self.paused = False
        self.importing = False  # a joiner serves and sends nothing until its import is done
        self.held_back = False  # maintenance: record local changes, send them later

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
                self.links[peer.domain] = PeerLink(self, peer.domain, peer.agent_url)
                self.links[peer.domain].start()
            else:
                link.agent_url = peer.agent_url
        elif link is not None:
            await self.links.pop(peer.domain).stop()

    def notify_local(self) -> None:
        """New local events: wake every link to push them."""
        if self.paused or self.held_back:
            return
        for link in self.links.values():
            link.wake.set()

    def wake_all(self) -> None:
        for link in self.links.values():
            link.wake.set()

    # -- inbox ---------------------------------------------------------------------------------

    async def receive(self, events: list[EventRow], peer: str, *, kind: str) -> Vector:
        """Apply a batch from `peer` (each event once); returns this agent's vector after."""
        now = self.clock.now()
        changed: set[str] = set()
        async with self.db.transaction() as session:
            new = await ledger.apply_events(session, events, now)
            applied = len(new)
            changed.update(e.sku for e in new)
            if applied:
                synclog.record(
                    session,
                    kind,
                    now,
                    peer=peer,
                    message=f"{applied} new of {len(events)} events, {len(changed)} SKUs",
                )
            vector = await ledger.load_vector(session)
        if changed:
            self.on_pool_change(changed)
        return vector

    async def events_since(self, have: Vector, limit: int = BATCH) -> tuple[list[EventRow], bool]:
        """Events this agent holds beyond `have`, any origin, in seq order per origin."""
        found, more, _ = await self.pull_answer(have, limit)
        return found, more

    async def pull_answer(
        self, have: Vector, limit: int = BATCH
    ) -> tuple[list[EventRow], bool, Vector]:
        """What a peer pulling with vector `have` gets: the events this agent holds beyond it
        (any origin, at most `limit`, in seq order per origin), whether more wait, and this
        agent's vector, read in one session.

        One indexed range query per (origin, epoch) this agent knows: the cost follows the
        number of shops and of missing events, never the size of the catalogue or history.
        """
        out: list[EventRow] = []
        async with self.db.sessions() as session:
            mine = await ledger.load_vector(session)
            for origin, epoch in sorted(mine):
                if self.held_back and (origin, epoch) == self.own_stream():
                    continue  # maintenance: this shop's own changes wait until it ends
                query = (
                    select(EventRow)
                    .where(EventRow.origin == origin, EventRow.epoch == epoch)
                    .where(col(EventRow.seq) > have.get((origin, epoch), 0))
                    .order_by(col(EventRow.seq))
                    .limit(limit - len(out) + 1)
                )
                out.extend(await session.exec(query))
                if len(out) > limit:
                    return out[:limit], True, mine
        return out, False, mine

    def own_stream(self) -> tuple[str, int]:
        return (self.identity.domain, self.identity.epoch)

    async def own_events_after(self, seq: int, limit: int = BATCH) -> list[EventRow]:
        async with self.db.sessions() as session:
            query = (
                select(EventRow)
                .where(EventRow.origin == self.identity.domain)
                .where(EventRow.epoch == self.identity.epoch, col(EventRow.seq) > seq)
                .order_by(col(EventRow.seq))
                .limit(limit)
            )
            return list(await session.exec(query))

    async def snapshot(self) -> dict[str, Any]:
        """Pools, vector and the events held beyond the vector, read in one transaction."""
        async with self.db.sessions() as session, session.begin():
            pools = list(await session.exec(select(PoolRow)))
            vector = await ledger.load_vector(session)
            extra = []
            for row in await session.exec(select(EventRow)):
                if row.seq > vector.get((row.origin, row.epoch), 0):
                    extra.append(event_to_wire(row))
        return {
            "pools": [[p.sku, p.base, p.base_created, p.base_origin, p.deltas] for p in pools],
            "vector": vector_to_wire(vector),
            "extra_events": extra,
        }

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
        async with self.db.transaction() as session:
            if sent:
                synclog.record(session, "batch_sent", self.clock.now(), peer=domain, message=sent)
            peer = await session.get(PeerRow, domain)
            if peer is None:
                return
            if error:
                if peer.last_error != error:
                    synclog.record(
                        session,
                        "peer_unreachable",
                        self.clock.now(),
                        peer=domain,
                        message=error[:300],
                    )
                peer.last_error = error
                return
            if peer.last_error:
                synclog.record(session, "peer_reconnected", self.clock.now(), peer=domain)
            peer.last_error = ""
            peer.last_contact = self.clock.now()
            if wire is not None:
                peer.acked = wire
                self.contacts[domain] = (wire, self.clock.monotonic())


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

    def __init__(self, replicator: Replicator, domain: str, agent_url: str) -> None:
        self.r = replicator
        self.domain = domain
        self.agent_url = agent_url
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.acked_own = 0
        self.failures = 0
        self.next_pull = 0.0
        self.quiet_pulls = 0  # pulls in a row that brought nothing

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"peer-link:{self.domain}")

    async def _load_acked(self) -> None:
        async with self.r.db.sessions() as session:
            peer = await session.get(PeerRow, self.domain)
        if peer is not None:
            acked = vector_from_wire(json.loads(peer.acked or "[]"))
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
            if self.r.paused or self.r.importing:
                continue
            try:
                if not self.r.held_back:
                    await self.push()
                if self.r.clock.monotonic() >= self.next_pull:
                    news = await self.pull()
                    self.quiet_pulls = 0 if news else self.quiet_pulls + 1
                    self.next_pull = self.r.clock.monotonic() + self.pull_every()
                self.failures = 0
            except (aiohttp.ClientError, TimeoutError, OSError, PeerRefused, ValueError) as exc:
                self.quiet_pulls = 0
                self.next_pull = 0.0  # back in touch: pull at once
                self.failures += 1
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
                "POST",
                "/peer/events",
                {"events": [event_to_wire(e) for e in events]},
            )
            if status != 200:
                raise _refused("push", status, body)
            vector = vector_from_wire(body.get("vector"))
            acked = vector.get((self.r.identity.domain, self.r.identity.epoch), 0)
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
            async with self.r.db.sessions() as session:
                mine = await ledger.load_vector(session)
            status, body = await self.r.call(
                self.agent_url, "POST", "/peer/pull", {"have": vector_to_wire(mine)}
            )
            if status != 200:
                raise _refused("pull", status, body)
            events = [event_from_wire(raw) for raw in body.get("events", [])]
            theirs = vector_from_wire(body.get("vector", []))
            if events:
                news = True
                await self.r.receive(events, self.domain, kind="batch_received")
            if self.r.on_members is not None and isinstance(body.get("members"), list):
                await self.r.on_members(body["members"], self.domain)
            await self.r.record_contact(self.domain, acked=theirs)
            self.acked_own = max(
                self.acked_own, theirs.get((self.r.identity.domain, self.r.identity.epoch), 0)
            )
            if not body.get("more"):
                return news
