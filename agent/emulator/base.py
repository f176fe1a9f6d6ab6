"""The emulator frame: store, bucket, webhooks, faults and the common `/_emulator` control API.

A platform emulator subclasses `Emulator`, adds its own API routes in `add_platform_routes`,
and says how it signs webhooks and what it sends when stock, orders or products change. The
control API (a contract other tools depend on) is the same for every platform:

| route | body | effect |
| --- | --- | --- |
| POST /_emulator/orders | {"line_items": [{"sku", "quantity"}]} | a purchase; 409 if short |
| POST /_emulator/inventory | {"sku", "available"} | an admin's manual edit |
| POST /_emulator/products | {"sku", "available"} | a new product variant |
| GET /_emulator/inventory | | {"A-1": 38, ...} |

Locations: a shop started with `--locations N` has locations 1 (the primary, which stocks every
variant) to N. Orders and edits take an optional `"location": n` (default 1): an order is
fulfilled from it (409 where a line is not stocked there), an edit at a location that does not
stock the SKU yet stocks it there. `GET /_emulator/inventory?location=n` lists the counts there.
Each platform names location n its own way: `GET /_emulator/locations/{n}` answers
`{"number": n, "id": "<the platform's id of location n>"}` (`Emulator.location_name`; the
kit's default is the number itself), what a merchant writes in `[locations]`.

Webhook subscriptions: GET /_emulator/webhooks ({"subscriptions": [{"id", "topic", "url"}]}),
POST /_emulator/webhooks/delete {"ids": [...]} or {} for all (as the platform deletes them
after deliveries that keep failing; answers {"deleted": n}).

Extras: POST /_emulator/products/update {"skus": [...]} or {"sku", "new_sku"?}, with an
optional "title": an admin's (bulk) product edit; each product sends the platform's product
webhook (Shopify and SHOPLINE `products/update`; Pisell has no product topic), counts stay.

Extras: GET /_emulator/items, GET /_emulator/writes, GET /_emulator/stats,
POST /_emulator/orders/{id}/cancel, POST /_emulator/refunds {"order_id"},
POST /_emulator/faults {...Faults fields, "rate_limit": bool} (all or nothing: one bad value
is a 400 that sets none of them), POST /_emulator/storefront {"open": bool},
POST /_emulator/clock/advance {"seconds"} (the emulator's time, which expires tokens, jumps
forward; answers {"now"}), GET /_emulator/tokens ({"issued", "lifetime"}: tokens granted so far
and their lifetime), POST /_emulator/credentials {"revoked": bool} (the merchant uninstalls the
app or revokes its token: every token, the static one included, and every token grant is
refused with the platform's answer until revoked is false again; answers {"revoked"}).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from agent.emulator.bucket import LeakyBucket
from agent.emulator.options import EmulatorOptions
from agent.emulator.store import PRIMARY, ShortStock, Store, UnknownSku, Variant
from agent.emulator.tokens import TokenIssuer
from agent.emulator.webhooks import WebhookSender

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["Emulator", "json_error"]


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    """A control-API error: HTTP `status` with `{"error": message}`."""
    return web.json_response({"error": message, **extra}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body is not valid JSON"}), content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return body


def _sku_count(body: dict[str, Any], count_key: str) -> tuple[str, int]:
    sku, count = body.get("sku"), body.get(count_key)
    if not isinstance(sku, str):
        raise ValueError("sku must be a string")
    if not isinstance(count, int) or isinstance(count, bool):
        raise ValueError(f"{count_key} must be an integer")
    return sku, count


class Emulator:
    """One emulated shop. Subclasses provide the platform's wire format."""

    name = "emulator"
    # How long a granted token lives unless `EmulatorOptions.token_lifetime` says otherwise.
    token_lifetime: float = 86400.0
    token_prefix: str = ""
    # Deliveries that fail every retry before the platform deletes the subscription (0: never).
    webhook_delete_after: int = 0

    def __init__(self, options: EmulatorOptions, *, clock: Callable[[], float] = time.time):
        self.options = options
        self._base_clock = clock
        self.clock_offset = 0.0  # seconds the control API has moved time forward
        self.clock: Callable[[], float] = lambda: self._base_clock() + self.clock_offset
        self.faults = options.faults
        if self.faults.webhook_delete_after is None:
            self.faults.webhook_delete_after = self.webhook_delete_after
        self.rng = random.Random(options.seed)
        lifetime = options.token_lifetime
        self.tokens = TokenIssuer(
            self.clock,
            self.token_lifetime if lifetime is None else lifetime,
            prefix=self.token_prefix,
        )
        self.revoked = False  # POST /_emulator/credentials: every token and grant refused
        self.store = Store(clock=self.clock, locations=max(1, options.locations))
        self.store.seed(options.skus, available=options.initial_available)
        self.bucket = self.make_bucket()
        self.webhooks = WebhookSender(self.sign_webhook, self.faults, rng=self.rng)
        self.stats: dict[str, int] = {"requests": 0, "throttled": 0, "writes": 0, "reads": 0}
        self.store.listeners.append(self._on_store_change)

    # -- what a platform provides ------------------------------------------------------------

    def make_bucket(self) -> LeakyBucket:
        """The platform's rate limit (default: 40 requests, 4/s)."""
        return LeakyBucket(40, 4, clock=self.clock, enabled=self.options.rate_limit)

    def sign_webhook(self, topic: str, body: bytes, delivery_id: str) -> dict[str, str]:
        """Headers that carry the platform's topic, ids and signature of `body`."""
        raise NotImplementedError

    def add_platform_routes(self, app: web.Application) -> None:
        """Add the platform API routes to `app`."""
        raise NotImplementedError

    def on_stock_change(self, variant: Variant, before: int, after: int, cause: str) -> None:
        """Emit the platform's inventory webhook (called for every count change at the
        primary location)."""

    def on_location_change(
        self, variant: Variant, before: int, after: int, cause: str, location: int
    ) -> None:
        """Emit the platform's inventory webhook for a change at another location (by default
        none: an emulator that stocks only its primary location need not care)."""

    def on_order(self, order: dict[str, Any]) -> None:
        """Emit the platform's order-created webhook."""

    def on_restock(self, order: dict[str, Any], cause: str) -> None:
        """Emit the platform's cancel or refund webhook (`cause` is "cancel" or "refund")."""

    def location_name(self, number: int) -> str:
        """The platform's id of location `number` (what `[locations]` names it by)."""
        return str(number)

    def on_product(self, variant: Variant) -> None:
        """Emit the platform's product-created webhook."""

    def on_product_update(self, variant: Variant) -> None:
        """Emit the platform's product-updated webhook (a product edit in the admin)."""

    # -- helpers for platform handlers -------------------------------------------------------

    def take_injected_failure(self) -> int | None:
        """The HTTP status to fail this API call with, if a fault is armed."""
        self.stats["requests"] += 1
        if self.faults.fail_requests > 0:
            self.faults.fail_requests -= 1
            return self.faults.fail_status
        return None

    def token_valid(self, token: str) -> bool:
        """Whether `token` opens the API: the static one, or a granted one not yet expired."""
        if self.revoked:
            return False
        static = hmac.compare_digest(token.encode(), self.options.token.encode())
        return static or self.tokens.valid(token)

    def take_timeout_after_apply(self) -> bool:
        """True if this write, once applied, must be answered by a dropped connection."""
        if self.faults.timeout_after_apply > 0:
            self.faults.timeout_after_apply -= 1
            return True
        return False

    @staticmethod
    def drop_connection(request: web.Request) -> web.Response:
        """Close the connection without an answer: the client never learns the outcome."""
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("emulator dropped the connection after applying a write")

    # -- the app ------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        """The aiohttp app: control routes, platform routes, webhook delivery on its lifetime."""
        app = web.Application(client_max_size=64 * 1024**2, middlewares=[self._slow_api])
        r = app.router
        r.add_post("/_emulator/orders", self._h_order)
        r.add_post("/_emulator/orders/{order_id}/cancel", self._h_cancel)
        r.add_post("/_emulator/refunds", self._h_refund)
        r.add_post("/_emulator/inventory", self._h_edit)
        r.add_get("/_emulator/inventory", self._h_inventory)
        r.add_get(r"/_emulator/locations/{number:\d+}", self._h_location_name)
        r.add_post("/_emulator/products", self._h_product)
        r.add_post("/_emulator/products/update", self._h_product_update)
        r.add_get("/_emulator/items", self._h_items)
        r.add_get("/_emulator/writes", self._h_writes)
        r.add_get("/_emulator/stats", self._h_stats)
        r.add_post("/_emulator/faults", self._h_faults)
        r.add_post("/_emulator/storefront", self._h_storefront)
        r.add_post("/_emulator/clock/advance", self._h_advance)
        r.add_get("/_emulator/tokens", self._h_tokens)
        r.add_post("/_emulator/credentials", self._h_credentials)
        r.add_get("/_emulator/webhooks", self._h_subscriptions)
        r.add_post("/_emulator/webhooks/delete", self._h_delete_subscriptions)
        self.add_platform_routes(app)
        app.cleanup_ctx.append(self._webhook_ctx)
        return app

    @web.middleware
    async def _slow_api(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The `api_delay` fault: a slow platform (never the `/_emulator` control API)."""
        if self.faults.api_delay > 0 and not request.path.startswith("/_emulator"):
            await asyncio.sleep(self.faults.api_delay)
        return await handler(request)

    async def _webhook_ctx(self, app: web.Application):
        await self.webhooks.start()
        yield
        await self.webhooks.stop()

    def _on_store_change(
        self, variant: Variant, before: int, after: int, cause: str, location: int
    ) -> None:
        if cause == "product":
            self.on_product(variant)
        if location == PRIMARY:
            self.on_stock_change(variant, before, after, cause)
        else:
            self.on_location_change(variant, before, after, cause, location)

    def _location(self, raw: Any) -> int:
        """The control API's optional location (1, the primary, by default); ValueError."""
        return PRIMARY if raw is None else self.store.check_location(raw)

    # -- control handlers --------------------------------------------------------------------

    async def _h_order(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        lines = body.get("line_items")
        if not isinstance(lines, list) or not lines:
            return json_error(400, "line_items must be a non-empty list")
        parsed = []
        for line in lines:
            if not isinstance(line, dict):
                return json_error(400, "each line item must be an object")
            try:
                sku, quantity = _sku_count(line, "quantity")
            except ValueError as exc:
                return json_error(400, str(exc))
            if quantity <= 0:
                return json_error(400, "quantity must be positive")
            parsed.append((sku, quantity))
        try:
            location = self._location(body.get("location"))
        except ValueError as exc:
            return json_error(400, str(exc))
        if not self.store.storefront_open:
            return json_error(423, "the storefront is closed for maintenance")
        try:
            order = self.store.purchase(parsed, location)
        except UnknownSku as exc:
            return json_error(404, f"unknown sku {exc.args[0]}")
        except ShortStock as exc:
            return json_error(409, f"not enough stock: {exc}")
        self.on_order(order)
        return web.json_response({"order": order}, status=201)

    async def _h_cancel(self, request: web.Request) -> web.Response:
        try:
            order_id = int(request.match_info["order_id"])
            order = self.store.restock_order(order_id, "cancel")
        except (ValueError, KeyError) as exc:
            return json_error(404 if isinstance(exc, KeyError) else 409, f"cannot cancel: {exc}")
        self.on_restock(order, "cancel")
        return web.json_response({"order": order})

    async def _h_refund(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        order_id = body.get("order_id")
        if not isinstance(order_id, int):
            return json_error(400, "order_id must be an integer")
        try:
            order = self.store.restock_order(order_id, "refund")
        except (ValueError, KeyError) as exc:
            return json_error(404 if isinstance(exc, KeyError) else 409, f"cannot refund: {exc}")
        self.on_restock(order, "refund")
        return web.json_response({"order": order})

    async def _h_edit(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            sku, available = _sku_count(body, "available")
            location = self._location(body.get("location"))
        except ValueError as exc:
            return json_error(400, str(exc))
        try:
            before = self.store.find_sku(sku).count(location)  # no await between: same moment
            variant = self.store.edit(sku, available, location)
        except UnknownSku:
            return json_error(404, f"unknown sku {sku}")
        answer = {"sku": variant.sku, "available": variant.count(location), "before": before}
        return web.json_response(
            answer if location == PRIMARY else {**answer, "location": location}
        )

    async def _h_inventory(self, request: web.Request) -> web.Response:
        raw = request.query.get("location")
        try:
            location = self._location(None if raw is None else int(raw) if raw.isdigit() else raw)
        except ValueError as exc:
            return json_error(400, str(exc))
        return web.json_response(self.store.inventory(location))

    async def _h_location_name(self, request: web.Request) -> web.Response:
        number = int(request.match_info["number"])
        if number < 1:
            return json_error(400, "locations are numbered from 1")
        return web.json_response({"number": number, "id": self.location_name(number)})

    async def _h_product(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            sku, available = _sku_count(body, "available")
        except ValueError as exc:
            return json_error(400, str(exc))
        title = body.get("title")
        if title is not None and not isinstance(title, str):
            return json_error(400, "title must be a string")
        variant = self.store.add_product(sku.strip(), available, title=title)
        return web.json_response(self._item_json(variant), status=201)

    async def _h_product_update(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        skus = body.get("skus", [body.get("sku")])
        title, new_sku = body.get("title"), body.get("new_sku")
        if not isinstance(skus, list) or not skus or not all(isinstance(s, str) for s in skus):
            return json_error(400, "skus must be a non-empty list of strings (or give sku)")
        if title is not None and not isinstance(title, str):
            return json_error(400, "title must be a string")
        if new_sku is not None and (not isinstance(new_sku, str) or len(skus) != 1):
            return json_error(400, "new_sku must be a string, with one sku")
        try:
            variants = [self.store.find_sku(sku) for sku in skus]  # all known before any edit
        except UnknownSku as exc:
            return json_error(404, f"unknown sku {exc.args[0]}")
        for variant in variants:
            self.store.edit_product(variant.sku, title=title, new_sku=new_sku)
            self.on_product_update(variant)
        return web.json_response({"updated": len(variants)})

    def _item_json(self, variant: Variant) -> dict[str, Any]:
        return dataclasses.asdict(variant)

    async def _h_items(self, request: web.Request) -> web.Response:
        return web.json_response([self._item_json(v) for v in self.store.variants.values()])

    async def _h_writes(self, request: web.Request) -> web.Response:
        return web.json_response([dataclasses.asdict(w) for w in self.store.write_log])

    async def _h_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                **self.stats,
                "bucket_refused": self.bucket.refused,
                "bucket_available": self.bucket.available(),
                "webhooks": dict(self.webhooks.stats),
                "subscriptions": len(self.webhooks.subscriptions),
            }
        )

    async def _h_faults(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        rate_limit = body.pop("rate_limit", self.bucket.enabled)
        if not isinstance(rate_limit, bool):
            return json_error(400, "rate_limit must be true or false")
        try:
            self.faults.update(body)  # all or nothing
        except ValueError as exc:
            return json_error(400, str(exc))
        self.bucket.enabled = rate_limit
        state = {**dataclasses.asdict(self.faults), "rate_limit": self.bucket.enabled}
        return web.json_response(state)

    async def _h_storefront(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body.get("open"), bool):
            return json_error(400, "open must be true or false")
        self.store.storefront_open = body["open"]
        return web.json_response({"open": self.store.storefront_open})

    async def _h_advance(self, request: web.Request) -> web.Response:
        """Move the emulator's time forward (a subclass with its own clock overrides this)."""
        body = await _json_body(request)
        seconds = body.get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            return json_error(400, "seconds must be a non-negative number")
        self.clock_offset += float(seconds)
        return web.json_response({"now": self.clock()})

    async def _h_subscriptions(self, request: web.Request) -> web.Response:
        subs = self.webhooks.subscriptions.values()
        return web.json_response(
            {"subscriptions": [{"id": s.id, "topic": s.topic, "url": s.url} for s in subs]}
        )

    async def _h_delete_subscriptions(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        ids = body.get("ids", list(self.webhooks.subscriptions))
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            return json_error(400, "ids must be a list of subscription ids")
        deleted = sum(self.webhooks.unsubscribe(i) for i in ids)
        self.webhooks.deleted += deleted
        return web.json_response({"deleted": deleted})

    async def _h_credentials(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        revoked = body.get("revoked")
        if not isinstance(revoked, bool):
            return json_error(400, "revoked must be true or false")
        self.revoked = revoked
        return web.json_response({"revoked": revoked})

    async def _h_tokens(self, request: web.Request) -> web.Response:
        return web.json_response({"issued": self.tokens.issued, "lifetime": self.tokens.lifetime})
