"""A SKU's account over time: the pool after each event, ending at the pool."""

from __future__ import annotations

from typing import Any

from agent import explain, ledger
from agent.db import Database
from agent.ledger import INTRODUCE, NewEvent
from agent.models import Identity

ME = Identity(id=1, domain="a.example.com", epoch="e1", public_key="k", created_at=0)


class NoRules:
    """What each member shows is not what these tests look at."""

    async def explain(self, sku: str, pool: int) -> list[dict[str, Any]]:
        return []


def test_the_history_steps_from_the_base_through_each_change_to_the_pool() -> None:
    newest_first = [(40.0, "change", 5), (30.0, "change", -2), (20.0, INTRODUCE, 0)]
    assert explain.history(13, newest_first) == [
        {"at": 20.0, "pool": 10},  # the introduce: the base
        {"at": 30.0, "pool": 8},
        {"at": 40.0, "pool": 13},
    ]
    assert explain.history(None, newest_first) == []
    assert explain.history(7, []) == []


def test_a_history_without_its_start_begins_with_the_pool_before_its_first_change() -> None:
    # a joiner took the count over (base 10, -4 folded in): it holds only the changes after
    assert explain.history(3, [(50.0, "change", -1), (45.0, "change", -2)]) == [
        {"at": 45.0, "pool": 6},
        {"at": 45.0, "pool": 4},
        {"at": 50.0, "pool": 3},
    ]


async def test_the_account_draws_the_latest_events_and_ends_at_the_pool(
    database: Database,
) -> None:
    events = [NewEvent("A", INTRODUCE, count=1000, item_created=1.0)]
    events += [NewEvent("A", "change", delta=-1) for _ in range(explain.HISTORY + 100)]
    for i, event in enumerate(events):  # one second apart, like sales
        await database.run(lambda conn, e=event, t=i: ledger.append(conn, ME, [e], t, _unsigned))

    found = await explain.account(database, NoRules(), "A")  # type: ignore[arg-type]

    assert found is not None and found.pool == 1000 - 600
    drawn = found.history
    assert len(drawn) == explain.HISTORY + 1  # the latest 500 changes and the pool before
    assert drawn[-1] == {"at": 600.0, "pool": 400}
    assert drawn[0] == {"at": 101.0, "pool": 900}  # before the 101st change, at its time
    assert [p["pool"] for p in drawn[1:]] == list(range(899, 399, -1))
    assert found.to_wire()["history"] == drawn


def _unsigned(row: Any) -> str:
    return ""
