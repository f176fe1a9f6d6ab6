"""Why a SKU's count is what it is: the pool's whole account, from this agent's ledger.

A pool is its base (the count where the SKU was created first) plus every change since
(`agent.ledger`). The account lists exactly those terms: the base and the shop it came from,
each shop's changes summed, and what this agent folded in before it held the events (the
counts a joiner took over in its snapshot), so that its numbers add up to the pool. Then the
latest events in words, what each member shows of the pool under its stock rules, and the
pool over time (`history`, for the explain page's chart).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agent.causes import in_words
from agent.db import Database
from agent.group_rules import RuleBook
from agent.ledger import INTRODUCE, Pool, pools
from agent.sql import Tx

__all__ = ["HISTORY", "RECENT", "Account", "account", "history"]

RECENT = 20  # the latest events an account lists
HISTORY = 500  # the latest events the pool's history goes back through

Rows = list[tuple[Any, ...]]


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    """A SKU's pool as the sum of its terms, and the latest events behind them."""

    sku: str
    pool: int | None
    base: dict[str, Any] | None  # shop, count, created: the first-created introduce
    changes: list[dict[str, Any]]  # per shop: the sum of its changes and how many
    earlier: int  # changes folded in before this agent held their events (a join's snapshot)
    recent: list[dict[str, Any]]  # the latest events, newest first
    shops: list[dict[str, Any]]  # what each member shows of the pool, and why
    history: list[dict[str, Any]]  # the pool after each of the latest events, oldest first

    def adds_up(self) -> bool:
        """The base plus every change is the pool (true of every account the ledger keeps)."""
        if self.base is None:
            return self.pool is None
        total = self.base["count"] + sum(c["sum"] for c in self.changes) + self.earlier
        return total == self.pool

    def to_wire(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "adds_up": self.adds_up()}


def history(pool: int | None, latest: Rows) -> list[dict[str, Any]]:
    """The pool after each event of `latest` ((at, kind, delta), newest first), oldest first:
    worked back from the pool now, so that it ends there whatever was folded in or left out.

    When the oldest listed event is a change (older ones left out, or the SKU's start folded
    into a join's snapshot), a first point gives the pool before it, at its time.
    """
    if pool is None or not latest:
        return []
    points, value = [], pool
    for at, kind, delta in latest:
        points.append({"at": at, "pool": value})
        if kind != INTRODUCE:
            value -= delta
    if latest[-1][1] != INTRODUCE:
        points.append({"at": latest[-1][0], "pool": value})
    return points[::-1]


async def account(db: Database, book: RuleBook, sku: str) -> Account | None:
    """The account of `sku`, or None when this agent has never heard of it."""

    def read(conn: Any) -> tuple[Pool | None, Rows, Rows, Rows]:
        tx = Tx(conn)
        sums = tx.rows(
            "SELECT origin, SUM(delta), COUNT(*) FROM event WHERE sku = ? AND kind <> ? "
            "GROUP BY origin ORDER BY origin",
            (sku, INTRODUCE),
        )
        latest = tx.rows(
            'SELECT origin, seq, kind, delta, "count", cause, "at" FROM event WHERE sku = ? '
            'ORDER BY "at" DESC, origin, seq DESC LIMIT ?',
            (sku, RECENT),
        )
        past = tx.rows(
            'SELECT "at", kind, delta FROM event WHERE sku = ? '
            'ORDER BY "at" DESC, origin DESC, seq DESC LIMIT ?',
            (sku, HISTORY),
        )
        return pools(conn, [sku]).get(sku), sums, latest, past

    pool, sums, latest, past = await db.read(read)
    if pool is None:
        return None
    changes = [{"shop": o, "sum": int(s), "events": int(n)} for o, s, n in sums]
    base = (
        None
        if pool.base is None
        else {"shop": pool.base_origin, "count": pool.base, "created": pool.base_created}
    )
    recent = [
        {
            "shop": origin,
            "seq": seq,
            "at": at,
            "delta": None if kind == INTRODUCE else delta,
            "count": count if kind == INTRODUCE else None,
            "what": f"created with {count}" if kind == INTRODUCE else f"{delta:+d}",
            "cause": cause,
            "in_words": "the SKU appeared in this shop" if kind == INTRODUCE else in_words(cause),
        }
        for origin, seq, kind, delta, count, cause, at in latest
    ]
    value = pool.value
    return Account(
        sku=sku,
        pool=value,
        base=base,
        changes=changes,
        earlier=pool.deltas - sum(c["sum"] for c in changes),
        recent=recent,
        shops=[] if value is None else await book.explain(sku, value),
        history=history(value, past),
    )
