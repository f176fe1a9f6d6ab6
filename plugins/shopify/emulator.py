"""An emulator of the Shopify Admin GraphQL API subset shopsync uses (see platforms/shopify.md).

`POST /admin/api/{version}/graphql.json` parses, validates and executes with graphql-core
against `schema.py`, charges the query cost (`emulator_cost.py`) to a leaky bucket sized by
plan, and answers like Shopify: `data`, `errors` and `extensions.cost` on every reply, HTTP 200
``THROTTLED`` and ``MAX_COST_EXCEEDED``, 401 on a bad token, 404 on an unknown version. Stock
changes emit signed, REST-shaped webhooks. Extras beside the common control API:
``GET /_emulator/bulk/{id}.jsonl`` (bulk results) and ``POST /_emulator/shopify/items``
``{"sku", "tracked"?, "stocked"?}`` (make an item untracked or not stocked at the location),
``POST /_emulator/shopify/idempotency`` ``{"fail_attempts": n}`` (the next n
``inventorySetQuantities`` attempts fail internally; their keys then answer
``IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED``).

Tokens: the configured static token (a legacy custom app's ``shpat_``) never expires; a Dev
Dashboard app gets tokens from ``POST /admin/oauth/access_token`` (client credentials:
``client_id`` = `EmulatorOptions.client_id`, ``client_secret`` = the webhook secret, form or
JSON body), which answer ``{"access_token", "scope", "expires_in": 86399}`` and then 401 like a
wrong token once expired on the emulator's clock.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    OperationType,
    execute_sync,
    get_operation_ast,
    parse,
    validate,
)
from graphql.execution.values import get_variable_values

from agent.emulator import (
    Emulator,
    EmulatorOptions,
    LeakyBucket,
    UnknownSku,
    Variant,
    json_error,
)
from plugins.shopify.emulator_bulk import BulkRunner
from plugins.shopify.emulator_cost import CostModel, LimitExceeded
from plugins.shopify.emulator_graph import (
    LOCATION_ID,
    Graph,
    QueryRoot,
    RequestContext,
    gid,
    inventory_quantity,
)
from plugins.shopify.emulator_mutations import MutationRoot
from plugins.shopify.schema import LATEST_VERSION, VERSIONS, schema_for

__all__ = ["MAX_QUERY_COST", "PLANS", "ShopifyEmulator"]

log = structlog.get_logger(__name__)

# plan -> (bucket size in points, restore rate in points per second), shopify.md §4
PLANS = {
    "standard": (2000, 100),
    "advanced": (4000, 200),
    "plus": (20000, 1000),
    "enterprise": (40000, 2000),
}
MAX_QUERY_COST = 1000
_STATUS_BODIES = {
    402: "Unavailable Shop",
    403: "Forbidden",
    423: "Locked",
    429: "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service.",  # noqa: E501
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_UNAUTHORIZED = "[API] Invalid API key or access token (unrecognized login or wrong password)"
# What a Dev Dashboard app is granted when it asks for the scopes shopsync needs (shopify.md §6).
GRANTED_SCOPES = "read_inventory,write_inventory,read_products,read_orders,read_locations"
# The scope each root field needs (a write scope includes its read scope); the others need none.
FIELD_SCOPES = {
    "productVariants": "read_products",
    "productVariant": "read_products",
    "nodes": "read_inventory",
    "node": "read_inventory",
    "inventoryItem": "read_inventory",
    "location": "read_locations",
    "locations": "read_locations",
    "inventorySetQuantities": "write_inventory",
    "inventoryAdjustQuantities": "write_inventory",
    "inventoryActivate": "write_inventory",
}
_EVENT_NAMESPACE = uuid.UUID("8a1d6f0e-3c52-4d1b-9e4f-7b0c2a9d5e31")


def _max_cost_message(cost: int) -> str:
    return (
        f"Query cost is {cost}, which exceeds the single query max cost limit "
        f"({MAX_QUERY_COST}).\n\nSee https://shopify.dev/concepts/about-apis/rate-limits for "
        "more information on how the\ncost of a query is calculated.\n\nTo query larger "
        "amounts of data with fewer limits, bulk operations should be used instead."
    )


def _oauth_error(code: str, description: str) -> web.Response:
    # RFC 6749 §5.2's body, which Shopify's token endpoint answers for a bad code grant
    # ({"error":"invalid_request","error_description":...}, HTTP 400, seen in client issues);
    # the codes for a wrong client secret or grant type are RFC 6749's (unverified for Shopify).
    return web.json_response({"error": code, "error_description": description}, status=400)


def _app_not_installed() -> web.Response:
    # A client id that no app installed on this shop has: Shopify answers HTTP 400 "Oauth error
    # app_not_installed: The application is not installed on this shop." (community.shopify.dev
    # t/33287, 2026); that it comes as an HTML page, not JSON, is unverified.
    text = "Oauth error app_not_installed: The application is not installed on this shop."
    return web.Response(status=400, text=f"<html><body><p>{text}</p></body></html>",
                        content_type="text/html")  # fmt: skip


def _rest_time(ts: float, timespec: str = "milliseconds") -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec=timespec)


@functools.lru_cache(maxsize=256)
def _checked(version: str, query: str) -> tuple[DocumentNode | None, tuple[Any, ...]]:
    """A query parsed and validated against its version's schema: the document, or None and
    the errors. Kept for the next request with the same text (an app sends a few queries
    over and over; validating each again was most of the emulator's time under load)."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        return None, (exc.formatted,)
    errors = validate(schema_for(version), document)
    if errors:
        return None, tuple(e.formatted for e in errors)
    return document, ()


class ShopifyEmulator(Emulator):
    """One emulated Shopify shop: its primary location ``gid://shopify/Location/1`` stocks
    every variant; with ``--locations N`` the annexes ``gid://shopify/Location/2`` to ``N``
    (whose names sort before the primary's) stock what an edit there stocked. The API reads and
    writes levels at any of them; a change at an annex sends its own
    ``inventory_levels/update``, and an order fulfilled there says its ``location_id``."""

    name = "shopify"
    token_lifetime = 86399.0  # the client-credentials grant's expires_in
    webhook_delete_after = 1  # a delivery that failed its 8 tries over 4 h (shopify.md §5)
    token_prefix = "shpat_"

    def __init__(self, options: EmulatorOptions, *, clock: Callable[[], float] = time.time):
        if options.plan not in PLANS:
            raise ValueError(f"unknown Shopify plan {options.plan!r} (known: {', '.join(PLANS)})")
        super().__init__(options, clock=clock)
        self.idempotency: dict[str, tuple[str, Any]] = {}  # key -> (fingerprint, payload)
        self.fail_attempts = 0  # next inventorySetQuantities attempts that fail internally
        self.failed_keys: set[str] = set()  # their keys: IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED
        self.unstocked: set[int] = set()  # inventory item ids not stocked at the primary
        # (inventory item id, annex) -> the time of the level's last change there
        self.annex_times: dict[tuple[int, int], float] = {}
        self.graph = Graph(self)
        self.query_root = QueryRoot(self.graph)
        self.mutation_root = MutationRoot(self.graph)
        self.bulk = BulkRunner(self.query_root, self.clock)

    def make_bucket(self) -> LeakyBucket:
        """Cost points per plan: Standard 2000 at 100/s ... Enterprise 40000 at 2000/s."""
        size, rate = PLANS[self.options.plan]
        return LeakyBucket(size, rate, clock=self.clock, enabled=self.options.rate_limit)

    def add_platform_routes(self, app: web.Application) -> None:
        """The GraphQL endpoint, bulk result files and Shopify-only test hooks."""
        app.router.add_post("/admin/api/{version}/graphql.json", self._h_graphql)
        app.router.add_post("/admin/oauth/access_token", self._h_access_token)
        app.router.add_get(r"/_emulator/bulk/{op_id:\d+}.jsonl", self._h_bulk_file)
        app.router.add_post("/_emulator/shopify/items", self._h_item_flags)
        app.router.add_post("/_emulator/shopify/idempotency", self._h_idempotency)

    # -- the API -------------------------------------------------------------------------------

    async def _h_graphql(self, request: web.Request) -> web.Response:
        failure = self.take_injected_failure()
        if failure is not None:
            return web.json_response(
                {"errors": _STATUS_BODIES.get(failure, "Error")}, status=failure
            )
        version = request.match_info["version"]
        if version not in VERSIONS:
            return web.json_response({"errors": "Not Found"}, status=404)
        if not self.token_valid(request.headers.get("X-Shopify-Access-Token", "")):
            return web.json_response({"errors": _UNAUTHORIZED}, status=401)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"errors": "Invalid JSON in request body"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return web.json_response({"errors": "Parameter Missing or Invalid: query"}, status=400)
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            return web.json_response({"errors": "variables must be an object"}, status=400)
        context = RequestContext(version, f"{request.scheme}://{request.host}")
        reply = self.execute(body["query"], variables, body.get("operationName"), context)
        if context.drop_after:
            log.info("emulator_dropped_connection", shop=self.options.shop)
            self.drop_connection(request)
        return web.json_response(reply)

    async def _h_access_token(self, request: web.Request) -> web.Response:
        """The OAuth client-credentials grant of a Dev Dashboard app installed on this shop."""
        fields: dict[str, Any]
        if request.content_type == "application/json":
            try:
                fields = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                fields = {}
            if not isinstance(fields, dict):
                fields = {}
        else:
            fields = dict(await request.post())
        if fields.get("grant_type") != "client_credentials":
            return _oauth_error("unsupported_grant_type", "grant_type must be client_credentials")
        client_id, secret = str(fields.get("client_id", "")), str(fields.get("client_secret", ""))
        good_id = hmac.compare_digest(client_id.encode(), self.options.client_id.encode())
        good_secret = hmac.compare_digest(secret.encode(), self.options.webhook_secret.encode())
        if not good_id or self.revoked:
            return _app_not_installed()
        if not good_secret:
            return _oauth_error("invalid_client", "Client authentication failed")
        token, _expires_at = self.tokens.issue()
        return web.json_response(
            {
                "access_token": token,
                "scope": self.granted_scopes,
                "expires_in": int(self.tokens.lifetime),
            }
        )

    def execute(
        self,
        query: str,
        variables: dict[str, Any],
        operation_name: str | None,
        context: RequestContext,
    ) -> dict[str, Any]:
        """Run one GraphQL request: validate, charge the cost, execute, refund, reply."""
        schema = schema_for(context.version)
        document, errors = _checked(context.version, query)
        if document is None:
            return self._reply({"errors": list(errors)}, 0, 0)
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            message = (
                "An operation name is required"
                if operation_name is None
                else (f"No operation named {operation_name!r}")
            )
            return self._reply({"errors": [{"message": message}]}, 0, 0)
        coerced = get_variable_values(schema, operation.variable_definitions or (), variables)
        if isinstance(coerced, list):
            return self._reply({"errors": [e.formatted for e in coerced]}, 0, 0)
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        model = CostModel(schema, operation, fragments, coerced)
        try:
            requested = model.requested()
        except LimitExceeded as exc:
            return self._reply({"errors": [exc.error]}, 0, 0)
        if requested > MAX_QUERY_COST:
            return self._reply(
                {
                    "errors": [
                        {
                            "message": _max_cost_message(requested),
                            "extensions": {
                                "code": "MAX_COST_EXCEEDED",
                                "cost": requested,
                                "maxCost": MAX_QUERY_COST,
                            },
                        }
                    ]
                },
                requested,
                None,
            )
        if not self.bucket.try_take(requested):
            self.stats["throttled"] += 1
            return self._reply(
                {
                    "errors": [
                        {
                            "message": "Throttled",
                            "extensions": {
                                "code": "THROTTLED",
                                "documentation": "https://shopify.dev/api/usage/rate-limits",
                            },
                        }
                    ]
                },
                requested,
                None,
            )
        denied = self._denied(operation)
        if denied is not None:
            return self._reply({"data": None, "errors": [denied]}, requested, 0)
        is_mutation = operation.operation == OperationType.MUTATION
        if not is_mutation:
            self.stats["reads"] += 1
        result = execute_sync(
            schema,
            document,
            root_value=self.mutation_root if is_mutation else self.query_root,
            context_value=context,
            variable_values=variables,
            operation_name=operation_name,
        )
        actual = min(requested, model.actual(result.data))
        self.bucket.refund(requested - actual)
        reply: dict[str, Any] = {"data": result.data}
        if result.errors:
            reply["errors"] = [e.formatted for e in result.errors]
        return self._reply(reply, requested, actual)

    @property
    def granted_scopes(self) -> str:
        """The app's access scopes on this shop, comma-separated."""
        scopes = self.options.scopes
        return GRANTED_SCOPES if scopes is None else scopes

    def _denied(self, operation: Any) -> dict[str, Any] | None:
        """The ACCESS_DENIED error of the first root field whose scope was not granted."""
        granted = {s.strip() for s in self.granted_scopes.split(",") if s.strip()}
        granted |= {"read_" + s.removeprefix("write_") for s in granted if s.startswith("write_")}
        for selection in operation.selection_set.selections:
            name = getattr(getattr(selection, "name", None), "value", "")
            needed = FIELD_SCOPES.get(name)
            if needed is not None and needed not in granted:
                return {
                    "message": (
                        f"Access denied for {name} field. Required access: `{needed}` access scope."
                    ),
                    "extensions": {"code": "ACCESS_DENIED", "requiredAccess": f"`{needed}`"},
                }
        return None

    def _reply(self, body: dict[str, Any], requested: int, actual: int | None) -> dict[str, Any]:
        body["extensions"] = {
            "cost": {
                "requestedQueryCost": requested,
                "actualQueryCost": actual,
                "throttleStatus": {
                    "maximumAvailable": self.bucket.capacity,
                    "currentlyAvailable": int(self.bucket.available()),
                    "restoreRate": self.bucket.restore_rate,
                },
            }
        }
        return body

    async def _h_bulk_file(self, request: web.Request) -> web.Response:
        data = self.bulk.jsonl(int(request.match_info["op_id"]))
        if data is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=data, content_type="application/jsonl")

    async def _h_item_flags(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return json_error(400, "body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("sku"), str):
            return json_error(400, "sku must be a string")
        try:
            variant = self.store.find_sku(body["sku"])
        except UnknownSku:
            return json_error(404, f"unknown sku {body['sku']}")
        for flag in ("tracked", "stocked"):
            if flag in body and not isinstance(body[flag], bool):
                return json_error(400, f"{flag} must be true or false")
        if "tracked" in body:
            variant.tracked = body["tracked"]
        if body.get("stocked") is False:
            self.unstocked.add(variant.inventory_item_id)
        elif body.get("stocked") is True:
            self.unstocked.discard(variant.inventory_item_id)
        return web.json_response(
            {
                "sku": variant.sku,
                "inventory_item_id": gid("InventoryItem", variant.inventory_item_id),
                "tracked": variant.tracked,
                "stocked": variant.inventory_item_id not in self.unstocked,
            }
        )

    async def _h_idempotency(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return json_error(400, "body is not valid JSON")
        count = body.get("fail_attempts") if isinstance(body, dict) else None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            return json_error(400, "fail_attempts must be a non-negative integer")
        self.fail_attempts = count
        return web.json_response({"fail_attempts": self.fail_attempts})

    # -- webhooks ------------------------------------------------------------------------------

    def sign_webhook(self, topic: str, body: bytes, delivery_id: str) -> dict[str, str]:
        """Shopify's delivery headers; the HMAC is base64(HMAC-SHA256(secret, raw body))."""
        digest = hmac.new(self.options.webhook_secret.encode(), body, hashlib.sha256).digest()
        # One merchant action shares an event id across its deliveries: derive it from content.
        event_id = uuid.uuid5(_EVENT_NAMESPACE, topic + body.decode("utf-8", "replace"))
        return {
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
            "X-Shopify-Shop-Domain": self.options.shop,
            "X-Shopify-API-Version": LATEST_VERSION,
            "X-Shopify-Webhook-Id": delivery_id,
            "X-Shopify-Event-Id": str(event_id),
            "X-Shopify-Triggered-At": _rest_time(self.clock()),
        }

    def on_stock_change(self, variant: Variant, before: int, after: int, cause: str) -> None:
        """``inventory_levels/update`` for every change: orders, edits, API writes, restocks."""
        item, level = variant.inventory_item_id, gid("InventoryLevel", LOCATION_ID)
        self.webhooks.emit(
            "inventory_levels/update",
            {
                "inventory_item_id": item,
                "location_id": LOCATION_ID,
                "available": after,
                # whole seconds, as Shopify's REST timestamps (shopify.md §5)
                "updated_at": _rest_time(int(variant.updated_at or self.clock()), "seconds"),
                "admin_graphql_api_id": f"{level}?inventory_item_id={item}",
            },
        )

    def on_location_change(
        self, variant: Variant, before: int, after: int, cause: str, location: int
    ) -> None:
        """``inventory_levels/update`` for a change at an annex, with its ``location_id``."""
        self.annex_times[(variant.inventory_item_id, location)] = variant.updated_at
        item, level = variant.inventory_item_id, gid("InventoryLevel", location)
        self.webhooks.emit(
            "inventory_levels/update",
            {
                "inventory_item_id": item,
                "location_id": location,
                "available": after,
                "updated_at": _rest_time(int(self.level_time(variant, location)), "seconds"),
                "admin_graphql_api_id": f"{level}?inventory_item_id={item}",
            },
        )

    def level_time(self, variant: Variant, location: int) -> float:
        """When `variant`'s level at `location` last changed (the variant's own time at the
        primary, where every change of it is one)."""
        if location == LOCATION_ID:
            return variant.updated_at
        return self.annex_times.get((variant.inventory_item_id, location), variant.created_at)

    def on_order(self, order: dict[str, Any]) -> None:
        """``orders/create`` with REST-shaped line items (variant ids, SKUs; no item ids)."""
        self.webhooks.emit("orders/create", self._order_json(order))

    def on_restock(self, order: dict[str, Any], cause: str) -> None:
        """``orders/cancelled`` (restock type cancel) or ``refunds/create`` (type return)."""
        restock_type = "cancel" if cause == "cancel" else "return"
        refund_lines = [
            {
                "id": line["id"] + 1,
                "line_item_id": line["id"],
                "quantity": line["quantity"],
                "restock_type": restock_type,
                "location_id": order.get("location", LOCATION_ID),
                "line_item": self._line_json(line),
            }
            for line in order["line_items"]
        ]
        refund = {
            "id": order["id"] + 1,
            "order_id": order["id"],
            "restock": True,
            "created_at": _rest_time(self.clock(), "seconds"),
            "refund_line_items": refund_lines,
        }
        if cause == "cancel":
            payload = self._order_json(order)
            payload["cancel_reason"] = "customer"
            payload["refunds"] = [refund]
            self.webhooks.emit("orders/cancelled", payload)
        else:
            self.webhooks.emit("refunds/create", refund)

    def on_product(self, variant: Variant) -> None:
        """``products/create`` with its one variant."""
        self.webhooks.emit("products/create", self._product_json(variant))

    def on_product_update(self, variant: Variant) -> None:
        """``products/update``, the same shape."""
        self.webhooks.emit("products/update", self._product_json(variant))

    def _product_json(self, variant: Variant) -> dict[str, Any]:
        return {
            "id": variant.product_id,
            "title": variant.title,
            "created_at": _rest_time(variant.created_at),
            "updated_at": _rest_time(variant.updated_at),
            "admin_graphql_api_id": gid("Product", variant.product_id),
            "variants": [
                {
                    "id": variant.variant_id,
                    "product_id": variant.product_id,
                    "sku": variant.sku,
                    "title": "Default Title",
                    "inventory_item_id": variant.inventory_item_id,
                    "inventory_quantity": inventory_quantity(variant),
                    "inventory_policy": "deny",
                    "inventory_management": "shopify" if variant.tracked else None,
                    "admin_graphql_api_id": gid("ProductVariant", variant.variant_id),
                }
            ],
        }

    @staticmethod
    def _line_json(line: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": line["id"],
            "variant_id": line["variant_id"],
            "product_id": line["product_id"],
            "sku": line["sku"],
            "quantity": line["quantity"],
            "fulfillable_quantity": line["quantity"],
            "admin_graphql_api_id": gid("LineItem", line["id"]),
        }

    def _order_json(self, order: dict[str, Any]) -> dict[str, Any]:
        cancelled = order.get("cancelled_at")
        payload = {
            "id": order["id"],
            "admin_graphql_api_id": gid("Order", order["id"]),
            "name": order["name"],
            "created_at": _rest_time(order["created_at"], "seconds"),
            "cancelled_at": _rest_time(cancelled, "seconds") if cancelled else None,
            "line_items": [self._line_json(line) for line in order["line_items"]],
        }
        if self.options.locations > 1:
            # The REST order's `location_id`: the location the order was fulfilled from. A
            # one-location shop's payload stays as it always was.
            payload["location_id"] = order.get("location", LOCATION_ID)
        return payload
