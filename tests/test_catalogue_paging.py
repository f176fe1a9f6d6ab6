"""A full catalogue pass staged and synced a page at a time (`stage_listing`, `sync_listing`)
leaves exactly the item table the whole-listing sync (`sync_catalogue`, held in memory) does,
and says the same of what changed: random catalogues, on SQLite and the real PostgreSQL."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agent import catalogue
from agent.catalogue import SkuRule, stage_listing, sync_catalogue, sync_listing
from agent.channel import Item
from agent.db import Database
from agent.sql import Tx

COLUMNS = "item_id, sku, title, published, created_at, excluded, cutover_pending"


def _catalogue(rng: random.Random) -> tuple[list[tuple[Any, ...]], list[Item]]:
    """Item rows as a table might hold them, and a listing of the shop now."""
    skus = [f"SKU-{n}" for n in range(12)] + ["", " sku-3 ", None]
    held = []
    for n in range(rng.randint(0, 30)):
        excluded = rng.choice([None, None, None, "duplicate", "no_sku", "gone"])
        published = rng.choice([None, 5, 7])
        held.append((f"i{n:03d}", rng.choice(skus), rng.choice(["", "Old"]), published, 1.0,
                     excluded, False))  # fmt: skip
    listed = []
    ids = [f"i{n:03d}" for n in range(40)]
    for item_id in rng.sample(ids, rng.randint(0, 40)):
        title = rng.choice(["", "Old", "New title"])
        stamp = rng.choice([None, 1_700_000_000.0])
        listed.append(Item(item_id, rng.choice(skus), rng.randint(0, 9), 2.0, title, stamp))
    return held, listed


async def _fill(db: Database, held: list[tuple[Any, ...]]) -> None:
    def fill(conn: Any) -> None:
        tx = Tx(conn)
        tx.run("DELETE FROM item")
        tx.many(f"INSERT INTO item ({COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0.0)", held)

    await db.run(fill)


async def _table(db: Database) -> list[tuple[Any, ...]]:
    return await db.read(lambda conn: Tx(conn).rows(f"SELECT {COLUMNS} FROM item ORDER BY item_id"))


@pytest.mark.parametrize("rule", [SkuRule(), SkuRule(trim=True, fold_case=True)])
async def test_a_paged_pass_leaves_the_table_a_whole_listing_does(
    database: Database, monkeypatch: pytest.MonkeyPatch, rule: SkuRule
) -> None:
    monkeypatch.setattr(catalogue, "SYNC_PAGE", 7)  # several pages even for a small shop
    rng = random.Random(20261207)
    for _ in range(40):
        held, listed = _catalogue(rng)
        await _fill(database, held)
        whole, _rows = await database.run(sync_catalogue(listed, 3.0, rule=rule))
        expected = await _table(database)
        await _fill(database, held)
        for start in range(0, max(1, len(listed)), 9):
            page = listed[start : start + 9]
            await database.run(
                lambda conn, page=page, first=start == 0: stage_listing(
                    conn, page=page, rule=rule, first=first
                )
            )
        paged = await database.run(lambda conn: sync_listing(conn, now=3.0))
        assert await _table(database) == expected
        assert paged.added == len(whole.new)
        assert sorted(paged.changed_sku) == sorted(whole.changed_sku)
        assert sorted(paged.newly_excluded) == sorted(whole.newly_excluded)
        assert sorted(paged.gone) == sorted(whole.gone)
