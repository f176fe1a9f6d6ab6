"""An emulator of the SHOPLINE Open API subset the plugin uses, on the shared emulator kit.

What it copies from the real API (see shared/platforms/shopline.md): versioned paths
``/admin/openapi/vYYYYMMDD/…``, Bearer auth (401), ``{"errors": …}`` bodies, a ``traceId``
header on every answer, ids as strings of 19+ digits, cursor pagination through a lowercase
``link`` header with an opaque ``page_info`` (filters ignored when it is present), the shop's
locations (location n is ``shopline_id(n)``; 1 is the default, which stocks every variant, the
others stock what an admin's edit there stocks; an order names the one it was fulfilled from
in each line's ``location_id``, as SHOPLINE's order object does, and its refund names none),
inventory levels read 50 items at a time at up to 10 locations, ``set`` and ``adjust`` at one
of them (422 where the item is not stocked; whose answer spells
the timestamp ``update_at``) with neither compare-and-set nor idempotency, a 40-deep leaky
bucket draining 4 requests per second that queues a request while it has room (it runs when
those ahead of it have leaked out) and refuses it with a bare 429 when full (REST flow-control
page, v20270301), orders, webhook CRUD and signed
deliveries (hex HMAC-SHA256, seven ``X-Shopline-*`` headers). Timestamps print whole seconds in
+08:00, as SHOPLINE's do.

Tokens: the configured static token (a private app's) never expires; an app (app key =
`EmulatorOptions.client_id`, app secret = the webhook secret) gets 10 h tokens from
``POST /admin/oauth/token/refresh`` signed as SHOPLINE's SDK signs it (headers ``appkey``,
``timestamp`` in ms, ``sign`` = hex HMAC-SHA256 of body + timestamp); a refresh leaves older
tokens valid 5 more minutes, as documented, and an expired token gets the same 401 as a wrong
one. Not checked (unverified): how far ``timestamp`` may be from SHOPLINE's clock.

Beside this module: the REST objects (`emulator_wire.py`), the product, location, inventory and
order handlers (`emulator_resources.py`) and the HTTP plumbing (`emulator_http.py`).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from agent.emulator import PRIMARY, EmulatorOptions, LeakyBucket, Variant
from plugins.shopline.emulator_http import API_VERSION, VERSION, ApiError, json_body, shopline_id
from plugins.shopline.emulator_resources import ResourceRoutes

__all__ = ["API_VERSION", "ShoplineEmulator", "shopline_id"]

PREFIX = "/admin/openapi/{version:v\\d{8}}/"
TOPICS = frozenset(
    {
        "inventory_levels/update",
        "inventory_levels/connect",
        "inventory_levels/disconnect",
        "inventory_items/update",
        "orders/create",
        "orders/updated",
        "orders/paid",
        "orders/cancelled",
        "orders/edited",
        "refunds/create",
        "products/create",
        "products/update",
        "products/delete",
        "apps/installed_uninstalled",
    }
)
UNLIMITED_PLANS = frozenset({"enterprise", "unlimited"})
REFRESH_GRACE = 300.0  # "the old token stays valid for 5 minutes after a refresh"
GRANTED_SCOPES = "read_products,read_inventory,write_inventory,read_orders,read_location"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ShoplineEmulator(ResourceRoutes):
    """One SHOPLINE store: the kit's store behind SHOPLINE's REST wire format."""

    name = "shopline"
    token_lifetime = 36000.0  # an app token lives 10 hours

    def __init__(self, options: EmulatorOptions, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(options, clock=clock)
        self.location_id = shopline_id(PRIMARY)  # below the kit's first id, so never an item
        digest = hashlib.sha256(options.shop.encode()).hexdigest()
        self.shop_id = str(1_600_000_000_000 + int(digest[:8], 16))
        self.merchant_id = str(2_000_000_000 + int(digest[8:14], 16))
        self._traces = itertools.count(1)
        self._refund_ids = itertools.count(1)
        # how a queued request waits its turn (tests with a frozen clock record it instead)
        self.queue_wait: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.restocks: dict[int, tuple[str, float, int]] = {}  # order -> (cause, at, refund id)

    # -- the kit's hooks ---------------------------------------------------------------------

    webhook_delete_after = 1  # a delivery that failed its 19 tries over 48 h (shopline.md §5)

    def make_bucket(self) -> LeakyBucket:
        """40 requests deep, 4 per second, per token; off for tests and unlimited plans."""
        enabled = self.options.rate_limit and self.options.plan not in UNLIMITED_PLANS
        return LeakyBucket(40, 4, clock=self.clock, enabled=enabled)

    def sign_webhook(self, topic: str, body: bytes, delivery_id: str) -> dict[str, str]:
        """The seven `X-Shopline-*` headers, with a lowercase hex HMAC-SHA256 of `body`."""
        secret = self.options.webhook_secret.encode()
        return {
            "X-Shopline-Topic": topic,
            "X-Shopline-Hmac-Sha256": hmac.new(secret, body, hashlib.sha256).hexdigest(),
            "X-Shopline-Shop-Domain": self.options.shop,
            "X-Shopline-Shop-Id": self.shop_id,
            "X-Shopline-Merchant-Id": self.merchant_id,
            "X-Shopline-API-Version": API_VERSION,
            "X-Shopline-Webhook-Id": delivery_id,
        }

    def location_name(self, number: int) -> str:
        return shopline_id(number)

    def on_stock_change(self, variant: Variant, before: int, after: int, cause: str) -> None:
        """`inventory_levels/update` after every change, the API's own writes included."""
        payload = {
            **self._level_json(variant),
            "committed": variant.committed,
            "unavailable": 0,
            "onhand": variant.available + variant.committed,
        }
        self.webhooks.emit("inventory_levels/update", payload)

    def on_location_change(
        self, variant: Variant, before: int, after: int, cause: str, location: int
    ) -> None:
        """`inventory_levels/update` with that location's `location_id` and count (the kit
        commits order units at the default location only)."""
        level = self._level_json(variant, location=location)
        payload = {**level, "committed": 0, "unavailable": 0, "onhand": level["available"]}
        self.webhooks.emit("inventory_levels/update", payload)

    def on_order(self, order: dict[str, Any]) -> None:
        """`orders/create` with the REST order object."""
        self.webhooks.emit("orders/create", self._order_json(order))

    def on_restock(self, order: dict[str, Any], cause: str) -> None:
        """`orders/cancelled` for a cancel, `refunds/create` for a refund (both restock)."""
        at = order["cancelled_at"] if order["cancelled_at"] is not None else self.clock()
        self.restocks[order["id"]] = (cause, at, next(self._refund_ids))
        if cause == "refund":
            self.webhooks.emit("refunds/create", self._refund_json(order))
        else:
            self.webhooks.emit("orders/cancelled", self._order_json(order))

    def on_product(self, variant: Variant) -> None:
        """`products/create` with the product and its variants."""
        self.webhooks.emit("products/create", self._product_json(variant.product_id))

    def on_product_update(self, variant: Variant) -> None:
        """`products/update` with the product and its variants."""
        self.webhooks.emit("products/update", self._product_json(variant.product_id))

    def _item_json(self, variant: Variant) -> dict[str, Any]:
        return {**super()._item_json(variant), "item_id": shopline_id(variant.inventory_item_id)}

    # -- plumbing ----------------------------------------------------------------------------

    @web.middleware
    async def _api_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/admin/openapi/"):
            return await handler(request)
        trace = f"{self.shop_id}-{next(self._traces):08x}"
        try:
            response = await self._guarded(request, handler)
        except ApiError as exc:
            response = web.json_response({"errors": exc.errors}, status=exc.status)
        except web.HTTPException as exc:  # unknown route or method under the API prefix
            response = web.json_response({"errors": exc.reason}, status=exc.status)
        response.headers["traceId"] = trace
        return response

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not self.token_valid(token):
            raise ApiError(401, "[API] Invalid API key or access token")
        wait = self.bucket.reserve(1)
        if wait is None:
            self.stats["throttled"] += 1
            raise ApiError(429, "Too many request")
        if wait > 0:
            await self.queue_wait(wait)  # queued in the bucket behind earlier requests
        needed = _scope_for(request)  # 403 per the status-code page; its wording is unverified
        if needed is not None and needed not in self.granted_scopes():
            raise ApiError(403, f"[API] This action requires merchant approval for {needed} scope.")
        failure = self.take_injected_failure()
        if failure is not None:
            raise ApiError(failure, "Service temporarily unavailable")
        return await handler(request)

    def granted_scopes(self) -> set[str]:
        """The app's access scopes (a write scope includes its read scope)."""
        raw = GRANTED_SCOPES if self.options.scopes is None else self.options.scopes
        granted = {s.strip() for s in raw.split(",") if s.strip()}
        return granted | {"read_" + s[6:] for s in granted if s.startswith("write_")}

    # -- webhook and token handlers ----------------------------------------------------------

    async def _api_webhooks(self, request: web.Request) -> web.Response:
        subs = [self._subscription_json(sub_id) for sub_id in sorted(self.webhooks.subscriptions)]
        return web.json_response({"webhooks": subs})

    async def _api_webhook_count(self, request: web.Request) -> web.Response:
        return web.json_response({"count": len(self.webhooks.subscriptions)})

    def _webhook_fields(self, body: dict[str, Any], *, partial: bool) -> dict[str, str]:
        hook = body.get("webhook")
        if not isinstance(hook, dict):
            raise ApiError(400, 'body must be {"webhook": {...}}')
        fields: dict[str, str] = {}
        for name in ("address", "topic", "api_version"):
            value = hook.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise ApiError(400, f"{name} must be a string")
            fields[name] = value
        if not partial and ("address" not in fields or "topic" not in fields):
            raise ApiError(422, {"webhook": ["address and topic are required"]})
        if "address" in fields and not fields["address"].startswith(("http://", "https://")):
            raise ApiError(422, {"address": ["must be an http(s) URL"]})
        if "topic" in fields and fields["topic"] not in TOPICS:
            raise ApiError(422, {"topic": ["is not a supported topic"]})
        if "api_version" in fields and not VERSION.match(fields["api_version"]):
            raise ApiError(422, {"api_version": ["is not a valid version"]})
        return fields

    async def _api_webhook_create(self, request: web.Request) -> web.Response:
        fields = self._webhook_fields(await json_body(request), partial=False)
        for sub in self.webhooks.subscriptions.values():
            if (sub.topic, sub.url) == (fields["topic"], fields["address"]):
                raise ApiError(422, {"address": ["for this topic has already been taken"]})
        sub = self.webhooks.subscribe(
            fields["topic"],
            fields["address"],
            now=self.clock(),
            api_version=fields.get("api_version", API_VERSION),
        )
        return web.json_response({"webhook": self._subscription_json(sub.id)})

    def _webhook_id(self, request: web.Request) -> int:
        sub_id = int(request.match_info["webhook_id"])
        if sub_id not in self.webhooks.subscriptions:
            raise ApiError(404, "The webhook does not exist.")
        return sub_id

    async def _api_webhook_get(self, request: web.Request) -> web.Response:
        return web.json_response({"webhook": self._subscription_json(self._webhook_id(request))})

    async def _api_webhook_update(self, request: web.Request) -> web.Response:
        sub_id = self._webhook_id(request)
        fields = self._webhook_fields(await json_body(request), partial=True)
        sub = self.webhooks.subscriptions[sub_id]
        sub.url = fields.get("address", sub.url)
        sub.topic = fields.get("topic", sub.topic)
        if "api_version" in fields:
            sub.extra["api_version"] = fields["api_version"]
        sub.extra["updated_at"] = self.clock()
        return web.json_response({"webhook": self._subscription_json(sub_id)})

    async def _api_webhook_delete(self, request: web.Request) -> web.Response:
        self.webhooks.unsubscribe(self._webhook_id(request))
        return web.json_response({})

    async def _oauth_refresh(self, request: web.Request) -> web.Response:
        """``POST /admin/oauth/token/refresh``: a new app token for a correctly signed request."""
        body = (await request.read()).decode("utf-8", "replace")
        timestamp = request.headers.get("timestamp", "")
        secret = self.options.webhook_secret.encode()
        expected = hmac.new(secret, (body + timestamp).encode(), hashlib.sha256).hexdigest()
        appkey = request.headers.get("appkey", "")
        good_key = hmac.compare_digest(appkey.encode(), self.options.client_id.encode())
        good_sign = hmac.compare_digest(request.headers.get("sign", "").encode(), expected.encode())
        if not (timestamp.isdigit() and good_key and good_sign) or self.revoked:
            # The official SDK decodes a refusal's body as {"code": <string>, "message", "errors"}
            # (client/check_response_error.go; its refresh test: HTTP 500 {"code": "500",
            # "i18nCode": "error", "message": "error"}), while a success carries "code": 200, a
            # number. The status, i18nCode and wording of a bad signature are unverified.
            return web.json_response(
                {"code": "401", "i18nCode": "SIGN_ERROR", "message": "sign verification failed"},
                status=401,
            )
        token, expires_at = self.tokens.issue()
        self.tokens.retire_others(token, REFRESH_GRACE)
        expire_time = datetime.datetime.fromtimestamp(expires_at, datetime.UTC)
        return web.json_response(
            {
                "code": 200,
                "i18nCode": "SUCCESS",
                "message": "Success",
                "data": {
                    "accessToken": token,
                    "expireTime": expire_time.isoformat(timespec="milliseconds"),
                    "scope": GRANTED_SCOPES if self.options.scopes is None else self.options.scopes,
                },
            }
        )

    def add_platform_routes(self, app: web.Application) -> None:
        """The Open API routes under any `/admin/openapi/vYYYYMMDD/` version, and the token
        refresh."""
        app.middlewares.append(self._api_middleware)
        r, p = app.router, PREFIX
        r.add_post("/admin/oauth/token/refresh", self._oauth_refresh)
        r.add_get(p + "products/products.json", self._api_products)
        r.add_get(p + "products/count.json", self._api_product_count)
        r.add_get(p + "products/{product_id:\\d+}.json", self._api_product)
        r.add_get(p + "products/{product_id:\\d+}/variants.json", self._api_variants)
        r.add_get(p + "inventory_items.json", self._api_inventory_items)
        r.add_get(p + "locations/list.json", self._api_locations)
        r.add_get(p + "locations/count.json", self._api_location_count)
        r.add_get(p + "locations/{location_id:\\d+}.json", self._api_location)
        r.add_get(p + "inventory_levels.json", self._api_levels)
        r.add_post(p + "inventory_levels/set.json", self._api_set)
        r.add_post(p + "inventory_levels/adjust.json", self._api_adjust)
        r.add_get(p + "orders.json", self._api_orders)
        r.add_get(p + "webhooks.json", self._api_webhooks)
        r.add_post(p + "webhooks.json", self._api_webhook_create)
        r.add_get(p + "webhooks/count.json", self._api_webhook_count)
        r.add_get(p + "{webhook_id:\\d+}/webhooks.json", self._api_webhook_get)
        r.add_put(p + "{webhook_id:\\d+}/webhooks.json", self._api_webhook_update)
        r.add_delete(p + "{webhook_id:\\d+}/webhooks.json", self._api_webhook_delete)


def _scope_for(request: web.Request) -> str | None:
    """The scope an Open API call needs (shopline.md: products, inventory, orders)."""
    path = request.path
    if "/inventory_levels/" in path and request.method == "POST":
        return "write_inventory"
    if "/inventory_levels" in path or "/inventory_items" in path:
        return "read_inventory"
    if "/products/" in path:
        return "read_products"
    if path.endswith("/orders.json"):
        return "read_orders"
    return None
