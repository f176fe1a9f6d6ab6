"""The stock store every platform emulator shares: variants, counts, writes and their log."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ShortStock", "Store", "UnknownSku", "Variant", "WriteRecord"]


class ShortStock(Exception):
    """A purchase asked for more than a line's stock; nothing was changed."""


class UnknownSku(KeyError):
    """No variant carries that SKU."""


@dataclasses.dataclass(slots=True)
class Variant:
    """One sellable variant with its inventory item, at the shop's one default location.

    Ids are plain integers; each platform's wire layer formats them (Shopify gids, SHOPLINE
    digit strings, Pisell sku@warehouse).
    """

    variant_id: int
    product_id: int
    inventory_item_id: int
    sku: str
    title: str
    available: int
    created_at: float
    committed: int = 0
    tracked: bool = True
    updated_at: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class WriteRecord:
    """One stock write made through the platform API (not the storefront, not the admin)."""

    at: float
    kind: str  # "set" | "adjust"
    inventory_item_id: int
    sku: str
    before: int
    after: int
    key: str | None
    applied: bool
    reason: str = ""


# A change listener gets (variant, before, after, cause); cause is "order", "edit",
# "api", "refund", "cancel" or "product".
Listener = Callable[[Variant, int, int, str], None]


class Store:
    """Variants and their available counts; the single source of truth of one emulated shop.

    Platform layers call these methods and never touch the dicts behind them, so that every
    change goes through `_changed` and fires the platform's webhooks.
    """

    def __init__(self, *, clock: Callable[[], float], id_base: int = 1000) -> None:
        self._clock = clock
        self._ids = itertools.count(id_base)
        self.variants: dict[int, Variant] = {}  # by variant_id
        self.by_item: dict[int, Variant] = {}  # by inventory_item_id
        self.orders: list[dict[str, Any]] = []
        self.write_log: list[WriteRecord] = []
        self.listeners: list[Listener] = []
        self.storefront_open = True

    # -- catalogue ---------------------------------------------------------------------------

    def seed(self, count: int, *, prefix: str = "SKU", available: int = 100) -> None:
        """Create `count` products `SKU-00001`… each with `available` units."""
        width = max(5, len(str(count)))
        for n in range(1, count + 1):
            self.add_product(f"{prefix}-{n:0{width}d}", available, notify=False)

    def add_product(
        self, sku: str, available: int, *, title: str | None = None, notify: bool = True
    ) -> Variant:
        """A new product with one variant; a SKU that exists already makes a duplicate."""
        now = self._clock()
        product_id, variant_id, item_id = next(self._ids), next(self._ids), next(self._ids)
        variant = Variant(
            variant_id=variant_id,
            product_id=product_id,
            inventory_item_id=item_id,
            sku=sku,
            title=title or f"Product {sku or variant_id}",
            available=available,
            created_at=now,
            updated_at=now,
        )
        self.variants[variant_id] = variant
        self.by_item[item_id] = variant
        if notify:
            self._changed(variant, 0, available, "product")
        return variant

    def edit_product(
        self, sku: str, *, title: str | None = None, new_sku: str | None = None
    ) -> Variant:
        """An admin's edit of a product in the back office (title, SKU); counts stay."""
        variant = self.find_sku(sku)
        if title is not None:
            variant.title = title
        if new_sku is not None:
            variant.sku = new_sku
        variant.updated_at = self._clock()
        return variant

    def find_sku(self, sku: str) -> Variant:
        """The first variant with `sku` (duplicates exist on purpose; first created wins)."""
        for variant in self.variants.values():
            if variant.sku == sku:
                return variant
        raise UnknownSku(sku)

    def inventory(self) -> dict[str, int]:
        """Every SKU's available count (first variant of a duplicated SKU; SKU-less omitted)."""
        out: dict[str, int] = {}
        for variant in self.variants.values():
            if variant.sku and variant.sku not in out:
                out[variant.sku] = variant.available
        return out

    # -- storefront and admin ----------------------------------------------------------------

    def purchase(self, lines: Iterable[tuple[str, int]]) -> dict[str, Any]:
        """A storefront order: every line is checked before any count moves (409 if short)."""
        resolved = []
        for sku, quantity in lines:
            variant = self.find_sku(sku)
            if quantity <= 0:
                raise ValueError(f"quantity for {sku} must be positive")
            if variant.available < quantity:
                raise ShortStock(f"{sku}: {variant.available} available, {quantity} ordered")
            resolved.append((variant, quantity))
        seen: dict[int, int] = {}
        for variant, quantity in resolved:
            seen[variant.variant_id] = seen.get(variant.variant_id, 0) + quantity
            if variant.available < seen[variant.variant_id]:
                raise ShortStock(f"{variant.sku}: {variant.available} available")
        order_id = next(self._ids)
        order = {
            "id": order_id,
            "name": f"#{1000 + len(self.orders) + 1}",
            "created_at": self._clock(),
            "cancelled_at": None,
            "line_items": [
                {
                    "id": next(self._ids),
                    "variant_id": v.variant_id,
                    "inventory_item_id": v.inventory_item_id,
                    "product_id": v.product_id,
                    "sku": v.sku,
                    "quantity": q,
                }
                for v, q in resolved
            ],
        }
        self.orders.append(order)
        for variant, quantity in resolved:
            before = variant.available
            variant.available -= quantity
            variant.committed += quantity
            self._changed(variant, before, variant.available, "order")
        return order

    def restock_order(self, order_id: int, cause: str = "cancel") -> dict[str, Any]:
        """Cancel or refund an order with restock: its units become available again."""
        order = next((o for o in self.orders if o["id"] == order_id), None)
        if order is None:
            raise KeyError(order_id)
        if order["cancelled_at"] is not None:
            raise ValueError(f"order {order_id} is already cancelled")
        order["cancelled_at"] = self._clock()
        for line in order["line_items"]:
            variant = self.variants.get(line["variant_id"])
            if variant is None:
                continue
            before = variant.available
            variant.available += line["quantity"]
            variant.committed = max(0, variant.committed - line["quantity"])
            self._changed(variant, before, variant.available, cause)
        return order

    def edit(self, sku: str, available: int) -> Variant:
        """An admin's manual edit of a SKU's available count in the shop's back office."""
        variant = self.find_sku(sku)
        before = variant.available
        variant.available = available
        self._changed(variant, before, available, "edit")
        return variant

    # -- platform API writes -----------------------------------------------------------------

    def api_set(
        self,
        inventory_item_id: int,
        available: int,
        *,
        key: str | None = None,
        expected: int | None = None,
        reason: str = "",
    ) -> tuple[bool, int]:
        """Set a count through the API; with `expected`, only if the shop still holds it.

        Returns (applied, count after). Every call is logged, applied or not.
        """
        variant = self.by_item[inventory_item_id]
        before = variant.available
        applied = expected is None or expected == before
        if applied:
            variant.available = available
        self.write_log.append(
            WriteRecord(
                self._clock(), "set", inventory_item_id, variant.sku, before,
                variant.available, key, applied, reason,
            )
        )  # fmt: skip
        if applied and before != available:
            self._changed(variant, before, available, "api")
        return applied, variant.available

    def api_adjust(
        self, inventory_item_id: int, delta: int, *, key: str | None = None, reason: str = ""
    ) -> int:
        """Adjust a count by `delta` through the API; returns the count after."""
        variant = self.by_item[inventory_item_id]
        before = variant.available
        variant.available += delta
        self.write_log.append(
            WriteRecord(
                self._clock(), "adjust", inventory_item_id, variant.sku, before,
                variant.available, key, True, reason,
            )
        )  # fmt: skip
        if delta:
            self._changed(variant, before, variant.available, "api")
        return variant.available

    # -- change notification -----------------------------------------------------------------

    def _changed(self, variant: Variant, before: int, after: int, cause: str) -> None:
        variant.updated_at = self._clock()
        for listener in list(self.listeners):
            listener(variant, before, after, cause)
