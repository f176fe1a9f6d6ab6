"""Read side of the Shopify emulator's GraphQL API: object shapes, pagination, search, root."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from graphql import GraphQLError, GraphQLResolveInfo

from agent.emulator import Subscription, Variant

if TYPE_CHECKING:
    from plugins.shopify.emulator import ShopifyEmulator

__all__ = [
    "LOCATION_GID",
    "LOCATION_ID",
    "TOPICS",
    "Graph",
    "QueryRoot",
    "RequestContext",
    "gid",
    "inventory_quantity",
    "iso",
    "parse_gid",
]

T = TypeVar("T")

LOCATION_ID = 1
LOCATION_GID = f"gid://shopify/Location/{LOCATION_ID}"
QUANTITY_NAMES = (
    "available",
    "on_hand",
    "committed",
    "incoming",
    "reserved",
    "damaged",
    "safety_stock",
    "quality_control",
)
# GraphQL enum name -> the REST topic the webhook carries in X-Shopify-Topic.
TOPICS = {
    "APP_UNINSTALLED": "app/uninstalled",
    "BULK_OPERATIONS_FINISH": "bulk_operations/finish",
    "INVENTORY_ITEMS_UPDATE": "inventory_items/update",
    "INVENTORY_LEVELS_UPDATE": "inventory_levels/update",
    "ORDERS_CANCELLED": "orders/cancelled",
    "ORDERS_CREATE": "orders/create",
    "PRODUCTS_CREATE": "products/create",
    "PRODUCTS_UPDATE": "products/update",
    "REFUNDS_CREATE": "refunds/create",
}
_TOPIC_ENUMS = {rest: enum for enum, rest in TOPICS.items()}
_GID = re.compile(r"^gid://shopify/(\w+)/(\d+)(?:\?.*)?$")


@dataclasses.dataclass(slots=True)
class RequestContext:
    """Per-request state the resolvers share with the HTTP handler."""

    version: str
    base_url: str
    bulk: bool = False
    drop_after: bool = False  # set by a write that must be answered by a dropped connection


def gid(kind: str, number: int) -> str:
    """A Shopify global id, e.g. ``gid://shopify/InventoryItem/123``."""
    return f"gid://shopify/{kind}/{number}"


def parse_gid(value: object, kind: str) -> int | None:
    """The number in a gid of `kind`, or None if `value` is not one."""
    match = _GID.match(value) if isinstance(value, str) else None
    if match is None or match.group(1) != kind:
        return None
    return int(match.group(2))


def iso(ts: float) -> str:
    """GraphQL DateTime: UTC with milliseconds (seconds alone would tie new SKUs too often)."""
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def level_time(ts: float) -> str:
    """An inventory level's time as Shopify gives it: whole seconds (two changes of one
    second share it, which the agent must tell apart by reading)."""
    moment = dt.datetime.fromtimestamp(int(ts), dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def inventory_quantity(v: Variant) -> int:
    """`ProductVariant.inventoryQuantity`: the sum of its available counts at every location."""
    return v.available + sum(v.levels.values())


def _cursor(number: int) -> str:
    raw = json.dumps({"last_id": number, "last_value": str(number)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_id(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))["last_id"]
        if not isinstance(value, int):
            raise TypeError
        return value
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor}") from None


def connection(
    items: Sequence[T],
    number: Callable[[T], int],
    to_node: Callable[[T], dict[str, Any]],
    args: dict[str, Any],
    *,
    bulk: bool = False,
) -> dict[str, Any]:
    """A Relay connection page over `items` (already in order) with opaque cursors."""
    first, last = args.get("first"), args.get("last")
    if first is None and last is None and not bulk:
        raise GraphQLError("you must provide one of first or last")
    for name, size in (("first", first), ("last", last)):
        if size is not None and size < 0:
            raise GraphQLError(f"{name} must be a non-negative integer")
    ordered = list(reversed(items)) if args.get("reverse") else list(items)
    numbers = [number(i) for i in ordered]
    start, stop = 0, len(ordered)
    if args.get("after") is not None:
        start = _position(numbers, _cursor_id(args["after"])) + 1
    if args.get("before") is not None:
        stop = _position(numbers, _cursor_id(args["before"]))
    window = range(start, max(start, stop))
    if first is not None:
        window = window[:first]
    if last is not None:
        window = window[max(0, len(window) - last) :]
    page = [ordered[i] for i in window]
    nodes = [to_node(i) for i in page]
    cursors = [_cursor(number(i)) for i in page]
    return {
        "nodes": nodes,
        "edges": [{"cursor": c, "node": n} for c, n in zip(cursors, nodes, strict=True)],
        "pageInfo": {
            "hasNextPage": bool(window) and window[-1] + 1 < len(ordered),
            "hasPreviousPage": bool(window) and window[0] > 0,
            "startCursor": cursors[0] if cursors else None,
            "endCursor": cursors[-1] if cursors else None,
        },
    }


def _position(numbers: list[int], wanted: int) -> int:
    try:
        return numbers.index(wanted)
    except ValueError:
        raise GraphQLError("Invalid cursor: the item it points to no longer exists") from None


def search(query: str | None) -> Callable[[Variant], bool]:
    """A predicate for Shopify's search syntax, enough of it for a sync app.

    Supports ``sku:X``, ``sku:X*`` (prefix), quoted values, ``id:N``, ``title:X``, bare words
    (matched in SKU and title), implicit or explicit ``AND`` and ``OR``. Unknown fields are
    ignored, as Shopify ignores filters it does not index.
    """
    if not query or not query.strip():
        return lambda v: True
    disjuncts = [part for part in re.split(r"\s+OR\s+", query.strip()) if part]
    clauses = [
        [t for t in re.findall(r"(?:[^\s\"']+|\"[^\"]*\"|'[^']*')+", part) if t != "AND"]
        for part in disjuncts
    ]

    def term_matches(term: str, v: Variant) -> bool:
        field, sep, value = term.partition(":")
        if not sep:
            field, value = "", term
        value = value.strip("\"'")
        prefix = value.endswith("*")
        value = value.rstrip("*")

        def match(text: str) -> bool:
            text_l, value_l = text.lower(), value.lower()
            return text_l.startswith(value_l) if prefix else text_l == value_l

        if field == "sku":
            return match(v.sku)
        if field == "id":
            return value.isdigit() and int(value) == v.variant_id
        if field in ("title", "product_title"):
            return match(v.title)
        if field == "":
            return value.lower() in v.sku.lower() or value.lower() in v.title.lower()
        return True

    return lambda v: any(all(term_matches(t, v) for t in terms) for terms in clauses)


class Graph:
    """Builds the API's objects from the store and answers the QueryRoot fields.

    Objects are dicts (with ``__typename`` for the ``Node`` interface); fields that take
    arguments are callables, which graphql-core's default resolver calls with the arguments.
    """

    def __init__(self, emulator: ShopifyEmulator) -> None:
        self.emu = emulator

    # -- object shapes -------------------------------------------------------------------------

    def location_ids(self) -> list[int]:
        """The shop's locations in Shopify's default order, by name; the primary one
        (`LOCATION_ID`, which stocks every variant) comes last when there are several."""
        numbers = range(LOCATION_ID, LOCATION_ID + max(1, self.emu.options.locations))
        return sorted(numbers, key=lambda n: self.location_obj(n)["name"])

    def location_obj(self, number: int = LOCATION_ID) -> dict[str, Any]:
        """A location of the shop: the primary one (which stocks every variant), or an annex
        (which stocks what an edit there stocked)."""
        return {
            "__typename": "Location",
            "id": gid("Location", number),
            "name": "Shop location" if number == LOCATION_ID else f"Annex {number}",
            "isActive": True,
        }

    def product(self, v: Variant) -> dict[str, Any]:
        """The product of a variant (one variant per product in the emulator)."""
        return {
            "__typename": "Product",
            "id": gid("Product", v.product_id),
            "title": v.title,
            "createdAt": iso(v.created_at),
            "updatedAt": iso(v.updated_at),
        }

    def variant(self, v: Variant) -> dict[str, Any]:
        """A ProductVariant."""
        return {
            "__typename": "ProductVariant",
            "id": gid("ProductVariant", v.variant_id),
            "sku": v.sku,
            "title": "Default Title",
            "displayName": f"{v.title} - Default Title",
            "createdAt": iso(v.created_at),
            "updatedAt": iso(v.updated_at),
            "inventoryQuantity": inventory_quantity(v),
            "inventoryPolicy": "DENY",
            "inventoryItem": lambda info: self.item(v),
            "product": lambda info: self.product(v),
        }

    def item(self, v: Variant) -> dict[str, Any]:
        """An InventoryItem; `inventoryLevel` is null where the item is not stocked."""

        def level(info: GraphQLResolveInfo, locationId: str) -> dict[str, Any] | None:
            if locationId == LOCATION_GID:
                return self.level(v)
            number = parse_gid(locationId, "Location")
            return self.level(v, number) if number is not None else None

        def levels(info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
            stocked = [n for n in v.stocked_at() if self.level(v, n) is not None]
            return connection(
                stocked, int, lambda n: self.level(v, n) or {}, args, bulk=info.context.bulk
            )

        return {
            "__typename": "InventoryItem",
            "id": gid("InventoryItem", v.inventory_item_id),
            "sku": v.sku,
            "tracked": v.tracked,
            "createdAt": iso(v.created_at),
            "updatedAt": iso(v.updated_at),
            "inventoryLevel": level,
            "inventoryLevels": levels,
            "variant": lambda info: self.variant(v),
        }

    def level(self, v: Variant, location: int = LOCATION_ID) -> dict[str, Any] | None:
        """The InventoryLevel of a variant at `location` (None where it is not stocked)."""
        if location == LOCATION_ID:
            if v.inventory_item_id in self.emu.unstocked:
                return None
            values = {
                "available": v.available,
                "on_hand": v.available + v.committed,
                "committed": v.committed,
            }
            updated = v.updated_at
        else:
            count = v.count(location)
            if count is None:
                return None
            # orders at an annex take the units at once (no committed state kept there)
            values = {"available": count, "on_hand": count}
            updated = self.emu.level_time(v, location)

        def quantities(info: GraphQLResolveInfo, names: list[str]) -> list[dict[str, Any]]:
            unknown = [n for n in names if n not in QUANTITY_NAMES]
            if unknown:
                raise GraphQLError(f"Invalid quantity name(s): {', '.join(unknown)}")
            return [
                {
                    "id": f"{gid('InventoryQuantity', v.inventory_item_id)}?name={n}",
                    "name": n,
                    "quantity": values.get(n, 0),
                    "updatedAt": level_time(updated),
                }
                for n in names
            ]

        return {
            "__typename": "InventoryLevel",
            "id": f"{gid('InventoryLevel', location)}?inventory_item_id={v.inventory_item_id}",
            "quantities": quantities,
            "location": self.location_obj(location),
            "item": lambda info: self.item(v),
            "createdAt": iso(v.created_at),
            "updatedAt": level_time(updated),
        }

    def subscription(self, sub: Subscription) -> dict[str, Any]:
        """A WebhookSubscription."""
        return {
            "__typename": "WebhookSubscription",
            "id": gid("WebhookSubscription", sub.id),
            "topic": _TOPIC_ENUMS.get(sub.topic, sub.topic.upper().replace("/", "_")),
            "uri": sub.url,
            "callbackUrl": sub.url,
            "format": sub.extra.get("format", "JSON"),
            "createdAt": iso(sub.created_at),
            "updatedAt": iso(sub.created_at),
        }

    def node_by_gid(self, value: str) -> dict[str, Any] | None:
        """Any object the emulator knows by gid, or None."""
        match = _GID.match(value)
        if match is None:
            raise GraphQLError(f"Invalid global id '{value}'")
        kind, number = match.group(1), int(match.group(2))
        store = self.emu.store
        if kind == "InventoryItem" and number in store.by_item:
            return self.item(store.by_item[number])
        if kind == "ProductVariant" and number in store.variants:
            return self.variant(store.variants[number])
        if kind == "Product":
            found = next((v for v in store.variants.values() if v.product_id == number), None)
            return self.product(found) if found else None
        if kind == "Location" and number in self.location_ids():
            return self.location_obj(number)
        if kind == "WebhookSubscription" and number in self.emu.webhooks.subscriptions:
            return self.subscription(self.emu.webhooks.subscriptions[number])
        if kind == "BulkOperation" and number in self.emu.bulk.operations:
            return self.emu.bulk.operations[number].as_node()
        return None


class QueryRoot:
    """The QueryRoot fields; graphql-core's default resolver calls them with their arguments."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.emu = graph.emu

    def productVariants(self, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
        matches = search(args.get("query"))
        # the list first (one step under the GIL): a bulk query reads this from its own thread
        variants = [v for v in list(self.emu.store.variants.values()) if matches(v)]
        return connection(
            variants, lambda v: v.variant_id, self.graph.variant, args, bulk=info.context.bulk
        )

    def productVariant(self, info: GraphQLResolveInfo, id: str) -> dict[str, Any] | None:
        number = parse_gid(id, "ProductVariant")
        variant = self.emu.store.variants.get(number) if number is not None else None
        return self.graph.variant(variant) if variant else None

    def nodes(self, info: GraphQLResolveInfo, ids: list[str]) -> list[dict[str, Any] | None]:
        return [self.graph.node_by_gid(i) for i in ids]

    def node(self, info: GraphQLResolveInfo, id: str) -> dict[str, Any] | None:
        return self.graph.node_by_gid(id)

    def currentAppInstallation(self, info: GraphQLResolveInfo) -> dict[str, Any]:
        scopes = [s.strip() for s in self.emu.granted_scopes.split(",") if s.strip()]
        return {"accessScopes": [{"handle": s, "description": s} for s in scopes]}

    def inventoryItem(self, info: GraphQLResolveInfo, id: str) -> dict[str, Any] | None:
        number = parse_gid(id, "InventoryItem")
        variant = self.emu.store.by_item.get(number) if number is not None else None
        return self.graph.item(variant) if variant else None

    def location(self, info: GraphQLResolveInfo, id: str | None = None) -> dict[str, Any] | None:
        """The location `id`; without one, the shop's primary location (as Shopify documents)."""
        if id is None:
            return self.graph.location_obj()
        return self.graph.node_by_gid(id) if parse_gid(id, "Location") else None

    def locations(self, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
        return connection(self.graph.location_ids(), int, self.graph.location_obj, args)

    def currentBulkOperation(
        self, info: GraphQLResolveInfo, type: str = "QUERY"
    ) -> dict[str, Any] | None:
        op = self.emu.bulk.current(advance=True)
        return op.as_node() if op is not None and type == "QUERY" else None

    def webhookSubscriptions(self, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
        topics = args.get("topics")
        subs = sorted(self.emu.webhooks.subscriptions.values(), key=lambda s: s.id)
        if topics:
            wanted = {TOPICS.get(t, t) for t in topics}
            subs = [s for s in subs if s.topic in wanted]
        return connection(subs, lambda s: s.id, self.graph.subscription, args)
