"""The checker: after the faults stop and the group is quiet, is every count exactly right?

Like Maelstrom's pn-counter checker: the group's count of a SKU must equal the count the SKU
was created with plus every change the platforms accepted, except that a change whose fate
the model cannot know (made in a shop's old stock, before the agent's first write of the
group's count there) may count or not — nothing else may differ. Besides:
- every agent holds the same pools and the same version vector;
- no event was applied twice: every agent's pools are exactly its folded part (history it
  compacted, or took in a snapshot) plus its event rows, and every event id means the same
  change everywhere;
- compaction folded nothing a member lacked: no member had to re-import for it;
- every shop shows what its stock rules and the group's rule make of the pool (with none:
  max(0, pool)) for every SKU it has, and every agent holds every shop's rules as that shop's
  owner set them, and the same group rule;
- an oversold SKU is reported in the sync log of every agent whose shop has it;
- with bundles: a change of a bundle in a shop is its components' changes (quantity times
  each), every shop selling a bundle shows the whole bundles its components allow after its
  rules, and every agent holds the bundles as the owners set them;
- with warehouses: the group's count is per (warehouse, SKU); a change at a location selling
  from one warehouse is that warehouse's; a sale at a location selling from several takes
  from the first (exactly, where the first never ran out even counting every sale against it;
  else only the SKU's total over its warehouses is judged); every location shows the sum of
  its warehouses' counts after its shop's rules;
- no agent logged an error, crashed a task, or answered a peer with a 500.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from agent import ledger
from agent.bundles import BundleMap
from agent.models import EventRow, LogEntry, PeerRow, PoolRow
from agent.rules import Priority, decide
from agent.warehouses import OWN, LocationMap, parse_key, stock_key

if TYPE_CHECKING:
    from tests.sim.world import World

__all__ = ["check", "reachable"]

MAX_SUMS = 4096


def reachable(deltas: list[int]) -> set[int]:
    """Every sum of a subset of `deltas` (the ambiguous changes that may or may not count)."""
    sums = {0}
    for delta in deltas:
        sums |= {s + delta for s in sums}
        if len(sums) > MAX_SUMS:  # too many to list: fall back to the range
            low = sum(d for d in deltas if d < 0)
            high = sum(d for d in deltas if d > 0)
            return set(range(low, high + 1))
    return sums


async def _state(node: Any) -> dict[str, Any]:
    async with node.db.sessions() as session:
        rows = list(await session.exec(select(PoolRow)))
        pools = {p.sku: (p.base, p.base_created, p.base_origin, p.deltas) for p in rows}
        folded = {p.sku: p.folded for p in rows}
        refolded = [
            e.message
            for e in await session.exec(select(LogEntry).where(LogEntry.kind == "history_folded"))
        ]
        vector = await ledger.load_vector(session)
        events = list(await session.exec(select(EventRow)))
        oversold = {
            e.sku for e in await session.exec(select(LogEntry).where(LogEntry.kind == "oversold"))
        }
        peers = {
            p.domain: (p.public_key, p.agent_url, p.state)
            for p in await session.exec(select(PeerRow))
        }
    return {
        "pools": pools,
        "folded": folded,
        "refolded": refolded,
        "vector": vector,
        "events": events,
        "oversold": oversold,
        "peers": peers,
    }


async def check(world: World) -> list[str]:
    """Every problem found, as sentences; empty when the run is correct."""
    problems: list[str] = []
    nodes = [world.nodes[d] for d in world.members]
    for node in world.nodes.values():
        problems += [f"{node.domain}: {e}" for e in node.errors]
    problems += [f"logged error: {e}" for e in world.logged_errors]
    if not all(n.up and not n.importing for n in nodes):
        problems.append("not every member is up and imported at the end")
        return problems
    states = {n.domain: await _state(n) for n in nodes}
    first = nodes[0].domain
    ref = states[first]
    for domain, state in states.items():
        if state["vector"] != ref["vector"]:
            problems.append(
                f"vector of {domain} differs from {first}: {state['vector']} vs {ref['vector']}"
            )
        for sku in sorted(set(state["pools"]) | set(ref["pools"])):
            if state["pools"].get(sku) != ref["pools"].get(sku):
                problems.append(
                    f"pool {sku} at {domain} is {state['pools'].get(sku)}, at "
                    f"{first} {ref['pools'].get(sku)}"
                )
    problems += _same_events(states)
    problems += _members_true(world, states)
    for domain, state in states.items():
        problems += _rows_add_up(domain, state)
        # unless the run drew a short history horizon (then a member away longer re-imports,
        # and that must be exact), no member is away that long, nor restored from a backup:
        # a re-import because every peer folded history it lacked means some agent folded
        # an event before every member held it
        if world.horizon is None:
            problems += [f"{domain} had to re-import: {m}" for m in state["refolded"]]
        elif state["refolded"]:
            world.count("reimported_after_horizon")
    problems += _model(world, ref["pools"])
    rule_problems, priority = _rules_held(nodes)
    problems += rule_problems
    problems += _bundles_held(world, nodes)
    bundles = BundleMap(world.bundles.values())

    def value_of(sku: str) -> int | None:
        pool = ref["pools"].get(sku)
        return None if pool is None or pool[0] is None else pool[0] + pool[3]

    for node in nodes:
        links = LocationMap(OWN, world.links.get(node.domain, {}))
        for item in node.shop.items.values():
            if bundles.is_bundle(item.sku):

                def shown(part: str, node: Any = node) -> int | None:
                    value = value_of(part)
                    if value is None:
                        return None
                    return decide(part, value, node.domain, node.shop_rules, priority).count

                made = bundles.target(item.sku, shown)
                if item.count != made.count:
                    problems.append(
                        f"{node.domain} shows {item.count} of bundle {item.sku}, its components "
                        f"make it {made.count} ({made.why})"
                    )
                continue
            held = [
                v for k in links.keys(item.location, item.sku) if (v := value_of(k)) is not None
            ]
            if not held:
                problems.append(f"{node.domain}: SKU {item.key} has no pool")
                continue
            value = sum(held)
            want = decide(item.sku, value, node.domain, node.shop_rules, priority)
            if item.count != want.count:
                problems.append(
                    f"{node.domain} shows {item.count} of {item.key}, the pool is {value}, "
                    f"its rules make it {want.count} ({want.why or 'the whole pool'})"
                )
            if value < 0 and item.sku not in states[node.domain]["oversold"]:
                problems.append(f"{node.domain}: oversold {item.key} ({value}) not in the log")
    return problems


def _rules_held(nodes: list[Any]) -> tuple[list[str], Priority | None]:
    """Every agent holds every member's own rules as its owner set them, and one group rule
    (the priority shop when low); returns that rule."""
    problems: list[str] = []
    books = {n.domain: n.agent.rules for n in nodes}
    first = nodes[0].domain
    for node in nodes:
        for other in nodes:
            held = books[node.domain].records.get(other.domain)
            want = other.shop_rules.to_wire()
            if held is None or held.body != want or held.by != other.domain:
                got = None if held is None else held.body
                problems.append(f"{node.domain} holds {got} as {other.domain}'s rules, not {want}")
        if books[node.domain].priority != books[first].priority:
            problems.append(
                f"{node.domain}'s priority rule is {books[node.domain].priority}, at {first} "
                f"{books[first].priority}"
            )
    return problems, books[first].priority


def _bundles_held(world: World, nodes: list[Any]) -> list[str]:
    """Every agent holds the bundles the owners set, and no other."""
    problems = []
    for node in nodes:
        held = node.agent.rules.bundles.bundles
        if held != world.bundles:
            problems.append(f"{node.domain} holds bundles {held}, not {world.bundles}")
    return problems


def _members_true(world: World, states: dict[str, dict[str, Any]]) -> list[str]:
    """Every member lists exactly the others, each with its own key and URL, active: nothing
    the byzantine member said about anybody else stuck."""
    from tests.sim.node import url_of

    problems = []
    for domain, state in states.items():
        expected = {
            other: (world.nodes[other].public_key, url_of(other), "active")
            for other in world.members
            if other != domain
        }
        if state["peers"] != expected:
            wrong = {
                d: state["peers"].get(d)
                for d in set(expected) | set(state["peers"])
                if state["peers"].get(d) != expected.get(d)
            }
            problems.append(f"{domain}'s member list is wrong: {wrong}")
    return problems


def _same_events(states: dict[str, dict[str, Any]]) -> list[str]:
    seen: dict[tuple[str, str, int], tuple[Any, ...]] = {}
    problems = []
    for domain, state in states.items():
        for e in state["events"]:
            key = (e.origin, e.epoch, e.seq)
            body = (e.sku, e.kind, e.delta, e.count, e.item_created)
            if seen.setdefault(key, body) != body:
                problems.append(f"event {key} at {domain} is {body}, elsewhere {seen[key]}")
    return problems


def _rows_add_up(domain: str, state: dict[str, Any]) -> list[str]:
    """Every agent's pools are exactly what it folded (compacted, or took in a snapshot)
    plus the events it still holds."""
    deltas: dict[str, int] = defaultdict(int)
    for e in state["events"]:
        if e.kind != ledger.INTRODUCE:
            deltas[e.sku] += e.delta
    problems = []
    for sku, pool in state["pools"].items():
        folded = state["folded"][sku]
        if pool[3] != folded + deltas[sku]:
            problems.append(
                f"{domain}: pool {sku} holds deltas {pool[3]}, its folded part {folded} and "
                f"its events {deltas[sku]} (an event applied twice or lost)"
            )
    return problems


def _model(world: World, pools: dict[str, tuple[Any, ...]]) -> list[str]:
    problems = []
    definite: dict[str, int] = defaultdict(int)
    ambiguous: dict[str, list[int]] = defaultdict(list)
    bundles = BundleMap(world.bundles.values())
    several: set[str] = set()  # SKUs sold at a location selling from several warehouses
    taken: dict[str, int] = defaultdict(int)  # every unit that may have left a key's warehouse
    for shop in world.shops.values():
        for change in shop.changes:
            # a bundle's change is its components' (the model's reading, not the agent's code)
            parts = (
                [(p, change.delta * q) for p, q in world.bundles[change.sku].components]
                if bundles.is_bundle(change.sku)
                else [(change.sku, change.delta)]
            )
            warehouses = world.sells_from(change.shop, change.location)
            if len(warehouses) > 1:  # the storm only sells there: from the first, in order
                assert change.delta < 0, change
                several |= {sku for sku, _ in parts}
            for sku, delta in parts:
                key = stock_key(sku, warehouses[0])
                taken[key] += min(0, delta)
                if change.ambiguous:
                    ambiguous[key].append(delta)
                else:
                    definite[key] += delta
    bases = {**world.bases, **world.ware_bases}
    # a SKU whose first warehouse may have run out at a sale taking from several: which
    # warehouse the rest came from depends on when each agent heard of what; its total holds.
    # An agent's count of a warehouse is its first count plus some of the changes so far, so
    # never below the first count less every unit taken from it in the whole run.
    whole = {
        parse_key(key)[0]
        for key, (_, count) in bases.items()
        if parse_key(key)[0] in several and count + taken[key] < 0
    }
    totals: dict[str, list[Any]] = defaultdict(lambda: [0, 0, []])  # SKU -> pool, model, maybe
    for key, (base_shop, created_count) in sorted(bases.items()):
        pool = pools.get(key)
        if pool is None or pool[0] is None:
            problems.append(f"SKU {key} (created at {base_shop}) never reached the pools")
            continue
        value = pool[0] + pool[3]
        if pool[2] != base_shop:
            problems.append(f"SKU {key}: base from {pool[2]}, but it was created at {base_shop}")
        expected = created_count + definite[key]
        sku = parse_key(key)[0]
        if sku in whole:
            total = totals[sku]
            total[0] += value
            total[1] += expected
            total[2] += ambiguous[key]
            continue
        if value - expected not in reachable(ambiguous[key]):
            problems.append(
                f"SKU {key}: pool {value}, accepted changes imply {expected} "
                f"(+ any of {sorted(ambiguous[key])} of old stock)"
            )
    for sku, (value, expected, maybe) in sorted(totals.items()):
        world.count("warehouse_ran_out")
        if value - expected not in reachable(maybe):
            problems.append(
                f"SKU {sku}: its warehouses hold {value} together, accepted changes imply "
                f"{expected} (+ any of {sorted(maybe)} of old stock)"
            )
    return problems
