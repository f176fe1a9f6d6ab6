"""The shop's catalogue as the agent knows it: items, their SKUs, duplicates and SKU-less items."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from agent.channel import Item
from agent.models import ItemRow

__all__ = ["CatalogueChange", "Index", "SkuRule", "classify", "sync_catalogue", "sync_items"]

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


def classify(items: Iterable[tuple[str, str | None]]) -> dict[str, str | None]:
    """item_id → None (synced), "duplicate" (SKU shared in this shop) or "no_sku"."""
    pairs = list(items)
    counts = Counter(sku for _, sku in pairs if sku)
    return {
        item_id: (NO_SKU if not sku else DUPLICATE if counts[sku] > 1 else None)
        for item_id, sku in pairs
    }


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

    def put(self, row: ItemRow) -> None:
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
    newly_excluded: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    gone: list[str] = dataclasses.field(default_factory=list)


async def sync_catalogue(
    session: AsyncSession, listed: Sequence[Item], now: float, *, rule: SkuRule | None = None
) -> tuple[CatalogueChange, list[ItemRow]]:
    """Bring the item table in line with a full listing; returns what changed and all rows.

    An item whose SKU changed starts afresh (published None), so its new SKU is first seen
    like a new item; items that vanished from the shop are marked gone, not deleted, so the
    log still names them.
    """
    return await _sync(session, listed, now, rule or SkuRule(), looked_up=None)


async def sync_items(
    session: AsyncSession,
    found: Sequence[Item],
    looked_up: Sequence[str],
    now: float,
    *,
    rule: SkuRule | None = None,
) -> tuple[CatalogueChange, list[ItemRow]]:
    """Bring the rows of the `looked_up` items in line with what the shop said of them
    (`found`; a looked-up id not found is gone). Other items stay as they are, except that
    a SKU a found item now shares, or no longer shares, with one of them makes that one a
    duplicate or a synced item again. Returns what changed and the rows it wrote."""
    return await _sync(session, found, now, rule or SkuRule(), looked_up=set(looked_up))


async def _sync(
    session: AsyncSession,
    listed: Sequence[Item],
    now: float,
    rule: SkuRule,
    *,
    looked_up: set[str] | None,
) -> tuple[CatalogueChange, list[ItemRow]]:
    change = CatalogueChange()
    existing = {row.item_id: row for row in await session.exec(select(ItemRow))}
    keyed = [(it.item_id, rule(it.sku)) for it in listed]
    seen = {item_id for item_id, _ in keyed}
    # a lookup leaves the rest of the shop as it was: those items still hold their SKUs
    others = (
        []
        if looked_up is None
        else [
            (item_id, row.sku)
            for item_id, row in existing.items()
            if item_id not in seen and item_id not in looked_up and row.excluded != GONE
        ]
    )
    verdict = classify([*keyed, *others])
    rows = []
    for item, (_, sku) in zip(listed, keyed, strict=True):
        excluded = verdict[item.item_id]
        row = existing.get(item.item_id)
        if row is None:
            row = ItemRow(
                item_id=item.item_id,
                sku=sku,
                title=item.title,
                created_at=item.created_at,
                excluded=excluded,
                updated_at=now,
            )
            session.add(row)
            change.new.append(item.item_id)
            if excluded:
                change.newly_excluded.append((item.item_id, excluded))
        else:
            if row.sku != sku:
                change.changed_sku.append(item.item_id)
                row.sku, row.published = sku, None
            _set_excluded(row, excluded, change)
            row.title = item.title or row.title
            row.updated_at = now
        rows.append(row)
    for item_id, _sku in others:
        row = existing[item_id]
        if row.excluded != verdict[item_id]:
            _set_excluded(row, verdict[item_id], change)
            row.updated_at = now
            rows.append(row)
    gone = set(existing) - seen if looked_up is None else looked_up - seen
    for item_id in sorted(gone):
        row = existing.get(item_id)
        if row is not None and row.excluded != GONE:
            row.excluded = GONE
            change.gone.append(item_id)
            if looked_up is not None:  # (a full pass returns the listed rows only, as before)
                rows.append(row)
    return change, rows


def _set_excluded(row: ItemRow, excluded: str | None, change: CatalogueChange) -> None:
    if row.excluded == excluded:
        return
    if excluded:
        change.newly_excluded.append((row.item_id, excluded))
    if row.excluded is not None and excluded is None:
        row.published = None  # joins sync afresh, like a new item
    row.excluded = excluded
