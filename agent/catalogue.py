"""The shop's catalogue as the agent knows it: items, their SKUs, duplicates and SKU-less items."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from agent.channel import Item
from agent.models import ItemRow

__all__ = ["CatalogueChange", "Index", "SkuRule", "classify", "sync_catalogue"]

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
    change = CatalogueChange()
    existing = {row.item_id: row for row in await session.exec(select(ItemRow))}
    rule = rule or SkuRule()
    keyed = [(it.item_id, rule(it.sku)) for it in listed]
    verdict = classify(keyed)
    seen = set()
    rows = []
    for item, (_, sku) in zip(listed, keyed, strict=True):
        seen.add(item.item_id)
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
            if row.excluded != excluded:
                if excluded:
                    change.newly_excluded.append((item.item_id, excluded))
                if row.excluded is not None and excluded is None:
                    row.published = None  # joins sync afresh, like a new item
                row.excluded = excluded
            row.title = item.title or row.title
            row.updated_at = now
        rows.append(row)
    for item_id, row in existing.items():
        if item_id not in seen and row.excluded != GONE:
            row.excluded = GONE
            change.gone.append(item_id)
    return change, rows
