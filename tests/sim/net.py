"""The simulated network between agents: latency, loss, duplication, partitions.

`Network.caller(domain)` is the `call` the core's `Replicator` is built with: a request to
another agent's `/peer/*` travels for a while, may be lost on the way there or back, may be
delivered twice, and is refused while a partition separates the two agents or the receiver
is down. Different latencies reorder messages. Bodies cross as JSON, as on the wire, so no
object is ever shared between two agents. The receiving side mirrors `agent/web/peer.py`:
it parses with the same wire functions and calls the same `Replicator` methods.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from agent import ledger
from agent.peering import PeerError
from agent.replication import event_from_wire, event_to_wire, vector_from_wire, vector_to_wire

if TYPE_CHECKING:
    from tests.sim.node import Node

__all__ = ["Network", "NetFaults"]

TIMEOUT = 10.0  # the client's total timeout, virtual seconds
MAX_EVENTS = 5000


@dataclasses.dataclass(frozen=True, slots=True)
class NetFaults:
    """Per-message fault probabilities (all 0 once the faults stop)."""

    loss: float = 0.0
    duplicate: float = 0.0
    slow: float = 0.0  # a message takes seconds instead of milliseconds


class Network:
    """Every agent's link to every other, with the run's faults."""

    def __init__(self, rng: random.Random, trace: Callable[..., None]) -> None:
        self.rng = rng
        self.trace = trace
        self.nodes: dict[str, Node] = {}
        self.cut: set[tuple[str, str]] = set()  # (from, to) pairs that cannot talk
        self.faults = NetFaults()
        self.counters: dict[str, int] = {}
        self.in_flight = 0
        self.after_serve: Callable[[Node, str], None] | None = None  # e.g. a targeted crash

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def partition(self, groups: list[set[str]]) -> None:
        """Cut every pair of agents that share no group (a node may sit in several)."""
        names = sorted(self.nodes)
        self.cut = {
            (a, b)
            for a in names
            for b in names
            if a != b and not any(a in g and b in g for g in groups)
        }
        self.trace("partition", groups=[sorted(g) for g in groups])

    def heal(self) -> None:
        self.cut.clear()
        self.trace("heal")

    def _latency(self) -> float:
        if self.rng.random() < self.faults.slow:
            self.count("net_slow")
            return self.rng.uniform(0.5, 4.0)
        return self.rng.uniform(0.001, 0.03)

    def caller(self, sender: str) -> Callable[[str, str, str, Any], Any]:
        """The `call` of the agent `sender`: (agent_url, method, path, body) -> (status, json)."""

        async def call(agent_url: str, method: str, path: str, body: Any) -> tuple[int, Any]:
            target = agent_url.removeprefix("sim://")
            return await self._request(sender, target, path, json.dumps(body))

        return call

    async def _request(self, sender: str, target: str, path: str, raw: str) -> tuple[int, Any]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[int, Any]] = loop.create_future()
        node = self.nodes.get(target)
        if (sender, target) in self.cut or node is None or not node.up:
            self.count("net_refused")
            await asyncio.sleep(self.rng.uniform(0.001, 0.01))
            raise aiohttp.ClientConnectionError(f"cannot connect to {target}")
        self.in_flight += 1
        copies = 2 if self.rng.random() < self.faults.duplicate else 1
        if copies == 2:
            self.count("net_duplicate")
        for copy in range(copies):
            if self.rng.random() < self.faults.loss:
                self.count("net_lost_request")
                self.trace("lost", sender=sender, target=target, path=path, leg="request")
                continue
            loop.call_later(self._latency(), self._arrive, sender, target, path, raw, answer, copy)
        try:
            return await asyncio.wait_for(asyncio.shield(answer), TIMEOUT)
        finally:
            self.in_flight -= 1
            if not answer.done():
                answer.cancel()

    def _arrive(
        self,
        sender: str,
        target: str,
        path: str,
        raw: str,
        answer: asyncio.Future[tuple[int, Any]],
        copy: int,
    ) -> None:
        node = self.nodes[target]
        if (sender, target) in self.cut or not node.up:
            self.count("net_dropped_in_flight")
            return
        self.trace("deliver", sender=sender, target=target, path=path, copy=copy)
        node.spawn(self._serve(sender, node, path, raw, answer))

    async def _serve(
        self, sender: str, node: Node, path: str, raw: str, answer: asyncio.Future[Any]
    ) -> None:
        try:
            status, body = await self.handle(sender, node, path, json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:  # the handlers' 400
            status, body = 400, {"error": "bad_request", "message": str(exc)}
        except Exception as exc:  # a 500 is a finding: the checker reports it
            self.count("handler_error")
            node.errors.append(f"{path} from {sender}: {exc!r}")
            status, body = 500, {"error": "internal"}
        wire = json.dumps(body)
        if self.after_serve is not None:
            self.after_serve(node, path)
        if self.rng.random() < self.faults.loss:
            self.count("net_lost_response")
            self.trace("lost", sender=node.domain, target=sender, path=path, leg="response")
            return
        loop = asyncio.get_running_loop()
        loop.call_later(self._latency(), _settle, answer, (status, json.loads(wire)))

    async def handle(self, sender: str, node: Node, path: str, body: Any) -> tuple[int, Any]:
        """The receiving agent's `/peer/*` sub-app, as `agent/web/peer.py` routes it: the
        signature middleware's key checks, then the same handler steps."""
        peering, replicator = node.peering, node.replicator
        assert peering is not None and replicator is not None
        key_id = self.nodes[sender].key_id
        try:
            if path == "/peer/welcome":
                if await peering.welcome_key(key_id) is None:
                    return 401, {"error": "unknown_key"}
                return 200, await peering.on_welcome(key_id, body)
            if not await peering.is_member(key_id):
                return 401, {"error": "unknown_key"}
            if path == "/peer/introduce":
                return 200, await peering.on_introduce(key_id, body)
            if replicator.paused:
                raise PeerError(503, "paused", "sync is paused at this shop")
            if replicator.importing:
                raise PeerError(503, "importing", "this shop is importing the group's counts")
            await peering.mark_heard(key_id)
            if path == "/peer/events":
                raw = body.get("events")
                if not isinstance(raw, list) or len(raw) > MAX_EVENTS:
                    raise PeerError(400, "bad_events", "events must be a list")
                batch = [event_from_wire(e) for e in raw]
                domain = await peering.domain_of(key_id)
                vector = await replicator.receive(batch, domain, kind="batch_received")
                return 200, {"vector": vector_to_wire(vector)}
            members = [peering.me(), *await peering.members_wire()]
            if path == "/peer/pull":
                have = vector_from_wire(body.get("have", []))
                found, more = await replicator.events_since(have)
                async with replicator.db.sessions() as session:
                    mine = await ledger.load_vector(session)
                return 200, {
                    "events": [event_to_wire(e) for e in found],
                    "more": more,
                    "vector": vector_to_wire(mine),
                    "members": members,
                }
            if path == "/peer/snapshot":
                return 200, {**await replicator.snapshot(), "members": members}
        except PeerError as exc:
            return exc.status, {"error": exc.error, "message": exc.message}
        return 404, {"error": "not_found"}


def _settle(answer: asyncio.Future[Any], value: Any) -> None:
    if not answer.done():
        answer.set_result(value)
