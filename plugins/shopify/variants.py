"""Shopify's variant and inventory level nodes, read into the core's `Item` values."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agent.channel import Item
from plugins.shopify import webhooks

__all__ = ["available", "epoch", "item"]


def available(level: Any) -> int | None:
    """The `available` quantity of an inventory level node; None if it has none."""
    if not isinstance(level, dict):
        return None
    for quantity in level.get("quantities") or []:
        if isinstance(quantity, dict) and quantity.get("name") == "available":
            value = quantity.get("quantity")
            return value if isinstance(value, int) else None
    return None


def item(
    node: dict[str, Any], level_key: str = "inventoryLevel", suffix: str = "", location: str = ""
) -> Item | None:
    """An Item from a variant node (page or bulk line) at the location whose level is under
    `level_key` (its item id ends in `suffix`, its `location` is the name given for it);
    None if untracked or not stocked there."""
    inventory = node.get("inventoryItem")
    if not isinstance(inventory, dict) or not inventory.get("tracked", True):
        return None
    level = inventory.get(level_key)
    count = available(level)
    if count is None:
        return None
    stamp = webhooks.parse_stamp(level.get("updatedAt")) if isinstance(level, dict) else None
    title = str(node.get("displayName") or "")
    title = title.removesuffix(" - Default Title")  # single-variant products
    return Item(
        item_id=inventory["id"] + suffix,
        sku=(node.get("sku") or "").strip() or None,
        available=count,
        created_at=epoch(node.get("createdAt")),
        title=title,
        stamp=stamp,
        location=location,
    )


def epoch(value: Any) -> float:
    """An ISO 8601 time (naive ones taken as UTC) as epoch seconds; 0.0 if it is not one."""
    if not isinstance(value, str):
        return 0.0
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
