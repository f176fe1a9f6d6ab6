"""The Pisell emulator's IS state: stock items, levels, combos, movements, sync, bound orders.

The kit's `Store` stays the one source of truth of *available* counts (so the control API,
`write_log` and the other emulators' tools keep working); this module keeps what IS adds on
top of it, in step through `on_change`: per stock item `on_hand`, `locked` and `version`,
combos derived from their components, typed stock movements, sync records, and orders of bound
shops waiting for the 15-minute pull.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable
from typing import Any

from agent.emulator import ShortStock, Store, UnknownSku, Variant
from plugins.pisell import wire

__all__ = ["PULL_INTERVAL", "Inventory", "PendingOrder", "StockState"]

PULL_INTERVAL = 900.0  # IS pulls bound shops' orders every 15 minutes

# (direction-less) movement type and source per Store change cause; "api" is typed by its call.
_CAUSES = {
    "order": ("shipment", "order"),
    "cancel": ("sales_return", "order"),
    "refund": ("sales_return", "order"),
    "edit": ("stocktake", "manual"),
    "product": ("purchase", "manual"),
}

Emit = Callable[[str, dict[str, Any]], object]


@dataclasses.dataclass(slots=True)
class StockState:
    """One stock item and its level in the (single) warehouse; a combo has no variant."""

    id: int
    sku: str
    title: str
    created_at: float
    updated_at: float
    variant: Variant | None = None
    on_hand: int = 0
    locked: int = 0
    version: int = 1
    components: tuple[wire.Component, ...] = ()
    combo_available: int = 0

    @property
    def is_combo(self) -> bool:
        """A combo's count is derived from its components; it cannot be written."""
        return self.variant is None


@dataclasses.dataclass(slots=True)
class PendingOrder:
    """An order sold in a bound shop, not yet pulled into IS."""

    ref: str
    shop_id: str
    lines: list[tuple[str, int]]
    placed_at: float
    due_at: float


class Inventory:
    """IS on top of the kit's `Store`, for one warehouse and the shops bound to it."""

    def __init__(
        self,
        store: Store,
        *,
        now: Callable[[], float],
        emit: Emit,
        timezone: str,
        warehouse_id: str,
        shops: Iterable[wire.Shop],
    ) -> None:
        self.store = store
        self.now = now
        self.emit = emit
        self.timezone = timezone
        self.tz = wire.zone(timezone)
        self.warehouse_id = warehouse_id
        self.shops = {shop.id: shop for shop in shops}
        self.items: dict[str, StockState] = {}  # by SKU, in id order
        self.combos_of: dict[str, list[str]] = {}  # component SKU -> combo SKUs
        self.movements: list[tuple[float, wire.Movement]] = []
        self.sync_records: list[tuple[float, wire.SyncRecord]] = []
        self.pending: list[PendingOrder] = []
        self.started_at = now()
        self._item_ids = itertools.count(1)
        self._movement_ids = itertools.count(1)
        self._record_ids = itertools.count(1)
        self._order_refs = itertools.count(1)
        for variant in store.variants.values():
            self.track(variant)

    # -- catalogue ---------------------------------------------------------------------------

    def local(self, epoch: float) -> str:
        """Epoch seconds as the shop's local time string."""
        return wire.format_local(epoch, self.tz)

    def track(self, variant: Variant) -> StockState:
        """The stock item of a variant (created on first sight; a SKU keeps its first)."""
        stock = self.items.get(variant.sku)
        if stock is None:
            stock = StockState(
                next(self._item_ids), variant.sku, variant.title, variant.created_at,
                variant.updated_at or variant.created_at, variant, on_hand=variant.available,
            )  # fmt: skip
            self.items[variant.sku] = stock
        return stock

    def add_combo(self, sku: str, title: str, components: list[wire.Component]) -> StockState:
        """A combo of existing non-combo items; KeyError names an unknown component."""
        for part in components:
            if part.sku not in self.items:
                raise KeyError(part.sku)
            if self.items[part.sku].is_combo:
                raise ValueError(f"component {part.sku} is a combo")
        now = self.now()
        stock = StockState(next(self._item_ids), sku, title, now, now, components=tuple(components))
        stock.combo_available = self.available(stock)
        self.items[sku] = stock
        for part in components:
            self.combos_of.setdefault(part.sku, []).append(sku)
        self.emit(wire.TOPIC_INVENTORY_LEVEL_UPDATED, wire.level_event(sku, self.warehouse_id))
        return stock

    def available(self, stock: StockState) -> int:
        """A SKU's available count; a combo's is min over components of ⌊avail / qty⌋."""
        if stock.variant is not None:
            return stock.variant.available
        counts = []
        for part in stock.components:
            component = self.items.get(part.sku)
            have = (
                0 if component is None or component.variant is None else component.variant.available
            )
            counts.append(max(0, have) // part.quantity)
        return min(counts, default=0)

    def stock_item(self, stock: StockState) -> wire.StockItem:
        """The wire row of a stock item."""
        return wire.StockItem(
            id=stock.id, sku=stock.sku, title=stock.title, is_combo=stock.is_combo,
            components=stock.components, created_at=self.local(stock.created_at),
            updated_at=self.local(stock.updated_at),
        )  # fmt: skip

    def level(self, stock: StockState) -> wire.Level:
        """The wire row of a stock item's level."""
        available = self.available(stock)
        on_hand, locked = (available, 0) if stock.is_combo else (stock.on_hand, stock.locked)
        return wire.Level(
            sku=stock.sku, warehouse_id=self.warehouse_id, on_hand=on_hand, locked=locked,
            available=available, version=stock.version, updated_at=self.local(stock.updated_at),
        )  # fmt: skip

    # -- changes -----------------------------------------------------------------------------

    def on_change(self, variant: Variant, before: int, after: int, cause: str) -> None:
        """Keep on_hand/locked/version in step with a Store change and tell subscribers."""
        known = variant.sku in self.items
        stock = self.track(variant)  # a new one starts with its count as on_hand
        if stock.variant is not variant:
            return  # a second variant with a known SKU is no stock item of IS
        delta = after - before
        if not known:
            pass
        elif cause == "order":
            stock.locked -= delta  # a sale locks stock; shipping would remove it
        elif cause in ("cancel", "refund"):
            unlock = min(stock.locked, max(delta, 0))
            stock.locked -= unlock
            stock.on_hand += delta - unlock
        else:
            stock.on_hand += delta
        self.touch(stock)
        if cause in _CAUSES:
            kind, source = _CAUSES[cause]
            self.record_movement(stock, delta, kind, source)
        self.emit(
            wire.TOPIC_INVENTORY_LEVEL_UPDATED, wire.level_event(stock.sku, self.warehouse_id)
        )
        self._auto_sync(stock)
        self._update_combos(stock.sku)

    def touch(self, stock: StockState) -> None:
        """Bump a level's version: every change and every successful write does."""
        stock.version += 1
        stock.updated_at = self.now()

    def record_movement(self, stock: StockState, delta: int, kind: str, source: str) -> None:
        """Append a stock movement and announce it."""
        now = self.now()
        movement = wire.Movement(
            id=next(self._movement_ids), direction="in" if delta >= 0 else "out", type=kind,
            sku=stock.sku, warehouse_id=self.warehouse_id, quantity=abs(delta),
            balance_after=self.available(stock), source=source, created_at=self.local(now),
        )  # fmt: skip
        self.movements.append((now, movement))
        self.emit(wire.TOPIC_STOCK_MOVEMENT_CREATED, movement.to_wire())

    def _update_combos(self, sku: str) -> None:
        for combo_sku in self.combos_of.get(sku, ()):
            combo = self.items[combo_sku]
            now_available = self.available(combo)
            if now_available != combo.combo_available:
                combo.combo_available = now_available
                self.touch(combo)
                event = wire.level_event(combo.sku, self.warehouse_id)
                self.emit(wire.TOPIC_INVENTORY_LEVEL_UPDATED, event)

    # -- API writes --------------------------------------------------------------------------

    def _refuse(self, sku: str, warehouse_id: str, code: str, message: str) -> wire.ItemResult:
        stock = self.items.get(sku) if warehouse_id == self.warehouse_id else None
        available = None if stock is None else self.available(stock)
        version = None if stock is None else stock.version
        return wire.ItemResult(sku, warehouse_id, False, available, version, code, message)

    def _writable(self, sku: str, warehouse_id: str) -> wire.ItemResult | StockState:
        if warehouse_id != self.warehouse_id:
            return self._refuse(sku, warehouse_id, wire.WAREHOUSE_NOT_FOUND, "no such warehouse")
        stock = self.items.get(sku)
        if stock is None:
            return self._refuse(sku, warehouse_id, wire.SKU_NOT_FOUND, "no stock item")
        if stock.is_combo:
            message = "a combo's count follows its components"
            return self._refuse(sku, warehouse_id, wire.COMBO_NOT_WRITABLE, message)
        return stock

    def apply_set(self, item: wire.SetItem, key: str) -> wire.ItemResult:
        """One row of a set call: compare-and-set through `Store.api_set`."""
        stock = self._writable(item.sku, item.warehouse_id)
        if isinstance(stock, wire.ItemResult):
            return stock
        if item.available < 0:
            return self._refuse(item.sku, item.warehouse_id, wire.INVALID_QUANTITY, "negative")
        assert stock.variant is not None
        before = stock.variant.available
        applied, after = self.store.api_set(
            stock.variant.inventory_item_id, item.available, key=key,
            expected=item.expected_available, reason="pisell set",
        )  # fmt: skip
        if not applied:
            message = f"expected {item.expected_available}, level holds {after}"
            return self._refuse(item.sku, item.warehouse_id, wire.STOCK_CONFLICT, message)
        return self._applied(stock, after - before, "stocktake")

    def apply_adjust(self, item: wire.AdjustItem, key: str) -> wire.ItemResult:
        """One row of an adjust call through `Store.api_adjust`; never below zero."""
        stock = self._writable(item.sku, item.warehouse_id)
        if isinstance(stock, wire.ItemResult):
            return stock
        assert stock.variant is not None
        if stock.variant.available + item.delta < 0:
            message = f"{stock.variant.available} available, delta {item.delta}"
            return self._refuse(item.sku, item.warehouse_id, wire.INSUFFICIENT_STOCK, message)
        self.store.api_adjust(
            stock.variant.inventory_item_id, item.delta, key=key, reason=f"pisell {item.type}"
        )
        return self._applied(stock, item.delta, item.type)

    def _applied(self, stock: StockState, delta: int, kind: str) -> wire.ItemResult:
        if delta == 0:
            self.touch(stock)  # the Store fired no change, but a success still bumps version
        self.record_movement(stock, delta, kind, "api")
        return wire.ItemResult(
            stock.sku, self.warehouse_id, True, self.available(stock), stock.version
        )

    # -- orders ------------------------------------------------------------------------------

    def expand(self, lines: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        """Order lines with every combo replaced by its components (UnknownSku if unknown)."""
        out: list[tuple[str, int]] = []
        for sku, quantity in lines:
            stock = self.items.get(sku)
            if stock is None:
                raise UnknownSku(sku)
            if stock.is_combo:
                out.extend((p.sku, p.quantity * quantity) for p in stock.components)
            else:
                out.append((sku, quantity))
        return out

    def shortage(self, lines: Iterable[tuple[str, int]]) -> str | None:
        """Why the (expanded) lines cannot be sold now, or None."""
        wanted: dict[str, int] = {}
        for sku, quantity in lines:
            wanted[sku] = wanted.get(sku, 0) + quantity
        for sku, quantity in wanted.items():
            have = self.available(self.items[sku])
            if have < quantity:
                return f"{sku}: {have} available, {quantity} ordered"
        return None

    def sell(self, lines: list[tuple[str, int]], shop_id: str) -> dict[str, Any]:
        """Book an order in IS now: components leave, `order.imported` goes out."""
        order = self.store.purchase(self.expand(lines))
        order["shop_id"] = shop_id
        order["sold_lines"] = [{"sku": sku, "quantity": qty} for sku, qty in lines]
        event = wire.order_event(order["id"], shop_id, self.warehouse_id, lines)
        self.emit(wire.TOPIC_ORDER_IMPORTED, event)
        return order

    def queue(self, lines: list[tuple[str, int]], shop_id: str) -> PendingOrder:
        """An order of a bound shop: it reaches IS on the next 15-minute pull."""
        now = self.now()
        ticks = int((now - self.started_at) // PULL_INTERVAL) + 1
        pending = PendingOrder(
            f"{shop_id}-{next(self._order_refs)}", shop_id, list(lines), now,
            self.started_at + ticks * PULL_INTERVAL,
        )  # fmt: skip
        self.pending.append(pending)
        return pending

    def pull(self) -> int:
        """Import every bound-shop order whose pull is due; returns how many were imported."""
        now = self.now()
        due = [p for p in self.pending if p.due_at <= now]
        self.pending = [p for p in self.pending if p.due_at > now]
        imported = 0
        for pending in due:
            try:
                self.sell(pending.lines, pending.shop_id)
                imported += 1
            except (ShortStock, UnknownSku) as exc:
                # The bound shop sold what IS no longer has: IS reports, it does not invent.
                for sku, quantity in pending.lines:
                    self._record(pending.shop_id, sku, "auto", "failed", quantity, str(exc))
        return imported

    # -- sync records ------------------------------------------------------------------------

    def _record(
        self, shop_id: str, sku: str, mode: str, status: str, quantity: int, message: str
    ) -> wire.SyncRecord:
        now = self.now()
        record = wire.SyncRecord(
            next(self._record_ids), shop_id, sku, mode, status, quantity, message, self.local(now)
        )
        self.sync_records.append((now, record))
        if status == "failed":
            self.emit(wire.TOPIC_SYNC_RECORD_FAILED, record.to_wire())
        return record

    def _auto_sync(self, stock: StockState) -> None:
        for shop in self.shops.values():
            if shop.platform != "pisell" and shop.stock_sync_enabled:
                self._record(shop.id, stock.sku, "auto", "success", self.available(stock), "")

    def push(self, shop: wire.Shop, skus: list[str]) -> list[wire.SyncRecord]:
        """A manual bulk push (库存同步 "bulk sync") of `skus` to a bound shop."""
        records = []
        for sku in skus:
            stock = self.items.get(sku)
            if not shop.stock_sync_enabled:
                records.append(self._record(shop.id, sku, "manual", "failed", 0, "sync is off"))
            elif stock is None:
                records.append(self._record(shop.id, sku, "manual", "failed", 0, "no stock item"))
            else:
                quantity = self.available(stock)
                records.append(self._record(shop.id, sku, "manual", "success", quantity, ""))
        return records
