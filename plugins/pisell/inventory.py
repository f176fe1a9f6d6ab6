"""The Pisell emulator's IS state: warehouses, stock items, levels, combos, movements, sync.

The kit's `Store` stays the one source of truth of *available* counts (so the control API,
`write_log` and the other emulators' tools keep working); this module keeps what IS adds on
top of it, in step through `on_change`: per stock item and warehouse `on_hand`, `locked` and
`version`, combos derived from their components, typed stock movements, sync records, and
orders of bound shops waiting for the 15-minute pull.

Warehouses: the kit's location n (`--locations N`) is IS warehouse `warehouses[n - 1]`, whose
id the emulator makes `str(n)`. Warehouse 1, the default, stocks every stock item (the kit's
primary location); another stocks a SKU once an admin's edit there does. A SKU's level exists
only in the warehouses that stock it: reads there list none, writes there are refused
(`SKU_NOT_STOCKED`), an order there is short (409).

Combos in several warehouses: a combo is stocked in a warehouse when every one of its
components is, and its count there is the minimum over its components of ⌊their count *in
that warehouse* / qty⌋. Selling one in warehouse n takes its components in warehouse n only:
IS ships an order from one warehouse and never makes up a set from two. Bound shops are
pushed a SKU's total over the warehouses that stock it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agent.emulator import PRIMARY, ShortStock, Store, UnknownSku, Variant
from plugins.pisell import wire

__all__ = ["PULL_INTERVAL", "Inventory", "LevelState", "PendingOrder", "StockState"]

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
class LevelState:
    """A stock item's level in one warehouse; a combo's keeps its last derived count."""

    on_hand: int = 0
    locked: int = 0
    version: int = 1
    updated_at: float = 0.0
    combo_available: int = 0


@dataclasses.dataclass(slots=True)
class StockState:
    """One stock item and its levels by location number (only where it is stocked); a combo
    has no variant."""

    id: int
    sku: str
    title: str
    created_at: float
    updated_at: float
    variant: Variant | None = None
    components: tuple[wire.Component, ...] = ()
    levels: dict[int, LevelState] = dataclasses.field(default_factory=dict)

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
    location: int = PRIMARY


class Inventory:
    """IS on top of the kit's `Store`: its warehouses and the shops bound to them."""

    def __init__(
        self,
        store: Store,
        *,
        now: Callable[[], float],
        emit: Emit,
        timezone: str,
        warehouses: Sequence[wire.Warehouse],
        shops: Iterable[wire.Shop],
    ) -> None:
        self.store = store
        self.now = now
        self.emit = emit
        self.timezone = timezone
        self.tz = wire.zone(timezone)
        # location n is warehouses[n - 1]; the first is the default warehouse
        self.warehouses = {n: w for n, w in enumerate(warehouses, PRIMARY)}
        self.location_of = {w.id: n for n, w in self.warehouses.items()}
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

    @property
    def warehouse_id(self) -> str:
        """The default warehouse's id (location 1)."""
        return self.warehouses[PRIMARY].id

    def wid(self, location: int) -> str:
        """The warehouse id of a location number."""
        return self.warehouses[location].id

    # -- catalogue ---------------------------------------------------------------------------

    def local(self, epoch: float) -> str:
        """Epoch seconds as the shop's local time string."""
        return wire.format_local(epoch, self.tz)

    def track(self, variant: Variant) -> StockState:
        """The stock item of a variant (created on first sight, with a level wherever the
        variant is stocked; a SKU keeps its first)."""
        stock = self.items.get(variant.sku)
        if stock is None:
            stamp = variant.updated_at or variant.created_at
            stock = StockState(
                next(self._item_ids), variant.sku, variant.title, variant.created_at, stamp,
                variant,
            )  # fmt: skip
            for location in variant.stocked_at():
                count = variant.count(location) or 0
                stock.levels[location] = LevelState(on_hand=count, updated_at=stamp)
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
        for location in self.warehouses:
            count = self.count(stock, location)
            if count is not None:
                stock.levels[location] = LevelState(updated_at=now, combo_available=count)
        self.items[sku] = stock
        for part in components:
            self.combos_of.setdefault(part.sku, []).append(sku)
        for location in stock.levels:
            self.emit(wire.TOPIC_INVENTORY_LEVEL_UPDATED, wire.level_event(sku, self.wid(location)))
        return stock

    def count(self, stock: StockState, location: int = PRIMARY) -> int | None:
        """A SKU's available count in a warehouse, None where it is not stocked; a combo's is
        min over components of ⌊avail / qty⌋ there, stocked where all its components are."""
        if stock.variant is not None:
            return stock.variant.count(location)
        counts = []
        for part in stock.components:
            component = self.items.get(part.sku)
            variant = None if component is None else component.variant
            have = None if variant is None else variant.count(location)
            if have is None:
                return None
            counts.append(max(0, have) // part.quantity)
        return min(counts, default=0)

    def available(self, stock: StockState, location: int = PRIMARY) -> int:
        """A SKU's available count in a warehouse (0 where it is not stocked)."""
        return self.count(stock, location) or 0

    def total(self, stock: StockState) -> int:
        """A SKU's available count over every warehouse that stocks it (what bound shops get)."""
        return sum(self.count(stock, location) or 0 for location in stock.levels)

    def stock_item(self, stock: StockState) -> wire.StockItem:
        """The wire row of a stock item."""
        return wire.StockItem(
            id=stock.id, sku=stock.sku, title=stock.title, is_combo=stock.is_combo,
            components=stock.components, created_at=self.local(stock.created_at),
            updated_at=self.local(stock.updated_at),
        )  # fmt: skip

    def level(self, stock: StockState, location: int = PRIMARY) -> wire.Level | None:
        """The wire row of a stock item's level in a warehouse; None where it is not stocked."""
        state = stock.levels.get(location)
        available = self.count(stock, location)
        if state is None or available is None:
            return None
        on_hand, locked = (available, 0) if stock.is_combo else (state.on_hand, state.locked)
        return wire.Level(
            sku=stock.sku, warehouse_id=self.wid(location), on_hand=on_hand, locked=locked,
            available=available, version=state.version, updated_at=self.local(state.updated_at),
        )  # fmt: skip

    # -- changes -----------------------------------------------------------------------------

    def on_change(
        self, variant: Variant, before: int, after: int, cause: str, location: int = PRIMARY
    ) -> None:
        """Keep on_hand/locked/version of the level at `location` in step with a Store change
        and tell subscribers (a warehouse's first edit of a SKU stocks it there)."""
        known = variant.sku in self.items
        stock = self.track(variant)  # a new one starts with its counts as on_hand
        if stock.variant is not variant:
            return  # a second variant with a known SKU is no stock item of IS
        level = stock.levels.get(location)
        if level is None:  # first stocked here: the change brings its whole count
            level = stock.levels[location] = LevelState()
        delta = after - before
        if not known:
            pass
        elif cause == "order":
            level.locked -= delta  # a sale locks stock; shipping would remove it
        elif cause in ("cancel", "refund"):
            unlock = min(level.locked, max(delta, 0))
            level.locked -= unlock
            level.on_hand += delta - unlock
        else:
            level.on_hand += delta
        self.touch(stock, location)
        if cause in _CAUSES:
            kind, source = _CAUSES[cause]
            self.record_movement(stock, delta, kind, source, location)
        event = wire.level_event(stock.sku, self.wid(location))
        self.emit(wire.TOPIC_INVENTORY_LEVEL_UPDATED, event)
        self._auto_sync(stock)
        self._update_combos(stock.sku, location)

    def touch(self, stock: StockState, location: int = PRIMARY) -> None:
        """Bump a level's version: every change and every successful write does."""
        level = stock.levels[location]
        level.version += 1
        level.updated_at = stock.updated_at = self.now()

    def record_movement(
        self, stock: StockState, delta: int, kind: str, source: str, location: int = PRIMARY
    ) -> None:
        """Append a stock movement in the warehouse of `location` and announce it."""
        now = self.now()
        movement = wire.Movement(
            id=next(self._movement_ids), direction="in" if delta >= 0 else "out", type=kind,
            sku=stock.sku, warehouse_id=self.wid(location), quantity=abs(delta),
            balance_after=self.available(stock, location), source=source,
            created_at=self.local(now),
        )  # fmt: skip
        self.movements.append((now, movement))
        self.emit(wire.TOPIC_STOCK_MOVEMENT_CREATED, movement.to_wire())

    def _update_combos(self, sku: str, location: int) -> None:
        for combo_sku in self.combos_of.get(sku, ()):
            combo = self.items[combo_sku]
            now_available = self.count(combo, location)
            if now_available is None:
                continue  # another component is not stocked here: neither is the combo
            level = combo.levels.get(location)
            if level is None:  # its last component is stocked here now: so is the combo
                level = combo.levels[location] = LevelState(combo_available=now_available)
            elif now_available == level.combo_available:
                continue
            level.combo_available = now_available
            self.touch(combo, location)
            event = wire.level_event(combo.sku, self.wid(location))
            self.emit(wire.TOPIC_INVENTORY_LEVEL_UPDATED, event)

    # -- API writes --------------------------------------------------------------------------

    def _refuse(self, sku: str, warehouse_id: str, code: str, message: str) -> wire.ItemResult:
        location = self.location_of.get(warehouse_id)
        stock = self.items.get(sku) if location is not None else None
        level = None if stock is None or location is None else stock.levels.get(location)
        available = None
        if stock is not None and level is not None and location is not None:
            available = self.count(stock, location)
        version = None if level is None else level.version
        return wire.ItemResult(sku, warehouse_id, False, available, version, code, message)

    def _writable(self, sku: str, warehouse_id: str) -> wire.ItemResult | tuple[Variant, int]:
        location = self.location_of.get(warehouse_id)
        if location is None:
            return self._refuse(sku, warehouse_id, wire.WAREHOUSE_NOT_FOUND, "no such warehouse")
        stock = self.items.get(sku)
        if stock is None:
            return self._refuse(sku, warehouse_id, wire.SKU_NOT_FOUND, "no stock item")
        if stock.variant is None:
            message = "a combo's count follows its components"
            return self._refuse(sku, warehouse_id, wire.COMBO_NOT_WRITABLE, message)
        if stock.variant.count(location) is None:
            message = f"warehouse {warehouse_id} does not stock {sku}"
            return self._refuse(sku, warehouse_id, wire.NOT_STOCKED, message)
        return stock.variant, location

    def apply_set(self, item: wire.SetItem, key: str) -> wire.ItemResult:
        """One row of a set call: compare-and-set through `Store.api_set`."""
        target = self._writable(item.sku, item.warehouse_id)
        if isinstance(target, wire.ItemResult):
            return target
        if item.available < 0:
            return self._refuse(item.sku, item.warehouse_id, wire.INVALID_QUANTITY, "negative")
        variant, location = target
        before = variant.count(location) or 0
        applied, after = self.store.api_set(
            variant.inventory_item_id, item.available, key=key,
            expected=item.expected_available, reason="pisell set", location=location,
        )  # fmt: skip
        if not applied:
            message = f"expected {item.expected_available}, level holds {after}"
            return self._refuse(item.sku, item.warehouse_id, wire.STOCK_CONFLICT, message)
        return self._applied(self.items[item.sku], location, after - before, "stocktake")

    def apply_adjust(self, item: wire.AdjustItem, key: str) -> wire.ItemResult:
        """One row of an adjust call through `Store.api_adjust`; never below zero."""
        target = self._writable(item.sku, item.warehouse_id)
        if isinstance(target, wire.ItemResult):
            return target
        variant, location = target
        have = variant.count(location) or 0
        if have + item.delta < 0:
            message = f"{have} available, delta {item.delta}"
            return self._refuse(item.sku, item.warehouse_id, wire.INSUFFICIENT_STOCK, message)
        self.store.api_adjust(
            variant.inventory_item_id, item.delta, key=key, reason=f"pisell {item.type}",
            location=location,
        )  # fmt: skip
        return self._applied(self.items[item.sku], location, item.delta, item.type)

    def _applied(self, stock: StockState, location: int, delta: int, kind: str) -> wire.ItemResult:
        if delta == 0:
            self.touch(stock, location)  # the Store fired no change; a success bumps version
        self.record_movement(stock, delta, kind, "api", location)
        return wire.ItemResult(
            stock.sku, self.wid(location), True, self.available(stock, location),
            stock.levels[location].version,
        )  # fmt: skip

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

    def shortage(self, lines: Iterable[tuple[str, int]], location: int = PRIMARY) -> str | None:
        """Why the (expanded) lines cannot be sold from the warehouse of `location` now, or
        None."""
        wanted: dict[str, int] = {}
        for sku, quantity in lines:
            wanted[sku] = wanted.get(sku, 0) + quantity
        for sku, quantity in wanted.items():
            have = self.count(self.items[sku], location)
            if have is None:
                return f"{sku} is not stocked in warehouse {self.wid(location)}"
            if have < quantity:
                return f"{sku}: {have} available, {quantity} ordered"
        return None

    def sell(
        self, lines: list[tuple[str, int]], shop_id: str, location: int = PRIMARY
    ) -> dict[str, Any]:
        """Book an order in IS now, shipped from the warehouse of `location`: components
        leave it, `order.imported` names it."""
        order = self.store.purchase(self.expand(lines), location)
        warehouse_id = self.wid(location)
        order["shop_id"] = shop_id
        order["warehouse_id"] = warehouse_id
        order["sold_lines"] = [{"sku": sku, "quantity": qty} for sku, qty in lines]
        event = wire.order_event(order["id"], shop_id, warehouse_id, lines)
        self.emit(wire.TOPIC_ORDER_IMPORTED, event)
        return order

    def queue(
        self, lines: list[tuple[str, int]], shop_id: str, location: int = PRIMARY
    ) -> PendingOrder:
        """An order of a bound shop: it reaches IS on the next 15-minute pull."""
        now = self.now()
        ticks = int((now - self.started_at) // PULL_INTERVAL) + 1
        pending = PendingOrder(
            f"{shop_id}-{next(self._order_refs)}", shop_id, list(lines), now,
            self.started_at + ticks * PULL_INTERVAL, location,
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
                self.sell(pending.lines, pending.shop_id, pending.location)
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
                self._record(shop.id, stock.sku, "auto", "success", self.total(stock), "")

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
                quantity = self.total(stock)
                records.append(self._record(shop.id, sku, "manual", "success", quantity, ""))
        return records
