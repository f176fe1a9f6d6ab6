"""The SHOPLINE emulator's catalogue, location, inventory and order handlers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent.emulator import PRIMARY, Variant
from plugins.shopline.emulator_http import (
    ApiError,
    id_list,
    integer_field,
    iso,
    json_body,
    kit_number,
    paginated,
    shopline_id,
    time_filter,
)
from plugins.shopline.emulator_wire import WireFormat

__all__ = ["ORDERS_MAX_LIMIT", "ResourceRoutes"]

ORDERS_MAX_LIMIT = 100  # "the value must not exceed 100" (SDK order/get_orders.go)


class ResourceRoutes(WireFormat):
    """The product, inventory item, location, inventory level and order handlers of
    `ShoplineEmulator`, which routes them."""

    def _location_number(self, location_id: str) -> int | None:
        """The shop's location number behind a SHOPLINE location id; None if it has none."""
        number = kit_number(location_id)
        if number is None or shopline_id(number) != location_id:  # no leading zeros
            return None
        return number if PRIMARY <= number <= self.store.locations else None

    def _variant_of(self, body: dict[str, Any]) -> tuple[Variant, int]:
        """The variant of a write body's inventory item and the location it writes at: 400 for
        a malformed body, 404 for an unknown item, 422 for a location the shop does not have
        or one the item is not stocked at (wording unverified)."""
        item, location = body.get("inventory_item_id"), body.get("location_id")
        if not isinstance(item, str) or not isinstance(location, str):
            raise ApiError(400, "inventory_item_id and location_id must be strings")
        number = kit_number(item)
        variant = self.store.by_item.get(number) if number is not None else None
        if variant is None:
            raise ApiError(404, "Inventory item does not exist")
        at = self._location_number(location)
        if at is None:
            raise ApiError(422, {"location_id": ["location does not exist"]})
        if variant.count(at) is None:
            raise ApiError(422, {"inventory_item_id": ["is not stocked at this location"]})
        return variant, at

    # -- API handlers ------------------------------------------------------------------------

    async def _api_products(self, request: web.Request) -> web.Response:
        def rows(filters: dict[str, str]) -> list[tuple[int, Any]]:
            wanted = {kit_number(part.strip()) for part in filters.get("ids", "").split(",")}
            since = kit_number(filters["since_id"]) if filters.get("since_id") else None
            created_min = time_filter(filters, "created_at_min")
            updated_min = time_filter(filters, "updated_at_min")
            out = []
            for product_id, variants in self._products().items():
                if filters.get("ids") and product_id not in wanted:
                    continue
                if since is not None and product_id <= since:
                    continue
                if created_min is not None and int(variants[0].created_at) < created_min:
                    continue
                if updated_min is not None and max(int(v.updated_at) for v in variants) < (
                    updated_min
                ):
                    continue
                out.append((product_id, self._product_json(product_id)))
            return out

        self.stats["reads"] += 1
        names = ("ids", "since_id", "created_at_min", "updated_at_min")
        return paginated(request, "products", names, rows)

    async def _api_product(self, request: web.Request) -> web.Response:
        number = kit_number(request.match_info["product_id"])
        if number not in self._products():
            raise ApiError(404, "The product does not exist.")
        return web.json_response({"product": self._product_json(number)})

    async def _api_product_count(self, request: web.Request) -> web.Response:
        return web.json_response({"count": len(self._products())})

    async def _api_variants(self, request: web.Request) -> web.Response:
        number = kit_number(request.match_info["product_id"])
        variants = self._products().get(number) if number is not None else None
        if variants is None:
            raise ApiError(404, "The product does not exist.")

        def rows(filters: dict[str, str]) -> list[tuple[int, Any]]:
            return [(v.variant_id, self._variant_json(v)) for v in variants]

        return paginated(request, "variants", (), rows)

    async def _api_inventory_items(self, request: web.Request) -> web.Response:
        ids = id_list(request, "ids", 250) or []
        items = []
        for raw in ids:
            number = kit_number(raw)
            v = self.store.by_item.get(number) if number is not None else None
            if v is not None:
                items.append(
                    {
                        "id": raw,
                        "sku": v.sku,
                        "variant_id": shopline_id(v.variant_id),
                        "tracked": v.tracked,
                        "required_shipping": True,
                        "cost": "0.00",
                        "created_at": iso(v.created_at),
                        "updated_at": iso(v.updated_at),
                    }
                )
        return web.json_response({"inventory_items": items})

    async def _api_locations(self, request: web.Request) -> web.Response:
        numbers = range(PRIMARY, self.store.locations + 1)
        return web.json_response({"locations": [self._location_json(n) for n in numbers]})

    async def _api_location(self, request: web.Request) -> web.Response:
        number = self._location_number(request.match_info["location_id"])
        if number is None:
            raise ApiError(404, "The location does not exist.")
        return web.json_response({"location": self._location_json(number)})

    async def _api_location_count(self, request: web.Request) -> web.Response:
        return web.json_response({"count": self.store.locations})

    async def _api_levels(self, request: web.Request) -> web.Response:
        ids = id_list(request, "inventory_item_ids", 50)
        if ids is None:
            raise ApiError(400, "inventory_item_ids is required")
        filtered = id_list(request, "location_ids", 10)
        self.stats["reads"] += 1
        if filtered is None:
            numbers: list[int] = list(range(PRIMARY, self.store.locations + 1))
        else:  # a location the shop does not have just matches no level
            found = (self._location_number(location_id) for location_id in filtered)
            numbers = sorted({n for n in found if n is not None})
        levels: list[dict[str, Any]] = []
        for raw in ids:
            number = kit_number(raw)
            v = self.store.by_item.get(number) if number is not None else None
            if v is not None:
                levels.extend(
                    self._level_json(v, location=n) for n in numbers if v.count(n) is not None
                )
        return web.json_response({"inventory_levels": levels})

    async def _api_set(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        variant, location = self._variant_of(body)
        available = integer_field(body, "available")
        self.store.api_set(variant.inventory_item_id, available, location=location)
        self.stats["writes"] += 1
        if self.take_timeout_after_apply():
            return self.drop_connection(request)
        return web.json_response({"inventory_level": self._level_json(variant, location=location)})

    async def _api_adjust(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        variant, location = self._variant_of(body)
        delta = integer_field(body, "available_adjustment")
        self.store.api_adjust(variant.inventory_item_id, delta, location=location)
        self.stats["writes"] += 1
        if self.take_timeout_after_apply():
            return self.drop_connection(request)
        # SHOPLINE's docs and SDK both spell this key `update_at` for adjust.
        level = self._level_json(variant, "update_at", location=location)
        return web.json_response({"inventory_level": level})

    async def _api_orders(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "open")
        if status not in ("open", "cancelled", "any"):
            raise ApiError(400, "status must be open, cancelled or any")

        time_names = ("created_at_min", "created_at_max", "updated_at_min", "updated_at_max")

        def rows(filters: dict[str, str]) -> list[tuple[int, Any]]:
            bounds = {name: time_filter(filters, name) for name in time_names}
            wanted = filters.get("status", "open")
            out = []
            for order in self.store.orders:
                body = self._order_json(order)
                created = order["created_at"]
                updated = max(created, order["cancelled_at"] or created)  # a restock updates it
                if wanted != "any" and (body["status"] == "canceled") != (wanted == "cancelled"):
                    continue
                checks = (
                    ("created_at_min", created, 1),
                    ("created_at_max", created, -1),
                    ("updated_at_min", updated, 1),
                    ("updated_at_max", updated, -1),
                )
                # Compare whole seconds, as the times are printed.
                if any(
                    (bound := bounds[name]) is not None and (int(at) - bound) * sign < 0
                    for name, at, sign in checks
                ):
                    continue
                out.append((order["id"], body))
            return out

        return paginated(request, "orders", ("status", *time_names), rows, maximum=ORDERS_MAX_LIMIT)
