"""One simulated agent: the real counting core, replication and snapshot install on its own
SQLite file, wired like `agent/web/app.py` wires them, and able to crash and restart.

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

from agent import signing, trust
from agent.channel import WebhookHint
from agent.importer import Importer
from agent.models import Identity
from agent.peering import Peering
from agent.reconcile import Reconciler
from agent.replication import Replicator
from agent.syncmode import SyncMode
from agent.transport import Transport
from tests.sim.runtime import Crashed, InlineDatabase, VirtualClock
from tests.sim.shop import SimChannel, SimShop

__all__ = ["Node", "url_of"]

PULL_INTERVAL = 2.0
RECONCILE_INTERVAL = 10.0


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
    ) -> None:
        self.domain = domain
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
        self.reconciler: Reconciler | None = None
        self.replicator: Replicator | None = None
        self.peering: Peering | None = None
        self.importer: Importer | None = None
        self.on_install: Callable[[Node, dict[str, Any]], None] | None = None
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
        """Wired as `agent.web.app._background` wires the agent."""
        clock = self.clock
        self.nonces = signing.MemoryNonceCache(clock)
        self.started = clock.now()
        db = self.db = InlineDatabase(self.path)
        db.after_commit = self._committed
        async with db.sessions() as session:
            identity = (await session.exec(select(Identity))).one()
        channel = SimChannel(self.shop)

        def local_events(rows: list[Any]) -> None:
            replicator.notify_local()

        def joined(skus: set[str]) -> None:
            reconciler.request_reconcile()

        mode = SyncMode(db)
        await mode.load()
        reconciler = Reconciler(
            db=db,
            channel=channel,
            clock=clock,
            identity=identity,
            allocate=lambda sku, pool: max(0, pool),
            coalesce=0.005,
            reconcile_interval=RECONCILE_INTERVAL,
            on_local_events=local_events,
            rng=self.rng,
            sign_event=lambda event: trust.sign_event(self.key, event),
        )
        peering = Peering(
            db=db,
            identity=identity,
            public_url=url_of(self.domain),
            clock=clock,
            transport=self.transport,  # the simulated network
            http=None,
            private_key=self.key,
            on_joined=joined,
            mode=mode,
        )
        await peering.load()
        real_install = peering.install_snapshot

        async def install(snap: dict[str, Any], master: str, report: Any = None) -> set[str]:
            if self.on_install is not None:
                self.on_install(self, snap)
            skus = await real_install(snap, master, report)
            self.trace("installed", node=self.domain, skus=len(skus))
            return skus

        peering.install_snapshot = install  # type: ignore[method-assign]
        replicator = Replicator(
            db=db,
            identity=identity,
            clock=clock,
            call=peering.call,
            on_pool_change=reconciler.pool_changed,
            origin_keys=peering.origin_keys,
            mode=mode,
            on_members=peering.merge_members,
            me=peering.me,
            pull_interval=PULL_INTERVAL,
            rng=self.rng,
        )
        importer = Importer(
            db=db,
            channel=channel,
            clock=clock,
            reconciler=reconciler,
            replicator=replicator,
            sku_rule=reconciler.sku_rule,
        )
        peering.replicator = replicator
        peering.importer = importer
        self.reconciler, self.replicator = reconciler, replicator
        self.peering, self.importer = peering, importer
        self.up = True
        self.trace("start", node=self.domain)
        self._main = asyncio.create_task(reconciler.run())
        await importer.restore()
        await peering.resume_import()
        if not peering.importing:
            await replicator.start()

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
        return self.peering is not None and self.peering.importing

    async def _crash(self) -> None:
        assert self.reconciler is not None and self.replicator is not None and self.db
        assert self.peering is not None and self.importer is not None
        self.up = False
        self.trace("crash", node=self.domain)
        tasks: list[asyncio.Task[Any]] = []
        if self._main is not None:
            tasks.append(self._main)
        tasks += [link.task for _, link in sorted(self.replicator.links.items()) if link.task]
        tasks += self.reconciler.tasks()
        tasks += [t for t in (self.peering.import_task, self.importer.task) if t is not None]
        tasks += list(self._tasks)
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
        self.replicator.links.clear()
        await self.db.dispose()
        self.db = self.reconciler = self.replicator = None
        self.peering = self.importer = None

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

    def hint(self, item_id: str, topic: str) -> None:
        """A platform webhook reaches the agent (if it is up)."""
        if self.alive and self.reconciler is not None:
            created = topic == "products/create"
            self.reconciler.hint(WebhookHint(topic, item_ids=(item_id,), catalogue_changed=created))


def _creation_order(task: asyncio.Task[Any]) -> tuple[int, str]:
    name = task.get_name()
    number = name.removeprefix("Task-")
    return (int(number), "") if number.isdigit() else (0, name)
