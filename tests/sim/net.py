"""The simulated network between agents: latency, loss, duplication, partitions.

`Network.caller(domain)` is the `call` the core's `Replicator` is built with: a request to
another agent's `/peer/*` travels for a while, may be lost on the way there or back, may be
delivered twice, and is refused while a partition separates the two agents or the receiver
is down. Different latencies reorder messages. Bodies cross as JSON, as on the wire, so no
object is ever shared between two agents. The receiving agent answers with the code its
`/peer` sub-app runs once a request is verified: `agent.peer_service.serve`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from agent import peer_service
from agent.peering import PeerError

if TYPE_CHECKING:
    from tests.sim.node import Node

__all__ = ["Network", "NetFaults"]

TIMEOUT = 10.0  # the client's total timeout, virtual seconds


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
        if not self.nodes[sender].alive:  # killed: it sends nothing more
            raise aiohttp.ClientConnectionError("this agent was killed")
        if (sender, target) in self.cut or node is None or not node.alive:
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
            async with asyncio.timeout(TIMEOUT):
                return await asyncio.shield(answer)
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
        if (sender, target) in self.cut or not node.alive:
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
        if not node.alive:  # killed while it handled the call: no answer leaves
            return
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
        """The receiving agent's `/peer/*` sub-app: the signature middleware's key checks (the
        signature itself is not simulated), then the agent's own `peer_service.serve`."""
        peering, replicator = node.peering, node.replicator
        assert peering is not None and replicator is not None
        key_id = self.nodes[sender].key_id
        if path == "/peer/welcome":
            known = await peering.welcome_key(key_id) is not None
        else:
            known = await peering.is_member(key_id)
        if not known:
            return 401, {"error": "unknown_key"}
        try:
            name = path.removeprefix("/peer/")
            return 200, await peer_service.serve(peering, replicator, key_id, name, body)
        except PeerError as exc:
            return exc.status, {"error": exc.error, "message": exc.message}


def _settle(answer: asyncio.Future[Any], value: Any) -> None:
    if not answer.done():
        answer.set_result(value)
