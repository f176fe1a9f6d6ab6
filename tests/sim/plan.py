"""The storm (workload and faults on a timeline drawn from the seed) and the calm after it."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from agent.rules import Priority, RuleError, ShopRules, rules_from_wire
from agent.warehouses import parse_listing
from tests.sim.node import Node
from tests.sim.runtime import Crashed

if TYPE_CHECKING:
    from tests.sim.world import World

__all__ = ["calm", "storm"]

Action = Callable[[], Awaitable[None] | None]
OPS = ("sale", "sale", "sale", "sale", "restock", "edit", "race", "product", "spread", "spread")


class Timeline:
    """Actions at virtual times, run in time order (ties in the order they were added)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.heap: list[tuple[float, int, Action]] = []
        self.order = itertools.count()

    def at(self, when: float, action: Action) -> None:
        heapq.heappush(self.heap, (when, next(self.order), action))

    async def play(self, until: float) -> None:
        while self.heap and self.heap[0][0] <= until:
            when, _, action = heapq.heappop(self.heap)
            delay = when - self.world.now()
            if delay > 0:
                await asyncio.sleep(delay)
            result = action()
            if result is not None:
                await result
        delay = until - self.world.now()
        if delay > 0:
            await asyncio.sleep(delay)


async def storm(world: World, duration: float, joiner: str | None) -> None:
    """Play `duration` virtual seconds of workload and faults."""
    rng = world.rng
    start = world.now()
    end = start + duration
    line = Timeline(world)
    sold: list[tuple[str, str, int]] = []  # accepted purchases that may be cancelled

    def shop_item(domain: str | None = None) -> tuple[str, str] | None:
        domains = [d for d in sorted(world.shops) if world.shops[d].items]
        if domain is None:
            if not domains:
                return None
            domain = rng.choice(domains)
        items = sorted(world.shops[domain].by_sku)
        return (domain, rng.choice(items)) if items else None

    def sale() -> None:
        picked = shop_item()
        if picked is not None:
            n = rng.choice((1, 1, 1, 2))
            if world.shops[picked[0]].purchase(picked[1], n, world.now_wall()):
                sold.append((*picked, n))

    def several(domain: str, key: str) -> bool:
        """Whether the listing sells from several warehouses: stock that comes back there is
        refused (`agent.warehouses`), so the storm only sells from it."""
        return len(world.sells_from(domain, parse_listing(key)[1])) > 1

    def restock() -> None:
        if not sold:
            return sale()
        domain, sku, n = sold.pop(rng.randrange(len(sold)))
        if several(domain, sku):
            return sale()
        world.shops[domain].restock(sku, n, world.now_wall())

    def edit() -> None:
        picked = shop_item()
        if picked is not None:
            count = rng.randint(0, 6)
            if several(*picked):  # an edit down is stock gone; up, refused (not drawn)
                shop = world.shops[picked[0]]
                count = min(count, shop.items[shop.by_sku[picked[1]]].count)
            world.shops[picked[0]].edit(picked[1], count, world.now_wall())

    def race() -> None:
        """Several shops sell what they show of one SKU at the same instant."""
        world.count("race")
        sku = rng.choice(sorted(world.bases))
        buyout = rng.random() < 0.5
        for domain in sorted(world.shops):
            shop = world.shops[domain]
            if sku in shop.by_sku:
                shown = shop.items[shop.by_sku[sku]].count
                n = shown if buyout and shown > 0 else 1
                if shop.purchase(sku, n, world.now_wall()):
                    sold.append((domain, sku, n))

    def product() -> None:
        world.count("new_product")
        world.new_product(rng.choice(sorted(world.shops)))

    async def spread() -> None:
        """A shop adds a SKU the group already sells there (after its agent knows the SKU:
        a SKU first seen in two shops at once is not a case the base rule can settle)."""
        from tests.sim.world import pool_of

        sku = rng.choice(sorted(world.bases))
        candidates = [
            d
            for d in world.members
            if sku not in world.shops[d].by_sku
            and world.nodes[d].up
            and not world.nodes[d].importing
        ]
        if not candidates:
            return
        node = world.nodes[rng.choice(candidates)]
        pool = await pool_of(node, sku)
        if pool is None or pool.base_origin != world.bases[sku][0]:
            return
        world.count("spread_product")
        node.shop.add_item(sku, rng.randint(15, 30), world.now_wall(), window=True, closable=True)

    ops: dict[str, Action] = {
        "sale": sale,
        "restock": restock,
        "edit": edit,
        "race": race,
        "product": product,
        "spread": spread,
    }
    for _ in range(rng.randint(12, 40)):
        line.at(rng.uniform(start, end), ops[rng.choice(OPS)])

    wr = world.ware_rng

    def located_sale() -> None:
        """A sale at a location other than a shop's primary (from the warehouses' stream)."""
        assert wr is not None
        listed = [
            (domain, key)
            for domain in sorted(world.links)
            for key in sorted(world.shops[domain].by_sku)
            if parse_listing(key)[1]
        ]
        if listed:
            domain, key = wr.choice(listed)
            n = wr.choice((1, 1, 2, 3))
            if world.shops[domain].purchase(key, n, world.now_wall()):
                world.count("located_sale")
                sold.append((domain, key, n))

    if wr is not None and world.links:
        for _ in range(wr.randint(4, 12)):
            line.at(wr.uniform(start, end), located_sale)

    def crash() -> Awaitable[None] | None:
        up = [n for _, n in sorted(world.nodes.items()) if n.up]
        if not up:
            return None
        node = rng.choice(up)
        world.count("crash")
        line.at(world.now() + rng.uniform(0.05, 8.0), lambda: restart(node))
        return node.crash()

    def restart(node: Node) -> Awaitable[None]:
        return node.start()

    for _ in range(rng.choice((0, 1, 1, 2, 3, 4))):
        line.at(rng.uniform(start, end), crash)

    current = itertools.count()
    active = [0]

    def partition() -> None:
        names = sorted(world.nodes)
        shape = rng.choice(("isolate", "split", "bridge", "one_way"))
        if shape == "bridge" and len(names) < 3:
            shape = "split"
        world.count(f"partition_{shape}")
        order = rng.sample(names, len(names))
        if shape == "isolate":
            world.network.partition([{order[0]}, set(order[1:])])
        elif shape == "split":
            k = rng.randint(1, len(order) - 1)
            world.network.partition([set(order[:k]), set(order[k:])])
        elif shape == "bridge":  # two sides that cannot talk, one node in both
            k = rng.randint(1, len(order) - 2)
            bridge = order[-1]
            world.network.partition([{*order[:k], bridge}, {*order[k:-1], bridge}])
        else:  # one node's messages are lost, it still hears the others
            world.network.cut = {(order[0], other) for other in order[1:]}
            world.trace("partition_one_way", node=order[0])
        active[0] = ident = next(current)
        line.at(world.now() + rng.uniform(0.3, 12.0), lambda: heal(ident))

    def heal(ident: int) -> None:
        if active[0] == ident:
            world.network.heal()

    for _ in range(rng.choice((0, 1, 2, 3))):
        line.at(rng.uniform(start, end), partition)

    cr = world.compact_rng

    def compact() -> None:
        """A member compacts its history at a moment of the storm's choosing (beside its
        periodic passes): mid-partition, mid-join, right before a crash."""
        live = [world.nodes[m] for m in world.members if world.nodes[m].alive]
        node = cr.choice(live) if live else None
        if node is None or node.agent is None:
            return
        world.count("compact")
        world.trace("compact", node=node.domain)
        compactor = node.agent.compactor

        async def fold() -> None:
            world.count("compacted_in_storm", await compactor.compact())

        node.spawn(fold())

    for _ in range(cr.randint(1, 4)):
        line.at(cr.uniform(start, end), compact)

    def away() -> Awaitable[None] | None:
        """A member goes down for longer than the (short) history horizon."""
        live = [world.nodes[m] for m in world.members if world.nodes[m].up]
        if len(live) < 2 or world.horizon is None:
            return None
        node = hr.choice(live)
        world.count("away_past_horizon")
        line.at(world.now() + world.horizon + hr.uniform(3.0, 10.0), lambda: restart(node))
        return node.crash()

    hr = world.horizon_rng
    if world.horizon is not None:
        line.at(hr.uniform(start, start + 0.3 * duration), away)

    rr = world.rules_rng

    def owner() -> Node | None:
        """The member whose owner acts now: a live one, not importing (None: there is none)."""
        live = [m for m in world.members if world.nodes[m].alive and not world.nodes[m].importing]
        return world.nodes[rr.choice(live)] if live else None

    async def through_agent(node: Node, change: Coroutine[Any, Any, Any]) -> None:
        """An owner's change, made through the agent: refused, or cut short by a crash, is an
        outcome the checker judges, not a failure of the run."""
        with contextlib.suppress(RuleError, asyncio.CancelledError, Crashed):
            await node.spawn(change, awaited=True)

    async def priority() -> None:
        """A member's owner sets (or lifts) the group's priority shop, mid-storm."""
        node = owner()
        if node is None:
            return
        target = rr.choice([None, *world.members])
        choice = None if target is None else Priority(target, rr.randint(0, 3))
        world.count("rules_priority")
        world.trace("priority", node=node.domain, shop=target)
        assert node.agent is not None
        await through_agent(node, node.agent.rules.set_priority(choice))

    for _ in range(rr.choice((0, 0, 1, 2))):
        line.at(rr.uniform(start, end), priority)

    async def shop_rules() -> None:
        """A member's owner changes its shop's stock rules, mid-storm: stored in its config
        first (what a restart starts from), then taken by the agent and told to the group."""
        node = owner()
        if node is None:
            return
        node.shop_rules = rules = draw_rules(rr)
        world.count("rules_shop")
        world.trace("shop_rules", node=node.domain, rules=rules.to_wire())
        assert node.agent is not None
        await through_agent(node, node.agent.rules.set_shop_rules(rules))

    for _ in range(rr.choice((0, 0, 1, 2))):
        line.at(rr.uniform(start, end), shop_rules)

    if world.byzantine is not None:
        byz = world.byzantine
        for _ in range(byz.rng.randint(3, 12)):
            line.at(byz.rng.uniform(start, end), byz.attack)

    joined = [joiner is None]
    asked: list[str] = []  # the master the joiner sent its request to

    async def join() -> None:
        assert joiner is not None
        node = world.nodes[joiner]
        if not asked:
            masters = [
                m for m in world.members if world.nodes[m].up and not world.nodes[m].importing
            ]
            if not masters or not node.up:
                line.at(world.now() + 1.0, join)
                return
            asked.append(rng.choice(masters))
            world.count("join_attempt")
            ok = await world.join(node, asked[0])
            if ok is None:
                asked.clear()  # the request never reached the master: send it again
        else:  # the master's owner clicks accept again
            world.count("join_attempt")
            ok = await world.accept(node, asked[0])
        if ok:
            world.count("join")
            joined[0] = True
        else:
            line.at(world.now() + rng.uniform(0.5, 3.0), join)

    if joiner is not None:
        line.at(rng.uniform(start + 0.15 * duration, start + 0.7 * duration), join)
    await line.play(end)
    world.network.after_serve = None  # no more aimed crashes
    for _, node in sorted(world.nodes.items()):
        await node.start()
    for _ in range(20):  # faults are over: the owners finish the join they started
        if joined[0]:
            break
        world.network.heal()
        await join()
        if not joined[0]:
            await asyncio.sleep(2.0)
    if not joined[0]:
        world.problems.append(f"{joiner} never managed to join the group")


async def calm(world: World, limit: float) -> bool:
    """Run without faults until the group is quiet (twice in a row); False if it never is."""
    from tests.sim.world import vector_of

    since = world.now_wall()
    deadline = world.now() + limit
    quiet_before = replayed = False
    while world.now() < deadline:
        await asyncio.sleep(1.0)
        quiet = await _quiet(world, since, vector_of)
        if quiet and quiet_before:
            if not replayed:
                # once all is quiet, the platforms deliver some old webhooks again, a day
                # late (Shopify: "rarely a day late"): each is older than what its agent
                # knows, and must change nothing
                replayed = True
                if world.replay_old_webhooks():
                    quiet_before = False
                    continue
            world.trace("quiet")
            return True
        quiet_before = quiet
    return False


async def _quiet(world: World, since: float, vector_of: Any) -> bool:
    nodes = [world.nodes[m] for m in world.members]
    for node in nodes:
        r = None if node.agent is None else node.agent.reconciler
        if not (node.up and not node.importing and r is not None and r.ready.is_set()):
            return False
        # a full pass that began listing after the faults stopped: one that ended after it
        # may have listed the shop before the last changes (whose webhooks were lost)
        if not r.is_idle() or r.last_listing is None or r.last_listing < since:
            return False
    if world.webhooks_in_flight:
        return False
    vectors = [await vector_of(n) for n in nodes]
    if not all(v == vectors[0] for v in vectors):
        return False
    # and every member knows every other (an introduction lost on the way comes with a pull)
    for node in nodes:
        assert node.agent is not None
        roster = node.agent.roster
        listed = {m["domain"] for m in await roster.members_wire() if m["state"] == "active"}
        if listed != set(world.members) - {node.domain}:
            return False
    # and holds the same rules records (a change lost on the way comes with a pull)
    held = [n.agent.rules.wire() for n in nodes if n.agent is not None]
    return all(h == held[0] for h in held)


def draw_rules(rng: random.Random) -> ShopRules:
    """A shop's stock rules: none in half the shops, else some of each kind, maybe one
    override by pattern and one by SKU."""
    if rng.random() < 0.5:
        return ShopRules()

    def some(*values: Any) -> Any:
        return rng.choice((None, *values))

    raw: dict[str, Any] = {
        "buffer": some(0, 1, 2, 3),
        "percent": some(50, 80, 100),
        "plus": some(1, 2),
        "max": some(2, 5, 10),
    }
    skus: dict[str, Any] = {}
    if rng.random() < 0.3:
        skus["SKU-00*"] = {"max": rng.randint(0, 3)}
    if rng.random() < 0.3:
        skus[f"SKU-{rng.randint(1, 12):03d}"] = {"buffer": rng.randint(0, 2)}
    return rules_from_wire({**{k: v for k, v in raw.items() if v is not None}, "skus": skus})
