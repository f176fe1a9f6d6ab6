"""One simulated run: a group of agents, their shops, a workload and faults, all from one seed.

The run has three phases on virtual time:
1. set-up without faults: every shop's agent starts alone; the first shop's catalogue is the
   group's, the others join it by request/accept and install the master's snapshot;
2. the storm: purchases (some racing for the last unit in several shops), cancellations that
   restock, admin edits, new products, a shop joining half-way, while agents crash and
   restart, the network partitions, delays, loses, duplicates and reorders messages, webhooks
   are dropped, duplicated and late, and the platforms answer 429/5xx or time out after
   applying a write;
3. calm: faults stop, partitions heal, every agent runs, until the group is quiet; then the
   checker (`tests.sim.checker`) judges the end state.
Every random choice comes from `random.Random(seed)` and every step runs on the virtual loop,
so a seed replays the same run; the trace hash says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import shutil
from collections.abc import Callable
from typing import Any

from sqlmodel import delete

from agent import ledger
from agent.bundles import Bundle
from agent.models import JoinRequest, PoolRow
from agent.roster import PeerError
from agent.warehouses import DEFAULT, stock_key
from tests.sim import checker, plan
from tests.sim.byzantine import Byzantine
from tests.sim.net import NetFaults, Network
from tests.sim.node import Node, url_of
from tests.sim.runtime import Crashed, Deadlock, VirtualLoop, migrated_template, scratch_dir
from tests.sim.shop import Faults, SimShop, Told

__all__ = ["Result", "World", "run_seed"]

CALM_LIMIT = 240.0  # virtual seconds the group gets to go quiet once the faults stop
HORIZON = 12.0  # virtual seconds: the short history horizon some runs draw
NORTH, ANNEX, OUTLET = "north", "annex", "outlet"  # a second warehouse, and two locations


@dataclasses.dataclass
class Result:
    """What one seed did: verdict, trace hash, faults injected, virtual and real time."""

    seed: int
    problems: list[str]
    trace_hash: str
    faults: dict[str, int]
    virtual_seconds: float
    trace: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class World:
    """Everything of one run; `run()` plays it on the current (virtual) event loop."""

    def __init__(
        self,
        seed: int,
        *,
        keep_trace: bool = False,
        bundles: bool = False,
        warehouses: bool = False,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.keep_trace = keep_trace
        self.lines: list[str] = []
        self.hasher = hashlib.sha256()
        self.counters: dict[str, int] = {}
        self.network = Network(self.rng, self.trace)
        self.shops: dict[str, SimShop] = {}
        self.nodes: dict[str, Node] = {}
        self.members: list[str] = []  # the group, in joining order
        self.bases: dict[str, tuple[str, int]] = {}  # sku -> (shop where created, count)
        self.logged_errors: list[str] = []
        self.problems: list[str] = []  # found during the run (the checker adds the rest)
        self.webhooks_in_flight = 0
        self.hook_faults = (0.0, 0.0, 0.0)  # drop, duplicate, late
        self.sku_counter = 0
        self._tasks: list[asyncio.Task[Any]] = []
        # crashes aimed at the moment right after an agent took in peer events, drawn from a
        # stream of their own so that seeds without them replay as before
        self.aim = random.Random(seed ^ 0x5EED)
        self.aimed_crashes = 0
        # kills right after an agent's transaction commits (before its next line runs), from
        # a stream of their own as well
        self.kill = random.Random(seed ^ 0xC0FFEE)
        self.commit_kills = 0
        self.storming = False
        self.main_task: asyncio.Task[Any] | None = None
        # the byzantine member and its attacks, from a stream of their own as well
        self.byz_rng = random.Random(seed ^ 0xB12A)
        self.byzantine: Byzantine | None = None
        # each shop's stock rules, their changes and the group's priority changes, from a
        # stream of their own
        self.rules_rng = random.Random(seed ^ 0x2E1E5)
        # how each shop's platform stamps its levels, from a stream of its own, and which old
        # webhooks come again once all is quiet
        self.level_rng = random.Random(seed ^ 0x1E7E1)
        self.late_rng = random.Random(seed ^ 0x1A7E)
        self.delivered: list[tuple[str, str, str, Told | None]] = []
        # how often each agent compacts its history, and extra compactions at random moments
        # of the storm, from a stream of their own
        self.compact_rng = random.Random(seed ^ 0xF01D)
        # in a quarter of the runs the history horizon is short, and one member is away
        # longer: its peers fold history without it, and it re-imports when it returns
        self.horizon_rng = random.Random(seed ^ 0x40121)
        self.horizon: float | None = self.horizon_rng.choice((None, None, None, HORIZON))
        # with `bundles`, most runs sell bundles of the group's SKUs in some shops, drawn from
        # a stream of their own (a run without them is the same run as before)
        self.bundle_rng = random.Random(seed ^ 0xB0D1E5) if bundles else None
        self.bundles: dict[str, Bundle] = {}  # the group's bundles, as the owners set them
        # with `warehouses`, most runs give some shops a second location selling from a second
        # warehouse (and maybe from the default one after it), drawn from a stream of their own
        self.ware_rng = random.Random(seed ^ 0x3A4E40) if warehouses else None
        self.links: dict[str, dict[str, list[str]]] = {}  # shop -> its [locations]
        self.ware_bases: dict[str, tuple[str, int]] = {}  # key SKU@@W -> (shop, first count)

    # -- tracing -------------------------------------------------------------------------------

    def trace(self, kind: str, **fields: Any) -> None:
        """One observable step; all of them, in order, make the trace hash."""
        now = asyncio.get_running_loop().time()
        line = f"{now:.6f} {kind} " + " ".join(f"{k}={fields[k]}" for k in sorted(fields))
        self.hasher.update(line.encode() + b"\n")
        if self.keep_trace:
            self.lines.append(line)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def faults(self) -> dict[str, int]:
        out = dict(self.counters)
        for source in [self.network.counters, *(s.counters for s in self.shops.values())]:
            for name, n in source.items():
                out[name] = out.get(name, 0) + n
        return dict(sorted(out.items()))

    # -- webhooks ------------------------------------------------------------------------------

    def webhook(self, shop: SimShop, item_id: str, topic: str, told: Told | None) -> None:
        """The platform sends a webhook for a change: maybe lost, late, or twice."""
        drop, dup, late = self.hook_faults
        if self.rng.random() < drop:
            self.count("webhook_dropped")
            return
        copies = 2 if self.rng.random() < dup else 1
        if copies == 2:
            self.count("webhook_duplicated")
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            delay = self.rng.uniform(0.001, 0.05)
            if self.rng.random() < late:
                self.count("webhook_late")
                delay = self.rng.uniform(1.0, 8.0)
            self.webhooks_in_flight += 1
            loop.call_later(delay, self._deliver_hook, shop.domain, item_id, topic, told)

    def replay_old_webhooks(self, most: int = 6) -> int:
        """Deliver again, now, up to `most` webhooks delivered before (the platform's very
        late duplicates); returns how many."""
        old = self.delivered
        picked = self.late_rng.sample(old, min(most, len(old)))
        for domain, item_id, topic, told in picked:
            self.count("webhook_day_late")
            self.trace("day_late", shop=domain, item=item_id, topic=topic)
            self.nodes[domain].hint(item_id, topic, told)
        return len(picked)

    def _deliver_hook(self, domain: str, item_id: str, topic: str, told: Told | None) -> None:
        self.delivered.append((domain, item_id, topic, told))
        self.webhooks_in_flight -= 1
        if told is not None:
            self.count("webhook_level" if told.count is not None else "webhook_order")
        self.nodes[domain].hint(item_id, topic, told)

    # -- set-up --------------------------------------------------------------------------------

    def new_sku(self) -> str:
        self.sku_counter += 1
        return f"SKU-{self.sku_counter:03d}"

    async def _add_node(self, domain: str, template: Any, directory: Any) -> Node:
        shop = SimShop(domain, self.rng, trace=self.trace, on_change=self.webhook)
        # how the shop's platform stamps its levels (None: it does not; the agent reads)
        shop.stamp_step = self.level_rng.choice((None, 1.0, 1.0, 0.05))
        path = directory / f"{domain}.db"
        shutil.copy(template, path)
        node = Node(
            domain,
            path,
            shop,
            rng=self.rng,
            transport=self.network.transport(domain),
            trace=self.trace,
            shop_rules=plan.draw_rules(self.rules_rng),
        )
        node.compaction_interval = self.compact_rng.choice((1.0, 3.0, 10.0))
        if self.horizon is not None:
            node.history_horizon = self.horizon
        node.on_install = self._installed
        node.on_commit = self._commit_kill
        self.shops[domain] = shop
        self.nodes[domain] = node
        self.network.nodes[domain] = node
        await node.create(self.now_wall())
        return node

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def now_wall(self) -> float:
        from tests.sim.runtime import EPOCH

        return EPOCH + self.now()

    def _stock(self, node: Node, group_skus: list[str]) -> None:
        """A joining shop's own catalogue: old stock of some group SKUs, maybe its own SKU."""
        rng = self.rng
        for sku in rng.sample(group_skus, rng.randint(1, len(group_skus))):
            node.shop.add_item(
                sku, rng.randint(15, 40), self.now_wall(), window=True, closable=False
            )
        if rng.random() < 0.5:
            self.new_product(node.domain)

    def new_product(self, domain: str) -> None:
        """A product created in `domain` first: its count there is the SKU's base."""
        sku = self.new_sku()
        count = self.rng.randint(0, 4)
        self.bases[sku] = (domain, count)
        self.shops[domain].add_item(sku, count, self.now_wall(), window=False, closable=True)

    def _installed(self, node: Node, group: set[str]) -> None:
        """A joiner installs its snapshot (of the `group` SKUs): its items of group SKUs are
        old stock until their cut-over write; its own new SKUs were counted from their
        creation."""
        for item in node.shop.items.values():
            if item.sku in group:
                item.window_open, item.closable = True, True
            else:
                item.window_open = False
        for change in node.shop.changes:
            if change.sku not in group:
                change.ambiguous = False
        self.count("join_installed")

    async def join(self, node: Node, master: str) -> bool | None:
        """`node` asks `master` to join (what `send_join` and `on_join_request` store); None
        if either went down before both stored the request (ask again, from the start)."""
        boss = self.nodes[master]
        assert node.db is not None and boss.db is not None
        nonce = f"{self.rng.getrandbits(128):032x}"
        now = self.now_wall()
        self.trace("join_request", node=node.domain, master=master)
        try:
            async with node.db.transaction() as session:
                await session.exec(delete(JoinRequest).where(JoinRequest.direction == "outgoing"))  # type: ignore[call-overload]
                session.add(_request(boss, "outgoing", nonce, now))
        except Crashed:  # the joiner went down as its owner sent the request (seed 303037)
            return None
        if boss.db is None:  # the master went down meanwhile: the request was not stored
            return None
        async with boss.db.transaction() as session:
            await session.exec(delete(JoinRequest).where(JoinRequest.domain == node.domain))  # type: ignore[call-overload]
            session.add(_request(node, "incoming", nonce, now))
        return await self.accept(node, master)

    async def accept(self, node: Node, master: str) -> bool:
        """The master's owner accepts the pending request (`JoinDesk.accept`: the welcome
        callback, the joiner's import, introductions); False if it failed, to be retried."""
        boss = self.nodes[master]
        if not boss.up:
            return False
        assert boss.agent is not None and boss.db is not None
        async with boss.db.sessions() as session:
            request = await session.get(JoinRequest, (node.domain, "incoming", node.key_id))
        if request is not None and request.state == "accepted":
            # the last accept got that far before the master crashed: the owner sees the
            # shop among the peers (the introductions travel with the member lists)
            self.members.append(node.domain)
            return True
        self.trace("accept", node=node.domain, master=master)
        try:
            await boss.spawn(boss.agent.joins.accept(node.domain), awaited=True)
        except (PeerError, asyncio.CancelledError, Crashed) as exc:
            self.trace("accept_failed", node=node.domain, error=getattr(exc, "error", "crash"))
            return False
        self.members.append(node.domain)
        return True

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> Result:
        self.main_task = asyncio.current_task()
        directory = scratch_dir()
        try:
            return await self._run(directory)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for node in self.nodes.values():
                await node.crash()
            shutil.rmtree(directory, ignore_errors=True)

    async def _run(self, directory: Any) -> Result:
        rng = self.rng
        template = await migrated_template(directory)
        n_initial = rng.choice((2, 3, 3, 4))
        joiner = rng.random() < 0.6 or n_initial == 2  # three to five agents
        names = [f"{chr(ord('a') + i)}.shop" for i in range(n_initial + joiner)]
        for name in names:
            await self._add_node(name, template, directory)
        first = self.nodes[names[0]]
        for _ in range(rng.randint(3, 6)):
            self.new_product(first.domain)
        group_skus = sorted(self.bases)
        for name in names[1:]:
            self._stock(self.nodes[name], group_skus)
        for name in names:
            await self.nodes[name].start()
        self.members = [first.domain]
        await self._until(lambda: _idle(first), limit=30.0)
        for name in names[1:n_initial]:
            master = rng.choice(self.members)
            boss = self.nodes[master]
            await self._until(lambda boss=boss: not boss.importing, limit=60)
            if not await self.join(self.nodes[name], master):  # no faults yet: it must work
                raise RuntimeError(f"{name} could not join {master} without faults")
        await self._until(lambda: not any(self.nodes[m].importing for m in self.members), limit=60)
        if self.bundle_rng is not None:
            await self._add_bundles(group_skus)
        if self.ware_rng is not None:
            await self._add_warehouses(group_skus)
        self.byzantine = Byzantine(self, self.byz_rng.choice(self.members), self.byz_rng)
        self.network.on_receive = self.byzantine.capture
        self.network.tamper = self.byzantine.tamper
        self.trace("byzantine", node=self.byzantine.domain)
        storm = rng.uniform(15.0, 40.0)
        self._start_faults()
        await plan.storm(self, storm, names[n_initial] if joiner else None)
        self._stop_faults()
        quiet = await plan.calm(self, CALM_LIMIT)
        problems = list(self.problems)
        if not quiet:
            problems.append(f"the group did not go quiet in {CALM_LIMIT:.0f}s")
        else:  # quiet: every member holds every event, and may fold its whole history
            for domain in self.members:
                agent = self.nodes[domain].agent
                if agent is not None:
                    self.count("compacted_at_end", await agent.compactor.compact())
        problems += await checker.check(self)
        for node in self.nodes.values():  # what the live agents made of stamped levels
            if node.agent is not None:
                stats = node.agent.reconciler.scheduler.stats
                for name in ("levels_taken", "levels_dropped", "rises_held"):
                    self.count(name, stats[name])
        for domain in sorted(self.shops):
            for item in self.shops[domain].items.values():
                self.trace("final", shop=domain, sku=item.key, count=item.count)
        return Result(
            seed=self.seed,
            problems=problems,
            trace_hash=self.hasher.hexdigest()[:16],
            faults=self.faults(),
            virtual_seconds=round(self.now(), 3),
            trace=self.lines,
        )

    async def _add_bundles(self, group_skus: list[str]) -> None:
        """Bundles of the group's SKUs, each set at a member and sold in one or two shops once
        every member holds it (a shop that sold it before its agent knew it for a bundle
        would count its sales as a product of its own: `agent.bundles`)."""
        rng = self.bundle_rng
        assert rng is not None
        if rng.random() < 0.25:
            return
        for n in range(rng.randint(1, 2)):
            parts = rng.sample(group_skus, rng.randint(1, min(2, len(group_skus))))
            bundle = Bundle(f"BUN-{n + 1}", tuple(sorted((p, rng.randint(1, 3)) for p in parts)))
            node = self.nodes[rng.choice(self.members)]
            assert node.agent is not None
            await node.spawn(node.agent.rules.set_bundle(bundle), awaited=True)
            self.bundles[bundle.sku] = bundle
            self.trace("bundle", node=node.domain, sku=bundle.sku, parts=bundle.describe())
            self.count("bundle")

        def held() -> bool:
            return all(
                (agent := self.nodes[m].agent) is not None
                and set(agent.rules.bundles.bundles) == set(self.bundles)
                for m in self.members
            )

        if not await self._until(held, limit=30):
            raise RuntimeError("the bundles did not reach every member without faults")
        for sku in self.bundles:
            for domain in rng.sample(self.members, rng.randint(1, min(2, len(self.members)))):
                self.shops[domain].add_item(
                    sku, rng.randint(0, 5), self.now_wall(), window=True, closable=True
                )

    async def _add_warehouses(self, group_skus: list[str]) -> None:
        """A second warehouse: one member's annex sells from it alone (its items there are the
        warehouse's first stock); maybe another member's outlet sells from it, then from the
        default warehouse (or from it alone), stocking some of those SKUs as old stock."""
        rng = self.ware_rng
        assert rng is not None
        if rng.random() < 0.25:
            return
        origin = rng.choice(self.members)
        self._link(origin, {"": [DEFAULT], ANNEX: [NORTH]})
        skus = sorted(rng.sample(group_skus, rng.randint(1, len(group_skus))))
        for sku in skus:
            count = rng.randint(20, 60)
            self.ware_bases[stock_key(sku, NORTH)] = (origin, count)
            self.shops[origin].add_item(
                sku, count, self.now_wall(), window=False, closable=True, location=ANNEX
            )
        self.count("warehouse")

        async def held() -> bool:
            for member in self.members:
                node = self.nodes[member]
                if node.agent is None:
                    return False
                for key in self.ware_bases:
                    pool = await pool_of(node, key)
                    if pool is None or pool.base is None:
                        return False
            return True

        deadline = self.now() + 30
        while not await held():
            if self.now() > deadline:
                raise RuntimeError("the warehouse's stock did not reach every member")
            await asyncio.sleep(0.25)
        others = [m for m in self.members if m != origin]
        if not others or rng.random() < 0.1:
            return
        outlet = rng.choice(others)
        sells_from = rng.choice(([NORTH, DEFAULT], [NORTH, DEFAULT], [NORTH, DEFAULT], [NORTH]))
        self._link(outlet, {"": [DEFAULT], OUTLET: sells_from})
        for sku in sorted(rng.sample(skus, rng.randint(1, len(skus)))):
            self.shops[outlet].add_item(
                sku, rng.randint(0, 30), self.now_wall(), window=True, closable=True,
                location=OUTLET,
            )  # fmt: skip
        self.count("warehouse_outlet")

    def _link(self, domain: str, links: dict[str, list[str]]) -> None:
        self.links[domain] = links
        self.nodes[domain].link(links)
        self.trace("locations", node=domain, links=sorted(links.items()))

    def sells_from(self, domain: str, location: str) -> list[str]:
        """The warehouses a shop's location sells from (its primary: the default one)."""
        return self.links.get(domain, {}).get(location, [DEFAULT])

    async def _until(self, condition: Callable[[], bool], *, limit: float) -> bool:
        deadline = self.now() + limit
        while self.now() < deadline:
            if condition():
                return True
            await asyncio.sleep(0.25)
        return condition()

    def _start_faults(self) -> None:
        rng = self.rng
        self.network.faults = NetFaults(
            loss=rng.choice((0.0, 0.02, 0.1, 0.25)),
            duplicate=rng.choice((0.0, 0.05, 0.3)),
            slow=rng.choice((0.0, 0.05, 0.2)),
        )
        for shop in self.shops.values():
            shop.faults = Faults(
                error=rng.choice((0.0, 0.05, 0.2, 0.4)),
                timeout_after_apply=rng.choice((0.0, 0.05, 0.3)),
            )
        self.hook_faults = (
            rng.choice((0.0, 0.1, 0.5, 1.0)),
            rng.choice((0.0, 0.2, 0.5)),
            rng.choice((0.0, 0.1, 0.3)),
        )
        if self.aim.random() < 0.4:
            self.aimed_crashes = self.aim.randint(1, 3)
            self.network.after_serve = self._aimed_crash
        if self.kill.random() < 0.4:
            self.commit_kills = self.kill.randint(1, 2)
        self.storming = True
        self.trace("faults_on")

    def _aimed_crash(self, node: Node, path: str) -> None:
        """Maybe crash `node` a few milliseconds after it served a peer call."""
        if self.aimed_crashes <= 0 or path != "/peer/events" or self.aim.random() > 0.05:
            return
        self.aimed_crashes -= 1
        self.count("crash_aimed")
        loop = asyncio.get_running_loop()
        down = self.aim.uniform(0.05, 3.0)

        async def crash_and_restart() -> None:
            await asyncio.sleep(self.aim.uniform(0.0, 0.02))
            if self.network.after_serve is not None:  # the storm is not over yet
                await node.crash()
                await asyncio.sleep(down)
                await node.start()

        self._tasks.append(loop.create_task(crash_and_restart()))

    def _commit_kill(self, node: Node) -> None:
        """Maybe kill `node` the moment one of its transactions committed: the task that
        committed stops there (`Crashed`), and so does everything else of the agent."""
        if not self.storming or self.commit_kills <= 0 or node.db is None:
            return
        if asyncio.current_task() is self.main_task or self.kill.random() > 0.02:
            return
        self.commit_kills -= 1
        self.count("crash_after_commit")
        self.trace("killed_after_commit", node=node.domain)
        node.db.dead = True
        down = self.kill.uniform(0.05, 3.0)

        async def crash_and_restart() -> None:
            await node.crash()
            await asyncio.sleep(down)
            await node.start()

        self._tasks.append(asyncio.get_running_loop().create_task(crash_and_restart()))
        raise Crashed(f"{node.domain} killed after a commit")

    def _stop_faults(self) -> None:
        self.storming = False
        self.network.after_serve = None
        self.network.faults = NetFaults()
        for shop in self.shops.values():
            shop.faults = Faults()
        self.hook_faults = (0.0, 0.0, 0.0)
        self.network.heal()
        self.trace("faults_off")


def _request(other: Node, direction: str, nonce: str, now: float) -> JoinRequest:
    return JoinRequest(
        domain=other.domain,
        direction=direction,
        agent_url=url_of(other.domain),
        public_key=other.public_key,
        fingerprint=other.key_id,
        nonce=nonce,
        received_at=now,
    )


def _idle(node: Node) -> bool:
    r = None if node.agent is None else node.agent.reconciler
    return bool(node.up and r is not None and r.ready.is_set() and r.is_idle())


async def pool_of(node: Node, sku: str) -> PoolRow | None:
    """The pool row of `sku` at a running agent."""
    assert node.db is not None
    async with node.db.sessions() as session:
        return await ledger.get_pool(session, sku)


async def vector_of(node: Node) -> ledger.Vector:
    assert node.db is not None
    async with node.db.sessions() as session:
        return await ledger.load_vector(session)


def run_seed(
    seed: int,
    *,
    keep_trace: bool = False,
    mutation: str | None = None,
    bundles: bool = False,
    warehouses: bool = False,
) -> Result:
    """Play one seed on a fresh virtual loop and return its result (`bundles`: with the
    group's bundles drawn in; `warehouses`: with a second warehouse and locations)."""
    from tests.sim import mutations

    loop = VirtualLoop()
    world = World(seed, keep_trace=keep_trace, bundles=bundles, warehouses=warehouses)
    try:
        with mutations.applied(mutation), mutations.seeded_uuid(seed), mutations.logs(world):
            try:
                return loop.run_until_complete(world.run())
            except Deadlock as exc:
                return Result(seed, [f"deadlock: {exc}"], "-", world.faults(), -1.0)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
