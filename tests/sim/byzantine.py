"""A byzantine member: one member of the group, chosen by the seed, that also attacks.

Its agent runs the real core like every other, so its own sales are honest; beside it an
attacker holding its `agent.key` sends what a stolen key allows, each request correctly signed
with the member's key, each asking for something that is not the member's to say:
- events it forges for another origin, or for the receiver's own stream, at the next seqs,
  signed with its own key or carrying a real proof lifted from another event;
- events from invented origins (hundreds of them, some with 2 kB SKUs);
- membership rewritten: a stranger introduced without (or with a forged) admission, another
  member re-keyed, moved, marked left or paused, dated in the future, sent as its own record;
- requests it received from others (signed for it) replayed to other agents;
- lies in its answers: member lists in its pull answers carrying the same forged records.
Every attack must be refused — a 4xx for a request, silence for a lie — and change nothing; a
request the receiver answers with 2xx is a finding, and the checker requires the honest
members' counts and member lists to stay exact.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import ledger, signing, trust
from agent.models import EventRow
from agent.transport import encode_body
from agent.wire import event_to_wire
from tests.sim.node import url_of

if TYPE_CHECKING:
    from tests.sim.node import Node
    from tests.sim.world import World

__all__ = ["ATTACKS", "Byzantine"]

ATTACKS = (
    "forge_origin",
    "inject_stream",
    "invent_origins",
    "introduce_stranger",
    "rewrite_member",
    "other_as_own",
    "replay_elsewhere",
)
KEEP = 40  # requests received and kept for replaying


class Byzantine:
    """The attacker behind member `domain` (see the module docstring)."""

    def __init__(self, world: World, domain: str, rng: random.Random) -> None:
        self.world = world
        self.domain = domain
        self.rng = rng
        self.captured: list[tuple[str, str, dict[str, str], bytes]] = []  # from, path, …
        self.strangers = 0

    @property
    def node(self) -> Node:
        return self.world.nodes[self.domain]

    def count(self, name: str) -> None:
        self.world.count(name)

    # -- hooks on the network ------------------------------------------------------------------

    def capture(self, node: Node, path: str, headers: dict[str, str], raw: bytes) -> None:
        """Keep requests delivered to the byzantine member, to replay them elsewhere."""
        if node.domain != self.domain:
            return
        try:
            key_id = signing.signature_key_id(headers)
        except signing.SignatureError:
            return
        sender = next((d for d, n in self.world.nodes.items() if n.key_id == key_id), "")
        self.captured.append((sender, path, headers, raw))
        del self.captured[:-KEEP]

    def tamper(self, node: Node, path: str, status: int, body: Any) -> Any:
        """Lie in the member lists of the byzantine member's pull answers."""
        if node.domain != self.domain or path != "/peer/pull" or status != 200:
            return body
        if self.rng.random() > 0.3 or not isinstance(body, dict):
            return body
        forged = self._forged_member()
        if forged is None:
            return body
        self.count("byz_lie")
        return {**body, "members": [*body.get("members", []), forged]}

    # -- attacks -------------------------------------------------------------------------------

    async def attack(self) -> None:
        """One attack on one other member, chosen by the seed."""
        victims = [m for m in self.world.members if m != self.domain]
        if not victims:
            return
        victim = self.world.nodes[self.rng.choice(victims)]
        kind = self.rng.choice(ATTACKS)
        made = await getattr(self, f"_{kind}")(victim)
        if made is None:
            return
        path, body_or_signed = made
        if isinstance(body_or_signed, tuple):
            headers, raw = body_or_signed
        else:
            raw = encode_body(body_or_signed)
            headers = self.world.network.sign(self.domain, victim.key_id, path, raw)
        self.count(f"byz_{kind}")
        try:
            status, answer = await self.world.network.send(
                self.domain, victim.domain, path, headers, raw, from_outside=True
            )
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.count("byz_undelivered")
            return
        if status >= 400:
            self.count("byz_refused")
        elif path == "/peer/events" and not await self._took(victim, raw):
            self.count("byz_duplicate")  # the ids were held already: skipped, forged or not
        else:
            self.world.problems.append(
                f"byzantine {self.domain}: {kind} at {victim.domain} was accepted "
                f"({status} {str(answer)[:200]})"
            )

    async def _took(self, victim: Node, raw: bytes) -> bool:
        """Whether the victim holds any of the forged events (their very change and proof),
        or cannot be asked (then the answer alone counts). A forged event may carry a proof
        lifted from the real event of its id, which the victim may hold by then (seed
        706028): the id and proof alone are the real event's, so the change is compared."""
        if victim.db is None or not victim.alive:
            return True
        sent = json.loads(raw)["events"]
        async with victim.db.sessions() as session:
            for event in sent:
                row = await session.get(EventRow, (event[0], event[1], event[2]))
                forged = (event[3], event[4], event[5], event[8], event[10])
                if (
                    row is not None
                    and (row.sku, row.kind, row.delta, row.cause, row.proof) == forged
                ):
                    return True
        return False

    async def _stream_of(self, node: Node, origin: str) -> tuple[str, int] | None:
        """(epoch, highest seq) of `origin`'s current stream as `node` holds it: the attacker
        aims past what the victim holds, so that its events would be news there (an event the
        victim already holds is skipped as a duplicate, forged or not)."""
        if node.db is None or not node.alive:
            return None
        async with node.db.sessions() as session:
            vector = await ledger.load_vector(session)
        streams = [(e, s) for (o, e), s in vector.items() if o == origin]
        return max(streams, key=lambda es: es[1]) if streams else None

    def _event(self, origin: str, epoch: str, seq: int, *, proof: str | None = None) -> list[Any]:
        sku = self.rng.choice(sorted(self.world.bases) or ["SKU-001"])
        event = EventRow(
            origin=origin,
            epoch=epoch,
            seq=seq,
            sku=sku,
            kind="change",
            delta=-self.rng.randint(5, 40),
            cause="byzantine",
            at=self.world.now_wall(),
        )
        event.proof = proof if proof is not None else trust.sign_event(self.node.key, event)
        return event_to_wire(event)

    async def _lifted_proof(self, origin: str) -> str:
        """A real proof by `origin`, taken from one of its events (good for that event only)."""
        me = self.node
        if me.db is None or not me.up:
            return "A" * 88
        from sqlmodel import select

        async with me.db.sessions() as session:
            row = (await session.exec(select(EventRow).where(EventRow.origin == origin))).first()
        return row.proof if row is not None and row.proof else "A" * 88

    async def _forge_origin(self, victim: Node) -> tuple[str, Any] | None:
        """Events of a third member (or of the victim) at its next seqs."""
        origin = self.rng.choice([m for m in self.world.members if m != self.domain])
        stream = await self._stream_of(victim, origin)
        if stream is None:
            return None
        epoch, seq = stream
        lifted = await self._lifted_proof(origin) if self.rng.random() < 0.5 else None
        ahead = self.rng.choice((1, self.rng.randint(50, 500)))  # next, or beyond a gap
        events = [self._event(origin, epoch, seq + ahead + i, proof=lifted) for i in range(3)]
        return "/peer/events", {"events": events}

    async def _inject_stream(self, victim: Node) -> tuple[str, Any] | None:
        """Events in the victim's own current stream, ahead of its seq."""
        stream = await self._stream_of(victim, victim.domain)
        if stream is None:
            return None
        epoch, seq = stream
        events = [self._event(victim.domain, epoch, seq + self.rng.randint(50, 500))]
        return "/peer/events", {"events": events}

    async def _invent_origins(self, victim: Node) -> tuple[str, Any] | None:
        long_sku = self.rng.random() < 0.3
        events = []
        for n in range(self.rng.randint(50, 300)):
            event = self._event(f"o{n}.invented.example", f"{self.rng.getrandbits(32):08x}", 1)
            if long_sku:
                event[3] = "S" * 2048
            events.append(event)
        return "/peer/events", {"events": events}

    def _stranger(self) -> tuple[Ed25519PrivateKey, str]:
        self.strangers += 1
        key = Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        return key, f"stranger{self.strangers}.evil.example"

    async def _introduce_stranger(self, victim: Node) -> tuple[str, Any] | None:
        """A new key into the victim's member list: no admission, or one that lies."""
        key, domain = self._stranger()
        public = signing.public_key_b64(key)
        now = self.world.now_wall()
        member: dict[str, Any] = {
            "domain": domain,
            "agent_url": url_of(domain),
            "public_key": public,
            "state": "active",
            "changed_at": now,
        }
        member["proof"] = trust.sign(
            key, trust.statement_message(domain, url_of(domain), public, "active", now)
        )
        claimed = self.rng.choice([m for m in self.world.members if m != self.domain])
        choice = self.rng.randrange(3)
        if choice == 1:  # "admitted by" another member, signed with the attacker's key
            message = trust.admission_message(domain, url_of(domain), public, now, claimed)
            member["admission"] = {
                "by": claimed,
                "at": now,
                "url": url_of(domain),
                "signature": trust.sign(self.node.key, message),
            }
        elif choice == 2:  # a real admission, lifted from another member's record
            lifted = await self._admission_of(claimed)
            if lifted is not None:
                member["admission"] = lifted
        return "/peer/introduce", {"member": member}

    async def _admission_of(self, domain: str) -> dict[str, Any] | None:
        me = self.node
        if me.agent is None or not me.up:
            return None
        for record in await me.agent.roster.members_wire():
            if record.get("admission"):
                return dict(record["admission"])
        return None

    def _forged_member(self) -> dict[str, Any] | None:
        """Another member's record, changed as only that member may change it."""
        others = [m for m in self.world.members if m != self.domain]
        if not others:
            return None
        target = self.world.nodes[self.rng.choice(others)]
        now = self.world.now_wall()
        way = self.rng.randrange(4)
        public, url, state, changed = target.public_key, url_of(target.domain), "active", now
        if way == 0:  # re-keyed to a key the attacker holds
            key, _ = self._stranger()
            public = signing.public_key_b64(key)
            proof = trust.sign(
                key, trust.statement_message(target.domain, url, public, state, changed + 100)
            )
            changed += 100
        else:
            if way == 1:
                url = url_of(f"evil-{target.domain}")
            elif way == 2:
                state = self.rng.choice(["left", "paused"])
            else:
                changed = now + 10_000  # far in the future
            message = trust.statement_message(target.domain, url, public, state, changed)
            proof = trust.sign(self.node.key, message)
        return {
            "domain": target.domain,
            "agent_url": url,
            "public_key": public,
            "state": state,
            "changed_at": changed,
            "proof": proof,
        }

    async def _rewrite_member(self, victim: Node) -> tuple[str, Any] | None:
        forged = self._forged_member()
        return None if forged is None else ("/peer/introduce", {"member": forged})

    async def _other_as_own(self, victim: Node) -> tuple[str, Any] | None:
        """Another member's record sent as if it were the sender's own (state or pull)."""
        forged = self._forged_member()
        if forged is None:
            return None
        if self.rng.random() < 0.5:
            return "/peer/state", {"member": forged}
        return "/peer/pull", {"have": [], "member": forged}

    async def _replay_elsewhere(self, victim: Node) -> tuple[str, Any] | None:
        """A request another member signed for the byzantine one, sent to the victim."""
        kept = [c for c in self.captured if c[0]]
        if not kept:
            return None
        _, path, headers, raw = self.rng.choice(kept)
        return path, (headers, raw)
