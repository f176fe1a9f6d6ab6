"""The simulated network between agents: latency, loss, duplication, partitions.

`Network.transport(domain)` is the `Transport` an agent is built with: a call to another
agent's `/peer/*` is signed with the sender's key for the receiver (as over HTTP), travels
for a while, may be lost on the way there or back, may be delivered twice, and is refused
while a partition separates the two agents or the receiver is down. Different latencies
reorder messages. Bodies cross as the exact signed bytes, so no object is ever shared
between two agents. The receiving agent runs what its `/peer` sub-app runs: the door
(`agent.transport.admit`: signature, audience, freshness, nonce, membership), then
`agent.peer_service.serve`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from agent import jsonsafe, peer_service
from agent.roster import PeerError
from agent.signing import SignatureError, sign_request
from agent.transport import Refused, admit, encode_body

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
        self.nonces = itertools.count()
        self.after_serve: Callable[[Node, str], None] | None = None  # e.g. a targeted crash
        # sees every request an agent receives (headers and bytes), e.g. to replay it later
        self.on_receive: Callable[[Node, str, dict[str, str], bytes], None] | None = None
        # may rewrite an agent's answer before it leaves (a byzantine member's lies)
        self.tamper: Callable[[Node, str, int, Any], Any] | None = None

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

    def transport(self, sender: str) -> SimTransport:
        """The `Transport` of the agent `sender`."""
        return SimTransport(self, sender)

    def sign(
        self, sender: str, audience: str, path: str, raw: bytes, *, created: float | None = None
    ) -> dict[str, str]:
        """The signature headers agent `sender` puts on a call to `path` for `audience`."""
        node = self.nodes[sender]
        return sign_request(
            "POST",
            path,
            raw,
            private_key=node.key,
            key_id=node.key_id,
            audience=audience,
            created=int(node.clock.now() if created is None else created),
            nonce=f"{sender}-{next(self.nonces)}",  # unique, and no draw from the seed's rng
        )

    async def send(
        self,
        sender: str,
        target: str,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        *,
        from_outside: bool = False,
    ) -> tuple[int, Any]:
        """Deliver an already signed request (also: a replayed or forged one). A request
        `from_outside` the sender's agent (an attacker holding its key) goes even while that
        agent is down."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[int, Any]] = loop.create_future()
        node = self.nodes.get(target)
        if not from_outside and not self.nodes[sender].alive:  # killed: it sends nothing more
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
            loop.call_later(
                self._latency(), self._arrive, sender, target, path, headers, raw, answer, copy
            )
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
        headers: dict[str, str],
        raw: bytes,
        answer: asyncio.Future[tuple[int, Any]],
        copy: int,
    ) -> None:
        node = self.nodes[target]
        if (sender, target) in self.cut or not node.alive:
            self.count("net_dropped_in_flight")
            return
        self.trace("deliver", sender=sender, target=target, path=path, copy=copy)
        if self.on_receive is not None:
            self.on_receive(node, path, headers, raw)
        node.spawn(self._serve(sender, node, path, headers, raw, answer))

    async def _serve(
        self,
        sender: str,
        node: Node,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        answer: asyncio.Future[Any],
    ) -> None:
        try:
            status, body = await self.handle(node, path, headers, raw)
        except (ValueError, KeyError, TypeError) as exc:  # the handlers' 400
            status, body = 400, {"error": "bad_request", "message": str(exc)}
        except Exception as exc:  # a 500 is a finding: the checker reports it
            self.count("handler_error")
            node.errors.append(f"{path} from {sender}: {exc!r}")
            status, body = 500, {"error": "internal"}
        if not node.alive:  # killed while it handled the call: no answer leaves
            return
        if self.tamper is not None:
            body = self.tamper(node, path, status, body)
        wire = json.dumps(body)
        if self.after_serve is not None:
            self.after_serve(node, path)
        if self.rng.random() < self.faults.loss:
            self.count("net_lost_response")
            self.trace("lost", sender=node.domain, target=sender, path=path, leg="response")
            return
        loop = asyncio.get_running_loop()
        loop.call_later(self._latency(), _settle, answer, (status, json.loads(wire)))

    async def handle(
        self, node: Node, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        """The receiving agent's `/peer/*` sub-app: the door (real signatures, audience,
        freshness, nonces, membership), then the agent's own `peer_service.serve`."""
        agent = node.agent
        assert agent is not None

        async def read(limit: int) -> bytes:
            if len(raw) > limit:
                raise Refused(413, "body_too_large", f"larger than {limit} bytes")
            return raw

        try:
            verified, _ = await admit(
                method="POST",
                target=path,
                headers=headers,
                read=read,
                resolve_key=agent.roster.member_key,
                nonces=node.nonces,
                now=node.clock.now,
                is_member=agent.roster.is_member,
                audience=agent.roster.key_id,
                open_paths=peer_service.OPEN_PATHS,
                resolve_open_key=peer_service.open_key(agent),
                not_before=int(node.started),
                member_limit=peer_service.MEMBER_LIMIT,
                open_limit=peer_service.OPEN_LIMIT,
            )
        except SignatureError as exc:
            return exc.status, {"error": exc.reason, "message": exc.message}
        except Refused as exc:
            return exc.status, {"error": exc.error, "message": exc.message}
        body = jsonsafe.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        try:
            name = path.removeprefix("/peer/")
            result = await agent.serve_peer(verified.key_id, name, body)
            return (202 if name == "join" else 200), result
        except PeerError as exc:
            return exc.status, {"error": exc.error, "message": exc.message}


def _settle(answer: asyncio.Future[Any], value: Any) -> None:
    if not answer.done():
        answer.set_result(value)


class SimTransport:
    """An agent's `Transport` on the simulated network: signs, then sends."""

    def __init__(self, network: Network, sender: str) -> None:
        self.network, self.sender = network, sender

    async def call(
        self, agent_url: str, audience: str, method: str, path: str, body: Any
    ) -> tuple[int, Any]:
        target = urlsplit(agent_url).hostname or ""
        raw = encode_body(body)
        headers = self.network.sign(self.sender, audience, path, raw)
        return await self.network.send(self.sender, target, path, headers, raw)
