"""The Pisell emulator's control API: the kit's `/_emulator` contract, Pisell's way.

Orders, edits and inventory reads act on a warehouse, named by the kit's `"location": n` or by
Pisell's `"warehouse_id"` (see `emulator.py`); the rest are Pisell's extras (combos, bound
shops, its clock and `latency` fault). `PisellEmulator` builds on this class.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from aiohttp import web

from agent.emulator import PRIMARY, Emulator, ShortStock, UnknownSku, Variant, json_error
from plugins.pisell import wire
from plugins.pisell.inventory import Inventory

__all__ = ["ControlRoutes"]


def _control_error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    """A control-API error to raise: `kind` (an HTTP status) with `{"error": message}`."""
    return kind(text=json.dumps({"error": message}), content_type="application/json")


class ControlRoutes(Emulator):
    """The control handlers of `PisellEmulator`, which sets the state they act on."""

    inventory: Inventory
    offset: float  # IS time = wall time + offset
    latency: float  # seconds before every API answer (a fault)

    def now(self) -> float:
        """IS time (`PisellEmulator` says how it is kept)."""
        raise NotImplementedError

    async def _body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    async def _control_body(self, request: web.Request) -> dict[str, Any]:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise _control_error(web.HTTPBadRequest, "body must be a JSON object")
        self._where(body.get("location"), body.get("warehouse_id"))
        return body

    def _where(self, location: Any, warehouse_id: Any) -> int:
        """The location a control call names, as the kit's number or Pisell's warehouse id
        (default 1); an unknown warehouse is a 404, a bad or contradictory location a 400."""
        by_id = None
        if warehouse_id is not None:
            by_id = self.inventory.location_of.get(str(warehouse_id))
            if by_id is None:
                raise _control_error(web.HTTPNotFound, "no such warehouse")
        if location is None:
            return PRIMARY if by_id is None else by_id
        try:
            number = self.store.check_location(location)
        except ValueError as exc:
            raise _control_error(web.HTTPBadRequest, str(exc)) from None
        if by_id is not None and by_id != number:
            message = (
                f"location {number} is warehouse {self.inventory.wid(number)}, not {warehouse_id}"
            )
            raise _control_error(web.HTTPBadRequest, message)
        return number

    async def _h_order(self, request: web.Request) -> web.Response:
        """A purchase in the Pisell store (booked now) or in a bound shop (on the next pull)."""
        body = await self._control_body(request)
        lines = body.get("line_items")
        if not isinstance(lines, list) or not lines:
            return json_error(400, "line_items must be a non-empty list")
        parsed: list[tuple[str, int]] = []
        for line in lines:
            sku = line.get("sku") if isinstance(line, dict) else None
            quantity = line.get("quantity") if isinstance(line, dict) else None
            if not isinstance(sku, str) or type(quantity) is not int or quantity <= 0:
                return json_error(400, "each line needs a sku and a positive integer quantity")
            parsed.append((sku, quantity))
        shop = self.inventory.shops.get(str(body.get("shop_id", "1")))
        if shop is None:
            return json_error(404, "no such shop")
        location = self._where(body.get("location"), body.get("warehouse_id"))
        try:
            expanded = self.inventory.expand(parsed)
        except UnknownSku as exc:
            return json_error(404, f"unknown sku {exc.args[0]}")
        short = self.inventory.shortage(expanded, location)
        if short is not None:
            return json_error(409, f"not enough stock: {short}")
        if shop.platform != "pisell":
            pending = self.inventory.queue(parsed, shop.id, location)
            import_after = self.inventory.local(pending.due_at)
            return web.json_response(
                {"order": {"ref": pending.ref, "shop_id": shop.id, "status": "pending_import",
                           "warehouse_id": self.inventory.wid(location),
                           "import_after": import_after}}, status=202,
            )  # fmt: skip
        if not self.store.storefront_open:
            return json_error(423, "the storefront is closed for maintenance")
        try:
            order = self.inventory.sell(parsed, shop.id, location)
        except ShortStock as exc:
            return json_error(409, f"not enough stock: {exc}")
        return web.json_response({"order": order}, status=201)

    async def _h_edit(self, request: web.Request) -> web.Response:
        """An admin's edit of a SKU's count in a warehouse (which stocks it from then on)."""
        body = await self._control_body(request)
        location = self._where(body.get("location"), body.get("warehouse_id"))
        sku, available = body.get("sku"), body.get("available")
        if not isinstance(sku, str):
            return json_error(400, "sku must be a string")
        if type(available) is not int:
            return json_error(400, "available must be an integer")
        stock = self.inventory.items.get(sku)
        if stock is not None and stock.is_combo:
            return json_error(409, "a combo's count follows its components")
        try:
            before = self.store.find_sku(sku).count(location)
            variant = self.store.edit(sku, available, location)
        except UnknownSku:
            return json_error(404, f"unknown sku {sku}")
        answer = {"sku": variant.sku, "available": variant.count(location), "before": before}
        if location != PRIMARY:
            answer |= {"location": location, "warehouse_id": self.inventory.wid(location)}
        return web.json_response(answer)

    async def _h_product(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        if self._where(body.get("location"), body.get("warehouse_id")) != PRIMARY:
            message = "a new stock item is stocked in warehouse 1; edit it into another"
            return json_error(400, message)
        sku = body.get("sku")
        if isinstance(sku, str) and not sku.strip():
            return json_error(400, "an IS stock item needs a SKU")
        if isinstance(sku, str) and sku.strip() in self.inventory.items:
            return json_error(409, f"a stock item with sku {sku.strip()} exists (IS keys by SKU)")
        return await super()._h_product(request)

    async def _h_inventory(self, request: web.Request) -> web.Response:
        """`{sku: available}` in one warehouse, of the SKUs it stocks."""
        raw = request.query.get("location")
        location = self._where(
            None if raw is None else int(raw) if raw.isdigit() else raw,
            request.query.get(wire.Q_WAREHOUSE),
        )
        inv = self.inventory
        counts = {sku: inv.count(stock, location) for sku, stock in inv.items.items()}
        return web.json_response({sku: n for sku, n in counts.items() if n is not None})

    def _item_json(self, variant: Variant) -> dict[str, Any]:
        item_id = wire.format_item_id(variant.sku, self.inventory.warehouse_id)
        stock = self.inventory.items.get(variant.sku)
        return {**super()._item_json(variant), "item_id": item_id,
                "stock_item_id": None if stock is None else stock.id}  # fmt: skip

    async def _h_combo(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        sku, title = body.get("sku"), body.get("title")
        if not isinstance(sku, str) or not sku.strip():
            return json_error(400, "sku must be a non-empty string")
        if sku in self.inventory.items:
            return json_error(409, f"a stock item with sku {sku} exists")
        try:
            parts = [wire.Component.from_wire(p) for p in body.get("components") or []]
            if not parts:
                raise ValueError("components must be a non-empty list")
            stock = self.inventory.add_combo(sku, str(title or f"Combo {sku}"), parts)
        except KeyError as exc:
            return json_error(404, f"unknown component {exc.args[0]}")
        except (ValueError, TypeError) as exc:
            return json_error(400, str(exc))
        item = self.inventory.stock_item(stock).to_wire()
        return web.json_response({**item, "available": self.inventory.available(stock)}, status=201)

    async def _h_advance(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        seconds = body.get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            return json_error(400, "seconds must be a non-negative number")
        self.offset += float(seconds)
        imported = self.inventory.pull()
        return web.json_response({"now": self.inventory.local(self.now()), "imported": imported})

    async def _h_bind_shop(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        platform, domain = body.get("platform"), body.get("domain")
        if platform not in ("shopify", "ebay", "kogan", "pisell") or not isinstance(domain, str):
            return json_error(400, "platform (shopify, ebay, kogan, pisell) and domain required")
        shops = self.inventory.shops
        shop = wire.Shop(
            str(max(int(s) for s in shops) + 1), platform, str(body.get("name") or domain),
            domain, self.inventory.timezone, bool(body.get("stock_sync_enabled", True)),
        )  # fmt: skip
        shops[shop.id] = shop
        return web.json_response(shop.to_wire(), status=201)

    async def _h_faults(self, request: web.Request) -> web.Response:
        """The kit's faults, plus `latency` (seconds before every API answer)."""
        body = await self._body(request)
        if not isinstance(body, dict):
            return json_error(400, "body must be a JSON object")
        latency = body.pop("latency", self.latency)
        if not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0:
            return json_error(400, "latency must be a non-negative number")
        rate_limit = body.pop("rate_limit", self.bucket.enabled)
        if not isinstance(rate_limit, bool):
            return json_error(400, "rate_limit must be true or false")
        try:
            self.faults.update(body)
        except ValueError as exc:
            return json_error(400, str(exc))
        self.latency, self.bucket.enabled = float(latency), rate_limit
        state = {**dataclasses.asdict(self.faults), "rate_limit": rate_limit, "latency": latency}
        return web.json_response(state)
