"""The shop's catalogue as the agent knows it: items, their SKUs, duplicates and SKU-less items."""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from agent.channel import Item
from agent.models import ItemRow
from agent.sql import Tx
from agent.warehouses import listing_key, parse_listing, reserved

__all__ = [
    "CatalogueChange",
    "CatalogueRow",
    "Index",
    "SkuRule",
    "classify",
    "clear_listing",
    "listed_counts",
    "listed_rows",
    "stage_listing",
    "sync_catalogue",
    "sync_items",
    "sync_listing",
]

DUPLICATE = "duplicate"
NO_SKU = "no_sku"
GONE = "gone"


@dataclasses.dataclass(frozen=True, slots=True)
class SkuRule:
    """How the agent keys SKUs: exactly as the platform has them unless configured to trim
    spaces and fold case. A blank SKU is no SKU. Every shop of a group should use one rule."""

    trim: bool = False
    fold_case: bool = False

    def __call__(self, sku: str | None) -> str | None:
        if sku is None or not sku.strip():
            return None
        if self.trim:
            sku = sku.strip()
        if self.fold_case:
            sku = sku.upper()
        return sku

    def key(self, item: Item) -> str | None:
        """The item table's key of a listed item: its SKU at the channel's own location,
        ``SKU##location`` at another (`agent.warehouses.listing_key`); None without a SKU."""
        sku = self(item.sku)
        return None if sku is None else listing_key(sku, item.location)


def classify(items: Iterable[tuple[str, str | None]]) -> dict[str, str | None]:
    """item_id → None (synced), "duplicate" (SKU shared in this shop) or "no_sku"."""
    pairs = list(items)
    counts = Counter(sku for _, sku in pairs if sku)
    return {item_id: _verdict(sku, counts[sku] > 1 if sku else False) for item_id, sku in pairs}


def _verdict(sku: str | None, shared: bool) -> str | None:
    """Why an item is not synced (no usable SKU, or one `shared` with another item), or None.
    A SKU holding a separator of the keys (``@@``, ``##``) is no usable SKU."""
    if not sku or reserved(parse_listing(sku)[0]):
        return NO_SKU
    return DUPLICATE if shared else None


class _Keyed(Protocol):
    """What the index needs of an item's row (an `ItemRow` or a `CatalogueRow`)."""

    @property
    def item_id(self) -> str: ...
    @property
    def sku(self) -> str | None: ...
    @property
    def excluded(self) -> str | None: ...


@dataclasses.dataclass(slots=True)
class Index:
    """In-memory map between synced items and SKUs (rebuilt from the item table)."""

    sku_item: dict[str, str] = dataclasses.field(default_factory=dict)
    item_sku: dict[str, str] = dataclasses.field(default_factory=dict)
    excluded: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    async def load(cls, session: AsyncSession) -> Index:
        index = cls()
        for row in await session.exec(select(ItemRow)):
            index.put(row)
        return index

    def put(self, row: _Keyed) -> None:
        """Record `row`, replacing what was known of its item."""
        self.drop(row.item_id)
        if row.excluded is None and row.sku:
            self.sku_item[row.sku] = row.item_id
            self.item_sku[row.item_id] = row.sku
        else:
            self.excluded[row.item_id] = row.excluded or NO_SKU

    def drop(self, item_id: str) -> None:
        sku = self.item_sku.pop(item_id, None)
        if sku is not None and self.sku_item.get(sku) == item_id:
            del self.sku_item[sku]
        self.excluded.pop(item_id, None)


@dataclasses.dataclass(slots=True)
class CatalogueChange:
    """What a catalogue sync found."""

    new: list[str] = dataclasses.field(default_factory=list)
    changed_sku: list[str] = dataclasses.field(default_factory=list)
    newly_excluded: list[tuple[str, str, str | None]] = dataclasses.field(
        default_factory=list
    )  # (item_id, why, SKU)
    gone: list[str] = dataclasses.field(default_factory=list)
    added: int = 0  # new items (a full pass counts them instead of listing them in `new`)


@dataclasses.dataclass(slots=True)
class CatalogueRow:
    """An item as a catalogue sync leaves it: what the index and the sync log need."""

    item_id: str
    sku: str | None
    excluded: str | None


@dataclasses.dataclass(slots=True)
class _Held:
    """An item row as the table holds it, and what a sync changes of it."""

    item_id: str
    sku: str | None
    title: str
    excluded: str | None
    changed: bool = False
    fresh: bool = False  # published is set to NULL: the item is first seen again

    def row(self) -> CatalogueRow:
        return CatalogueRow(self.item_id, self.sku, self.excluded)


def sync_catalogue(
    listed: Sequence[Item], now: float, *, rule: SkuRule | None = None
) -> Callable[[Connection], tuple[CatalogueChange, list[CatalogueRow]]]:
    """A unit of work that brings the item table in line with a full listing; it returns
    what changed and the listed items' rows.

    An item whose SKU changed starts afresh (published NULL), so its new SKU is first seen
    like a new item; items that vanished from the shop are marked gone, not deleted, so the
    log still names them. Only rows that change are written: a pass over a catalogue that
    did not change writes nothing, and holds the database's write lock only to read it.
    """
    return functools.partial(_sync, listed=listed, now=now, rule=rule or SkuRule(), looked_up=None)


def sync_items(
    found: Sequence[Item],
    looked_up: Sequence[str],
    now: float,
    *,
    rule: SkuRule | None = None,
) -> Callable[[Connection], tuple[CatalogueChange, list[CatalogueRow]]]:
    """A unit of work that brings the rows of the `looked_up` items in line with what the
    shop said of them (`found`; a looked-up id not found is gone). Other items stay as they
    are, except that a SKU a found item now shares, or no longer shares, with one of them
    makes that one a duplicate or a synced item again. It returns what changed and the rows
    it wrote."""
    return functools.partial(
        _sync, listed=found, now=now, rule=rule or SkuRule(), looked_up=set(looked_up)
    )


def _sync(
    conn: Connection,
    *,
    listed: Sequence[Item],
    now: float,
    rule: SkuRule,
    looked_up: set[str] | None,
) -> tuple[CatalogueChange, list[CatalogueRow]]:
    tx = Tx(conn)
    change = CatalogueChange()
    existing = {
        r[0]: _Held(r[0], r[1], r[2] or "", r[3])
        for r in tx.rows("SELECT item_id, sku, title, excluded FROM item")
    }
    keyed = [(it.item_id, rule.key(it)) for it in listed]
    seen = {item_id for item_id, _ in keyed}
    # a lookup leaves the rest of the shop as it was: those items still hold their SKUs
    others = (
        []
        if looked_up is None
        else [
            (item_id, held.sku)
            for item_id, held in existing.items()
            if item_id not in seen and item_id not in looked_up and held.excluded != GONE
        ]
    )
    verdict = classify([*keyed, *others])
    rows: list[CatalogueRow] = []
    new: list[tuple[Any, ...]] = []
    touched: list[_Held] = []
    for item, (_, sku) in zip(listed, keyed, strict=True):
        excluded = verdict[item.item_id]
        held = existing.get(item.item_id)
        if held is None:
            created = float(item.created_at)
            new.append((item.item_id, sku, item.title, created, excluded, float(now)))
            change.new.append(item.item_id)
            change.added += 1
            if excluded:
                change.newly_excluded.append((item.item_id, excluded, sku))
            rows.append(CatalogueRow(item.item_id, sku, excluded))
            continue
        if _listed_again(held, sku, excluded, item.title, change):
            touched.append(held)
        rows.append(held.row())
    for item_id, _sku in others:
        held = existing[item_id]
        if held.excluded != verdict[item_id]:
            _set_excluded(held, verdict[item_id], change)
            touched.append(held)
            rows.append(held.row())
    gone = set(existing) - seen if looked_up is None else looked_up - seen
    for item_id in sorted(gone):
        held_gone = existing.get(item_id)
        if held_gone is not None and held_gone.excluded != GONE:
            held_gone.excluded, held_gone.changed = GONE, True
            touched.append(held_gone)
            change.gone.append(item_id)
            if looked_up is not None:  # (a full pass returns the listed rows only, as before)
                rows.append(held_gone.row())
    _write(tx, new, touched, now)
    return change, rows


def _listed_again(
    held: _Held, sku: str | None, excluded: str | None, title: str, change: CatalogueChange
) -> bool:
    """An item the table holds, as the shop lists it now: True if its row changed."""
    if held.sku != sku:
        change.changed_sku.append(held.item_id)
        held.sku, held.fresh, held.changed = sku, True, True
    _set_excluded(held, excluded, change)
    if title and title != held.title:
        held.title, held.changed = title, True
    return held.changed


def _write(tx: Tx, new: list[tuple[Any, ...]], touched: list[_Held], now: float) -> None:
    """Insert the new items' rows, write the changed ones (a changed SKU, or an item that
    joins the sync again, starts afresh: its published count is forgotten)."""
    tx.many(
        "INSERT INTO item (item_id, sku, title, published, created_at, excluded, "
        "cutover_pending, updated_at) VALUES (?, ?, ?, NULL, ?, ?, FALSE, ?)",
        new,
    )
    tx.many(
        "UPDATE item SET sku = ?, title = ?, excluded = ?, updated_at = ? WHERE item_id = ?",
        ((h.sku, h.title, h.excluded, float(now), h.item_id) for h in touched),
    )
    tx.many(
        "UPDATE item SET published = NULL WHERE item_id = ?",
        ((h.item_id,) for h in touched if h.fresh),
    )


# -- a full pass, a page at a time --------------------------------------------------------------

SYNC_PAGE = 5000  # listed items per statement of a full pass's sync


def stage_listing(conn: Connection, *, page: Sequence[Item], rule: SkuRule, first: bool) -> None:
    """Keep a page of the shop's listing for the full pass that lists it (`first`: the pass's
    first page, which forgets the previous pass's listing). An item listed twice counts once."""
    if first:
        clear_listing(conn)
    Tx(conn).many(
        "INSERT INTO listing (item_id, sku, title, available, stamp, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (item_id) DO NOTHING",
        (
            (
                it.item_id,
                rule.key(it),
                it.title or "",
                int(it.available),
                None if it.stamp is None else float(it.stamp),
                float(it.created_at),
            )
            for it in page
        ),
    )


def clear_listing(conn: Connection) -> None:
    """Forget the staged listing (the pass that made it has ended)."""
    Tx(conn).run("DELETE FROM listing")


def sync_listing(conn: Connection, *, now: float) -> CatalogueChange:
    """`sync_catalogue` for the listing staged by `stage_listing`, a page at a time: the item
    table in line with it (new items added, changed ones written, items no longer listed
    marked gone), in one unit of work, holding one page of it in memory. New items are
    counted (`added`), not listed."""
    tx = Tx(conn)
    change = CatalogueChange()
    shared = "SELECT sku FROM listing WHERE sku IS NOT NULL GROUP BY sku HAVING COUNT(*) > 1"
    duplicates = {row[0] for row in tx.rows(shared)}
    query = (
        "SELECT l.item_id, l.sku, l.title, l.created_at, i.item_id, i.sku, i.title, i.excluded "
        "FROM listing l LEFT JOIN item i ON i.item_id = l.item_id WHERE l.item_id > ? "
        "ORDER BY l.item_id LIMIT ?"
    )
    after = ""
    while rows := tx.rows(query, (after, SYNC_PAGE)):
        after = rows[-1][0]
        new: list[tuple[Any, ...]] = []
        touched: list[_Held] = []
        for item_id, sku, title, created, held_id, held_sku, held_title, excluded in rows:
            verdict = _verdict(sku, sku in duplicates)
            if held_id is None:
                new.append((item_id, sku, title, float(created), verdict, float(now)))
                change.added += 1
                if verdict:
                    change.newly_excluded.append((item_id, verdict, sku))
                continue
            held = _Held(item_id, held_sku, held_title or "", excluded)
            if _listed_again(held, sku, verdict, title, change):
                touched.append(held)
        _write(tx, new, touched, now)
    gone = tx.rows(
        "SELECT item_id FROM item i WHERE (i.excluded IS NULL OR i.excluded <> ?) "
        "AND NOT EXISTS (SELECT 1 FROM listing l WHERE l.item_id = i.item_id) ORDER BY item_id",
        (GONE,),
    )
    change.gone = [row[0] for row in gone]
    tx.many(
        "UPDATE item SET excluded = ?, updated_at = ? WHERE item_id = ?",
        ((GONE, float(now), item_id) for item_id in change.gone),
    )
    return change


def listed_rows(conn: Connection, *, after: str, limit: int) -> list[CatalogueRow]:
    """The rows of the staged listing's items after `after`, in item order (for the index)."""
    query = (
        "SELECT i.item_id, i.sku, i.excluded FROM listing l JOIN item i ON i.item_id = l.item_id "
        "WHERE l.item_id > ? ORDER BY l.item_id LIMIT ?"
    )
    return [CatalogueRow(*row) for row in Tx(conn).rows(query, (after, limit))]


def listed_counts(
    conn: Connection, *, after: str, limit: int
) -> list[tuple[str, int, float | None]]:
    """(item_id, available, stamp) of the staged listing's synced items after `after`, in
    item order: the counts a full pass observes."""
    query = (
        "SELECT l.item_id, l.available, l.stamp FROM listing l JOIN item i "
        "ON i.item_id = l.item_id WHERE i.excluded IS NULL AND l.item_id > ? "
        "ORDER BY l.item_id LIMIT ?"
    )
    return [(r[0], int(r[1]), r[2]) for r in Tx(conn).rows(query, (after, limit))]


def _set_excluded(held: _Held, excluded: str | None, change: CatalogueChange) -> None:
    if held.excluded == excluded:
        return
    if excluded:
        change.newly_excluded.append((held.item_id, excluded, held.sku))
    if held.excluded is not None and excluded is None:
        held.fresh = True  # joins sync afresh, like a new item
    held.excluded, held.changed = excluded, True
