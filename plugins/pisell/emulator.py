"""An emulator of the proposed Pisell IS Open API (`wire.py`), on the shared emulator kit.

It serves `/openapi/v1/*` with Pisell's signed headers (MD5 `Sign`, ±300 s, 401/403), the
`{status, code, message, data}` envelope, cursor and 1-based skip paging, a 20/5 s token
bucket per `Client-Id`, batched compare-and-set and adjust that are idempotent by key, and
HMAC-signed webhooks delivered at least once by the kit. IS state lives in `inventory.py`.

Choices where Pisell is silent: the merchant's warehouses are the kit's locations, location n
(`--locations N`, default 1) being warehouse `str(n)`, and `"1"`, the default, stocks every
stock item (see `inventory.py` for the others and for combos); the Pisell store is shop `"1"`,
with one bound Shopify shop `"2"`; the client secret is the access token; every webhook
is signed with `options.webhook_secret`; a product with a SKU that exists is refused with 409
(IS keys stock items by SKU). The emulator clock (`POST /_emulator/clock/advance`) moves IS
time (the 15-minute order pull, idempotency expiry, the bucket); request signatures and
webhook timestamps stay on wall time, so advancing it never makes an agent's clock "skewed".

Control routes (`emulator_control.py`), extras beside the kit's: `POST /_emulator/combos
{"sku", "components": [{"sku", "quantity"}]}`, `POST /_emulator/clock/advance {"seconds"}`,
`POST /_emulator/shops {"platform", "name", "domain", "stock_sync_enabled"}`, and
`POST /_emulator/faults` also takes `latency` (seconds before every API answer);
`{"fail_requests": 1, "fail_status": 429}` forces a 429. `/_emulator/orders` takes an optional
`shop_id`. Each control route that acts on stock (orders, inventory edits and reads) takes the
warehouse as the kit's `"location": n` or as Pisell's `"warehouse_id"` (`?location=` or
`?warehouse_id=` on `GET /_emulator/inventory`), default warehouse 1: an unknown warehouse is
a 404, a location outside 1..N or the two naming different warehouses a 400. A new product is
stocked in warehouse 1; an edit in another warehouse stocks the SKU there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from agent.emulator import (
    PRIMARY,
    EmulatorOptions,
    LeakyBucket,
    Variant,
)
from plugins.pisell import wire
from plugins.pisell.emulator_control import ControlRoutes
from plugins.pisell.inventory import Inventory, StockState

__all__ = ["PisellEmulator"]

IDEMPOTENCY_TTL = 24 * 3600.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass(slots=True)
class _Replay:
    digest: str
    payload: dict[str, Any]
    at: float


def _api_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(wire.envelope_error(status, code, message), status=status)


def _ok(data: Any) -> web.Response:
    return web.json_response(wire.envelope_ok(data))


def _warehouse(location: int) -> wire.Warehouse:
    """IS warehouse of the kit's location n: id `str(n)`; 1 is the default, "Main warehouse"."""
    if location == PRIMARY:
        return wire.Warehouse("1", "Main warehouse", "1 George St, Sydney", "stock@example.com")
    return wire.Warehouse(
        str(location), f"Warehouse {location}", f"{location} Dock Rd, Melbourne",
        f"stock{location}@example.com",
    )  # fmt: skip


class PisellEmulator(ControlRoutes):
    """One Pisell merchant: IS with its warehouses, the Pisell store and its bound shops."""

    name = "pisell"
    warehouse = _warehouse(PRIMARY)  # the default warehouse

    def __init__(
        self,
        options: EmulatorOptions,
        *,
        clock: Callable[[], float] = time.time,
        timezone: str = wire.DEFAULT_TIMEZONE,
    ) -> None:
        self.wall = clock  # for signatures: never advanced
        self.offset = 0.0  # IS time = wall time + offset
        self.latency = 0.0
        self.replays: dict[str, _Replay] = {}
        self.client_buckets: dict[str, LeakyBucket] = {}
        self.hooks: dict[int, wire.Webhook] = {}
        self._hook_ids = itertools.count(1)
        super().__init__(options, clock=self.now)
        shop_name = options.shop.split(".")[0]
        shops = [
            wire.Shop("1", "pisell", shop_name, options.shop, timezone),
            wire.Shop("2", "shopify", f"{shop_name} (Shopify)", f"{shop_name}.myshopify.com",
                      timezone),
        ]  # fmt: skip
        self.warehouses = [_warehouse(n) for n in range(PRIMARY, self.store.locations + 1)]
        self.inventory = Inventory(
            self.store, now=self.now, emit=self.webhooks.emit, timezone=timezone,
            warehouses=self.warehouses, shops=shops,
        )  # fmt: skip

    def now(self) -> float:
        """IS time: wall time moved on by `POST /_emulator/clock/advance`."""
        return self.wall() + self.offset

    # -- the kit's hooks ---------------------------------------------------------------------

    def make_bucket(self) -> LeakyBucket:
        """20 requests, 5 per second (one bucket per Client-Id; this one sets `enabled`)."""
        return LeakyBucket(20, 5, clock=self.clock, enabled=self.options.rate_limit)

    def sign_webhook(self, topic: str, body: bytes, delivery_id: str) -> dict[str, str]:
        """Pisell's webhook headers, signed with the shop's webhook secret on wall time."""
        return wire.webhook_headers(
            secret=self.options.webhook_secret, topic=topic, event_id=delivery_id, body=body,
            now=self.wall(),
        )  # fmt: skip

    def on_stock_change(self, variant: Variant, before: int, after: int, cause: str) -> None:
        """Keep IS levels in step and send `inventory_level.updated` (and movements)."""
        self.inventory.on_change(variant, before, after, cause)

    def on_location_change(
        self, variant: Variant, before: int, after: int, cause: str, location: int
    ) -> None:
        """The same for a change in another warehouse: its webhooks name that warehouse."""
        self.inventory.on_change(variant, before, after, cause, location)

    def build_app(self) -> web.Application:
        """The kit's app plus the Pisell API, its middleware and the order-pull loop."""
        app = super().build_app()
        app.middlewares.append(self._api_middleware)
        r = app.router
        r.add_post("/_emulator/combos", self._h_combo)
        # /_emulator/clock/advance is the kit's route; `_h_advance` below overrides its handler
        r.add_post("/_emulator/shops", self._h_bind_shop)
        app.cleanup_ctx.append(self._pull_ctx)
        return app

    def add_platform_routes(self, app: web.Application) -> None:
        """Every `/openapi/v1` route of `wire.PATHS`."""
        p, r = wire.PATHS, app.router
        r.add_get(p["warehouses"], self._h_warehouses)
        r.add_get(p["zones"], self._h_zones)
        r.add_get(p["bins"], self._h_bins)
        r.add_get(p["shops"], self._h_shops)
        r.add_get(p["stock_items"], self._h_stock_items)
        r.add_get(p["levels"], self._h_levels)
        r.add_post(p["levels_set"], self._h_set)
        r.add_post(p["levels_adjust"], self._h_adjust)
        r.add_get(p["movements"], self._h_movements)
        r.add_get(p["product_links"], self._h_product_links)
        r.add_get(p["sync_records"], self._h_sync_records)
        r.add_post(p["sync_push"], self._h_sync_push)
        r.add_get(p["webhooks"], self._h_webhooks)
        r.add_post(p["webhooks"], self._h_webhook_create)
        r.add_delete(p["webhook"], self._h_webhook_delete)

    async def _pull_ctx(self, app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(1.0)
                self.inventory.pull()

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- auth, rate limit, faults ------------------------------------------------------------

    def bucket_for(self, client_id: str) -> LeakyBucket:
        """The token bucket of one Client-Id (the kit's `bucket.enabled` switches them all)."""
        bucket = self.client_buckets.get(client_id)
        if bucket is None:
            bucket = self.client_buckets[client_id] = self.make_bucket()
        bucket.enabled = self.bucket.enabled
        return bucket

    def _authenticate(self, request: web.Request) -> web.Response | None:
        h = request.headers
        client_id, token = h.get(wire.H_CLIENT_ID), h.get(wire.H_ACCESS_TOKEN)
        stamp, signature = h.get(wire.H_TIMESTAMP), h.get(wire.H_SIGN)
        if not (client_id and token and stamp and signature):
            message = "missing Client-Id, Access-Token, Timestamp or Sign"
            return _api_error(401, wire.UNAUTHORIZED, message)
        try:
            skew = abs(int(stamp) - self.wall())
        except ValueError:
            return _api_error(401, wire.UNAUTHORIZED, "Timestamp must be unix seconds")
        if skew > wire.SIGN_SKEW_SECONDS:
            return _api_error(401, wire.UNAUTHORIZED, "Timestamp is too far from server time")
        if self.revoked or not hmac.compare_digest(token.encode(), self.options.token.encode()):
            return _api_error(403, wire.FORBIDDEN, "the access token is not bound to this shop")
        # The client secret is the access token (Pisell issues both; the emulator one).
        expected = wire.sign(stamp, client_id, self.options.token)
        if not hmac.compare_digest(signature.upper().encode(), expected.encode()):
            return _api_error(401, wire.UNAUTHORIZED, "bad Sign")
        return None

    @web.middleware
    async def _api_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(wire.API_PREFIX):
            return await handler(request)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        bucket = self.bucket_for(request.headers.get(wire.H_CLIENT_ID, ""))
        response: web.StreamResponse | None = self._authenticate(request)
        if response is None and not bucket.try_take(1):
            self.stats["throttled"] += 1
            response = _api_error(429, wire.RATE_LIMITED, "too many requests")
            response.headers[wire.H_RETRY_AFTER] = str(max(1, math.ceil(bucket.wait_time(1))))
        if response is None and (status := self.take_injected_failure()) is not None:
            response = _api_error(status, wire.INTERNAL_ERROR, "injected failure")
            if status == 429:
                response.headers[wire.H_RETRY_AFTER] = "1"
        if response is None:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = _api_error(exc.status, wire.NOT_FOUND if exc.status == 404
                                      else wire.INVALID_REQUEST, exc.reason)  # fmt: skip
        response.headers[wire.H_RATE_LIMIT] = str(int(bucket.capacity))
        remaining = bucket.available() if bucket.enabled else bucket.capacity
        response.headers[wire.H_RATE_REMAINING] = str(int(remaining))
        return response

    # -- paging ------------------------------------------------------------------------------

    @staticmethod
    def _page(request: web.Request, rows: list[tuple[int, dict[str, Any]]]) -> web.Response:
        """Rows (id, row) in ascending id order, by `cursor` or 1-based `skip`, `size` ≤ 100."""
        q = request.query
        try:
            size = min(wire.MAX_PAGE_SIZE, max(1, int(q.get(wire.Q_SIZE, "50"))))
            skip = max(1, int(q.get(wire.Q_SKIP, "1")))
            after = wire.decode_cursor(q[wire.Q_CURSOR]) if q.get(wire.Q_CURSOR) else None
        except ValueError as exc:
            return _api_error(400, wire.INVALID_REQUEST, f"bad paging parameter: {exc}")
        rows = sorted(rows, key=lambda r: r[0])
        if after is not None:
            start = next((n for n, (rid, _) in enumerate(rows) if rid > after), len(rows))
        else:
            start = (skip - 1) * size
        chunk = rows[start : start + size]
        more = start + size < len(rows)
        cursor = wire.encode_cursor(chunk[-1][0]) if chunk and more else None
        data = wire.page_data(
            [row for _, row in chunk], count=len(rows), skip=skip, size=size, next_cursor=cursor
        )
        return _ok(data)

    def _since(self, request: web.Request, name: str) -> float | None:
        text = request.query.get(name)
        return None if not text else wire.parse_local(text, self.inventory.tz)

    # -- read handlers -----------------------------------------------------------------------

    async def _h_warehouses(self, request: web.Request) -> web.Response:
        rows = self.inventory.warehouses.items()
        return self._page(request, [(n, w.to_wire()) for n, w in rows])

    def _zones(self, request: web.Request) -> list[tuple[int, wire.Zone]] | web.Response:
        """Each warehouse's picking and storage zone (ids 2n-1 and 2n), by `?warehouse_id`."""
        wanted = request.query.get(wire.Q_WAREHOUSE)
        if wanted is not None and wanted not in self.inventory.location_of:
            return _api_error(404, wire.WAREHOUSE_NOT_FOUND, "no such warehouse")
        zones = []
        for n, warehouse in self.inventory.warehouses.items():
            if wanted is None or warehouse.id == wanted:
                for number, name in ((2 * n - 1, "Picking"), (2 * n, "Storage")):
                    zone = wire.Zone(str(number), warehouse.id, name, name.lower())
                    zones.append((number, zone))
        return zones

    async def _h_zones(self, request: web.Request) -> web.Response:
        zones = self._zones(request)
        if isinstance(zones, web.Response):
            return zones
        return self._page(request, [(n, z.to_wire()) for n, z in zones])

    async def _h_bins(self, request: web.Request) -> web.Response:
        """One bin per zone (`A-01-01` picking, `S-01-01` storage), by `?warehouse_id`."""
        zones = self._zones(request)
        if isinstance(zones, web.Response):
            return zones
        rows = [(n, wire.Bin(z.id, z.id, "A-01-01" if z.type == "picking" else "S-01-01"))
                for n, z in zones]  # fmt: skip
        return self._page(request, [(n, b.to_wire()) for n, b in rows])

    async def _h_shops(self, request: web.Request) -> web.Response:
        shops = self.inventory.shops.values()
        return self._page(request, [(int(s.id), s.to_wire()) for s in shops])

    async def _h_stock_items(self, request: web.Request) -> web.Response:
        self.stats["reads"] += 1
        try:
            since = self._since(request, wire.Q_UPDATED_SINCE)
        except ValueError:
            return _api_error(400, wire.INVALID_REQUEST, "updated_since must be local time")
        skus = {s for s in request.query.get(wire.Q_SKU, "").split(",") if s}
        rows = [
            (stock.id, self.inventory.stock_item(stock).to_wire())
            for stock in self.inventory.items.values()
            if (not skus or stock.sku in skus) and (since is None or stock.updated_at >= since)
        ]
        return self._page(request, rows)

    async def _h_levels(self, request: web.Request) -> web.Response:
        """The levels of one warehouse (default: the default one); a SKU it does not stock
        has none there."""
        self.stats["reads"] += 1
        warehouse_id = request.query.get(wire.Q_WAREHOUSE, self.warehouse.id)
        location = self.inventory.location_of.get(warehouse_id)
        if location is None:
            return _api_error(404, wire.WAREHOUSE_NOT_FOUND, "no such warehouse")
        skus = [s for s in request.query.get(wire.Q_SKU, "").split(",") if s]
        if len(skus) > wire.MAX_LEVEL_SKUS:
            return _api_error(400, wire.INVALID_REQUEST, f"at most {wire.MAX_LEVEL_SKUS} skus")
        items = self.inventory.items
        chosen = [items[s] for s in dict.fromkeys(skus) if s in items] if skus else items.values()
        levels = [(stock.id, self.inventory.level(stock, location)) for stock in chosen]
        return self._page(request, [(n, level.to_wire()) for n, level in levels if level])

    async def _h_movements(self, request: web.Request) -> web.Response:
        try:
            since = self._since(request, wire.Q_SINCE)
        except ValueError:
            return _api_error(400, wire.INVALID_REQUEST, "since must be local time")
        rows = [(m.id, m.to_wire()) for at, m in self.inventory.movements
                if since is None or at >= since]  # fmt: skip
        return self._page(request, rows)

    async def _h_product_links(self, request: web.Request) -> web.Response:
        shop_id = request.query.get(wire.Q_SHOP)
        rows = []
        for shop in self.inventory.shops.values():
            if shop_id is not None and shop.id != shop_id:
                continue
            for stock in self.inventory.items.values():
                rows.append((int(shop.id) * 10**9 + stock.id, self._link(shop, stock).to_wire()))
        return self._page(request, rows)

    @staticmethod
    def _link(shop: wire.Shop, stock: StockState) -> wire.ProductLink:
        if shop.platform == "pisell" and stock.variant is not None:
            product, variant = str(stock.variant.product_id), str(stock.variant.variant_id)
        else:  # a bound shop's own ids, made up but stable
            product, variant = f"{shop.id}{stock.id:08d}", f"{shop.id}{stock.id:08d}1"
        return wire.ProductLink(shop.id, product, variant, stock.sku, stock.sku)

    async def _h_sync_records(self, request: web.Request) -> web.Response:
        try:
            since = self._since(request, wire.Q_SINCE)
        except ValueError:
            return _api_error(400, wire.INVALID_REQUEST, "since must be local time")
        rows = [(r.id, r.to_wire()) for at, r in self.inventory.sync_records
                if since is None or at >= since]  # fmt: skip
        return self._page(request, rows)

    async def _h_webhooks(self, request: web.Request) -> web.Response:
        return self._page(request, [(hid, h.to_wire()) for hid, h in self._live_hooks().items()])

    def _live_hooks(self) -> dict[int, wire.Webhook]:
        """The webhooks that still deliver: one whose deliveries the kit gave up on (it
        deletes the subscriptions, as platforms do) is gone from the API as well."""
        delivering = {sub.extra.get("webhook_id") for sub in self.webhooks.subscriptions.values()}
        for hook_id in [h for h in self.hooks if h not in delivering]:
            del self.hooks[hook_id]
        return self.hooks

    # -- write handlers ----------------------------------------------------------------------

    async def _h_set(self, request: web.Request) -> web.StreamResponse:
        return await self._write(request, wire.SetItem, self.inventory.apply_set)

    async def _h_adjust(self, request: web.Request) -> web.StreamResponse:
        return await self._write(request, wire.AdjustItem, self.inventory.apply_adjust)

    async def _write(
        self,
        request: web.Request,
        kind: type[wire.SetItem] | type[wire.AdjustItem],
        apply: Callable[[Any, str], wire.ItemResult],
    ) -> web.StreamResponse:
        """A batched write: idempotent by key, replayed for 24 h, 409 on another body."""
        key = request.headers.get(wire.H_IDEMPOTENCY_KEY, "").strip()
        if not key:
            return _api_error(400, wire.KEY_REQUIRED, "writes need an Idempotency-Key")
        body = await self._body(request)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        now = self.now()
        while self.replays:  # oldest first: dicts keep insertion order
            oldest = next(iter(self.replays))
            if now - self.replays[oldest].at < IDEMPOTENCY_TTL:
                break
            del self.replays[oldest]
        replay = self.replays.get(key)
        if replay is not None:
            if replay.digest != digest:
                return _api_error(409, wire.KEY_REUSED, "this key was used with another body")
            return web.json_response(replay.payload)
        try:
            items = wire.parse_write_request(body, kind)
        except ValueError as exc:
            return _api_error(400, wire.INVALID_REQUEST, str(exc))
        results = [apply(item, key) for item in items]
        payload = wire.envelope_ok(wire.write_response(results))
        self.replays[key] = _Replay(digest, payload, now)
        self.stats["writes"] += 1
        if self.take_timeout_after_apply():
            self.drop_connection(request)
        return web.json_response(payload)

    async def _h_sync_push(self, request: web.Request) -> web.Response:
        try:
            shop_id, skus = wire.parse_sync_push_request(await self._body(request))
        except (ValueError, AttributeError) as exc:
            return _api_error(400, wire.INVALID_REQUEST, str(exc))
        shop = self.inventory.shops.get(shop_id)
        if shop is None:
            return _api_error(404, wire.NOT_FOUND, "no such shop")
        rows = [r.to_wire() for r in self.inventory.push(shop, skus)]
        return _ok(wire.page_data(rows, count=len(rows), skip=1, size=len(rows), next_cursor=None))

    async def _h_webhook_create(self, request: web.Request) -> web.Response:
        try:
            url, topics = wire.parse_webhook_request(await self._body(request))
        except ValueError as exc:
            return _api_error(400, wire.INVALID_REQUEST, str(exc))
        if any(h.url == url for h in self._live_hooks().values()):
            return _api_error(409, wire.DUPLICATE, "a webhook for this url exists")
        hook_id = next(self._hook_ids)
        hook = wire.Webhook(str(hook_id), url, tuple(topics))
        self.hooks[hook_id] = hook
        for topic in topics:
            self.webhooks.subscribe(topic, url, now=self.now(), webhook_id=hook_id)
        # Every subscription signs with the shop's one secret, shown only here.
        return _ok(dataclasses.replace(hook, secret=self.options.webhook_secret).to_wire())

    async def _h_webhook_delete(self, request: web.Request) -> web.Response:
        try:
            hook_id = int(request.match_info["webhook_id"])
        except ValueError:
            hook_id = -1
        hook = self._live_hooks().pop(hook_id, None)
        if hook is None:
            return _api_error(404, wire.NOT_FOUND, "no such webhook")
        for sub in list(self.webhooks.subscriptions.values()):
            if sub.extra.get("webhook_id") == hook_id:
                self.webhooks.unsubscribe(sub.id)
        return _ok(hook.to_wire())
