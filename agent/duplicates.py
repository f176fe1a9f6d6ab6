"""What cannot be synced, and what is missing: duplicate SKUs, items without one, gaps."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from agent.catalogue import DUPLICATE, NO_SKU
from agent.models import ItemRow, PoolRow

__all__ = ["duplicates_report"]

ADVICE = {
    DUPLICATE: "give each item its own SKU in the shop (or delete the extra item); "
    "it syncs again at the next reconciliation",
    NO_SKU: "enter the item's SKU (model number) in the shop; it syncs at the next reconciliation",
}


async def duplicates_report(
    session: AsyncSession, *, only_here: list[str] | None = None
) -> dict[str, Any]:
    """Duplicates (a SKU on several items of this shop), SKU-less items, and SKUs the group
    knows that this shop lacks. `only_here` (from the last import) lists SKUs this shop had
    that the master did not."""
    items = list(await session.exec(select(ItemRow).where(col(ItemRow.excluded).is_not(None))))
    groups: dict[str, list[dict[str, Any]]] = {}
    no_sku = []
    for item in items:
        entry = {"item_id": item.item_id, "title": item.title}
        if item.excluded == DUPLICATE and item.sku:
            groups.setdefault(item.sku, []).append(entry)
        elif item.excluded == NO_SKU:
            no_sku.append(entry)
    synced = set(
        await session.exec(
            select(ItemRow.sku).where(
                col(ItemRow.excluded).is_(None), col(ItemRow.sku).is_not(None)
            )
        )
    )
    pooled = set(await session.exec(select(PoolRow.sku).where(col(PoolRow.base).is_not(None))))
    duplicated = set(groups)
    return {
        "duplicates": [
            {
                "sku": sku,
                "items": sorted(groups[sku], key=lambda e: e["item_id"]),
                "advice": ADVICE[DUPLICATE],
            }
            for sku in sorted(groups)
        ],
        "no_sku": [
            {**e, "advice": ADVICE[NO_SKU]} for e in sorted(no_sku, key=lambda e: e["item_id"])
        ],
        "missing_here": sorted(pooled - synced - duplicated),
        "only_here": sorted(only_here or []),
    }
