"""Recent activity per minute: changes from the sync log, latency from the in-memory ring."""

from __future__ import annotations

import statistics

from agent import synclog
from agent.activity import LatencyRing, recent
from agent.db import Database

NOW = 1_800_000_030.0  # 30 s into minute 30_000_000
MINUTE = 30_000_000


def test_each_minute_keeps_its_latency_p50_near_the_median_and_its_max_exactly() -> None:
    ring = LatencyRing(started=0.0)
    busy = [0.012, 0.020, 0.025, 0.031, 0.040, 0.045, 0.300]  # seconds
    ring.observe(NOW, busy[:3])
    ring.observe(NOW + 20, busy[3:])  # the same minute, another batch
    ring.observe(NOW + 60, [2.5])  # the next minute
    found = ring.minutes(MINUTE, MINUTE + 1)
    p50, high = found[MINUTE]
    median = statistics.median(busy) * 1000
    assert median / 2**0.5 <= p50 <= median * 2**0.5  # within one bucket of the median
    assert high == 300.0
    assert found[MINUTE + 1] == (2500.0, 2500.0)  # one latency: its own p50
    count, p50_all, high_all = ring.overall(MINUTE, MINUTE + 1)
    assert count == 8 and high_all == 2500.0
    assert p50_all is not None and 30.0 <= p50_all <= 45.0  # the 4th and 5th of the 8
    assert ring.minutes(MINUTE + 2, MINUTE + 9) == {}


def test_the_ring_forgets_minutes_older_than_it_holds() -> None:
    ring = LatencyRing(started=0.0, minutes=5)
    ring.observe(NOW, [0.05])
    ring.observe(NOW + 4 * 60, [0.07])
    assert set(ring.minutes(MINUTE, MINUTE + 4)) == {MINUTE, MINUTE + 4}
    ring.observe(NOW + 5 * 60, [0.09])  # takes the oldest minute's slot
    assert set(ring.minutes(MINUTE, MINUTE + 5)) == {MINUTE + 4, MINUTE + 5}
    assert ring.overall(MINUTE, MINUTE) == (0, None, None)
    assert ring.since(NOW + 5 * 60) == (MINUTE + 1) * 60  # what it holds goes back to there
    assert LatencyRing(started=NOW, minutes=5).since(NOW) == NOW  # or to its start


def test_a_received_batch_says_how_many_events_were_new() -> None:
    message = synclog.received_message(4, 6, 2)
    assert message == "4 new of 6 events, 2 SKUs"
    assert synclog.received_count(message) == 4
    assert synclog.received_count("anything else") == 0


async def test_activity_counts_changes_and_received_events_per_minute(database: Database) -> None:
    def at(minute: int, second: float = 0.0) -> float:
        return (MINUTE + minute) * 60 + second

    entries = [
        synclog.entry("change", at(-180, 59)),  # before the 3 hours' first minute
        synclog.entry("change", at(-179)),  # the window's first minute
        synclog.entry("change", at(-1, 5), sku="A"),
        synclog.entry("change", at(-1, 50), sku="B"),
        synclog.entry("write", at(-1, 51), sku="B"),  # a write is no change
        synclog.entry("batch_received", at(0, 10), message=synclog.received_message(3, 3, 1)),
        synclog.entry("batch_received", at(0, 20), message=synclog.received_message(2, 5, 2)),
    ]
    await database.run(lambda conn: synclog.insert(conn, entries))
    ring = LatencyRing(started=at(-30))
    ring.observe(at(0, 10), [0.040, 0.050, 0.060])
    ring.observe(at(0, 20), [0.310, 0.020])

    answer = await recent(database, ring, NOW, 3)

    assert answer["since"] == at(-179) and answer["latency_since"] == at(-30)
    assert [(m["at"], m["local"], m["received"]) for m in answer["minutes"]] == [
        (at(-179), 1, 0),
        (at(-1), 2, 0),
        (at(0), 0, 5),
    ]
    assert [m["latency_max_ms"] for m in answer["minutes"]] == [None, None, 310.0]
    assert 40.0 <= answer["minutes"][2]["latency_p50_ms"] <= 60.0
    totals = answer["totals"]
    assert (totals["local"], totals["received"], totals["latency_events"]) == (3, 5, 5)
    assert totals["latency_max_ms"] == 310.0
    one_hour = await recent(database, ring, NOW, 1)
    assert [m["local"] for m in one_hour["minutes"]] == [2, 0]
