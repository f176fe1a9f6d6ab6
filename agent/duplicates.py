"""What cannot be synced, and what is missing: duplicate SKUs, items without one, gaps, and
bundles a component of which the group does not know."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from agent.bundles import BundleMap
from agent.catalogue import DUPLICATE, NO_SKU
from agent.models import ItemRow, PoolRow
from agent.warehouses import parse_key, parse_listing

__all__ = ["duplicates_report"]

ADVICE = {
    DUPLICATE: "give each item its own SKU in the shop (or delete the extra item); "
    "it syncs again at the next reconciliation",
    NO_SKU: "enter the item's SKU (model number) in the shop; it syncs at the next reconciliation",
}
RESERVED = (
    "the SKU {sku} holds '@@' or '##', which shopsync keeps for warehouses and locations: "
    "rename it in every shop; it syncs at the next reconciliation"
)
BUNDLE_SHORT = (
    "the bundle shows 0 here until every component is a product of some shop in the group: "
    "create it (same SKU), or correct the bundle (shopsync bundles add)"
)


async def duplicates_report(
    session: AsyncSession,
    *,
    only_here: list[str] | None = None,
    bundles: BundleMap | None = None,
) -> dict[str, Any]:
    """Duplicates (a SKU on several items of this shop), SKU-less items, SKUs the group
    knows that this shop lacks, and the group's `bundles` this shop sells that lack a
    component. `only_here` (from the last import) lists SKUs this shop had that the master
    did not."""
    items = list(await session.exec(select(ItemRow).where(col(ItemRow.excluded).is_not(None))))
    groups: dict[str, list[dict[str, Any]]] = {}
    no_sku = []
    for item in items:
        entry = {"item_id": item.item_id, "title": item.title}
        if item.excluded == DUPLICATE and item.sku:
            groups.setdefault(item.sku, []).append(entry)
        elif item.excluded == NO_SKU:
            if item.sku:  # a SKU the agent cannot key: says so, rather than "enter one"
                entry["advice"] = RESERVED.format(sku=parse_listing(item.sku)[0])
            no_sku.append(entry)
    listed = set(
        await session.exec(
            select(ItemRow.sku).where(
                col(ItemRow.excluded).is_(None), col(ItemRow.sku).is_not(None)
            )
        )
    )
    # by SKU: a pool per warehouse (`SKU@@W`), an item per location (`SKU##location`)
    pooled = {
        parse_key(key)[0]
        for key in await session.exec(select(PoolRow.sku).where(col(PoolRow.base).is_not(None)))
    }
    synced = {parse_listing(s)[0] for s in listed if s is not None}
    duplicated = {parse_listing(s)[0] for s in groups}
    bundles = bundles or BundleMap()
    short = []
    for sku in sorted(s for s in synced if bundles.is_bundle(s)):
        missing = [p for p, _ in bundles.bundles[sku].components if p not in pooled]
        if missing:
            short.append({"sku": sku, "missing": missing, "advice": BUNDLE_SHORT})
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
            {"advice": ADVICE[NO_SKU], **e} for e in sorted(no_sku, key=lambda e: e["item_id"])
        ],
        "missing_here": sorted(p for p in pooled - synced - duplicated if not bundles.is_bundle(p)),
        "only_here": sorted(only_here or []),
        "bundles_short": short,
    }
