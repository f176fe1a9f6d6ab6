"""A Hypothesis state machine: the counting rules across shops against a simple model.

Three shops share one SKU. Customers buy, admins edit, agents observe, write with
compare-and-set (losing races to sales), and events travel between agents late, out of order
and duplicated. Whatever happens, once everything is delivered and written, every pool equals
the model's count (initial + every accepted change) and every shop shows max(0, that).
The rules under test are the real ones: `agent.reconcile.observe` and `agent.ledger.pool_after`.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.ledger import pool_after
from agent.models import EventRow, ItemRow, PoolRow
from agent.reconcile import observe

SKU = "S"
SHOPS = ("a", "b", "c")


class Agent:
    def __init__(self, name: str, created: float, count: int) -> None:
        self.name = name
        self.shop = count  # what the platform holds
        self.item = ItemRow(item_id=f"{name}-1", sku=SKU, created_at=created)
        self.pool = PoolRow(sku=SKU, deltas=0)
        self.held: dict[tuple[str, int], EventRow] = {}
        self.seq = 0

    def append(self, kind: str, delta: int = 0, count: int | None = None) -> EventRow:
        self.seq += 1
        event = EventRow(
            origin=self.name,
            epoch="e",
            seq=self.seq,
            sku=SKU,
            kind=kind,
            delta=delta,
            count=count,
            item_created=self.item.created_at if count is not None else None,
        )
        self.apply(event)
        return event

    def apply(self, event: EventRow) -> None:
        if (event.origin, event.seq) in self.held:
            return  # the inbox: each event once
        self.held[(event.origin, event.seq)] = event
        pool_after(self.pool, event)

    def observe(self) -> None:
        new = observe(self.item, self.shop, self.pool, "test")
        if new is not None:
            self.append(new.kind, new.delta, new.count)

    def write(self) -> None:
        if self.item.published is None or self.pool.value is None:
            return
        target = max(0, self.pool.value)
        if target == self.item.published:
            return
        if self.shop == self.item.published:  # compare-and-set succeeds
            self.shop = target
            self.item.published = target
        else:  # the shop moved: observe the difference as a local change, retry later
            self.observe()


class Counting(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # each shop starts with its own count; the first created (a) is the truth
        self.agents = {n: Agent(n, float(i), 50 + 10 * i) for i, n in enumerate(SHOPS)}
        self.model = 50  # shop a's count at creation
        self.in_flight: list[tuple[str, EventRow]] = []
        for agent in self.agents.values():
            agent.observe()
            self._broadcast(agent)

    def _broadcast(self, agent: Agent) -> None:
        for event in agent.held.values():
            if event.origin == agent.name:
                for other in SHOPS:
                    if other != agent.name:
                        self.in_flight.append((other, event))

    @rule(shop=st.sampled_from(SHOPS), n=st.integers(1, 5))
    def sale(self, shop: str, n: int) -> None:
        agent = self.agents[shop]
        if agent.shop >= n:  # the storefront refuses what it does not show
            agent.shop -= n
            self.pending_model(-n)

    @rule(shop=st.sampled_from(SHOPS), value=st.integers(0, 80))
    def manual_edit(self, shop: str, value: int) -> None:
        agent = self.agents[shop]
        self.pending_model(value - agent.shop)
        agent.shop = value

    def pending_model(self, delta: int) -> None:
        self.model += delta

    @rule(shop=st.sampled_from(SHOPS))
    def observe(self, shop: str) -> None:
        agent = self.agents[shop]
        agent.observe()
        self._broadcast(agent)

    @rule(shop=st.sampled_from(SHOPS))
    def write(self, shop: str) -> None:
        agent = self.agents[shop]
        agent.write()
        self._broadcast(agent)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data(), duplicate=st.booleans())
    def deliver(self, data: st.DataObject, duplicate: bool) -> None:
        index = data.draw(st.integers(0, len(self.in_flight) - 1))  # any order
        dest, event = self.in_flight[index]
        if not duplicate:
            self.in_flight.pop(index)
        self.agents[dest].apply(event)

    @invariant()
    def pools_never_invent_stock(self) -> None:
        for agent in self.agents.values():
            assert len({(e.origin, e.seq) for e in agent.held.values()}) == len(agent.held)

    def teardown(self) -> None:
        # quiesce: deliver everything, then observe and write until nothing moves
        for _ in range(10):
            for dest, event in self.in_flight:
                self.agents[dest].apply(event)
            self.in_flight.clear()
            for agent in self.agents.values():
                agent.observe()
                agent.write()
                agent.observe()
                self._broadcast(agent)
        for agent in self.agents.values():
            assert agent.pool.value == self.model, (agent.name, agent.pool.value, self.model)
            assert agent.shop == max(0, self.model), (agent.name, agent.shop, self.model)


Counting.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestCounting = Counting.TestCase
