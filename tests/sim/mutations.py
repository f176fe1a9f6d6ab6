"""Deliberately broken builds (to prove the checker catches them) and per-run patches.

A mutation replaces one rule of the core for the length of a run, in this process only:
- ``double_apply``: the inbox is skipped — `ledger.apply` folds an event into the pool even
  when the agent already holds it;
- ``absolute``: agents ship absolute counts instead of deltas — a change event carries the
  shop's count and a receiver takes it as the pool (last writer wins);
- ``trust_any_signature``: every proof is taken on its word (`agent.trust.signed_by` always
  says yes): the byzantine member's forged events and member records get in;
- ``no_audience``: a signature is good at any agent, not only the one it names: requests the
  byzantine member received are taken when it replays them elsewhere;
- ``stale_level``: a level webhook's count is taken whatever its stamp, as if webhooks came
  in order: a late one, older than what the agent read or wrote since, moves the count back;
- ``fold_unacked``: compaction folds everything the agent holds, as if every member held it
  too: an event a member still lacks is dropped;
- ``bundle_once``: a bundle's sale is counted once, as a change of the bundle's own SKU, not
  of its components (run with ``--bundles``);
- ``wrong_warehouse``: a sale at a location selling from several warehouses takes from the
  last first (run with ``--warehouses``).
"""

from __future__ import annotations

import contextlib
import logging
import random
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog

from agent import compaction, ledger, observation, signing, trust
from agent.bundles import BundleMap
from agent.models import EventRow
from agent.scheduler import Scheduler, Told
from agent.warehouses import LocationMap

if TYPE_CHECKING:
    from tests.sim.world import World

__all__ = ["MUTATIONS", "applied", "logs", "seeded_uuid"]


_real_apply = ledger.apply


def _apply_twice(conn: Any, events: Any, now: float, *args: Any) -> list[EventRow]:
    """apply whose inbox check is ignored: an event already held is folded again."""
    new = _real_apply(conn, events, now, *args)
    fresh = {id(e) for e in new}
    held = [e for e in events if id(e) not in fresh]
    pools = ledger.pools(conn, (e.sku for e in held))
    again = []
    for event in held:
        pool = pools.get(event.sku)
        if pool is not None:
            ledger.pool_after(pool, event)
            again.append(event)
    ledger.save_pools(conn, pools.values())
    return [*new, *again]


_real_observe = observation.observe
_real_pool_after = ledger.pool_after


def _observe_absolute(item: Any, obs: int, pool: Any, cause: str) -> Any:
    new = _real_observe(item, obs, pool, cause)
    if new is not None and new.kind != ledger.INTRODUCE:
        return ledger.NewEvent(new.sku, new.kind, delta=new.delta, count=obs, cause=cause)
    return new


def _pool_after_absolute(pool: Any, event: EventRow) -> None:
    if event.kind != ledger.INTRODUCE and event.count is not None and pool.base is not None:
        pool.deltas = event.count - pool.base  # the shop's count wins: the last writer's
        return
    _real_pool_after(pool, event)


def _signed_by_anyone(*_args: Any) -> bool:
    return True


_real_check_fresh = signing._check_fresh


def _fresh_for_anyone(p: Any, *, now: float, audience: str, max_skew: int, not_before: float):  # type: ignore[no-untyped-def]
    _real_check_fresh(p, now=now, audience=p.audience, max_skew=max_skew, not_before=not_before)


_real_judge = Scheduler._judge


def _judge_in_order(self: Scheduler, item_id: str, told: Told) -> str:
    """Take every level the agent has stamped knowledge to compare with, old or new."""
    known = self.known.get(item_id)
    if known is None:
        return _real_judge(self, item_id, told)
    told.expect = known[1]
    return "take"


_real_floor = compaction.floor


def _floor_of_own(conn: Any, own_domain: str, now: float, horizon: float) -> Any:
    """The compaction floor as if every member held what this agent holds: events are folded
    while a member still lacks them."""
    found = _real_floor(conn, own_domain, now, horizon)
    if found is None:
        return None
    return compaction.Floor(ledger.vector(conn), found.away)


_real_expand = BundleMap.expand


def _expand_once(self: BundleMap, events: list[ledger.NewEvent]) -> Any:
    """A bundle's change kept as its own: its components never hear of the sale."""
    _, moved = _real_expand(self, events)
    kept = [e for e in events if not (self.is_bundle(e.sku) and e.kind == ledger.INTRODUCE)]
    return kept, moved


_real_taken = LocationMap.taken


def _taken_last_first(
    self: LocationMap, location: str, sku: str, delta: int, cause: str, count_of: Any
) -> Any:
    """A sale taken from the location's warehouses in reverse order."""
    if delta >= 0:
        return _real_taken(self, location, sku, delta, cause, count_of)
    real = self.links.get(location, ())
    self.links[location] = tuple(reversed(real))
    try:
        return _real_taken(self, location, sku, delta, cause, count_of)
    finally:
        self.links[location] = real


MUTATIONS = {
    "double_apply": [(ledger, "apply", _apply_twice)],
    "absolute": [
        (observation, "observe", _observe_absolute),
        (ledger, "pool_after", _pool_after_absolute),
    ],
    "trust_any_signature": [(trust, "signed_by", _signed_by_anyone)],
    "no_audience": [(signing, "_check_fresh", _fresh_for_anyone)],
    "stale_level": [(Scheduler, "_judge", _judge_in_order)],
    "fold_unacked": [(compaction, "floor", _floor_of_own)],
    "bundle_once": [(BundleMap, "expand", _expand_once)],
    "wrong_warehouse": [(LocationMap, "taken", _taken_last_first)],
}


@contextlib.contextmanager
def applied(name: str | None) -> Iterator[None]:
    """Run with the mutation `name` in place (None: the real build)."""
    patches = MUTATIONS[name] if name else []
    saved = [(module, attr, getattr(module, attr)) for module, attr, _ in patches]
    for module, attr, value in patches:
        setattr(module, attr, value)
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)


@contextlib.contextmanager
def seeded_uuid(seed: int) -> Iterator[None]:
    """uuid4 from the seed: idempotency keys and epochs are part of what a replay repeats."""
    rng = random.Random(seed * 7919 + 17)
    real = uuid.uuid4
    uuid.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)  # type: ignore[assignment]
    try:
        yield
    finally:
        uuid.uuid4 = real  # type: ignore[assignment]


@contextlib.contextmanager
def logs(world: World) -> Iterator[None]:
    """Silence the core's structlog output; keep its errors as findings of the run."""

    def capture(_logger: Any, method: str, event: dict[str, Any]) -> Any:
        if "Crashed(" not in str(event.get("error", "")):  # a simulated kill, not a finding
            world.logged_errors.append(f"{event.get('event')} {event}")
        raise structlog.DropEvent

    old = structlog.get_config()
    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**old)
