"""The Acme shop emulator, built on shopsync's emulator kit (`agent.emulator`).

The Acme API, all under ``/v1`` with ``Authorization: Bearer <token>``:

| call | answer |
| --- | --- |
| GET /v1/items?limit=&cursor= | {"items": [{id, sku, title, available, created_at}], next_cursor} |
| GET /v1/stock?ids=1,2 | {"stock": [{id, available}]} (unknown ids left out; ≤ 50 ids) |
| POST /v1/stock + Idempotency-Key | {"changes": [{id, expected, available}]} → {"results": [...]} |
| GET, POST /v1/webhooks | {"webhooks": [{id, topic, url}]}; POST {"topic", "url"} |

A stock change is compare-and-set: a row is ``applied`` only if the item still holds
`expected`, else ``stale`` with the current count. A key seen before replays its first answer
(another body under it is a 422). Requests draw on a bucket of 10, refilled 5 per second; an
empty bucket answers 429 with ``Retry-After``. Webhooks (topic ``stock.changed``) carry
``X-Acme-Signature: sha256=<hex HMAC-SHA256 of the body>``. The kit adds ``/_emulator/*``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Any

from aiohttp import web

from agent.emulator import Emulator, LeakyBucket, Variant

__all__ = ["MAX_IDS", "MAX_PAGE", "TOPIC", "AcmeEmulator"]

MAX_PAGE = 25
MAX_IDS = 50
TOPIC = "stock.changed"


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class AcmeEmulator(Emulator):
    """One emulated Acme shop."""

    name = "acme"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replays: dict[str, tuple[str, dict[str, Any]]] = {}  # key -> (body digest, answer)

    # -- the kit's hooks ---------------------------------------------------------------------

    def make_bucket(self) -> LeakyBucket:
        """10 requests deep, 5 per second."""
        return LeakyBucket(10, 5, clock=self.clock, enabled=self.options.rate_limit)

    def sign_webhook(self, topic: str, body: bytes, delivery_id: str) -> dict[str, str]:
        """Acme's headers: topic, delivery id and the hex HMAC-SHA256 of the raw body."""
        digest = hmac.new(self.options.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        return {
            "X-Acme-Topic": topic,
            "X-Acme-Delivery": delivery_id,
            "X-Acme-Signature": f"sha256={digest}",
        }

    def on_stock_change(self, variant: Variant, before: int, after: int, cause: str) -> None:
        """Every count change is one ``stock.changed`` delivery."""
        payload = {"id": str(variant.inventory_item_id), "sku": variant.sku, "available": after}
        self.webhooks.emit(TOPIC, payload)

    def add_platform_routes(self, app: web.Application) -> None:
        """The four Acme calls."""
        app.router.add_get("/v1/items", self._items)
        app.router.add_get("/v1/stock", self._stock)
        app.router.add_post("/v1/stock", self._set)
        app.router.add_get("/v1/webhooks", self._webhooks)
        app.router.add_post("/v1/webhooks", self._subscribe)

    # -- every call --------------------------------------------------------------------------

    def _refuse(self, request: web.Request) -> web.Response | None:
        """Injected failure, auth, then the rate limit: the answer to refuse with, if any."""
        failure = self.take_injected_failure()
        if failure is not None:
            return _error(failure, "injected failure")
        expected = f"Bearer {self.options.token}".encode()
        given = request.headers.get("Authorization", "").encode()
        if self.revoked or not hmac.compare_digest(given, expected):
            return _error(401, "bad token")
        if not self.bucket.try_take(1):
            self.stats["throttled"] += 1
            wait = max(0.05, self.bucket.wait_time(1))
            return _error(429, "slow down", **{"Retry-After": f"{wait:.2f}"})
        return None

    def _json(self, variant: Variant) -> dict[str, Any]:
        created = dt.datetime.fromtimestamp(variant.created_at, dt.UTC)
        return {
            "id": str(variant.inventory_item_id),
            "sku": variant.sku,
            "title": variant.title,
            "available": variant.available,
            "created_at": created.isoformat().replace("+00:00", "Z"),
        }

    # -- handlers ----------------------------------------------------------------------------

    async def _items(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        try:
            limit = int(request.query.get("limit", MAX_PAGE))
            cursor = int(request.query.get("cursor", "0"))
        except ValueError:
            return _error(400, "limit and cursor are integers")
        if not 1 <= limit <= MAX_PAGE:  # refused, as the platforms do, never quietly clamped
            return _error(400, f"limit must be 1..{MAX_PAGE}")
        self.stats["reads"] += 1
        # Ids only grow, so "after id N" is a cursor that stays stable under inserts.
        rest = sorted(v for v in self.store.by_item if v > cursor)
        page = rest[:limit]
        items = [self._json(self.store.by_item[i]) for i in page]
        more = len(rest) > limit
        return web.json_response({"items": items, "next_cursor": str(page[-1]) if more else None})

    async def _stock(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        ids = [i for i in request.query.get("ids", "").split(",") if i]
        if len(ids) > MAX_IDS:
            return _error(400, f"at most {MAX_IDS} ids")
        self.stats["reads"] += 1
        known = [
            self.store.by_item[int(i)] for i in ids if i.isdigit() and int(i) in self.store.by_item
        ]
        stock = [{"id": str(v.inventory_item_id), "available": v.available} for v in known]
        return web.json_response({"stock": stock})

    async def _set(self, request: web.Request) -> web.StreamResponse:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            return _error(400, "an Idempotency-Key header is required")
        raw = await request.read()
        digest = hashlib.sha256(raw).hexdigest()
        if key in self.replays:
            seen, answer = self.replays[key]
            if seen != digest:
                return _error(422, "this Idempotency-Key was used with another body")
            return web.json_response(answer)
        try:
            changes = json.loads(raw)["changes"]
            rows = [(str(c["id"]), int(c["expected"]), int(c["available"])) for c in changes]
        except (ValueError, KeyError, TypeError):
            return _error(400, "body must be {changes: [{id, expected, available}]}")
        if len(rows) > MAX_IDS:
            return _error(400, f"at most {MAX_IDS} changes")
        results = []
        for item_id, expected, available in rows:
            number = int(item_id) if item_id.isdigit() else -1
            if number not in self.store.by_item:
                results.append({"id": item_id, "status": "not_found"})
                continue
            applied, after = self.store.api_set(number, available, key=key, expected=expected)
            status = "applied" if applied else "stale"
            results.append({"id": item_id, "status": status, "available": after})
        answer = {"results": results}
        self.replays[key] = (digest, answer)
        self.stats["writes"] += 1
        if self.take_timeout_after_apply():
            self.drop_connection(request)
        return web.json_response(answer)

    async def _webhooks(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        subs = self.webhooks.subscriptions.values()
        return web.json_response(
            {"webhooks": [{"id": s.id, "topic": s.topic, "url": s.url} for s in subs]}
        )

    async def _subscribe(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
            topic, url = str(body["topic"]), str(body["url"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "body must be {topic, url}")
        if topic != TOPIC:
            return _error(422, f"unknown topic {topic}")
        sub = self.webhooks.subscribe(topic, url, now=self.clock())
        return web.json_response({"id": sub.id, "topic": sub.topic, "url": sub.url}, status=201)
