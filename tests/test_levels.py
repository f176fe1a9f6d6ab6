"""Stamped levels (DESIGN §5): level webhooks taken as counts only when proven newer.

A platform that stamps its levels with the time of their last change (Shopify's
`updated_at`, whole seconds) lets the core take a level webhook's count without a read. These
tests drive the reconciler over a memory shop whose clock the test moves: a sale's level is
taken without a read; a late level, older than what the agent wrote since, is dropped; two
changes in one tick of the platform's clock are read; an order waits for its level, and reads
when it never comes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from sqlmodel import select

from agent.channel import WebhookHint
from agent.models import EventRow, LogEntry
from agent.reconcile import Reconciler
from tests.conftest import settle
from tests.support.memchannel import MemShop
from tests.test_reconcile import _events, _pool, _remote_delta, _running


@pytest_asyncio.fixture
async def core(sqlite_db, memshop, clock) -> AsyncIterator[Reconciler]:
    memshop.stamps = {}
    memshop.add("i1", "A-1", 10)
    memshop.add("i2", "B-2", 5)
    async with _running(sqlite_db, memshop, clock) as reconciler:
        yield reconciler


async def _local(core: Reconciler) -> list[tuple[int, str]]:
    events = await _events(core)
    return [
        (e.delta, e.cause) for e in events if e.kind == "change" and e.origin == "a.example.com"
    ]


async def test_a_sale_level_is_counted_without_a_read(core: Reconciler, memshop: MemShop) -> None:
    reads = memshop.reads
    memshop.tick += 1
    memshop.sell("i1", 2)
    core.hint(memshop.level_hint("i1"))
    await settle(core)
    assert await _pool(core, "A-1") == 8
    assert await _local(core) == [(-2, "inventory_levels/update")]
    assert memshop.reads == reads  # the level was the count: no platform call
    assert core.stats["levels_taken"] == 1


async def test_the_same_level_twice_counts_once(core: Reconciler, memshop: MemShop) -> None:
    memshop.tick += 1
    memshop.sell("i1", 1)
    hint = memshop.level_hint("i1")
    for _ in range(3):  # a duplicated delivery, before and after the first was taken
        core.hint(hint)
        await settle(core)
    assert await _local(core) == [(-1, "inventory_levels/update")]
    assert await _pool(core, "A-1") == 9


async def test_a_late_level_older_than_a_write_is_dropped(
    core: Reconciler, memshop: MemShop
) -> None:
    # a sale at tick 101 whose webhook is late; at tick 102 the group's change is written
    memshop.tick += 1
    memshop.sell("i1", 1)
    late = memshop.level_hint("i1")  # count 9, stamped 101
    core.hint(memshop.level_hint("i1"))
    await settle(core)
    memshop.tick += 1
    await _remote_delta(core, "A-1", -4)
    await settle(core)
    assert memshop.counts["i1"] == 5
    reads = memshop.reads
    core.hint(late)  # 9 is what the shop held before the write: nothing new
    await settle(core)
    assert await _pool(core, "A-1") == 5
    assert await _local(core) == [(-1, "inventory_levels/update")]
    assert memshop.reads == reads
    assert core.stats["levels_dropped"] >= 1
    # and the echo of the write itself (count 5, stamped 102) is nothing new either
    core.hint(memshop.level_hint("i1"))
    await settle(core)
    assert await _local(core) == [(-1, "inventory_levels/update")]


async def test_two_changes_in_one_tick_are_read(core: Reconciler, memshop: MemShop) -> None:
    memshop.tick += 1
    memshop.sell("i1", 1)
    first = memshop.level_hint("i1")  # 9 at tick 101
    core.hint(first)
    await settle(core)
    memshop.sell("i1", 2)  # the same tick: 7 at tick 101
    second = memshop.level_hint("i1")
    reads = memshop.reads
    core.hint(second)
    core.hint(first)  # late, and of the same tick as what the agent now knows
    await settle(core)
    assert memshop.reads > reads  # one moment, two counts: only a read can say which is last
    assert await _pool(core, "A-1") == 7
    assert sum(delta for delta, _ in await _local(core)) == -3


async def test_levels_told_in_the_wrong_order_end_at_the_newest(
    core: Reconciler, memshop: MemShop
) -> None:
    hints = []
    for _ in range(3):  # three sales in three ticks
        memshop.tick += 1
        memshop.sell("i2", 1)
        hints.append(memshop.level_hint("i2"))
    for hint in reversed(hints):  # the newest arrives first
        core.hint(hint)
    await settle(core)
    assert await _pool(core, "B-2") == 2
    assert memshop.counts["i2"] == 2


async def test_an_order_waits_for_its_level_and_names_the_change(
    core: Reconciler, memshop: MemShop
) -> None:
    reads = memshop.reads
    memshop.tick += 1
    memshop.sell("i1", 1)
    order = WebhookHint(
        "orders/create", skus=("A-1",), reference="#1042", levels_follow=True, stamp=memshop.tick
    )
    core.hint(order)
    core.hint(memshop.level_hint("i1"))
    await settle(core)
    assert await _local(core) == [(-1, "orders/create #1042")]
    assert memshop.reads == reads
    async with core.db.sessions() as s:
        rows = list(await s.exec(select(LogEntry).where(LogEntry.kind == "change")))
    assert [r.message for r in rows] == ["order #1042 (orders/create)"]


async def test_an_order_whose_level_is_lost_is_read(core: Reconciler, memshop: MemShop) -> None:
    reads = memshop.reads
    memshop.tick += 1
    memshop.sell("i1", 3)
    core.hint(
        WebhookHint("orders/create", skus=("A-1",), reference="#7", levels_follow=True, stamp=101)
    )  # and its level webhook never comes: after LEVEL_GRACE the item is read
    await settle(core)
    assert memshop.reads == reads + 1
    assert await _local(core) == [(-3, "orders/create #7")]


async def test_a_level_is_read_when_the_item_moved_by_a_path_without_stamps(
    core: Reconciler, memshop: MemShop
) -> None:
    # what the agent knows of i1 no longer matches what it publishes (a path that carries no
    # stamp moved it in between): a newer level cannot be taken as the next state; read it
    core.scheduler.known["i1"] = (100.0, 12)
    memshop.tick += 1
    memshop.sell("i1", 1)
    reads = memshop.reads
    core.hint(memshop.level_hint("i1"))
    await settle(core)
    assert memshop.reads == reads + 1
    assert await _local(core) == [(-1, "inventory_levels/update")]


async def test_without_stamps_every_level_is_read(sqlite_db, memshop, clock) -> None:  # type: ignore[no-untyped-def]
    memshop.add("i1", "A-1", 10)
    async with _running(sqlite_db, memshop, clock) as core:
        reads = memshop.reads
        memshop.sell("i1", 1)
        core.hint(WebhookHint("inventory_levels/update", item_ids=("i1",), counts=(("i1", 9),)))
        await settle(core)
        assert memshop.reads == reads + 1
        assert core.stats["levels_taken"] == 0
        async with core.db.sessions() as s:
            events = list(await s.exec(select(EventRow).where(EventRow.kind == "change")))
        assert [e.delta for e in events] == [-1]


async def test_a_level_stamped_far_ahead_is_read_not_taken(
    core: Reconciler, memshop: MemShop
) -> None:
    # a forged webhook (or a platform clock gone wrong) claims a count a day from now: taken,
    # it would make every real level after it look stale; it is read instead
    reads = memshop.reads
    future = core.clock.now() + 86_400
    forged = WebhookHint(
        "inventory_levels/update", item_ids=("i1",), counts=(("i1", 0),), stamp=future
    )
    core.hint(forged)
    await settle(core)
    assert memshop.reads == reads + 1
    assert await _local(core) == [] and await _pool(core, "A-1") == 10
    memshop.tick += 1
    memshop.sell("i1", 1)  # the real webhooks that follow are taken as before
    core.hint(memshop.level_hint("i1"))
    await settle(core)
    assert await _local(core) == [(-1, "inventory_levels/update")]
