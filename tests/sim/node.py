"""One simulated agent: the real `agent.agent.Agent` on its own SQLite file, with the
simulated network as its `Transport`, a virtual clock and a simulated shop as its channel;
able to crash and restart.

A crash cancels every task of the agent at once and closes its database: whatever a task had
not committed is gone, whatever it committed survives, as with SIGKILL. A restart builds the
components afresh from the database, as a new process would.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import select

from agent import signing
from agent.agent import Agent, Tuning
from agent.channel import WebhookHint
from agent.compaction import DEFAULT_HORIZON
from agent.models import Identity
from agent.rules import ShopRules, decide
from agent.transport import Transport
from agent.warehouses import OWN, LocationMap
from tests.sim.runtime import Crashed, InlineDatabase, VirtualClock
from tests.sim.shop import SimChannel, SimShop, Told

__all__ = ["Node", "url_of"]

PULL_INTERVAL = 2.0
RECONCILE_INTERVAL = 10.0
SNAPSHOT_PAGE = 3  # pools per page: a join downloads several pages, and a crash may cut it short
COMPACTION_INTERVAL = 3.0


def url_of(domain: str) -> str:
    """The agent URL of a simulated agent (the network routes on its host)."""
    return f"http://{domain}"


class Node:
    """A simulated agent and the platform shop it serves."""

    def __init__(
        self,
        domain: str,
        path: Path,
        shop: SimShop,
        *,
        rng: random.Random,
        transport: Transport,
        trace: Callable[..., None],
        shop_rules: ShopRules | None = None,
    ) -> None:
        self.domain = domain
        self.shop_rules = shop_rules or ShopRules()  # its [rules], as its owner set them
        self.compaction_interval = COMPACTION_INTERVAL  # virtual seconds (the world draws it)
        self.history_horizon = DEFAULT_HORIZON  # a world may draw a short one
        # its [locations]: location -> the warehouses it sells from (empty: the default)
        self.locations: dict[str, list[str]] = {}
        self.path = path
        self.shop = shop
        self.rng = rng
        self.transport = transport
        self.trace = trace
        self.key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        self.public_key = signing.public_key_b64(self.key)
        self.key_id = signing.fingerprint(self.public_key)
        self.clock = VirtualClock()
        self.nonces = signing.MemoryNonceCache(self.clock)  # in memory: a crash forgets them
        self.started = 0.0  # when it last started: requests signed before are refused
        self.up = False
        self.errors: list[str] = []
        self.db: InlineDatabase | None = None
        self.agent: Agent | None = None  # while up
        self.on_install: Callable[[Node, set[str]], None] | None = None
        self.on_commit: Callable[[Node], None] | None = None  # may kill the agent right there
        self._main: asyncio.Task[None] | None = None
        self._tasks: dict[asyncio.Task[Any], None] = {}  # insertion-ordered
        self._life = asyncio.Lock()  # a crash and a restart never overlap

    # -- life ----------------------------------------------------------------------------------

    async def create(self, now: float) -> None:
        """Write the identity row into the agent's fresh database (`shopsync init`)."""
        db = InlineDatabase(self.path)
        async with db.transaction() as session:
            session.add(
                Identity(
                    id=1,
                    domain=self.domain,
                    epoch=f"{self.rng.getrandbits(64):016x}",
                    public_key=self.public_key,
                    created_at=now,
                )
            )
        await db.dispose()

    async def start(self) -> None:
        """Start the agent from its database (if it is down)."""
        async with self._life:
            if not self.up:
                await self._start()

    async def crash(self) -> None:
        """SIGKILL (if it is up): every task stops where it is; the database keeps what was
        committed."""
        async with self._life:
            if self.up:
                await self._crash()

    async def _start(self) -> None:
        """Start the agent as `shopsync run` does, on the simulated network and clock."""
        self.nonces = signing.MemoryNonceCache(self.clock)
        self.started = self.clock.now()
        db = self.db = InlineDatabase(self.path)
        db.after_commit = self._committed
        async with db.sessions() as session:
            identity = (await session.exec(select(Identity))).one()
        agent = self.agent = Agent(
            db=db,
            identity=identity,
            private_key=self.key,
            channel=SimChannel(self.shop),
            clock=self.clock,
            transport=self.transport,
            allocate=lambda sku, pool, rules, priority: decide(
                sku, pool, self.domain, rules, priority
            ),
            tuning=Tuning(
                public_url=url_of(self.domain),
                coalesce=0.005,
                reconcile_interval=RECONCILE_INTERVAL,
                pull_interval=PULL_INTERVAL,
                spool_dir=self.path.with_suffix(".spool"),
                snapshot_page_size=SNAPSHOT_PAGE,  # a join takes several pages: cut short
                compaction_interval=self.compaction_interval,
                history_horizon=self.history_horizon,
            ),
            shop_rules=self.shop_rules,
            locations=self.location_map(),
            rng=self.rng,
        )
        agent.join_import.before_install.append(self._installing)
        self.up = True
        self.trace("start", node=self.domain)
        await agent.start()

    def location_map(self) -> LocationMap:
        return LocationMap(OWN, self.locations)

    def link(self, locations: dict[str, list[str]]) -> None:
        """The owner links the shop's locations anew (its config first, what a restart
        starts from; then the running agent, as `POST /api/locations` does)."""
        self.locations = locations
        if self.agent is not None:
            self.agent.reconciler.set_locations(self.location_map())

    def _installing(self, group: set[str]) -> None:
        if self.on_install is not None:
            self.on_install(self, group)
        self.trace("installed", node=self.domain, skus=len(group))

    def _committed(self) -> None:
        if self.on_commit is not None:
            self.on_commit(self)

    @property
    def alive(self) -> bool:
        """Up, and not killed a moment ago (a kill after a commit stops it at once; the
        crash that tidies up follows)."""
        return self.up and self.db is not None and not self.db.dead

    @property
    def importing(self) -> bool:
        """Between the welcome and the snapshot install (False while down)."""
        return self.agent is not None and self.agent.importing

    async def _crash(self) -> None:
        assert self.agent is not None and self.db is not None
        self.up = False
        self.trace("crash", node=self.domain)
        tasks = self.agent.tasks() + list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # a task that outlives a cancel would hang a real agent's shutdown: a finding
            _, stuck = await asyncio.wait(tasks, timeout=60.0)
            self.errors += [f"task {t.get_name()} ignored its cancellation" for t in stuck]
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a crash ends tasks however they end
        self._tasks.clear()
        self.agent.replicator.links.clear()
        await self.db.dispose()
        self.db = self.agent = None

    def spawn(self, coro: Coroutine[Any, Any, Any], *, awaited: bool = False) -> asyncio.Task[Any]:
        """Run `coro` as part of this agent (cancelled by a crash). An exception is a finding
        unless the caller `awaited` the task and handles it."""
        task = asyncio.create_task(coro)
        self._tasks[task] = None
        task.add_done_callback(lambda t: self._done(t, awaited))
        return task

    def _done(self, task: asyncio.Task[Any], awaited: bool) -> None:
        self._tasks.pop(task, None)
        if task.cancelled() or isinstance(task.exception(), Crashed):
            return
        if not awaited and task.exception() is not None:
            self.errors.append(f"task failed: {task.exception()!r}")

    def hint(self, item_id: str, topic: str, told: Told | None = None) -> None:
        """A platform webhook reaches the agent (if it is up): a level with its count and
        stamp, an order whose level follows, or (a platform that stamps nothing) a topic."""
        if not self.alive or self.agent is None:
            return
        if told is None:
            created = topic == "products/create"
            hint = WebhookHint(topic, item_ids=(item_id,), catalogue_changed=created)
        elif told.count is not None:
            counts = ((item_id, told.count),)
            hint = WebhookHint(topic, item_ids=(item_id,), counts=counts, stamp=told.stamp)
        else:
            hint = WebhookHint(topic, item_ids=(item_id,), stamp=told.stamp, levels_follow=True)
        self.agent.reconciler.hint(hint)
