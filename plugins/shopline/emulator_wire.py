"""Wire format of the SHOPLINE emulator: the REST objects its answers and webhooks carry."""

from __future__ import annotations

import re
from typing import Any

from agent.emulator import PRIMARY, Emulator, Variant
from plugins.shopline.emulator_http import API_VERSION, iso, shopline_id

__all__ = ["WireFormat"]


class WireFormat(Emulator):
    """The JSON objects of `ShoplineEmulator`, which keeps the restocks they read."""

    restocks: dict[int, tuple[str, float, int]]  # order -> (cause, at, refund id)

    # -- wire format -------------------------------------------------------------------------

    def _variant_json(self, v: Variant) -> dict[str, Any]:
        return {
            "id": shopline_id(v.variant_id),
            "product_id": shopline_id(v.product_id),
            "title": "Default Title",
            "sku": v.sku,
            "barcode": None,
            "price": "10.00",
            "inventory_item_id": shopline_id(v.inventory_item_id),
            "inventory_quantity": v.available + sum(v.levels.values()),  # over all locations
            "inventory_policy": "deny",
            "inventory_tracker": v.tracked,
            "created_at": iso(v.created_at),
            "updated_at": iso(v.updated_at),
        }

    def _products(self) -> dict[int, list[Variant]]:
        products: dict[int, list[Variant]] = {}
        for variant in self.store.variants.values():
            products.setdefault(variant.product_id, []).append(variant)
        return products

    def _product_json(self, product_id: int) -> dict[str, Any]:
        variants = self._products().get(product_id, [])
        first = variants[0]
        return {
            "id": shopline_id(product_id),
            "title": first.title,
            "handle": re.sub(r"[^a-z0-9]+", "-", first.title.lower()).strip("-"),
            "status": "active",
            "created_at": iso(first.created_at),
            "updated_at": iso(max(v.updated_at for v in variants)),
            "variants": [self._variant_json(v) for v in variants],
        }

    def _level_json(
        self, v: Variant, timestamp_key: str = "updated_at", *, location: int = PRIMARY
    ) -> dict[str, Any]:
        return {
            "inventory_item_id": shopline_id(v.inventory_item_id),
            "location_id": shopline_id(location),
            "variant_id": shopline_id(v.variant_id),
            "available": v.count(location),
            timestamp_key: iso(v.updated_at),
        }

    def _location_json(self, number: int) -> dict[str, Any]:
        if number == PRIMARY:
            name, address = "Default location", "1 Harbour Road"
        else:
            name, address = f"Location {number}", f"{number} Harbour Road"
        return {
            "id": shopline_id(number),
            "name": name,
            "active": True,
            "is_default": number == PRIMARY,
            "legacy": False,
            "address1": address,
            "city": "Hong Kong",
            "country_code": "HK",
        }

    def _order_json(self, order: dict[str, Any]) -> dict[str, Any]:
        # An order restocked straight through the store (not the control route) is a cancel.
        fallback = ("cancel", order["cancelled_at"], 0) if order["cancelled_at"] else ("", None, 0)
        cause, at, _refund = self.restocks.get(order["id"], fallback)
        cancelled = cause == "cancel"
        lines = [
            {
                "id": shopline_id(line["id"]),
                "variant_id": shopline_id(line["variant_id"]),
                "product_id": shopline_id(line["product_id"]),
                "sku": line["sku"],
                "quantity": line["quantity"],
                "fulfillable_quantity": 0 if cause else line["quantity"],
                "location_id": shopline_id(order.get("location", PRIMARY)),
            }
            for line in order["line_items"]
        ]
        return {
            "id": shopline_id(order["id"]),
            "name": order["name"],
            "status": "canceled" if cancelled else "open",
            "financial_status": {"cancel": "voided", "refund": "refunded"}.get(cause, "paid"),
            "cancelled_at": iso(at) if cancelled and at is not None else None,
            "cancel_reason": "customer" if cancelled else None,
            "created_at": iso(order["created_at"]),
            "updated_at": iso(at if at is not None else order["created_at"]),
            "line_items": lines,
            "refunds": [self._refund_json(order)] if cause == "refund" else [],
        }

    def _refund_json(self, order: dict[str, Any]) -> dict[str, Any]:
        _cause, at, refund_id = self.restocks[order["id"]]
        return {
            "id": shopline_id(refund_id),
            "order_id": shopline_id(order["id"]),
            "created_at": iso(at),
            "order_adjustments": [],
            "refund_line_items": [
                {
                    "line_item_id": shopline_id(line["id"]),
                    "quantity": line["quantity"],
                    "restock_type": "return",
                    "line_item": {
                        "id": shopline_id(line["id"]),
                        "sku": line["sku"],
                        "variant_id": shopline_id(line["variant_id"]),
                        "quantity": line["quantity"],
                    },
                }
                for line in order["line_items"]
            ],
        }

    def _subscription_json(self, sub_id: int) -> dict[str, Any]:
        sub = self.webhooks.subscriptions[sub_id]
        return {
            "id": sub.id,
            "address": sub.url,
            "topic": sub.topic,
            "api_version": sub.extra.get("api_version", API_VERSION),
            "created_at": iso(sub.created_at),
            "updated_at": iso(sub.extra.get("updated_at", sub.created_at)),
        }
