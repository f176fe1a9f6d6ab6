"""The stock store every platform emulator shares: variants, counts, writes and their log."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["PRIMARY", "NotStocked", "ShortStock", "Store", "UnknownSku", "Variant", "WriteRecord"]

#: The shop's primary location, which every variant is stocked at; the others are 2, 3, ...
PRIMARY = 1


class ShortStock(Exception):
    """A purchase asked for more than a line's stock; nothing was changed."""


class UnknownSku(KeyError):
    """No variant carries that SKU."""


class NotStocked(KeyError):
    """The variant is not stocked at that location (or the shop has no such location)."""


@dataclasses.dataclass(slots=True)
class Variant:
    """One sellable variant with its inventory item.

    `available` is its count at the primary location (`PRIMARY`), where every variant is
    stocked; `levels` its counts at the other locations that stock it (location number ->
    count), none until an admin stocks it there (`Store.edit` with a location). Ids are plain
    integers; each platform's wire layer formats them (Shopify gids, SHOPLINE digit strings,
    Pisell sku@warehouse).
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
    levels: dict[int, int] = dataclasses.field(default_factory=dict)

    def count(self, location: int = PRIMARY) -> int | None:
        """The count at `location`; None where it is not stocked."""
        return self.available if location == PRIMARY else self.levels.get(location)

    def stocked_at(self) -> list[int]:
        """The locations that stock it, the primary first."""
        return [PRIMARY, *sorted(self.levels)]


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
    location: int = PRIMARY


# A change listener gets (variant, before, after, cause, location); cause is "order", "edit",
# "api", "refund", "cancel" or "product".
Listener = Callable[[Variant, int, int, str, int], None]


class Store:
    """Variants and their available counts; the single source of truth of one emulated shop.

    Platform layers call these methods and never touch the dicts behind them, so that every
    change goes through `_changed` and fires the platform's webhooks.
    """

    def __init__(
        self, *, clock: Callable[[], float], id_base: int = 1000, locations: int = 1
    ) -> None:
        self._clock = clock
        self.locations = locations  # the shop's locations are 1 (primary) to `locations`
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

    def inventory(self, location: int = PRIMARY) -> dict[str, int]:
        """Every SKU's available count at `location` (first variant of a duplicated SKU;
        SKU-less and not stocked there omitted)."""
        out: dict[str, int] = {}
        for variant in self.variants.values():
            count = variant.count(location)
            if variant.sku and variant.sku not in out and count is not None:
                out[variant.sku] = count
        return out

    def check_location(self, location: int) -> int:
        """`location` if the shop has it; ValueError otherwise."""
        if isinstance(location, bool) or not isinstance(location, int):
            raise ValueError("location must be a location number")
        if not PRIMARY <= location <= self.locations:
            raise ValueError(f"the shop has no location {location} (it has 1 to {self.locations})")
        return location

    def _set(self, variant: Variant, location: int, count: int) -> int:
        """Set the count at `location` (stocking it there); returns the count before."""
        before = variant.count(location)
        if location == PRIMARY:
            variant.available = count
        else:
            variant.levels[location] = count
        return before or 0

    def _at(self, variant: Variant, location: int) -> int:
        count = variant.count(location)
        if count is None:
            raise NotStocked(f"{variant.sku or variant.variant_id} is not stocked at {location}")
        return count

    # -- storefront and admin ----------------------------------------------------------------

    def purchase(self, lines: Iterable[tuple[str, int]], location: int = PRIMARY) -> dict[str, Any]:
        """A storefront order fulfilled from `location`: every line is checked before any
        count moves (409 if short or not stocked there)."""
        resolved = []
        for sku, quantity in lines:
            variant = self.find_sku(sku)
            if quantity <= 0:
                raise ValueError(f"quantity for {sku} must be positive")
            have = variant.count(location)
            if have is None:
                raise ShortStock(f"{sku} is not stocked at location {location}")
            if have < quantity:
                raise ShortStock(f"{sku}: {have} available, {quantity} ordered")
            resolved.append((variant, quantity))
        seen: dict[int, int] = {}
        for variant, quantity in resolved:
            seen[variant.variant_id] = seen.get(variant.variant_id, 0) + quantity
            if self._at(variant, location) < seen[variant.variant_id]:
                raise ShortStock(f"{variant.sku}: {variant.count(location)} available")
        order_id = next(self._ids)
        order = {
            "id": order_id,
            "name": f"#{1000 + len(self.orders) + 1}",
            "created_at": self._clock(),
            "cancelled_at": None,
            "location": location,
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
            before = self._set(variant, location, self._at(variant, location) - quantity)
            if location == PRIMARY:
                variant.committed += quantity
            self._changed(variant, before, before - quantity, "order", location)
        return order

    def restock_order(self, order_id: int, cause: str = "cancel") -> dict[str, Any]:
        """Cancel or refund an order with restock: its units become available again."""
        order = next((o for o in self.orders if o["id"] == order_id), None)
        if order is None:
            raise KeyError(order_id)
        if order["cancelled_at"] is not None:
            raise ValueError(f"order {order_id} is already cancelled")
        order["cancelled_at"] = self._clock()
        location = order.get("location", PRIMARY)
        for line in order["line_items"]:
            variant = self.variants.get(line["variant_id"])
            if variant is None:
                continue
            before = self._set(variant, location, (variant.count(location) or 0) + line["quantity"])
            if location == PRIMARY:
                variant.committed = max(0, variant.committed - line["quantity"])
            self._changed(variant, before, before + line["quantity"], cause, location)
        return order

    def edit(self, sku: str, available: int, location: int = PRIMARY) -> Variant:
        """An admin's manual edit of a SKU's available count at `location` in the shop's back
        office (at a location that does not stock it yet, it is stocked there first)."""
        variant = self.find_sku(sku)
        before = self._set(variant, self.check_location(location), available)
        self._changed(variant, before, available, "edit", location)
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
        location: int = PRIMARY,
    ) -> tuple[bool, int]:
        """Set a count at `location` through the API; with `expected`, only if the shop still
        holds it. Returns (applied, count after). Every call is logged, applied or not;
        `NotStocked` where the item is not stocked at `location`.
        """
        variant = self.by_item[inventory_item_id]
        before = self._at(variant, location)
        applied = expected is None or expected == before
        if applied:
            self._set(variant, location, available)
        after = self._at(variant, location)
        self.write_log.append(
            WriteRecord(
                self._clock(), "set", inventory_item_id, variant.sku, before,
                after, key, applied, reason, location,
            )
        )  # fmt: skip
        if applied and before != available:
            self._changed(variant, before, available, "api", location)
        return applied, after

    def api_adjust(
        self,
        inventory_item_id: int,
        delta: int,
        *,
        key: str | None = None,
        reason: str = "",
        location: int = PRIMARY,
    ) -> int:
        """Adjust a count at `location` by `delta` through the API; returns the count after
        (`NotStocked` where the item is not stocked there)."""
        variant = self.by_item[inventory_item_id]
        before = self._at(variant, location)
        self._set(variant, location, before + delta)
        self.write_log.append(
            WriteRecord(
                self._clock(), "adjust", inventory_item_id, variant.sku, before,
                before + delta, key, True, reason, location,
            )
        )  # fmt: skip
        if delta:
            self._changed(variant, before, before + delta, "api", location)
        return before + delta

    # -- change notification -----------------------------------------------------------------

    def _changed(
        self, variant: Variant, before: int, after: int, cause: str, location: int = PRIMARY
    ) -> None:
        variant.updated_at = self._clock()
        for listener in list(self.listeners):
            listener(variant, before, after, cause, location)
