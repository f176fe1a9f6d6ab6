"""Pisell's wire format in one place: paths, headers, fields, sign, envelope, paging, webhooks.

Pisell publishes no inventory API; this module encodes the *proposed* API of
`shared/platforms/pisell.md` §4, which keeps the conventions seen in Pisell's report Open API
(signed `Client-Id`/`Access-Token`/`Timestamp`/`Sign` headers, the `{status, code, message,
data}` envelope, 1-based `skip`/`size` paging, local-time strings). The client, the webhook
verifier and the emulator all import it, so adopting a real Pisell API is a change to this
file (and to `envelope.py`, the answers' envelope and error codes, which it re-exports): rename
a path, a header or a field here and both sides follow.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import zoneinfo
from collections.abc import Iterable, Mapping
from typing import Any

from plugins.pisell.envelope import (  # noqa: F401 - re-exported: read as `wire.<name>`
    COMBO_NOT_WRITABLE,
    DUPLICATE,
    FORBIDDEN,
    INSUFFICIENT_STOCK,
    INTERNAL_ERROR,
    INVALID_QUANTITY,
    INVALID_REQUEST,
    KEY_REQUIRED,
    KEY_REUSED,
    NOT_FOUND,
    NOT_STOCKED,
    RATE_LIMITED,
    SKU_NOT_FOUND,
    STOCK_CONFLICT,
    UNAUTHORIZED,
    WAREHOUSE_NOT_FOUND,
    Envelope,
    envelope_error,
    envelope_ok,
    parse_envelope,
)
from plugins.pisell.record import Record

# -- paths ------------------------------------------------------------------------------------

API_PREFIX = "/openapi/v1"
PATHS = {
    "warehouses": f"{API_PREFIX}/warehouses",
    "zones": f"{API_PREFIX}/zones",
    "bins": f"{API_PREFIX}/bins",
    "shops": f"{API_PREFIX}/shops",
    "stock_items": f"{API_PREFIX}/stock-items",
    "levels": f"{API_PREFIX}/inventory-levels",
    "levels_set": f"{API_PREFIX}/inventory-levels/set",
    "levels_adjust": f"{API_PREFIX}/inventory-levels/adjust",
    "movements": f"{API_PREFIX}/stock-movements",
    "product_links": f"{API_PREFIX}/product-links",
    "sync_records": f"{API_PREFIX}/sync-records",
    "sync_push": f"{API_PREFIX}/sync-records/push",
    "webhooks": f"{API_PREFIX}/webhooks",
    "webhook": f"{API_PREFIX}/webhooks/{{webhook_id}}",
}

# -- headers ----------------------------------------------------------------------------------

H_CLIENT_ID = "Client-Id"
H_ACCESS_TOKEN = "Access-Token"
H_TIMESTAMP = "Timestamp"
H_SIGN = "Sign"
H_IDEMPOTENCY_KEY = "Idempotency-Key"
H_RATE_LIMIT = "X-RateLimit-Limit"
H_RATE_REMAINING = "X-RateLimit-Remaining"
H_RETRY_AFTER = "Retry-After"
H_WEBHOOK_TOPIC = "X-Pisell-Topic"
H_WEBHOOK_EVENT_ID = "X-Pisell-Event-Id"
H_WEBHOOK_TIMESTAMP = "X-Pisell-Timestamp"
H_WEBHOOK_SIGNATURE = "X-Pisell-Signature"

SIGN_SKEW_SECONDS = 300
WEBHOOK_SKEW_SECONDS = 300

# -- limits, topics, movement types -----------------------------------------------------------

MAX_PAGE_SIZE = 100
MAX_LEVEL_SKUS = 50
MAX_WRITE_ITEMS = 50

TOPIC_INVENTORY_LEVEL_UPDATED = "inventory_level.updated"
TOPIC_STOCK_MOVEMENT_CREATED = "stock_movement.created"
TOPIC_ORDER_IMPORTED = "order.imported"
TOPIC_SYNC_RECORD_FAILED = "sync_record.failed"
TOPICS = (
    TOPIC_INVENTORY_LEVEL_UPDATED,
    TOPIC_STOCK_MOVEMENT_CREATED,
    TOPIC_ORDER_IMPORTED,
    TOPIC_SYNC_RECORD_FAILED,
)

# IS stock in / stock out types (help text §2); "stocktake" is a set to an absolute count.
IN_TYPES = ("purchase", "sales_return", "stocktake")
OUT_TYPES = ("purchase_return", "reissue", "shipment", "other", "stocktake")
MOVEMENT_TYPES = tuple(dict.fromkeys(IN_TYPES + OUT_TYPES))

# -- request signing ----------------------------------------------------------------------------


def sign(timestamp: str, client_id: str, client_secret: str) -> str:
    """Pisell's `Sign`: uppercase hex MD5 of the three values sorted and joined by `&`."""
    joined = "&".join(sorted([timestamp, client_id, client_secret]))
    # MD5 is Pisell's choice, not ours; it authenticates nothing a TLS channel would not.
    return hashlib.md5(joined.encode(), usedforsecurity=False).hexdigest().upper()


def auth_headers(
    *, client_id: str, access_token: str, client_secret: str, now: float
) -> dict[str, str]:
    """The signed headers every API request carries."""
    timestamp = str(int(now))
    return {
        H_CLIENT_ID: client_id,
        H_ACCESS_TOKEN: access_token,
        H_TIMESTAMP: timestamp,
        H_SIGN: sign(timestamp, client_id, client_secret),
    }


# -- paging -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: its rows, the total `count`, the `next_cursor` (None at the end)."""

    rows: list[dict[str, Any]]
    count: int
    next_cursor: str | None


def page_data(
    rows: list[dict[str, Any]], *, count: int, skip: int, size: int, next_cursor: str | None
) -> dict[str, Any]:
    """The `data` of a list response."""
    return {"list": rows, "count": count, "skip": skip, "size": size, "next_cursor": next_cursor}


def parse_page(data: Any) -> Page:
    """Parse a list response's `data`; raises ValueError when it has no `list`."""
    if not isinstance(data, dict) or not isinstance(data.get("list"), list):
        raise ValueError("list response without a list")
    rows = [row for row in data["list"] if isinstance(row, dict)]
    cursor = data.get("next_cursor")
    return Page(rows, int(data.get("count") or len(rows)), str(cursor) if cursor else None)


def encode_cursor(last_id: int) -> str:
    """An opaque cursor that resumes after the row with id `last_id` (stable under inserts)."""
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id an `encode_cursor` cursor resumes after; ValueError when it is not one."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("malformed cursor") from None
    prefix, _, number = text.partition(":")
    if prefix != "after" or not number.isdigit():
        raise ValueError("malformed cursor")
    return int(number)


# -- ids and times ------------------------------------------------------------------------------


def format_item_id(sku: str, warehouse_id: str) -> str:
    """The channel item id of a SKU in a warehouse: `sku@warehouse_id`."""
    return f"{sku}@{warehouse_id}"


def parse_item_id(item_id: str) -> tuple[str, str]:
    """(sku, warehouse_id) of an item id; ValueError when it has no `@`."""
    sku, sep, warehouse_id = item_id.rpartition("@")
    if not sep or not sku or not warehouse_id:
        raise ValueError(f"not a Pisell item id: {item_id!r}")
    return sku, warehouse_id


LOCAL_FORMAT = "%Y-%m-%d %H:%M:%S"
DEFAULT_TIMEZONE = "Australia/Sydney"


def zone(name: str | None) -> dt.tzinfo:
    """The tzinfo of an IANA name; UTC when it is empty or unknown on this machine."""
    if not name:
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def format_local(epoch: float, tz: dt.tzinfo) -> str:
    """Epoch seconds as Pisell's local `YYYY-MM-DD HH:mm:ss` in the shop's timezone."""
    return dt.datetime.fromtimestamp(epoch, tz).strftime(LOCAL_FORMAT)


def parse_local(text: str, tz: dt.tzinfo) -> float:
    """Pisell's local time string (in the shop's timezone) as epoch seconds."""
    return dt.datetime.strptime(text.strip(), LOCAL_FORMAT).replace(tzinfo=tz).timestamp()


# -- query parameters ---------------------------------------------------------------------------

Q_CURSOR = "cursor"
Q_SIZE = "size"
Q_SKIP = "skip"
Q_SKU = "sku"
Q_WAREHOUSE = "warehouse_id"
Q_SINCE = "since"
Q_UPDATED_SINCE = "updated_since"
Q_SHOP = "shop_id"

# -- records ------------------------------------------------------------------------------------
# A record's row is its fields by name, so neither the plugin nor the emulator spells a field.


@dataclasses.dataclass(frozen=True, slots=True)
class Warehouse(Record):
    """An IS warehouse (仓库)."""

    id: str
    name: str = ""
    address: str = ""
    email: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Zone(Record):
    """A zone (区域) of a warehouse: `picking` or `storage` (read-only)."""

    id: str
    warehouse_id: str
    name: str
    type: str


@dataclasses.dataclass(frozen=True, slots=True)
class Bin(Record):
    """A bin (货位) inside a zone (read-only)."""

    id: str
    zone_id: str
    code: str


@dataclasses.dataclass(frozen=True, slots=True)
class Shop(Record):
    """A shop bound to IS (绑定店铺); the Pisell store itself has platform `pisell`."""

    id: str
    platform: str = ""
    name: str = ""
    domain: str = ""
    timezone: str = ""
    stock_sync_enabled: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class Component(Record):
    """One line of a combo's bill of materials (组合货品): `quantity` units of `sku`."""

    sku: str
    quantity: int

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise ValueError("component quantity must be positive")


@dataclasses.dataclass(frozen=True, slots=True)
class StockItem(Record):
    """A stock item (库存货品), keyed by SKU; a combo has components."""

    id: int
    sku: str
    created_at: str
    title: str = ""
    updated_at: str = ""
    is_combo: bool = False
    components: tuple[Component, ...] = ()

    @classmethod
    def from_wire(cls, row: Any) -> StockItem:
        """Read a row with its components."""
        item = cls._read(row)
        parts = tuple(Component.from_wire(p) for p in item.components)
        return dataclasses.replace(item, components=parts)


@dataclasses.dataclass(frozen=True, slots=True)
class Level(Record):
    """A SKU's stock in one warehouse (库存查询): `available = on_hand - locked`."""

    sku: str
    warehouse_id: str
    available: int
    on_hand: int = 0
    locked: int = 0
    version: int = 0
    updated_at: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class SetItem(Record):
    """One row of `POST /inventory-levels/set`: compare-and-set when `expected_available`."""

    sku: str
    warehouse_id: str
    available: int
    expected_available: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AdjustItem(Record):
    """One row of `POST /inventory-levels/adjust`: add `delta`, booked as `type`."""

    sku: str
    warehouse_id: str
    delta: int
    type: str

    def __post_init__(self) -> None:
        if self.type not in MOVEMENT_TYPES:
            raise ValueError(f"type must be one of {', '.join(MOVEMENT_TYPES)}")


@dataclasses.dataclass(frozen=True, slots=True)
class ItemResult(Record):
    """The outcome of one set or adjust row (`error_code` and `message` on failure)."""

    sku: str
    warehouse_id: str
    ok: bool
    available: int | None = None
    version: int | None = None
    error_code: str | None = None
    message: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Movement(Record):
    """A stock movement (入库/出库): one change of a SKU's count, typed and sourced."""

    id: int
    direction: str  # "in" | "out"
    type: str
    sku: str
    warehouse_id: str
    quantity: int
    balance_after: int
    source: str  # manual | order | api | transfer
    created_at: str


@dataclasses.dataclass(frozen=True, slots=True)
class ProductLink(Record):
    """A shop product linked to a stock item (商品关联), one to one."""

    shop_id: str
    shop_product_id: str
    shop_variant_id: str
    shop_sku: str
    sku: str


@dataclasses.dataclass(frozen=True, slots=True)
class SyncRecord(Record):
    """One push of a count to a bound shop (库存同步): auto or manual, success or failed."""

    id: int
    shop_id: str
    sku: str
    mode: str  # auto | manual
    status: str  # success | failed
    quantity: int
    message: str
    created_at: str


@dataclasses.dataclass(frozen=True, slots=True)
class Webhook(Record):
    """A webhook subscription; `secret` is only in the answer to its creation."""

    id: str
    url: str
    topics: tuple[str, ...] = ()
    secret: str | None = None


# -- request and answer bodies ------------------------------------------------------------------


def _rows(body: Any, key: str) -> list[Any]:
    rows = body.get(key) if isinstance(body, Mapping) else None
    if not isinstance(rows, list):
        raise ValueError(f"{key} must be a list")
    return rows


def write_request(items: Iterable[SetItem | AdjustItem]) -> dict[str, Any]:
    """The body of a set or adjust call."""
    return {"items": [item.to_wire() for item in items]}


def parse_write_request(body: Any, kind: type[SetItem] | type[AdjustItem]) -> list[Any]:
    """The rows of a set or adjust body; ValueError names the first problem."""
    rows = _rows(body, "items")
    if not rows or len(rows) > MAX_WRITE_ITEMS:
        raise ValueError(f"items must hold 1 to {MAX_WRITE_ITEMS} rows")
    out = []
    for n, row in enumerate(rows):
        try:
            out.append(kind.from_wire(row))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"items[{n}]: {exc}") from None
    return out


def write_response(results: Iterable[ItemResult]) -> dict[str, Any]:
    """The `data` of a set or adjust answer."""
    return {"results": [r.to_wire() for r in results]}


def parse_write_response(data: Any) -> list[ItemResult]:
    """The per-row results of a set or adjust answer, in request order."""
    return [ItemResult.from_wire(row) for row in _rows(data, "results")]


def sync_push_request(shop_id: str, skus: Iterable[str]) -> dict[str, Any]:
    """The body of a manual bulk push (`POST /sync-records/push`)."""
    return {"shop_id": shop_id, "skus": list(skus)}


def parse_sync_push_request(body: Any) -> tuple[str, list[str]]:
    """(shop_id, skus) of a manual bulk push."""
    skus = _rows(body, "skus")
    if body.get("shop_id") is None or not all(isinstance(s, str) for s in skus):
        raise ValueError("shop_id and skus (a list of strings) are required")
    return str(body["shop_id"]), skus


def webhook_request(url: str, topics: Iterable[str]) -> dict[str, Any]:
    """The body of a webhook creation."""
    return {"url": url, "topics": list(topics)}


def parse_webhook_request(body: Any) -> tuple[str, list[str]]:
    """(url, topics) of a webhook creation; every topic must be known."""
    topics = _rows(body, "topics")
    url = body.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError("url must be an http(s) URL")
    unknown = [str(t) for t in topics if t not in TOPICS]
    if not topics or unknown:
        raise ValueError(f"topics must be a non-empty list of {', '.join(TOPICS)}")
    return url, list(dict.fromkeys(topics))


# -- webhook payloads ---------------------------------------------------------------------------


def level_event(sku: str, warehouse_id: str) -> dict[str, Any]:
    """The payload of `inventory_level.updated`: which level changed (a hint, no count)."""
    return {"sku": sku, "warehouse_id": warehouse_id}


def order_event(
    order_id: int, shop_id: str, warehouse_id: str, lines: Iterable[tuple[str, int]]
) -> dict[str, Any]:
    """The payload of `order.imported`: the order as sold (combo lines name the combo)."""
    return {
        "order_id": order_id,
        "shop_id": shop_id,
        "warehouse_id": warehouse_id,
        "line_items": [{"sku": sku, "quantity": qty} for sku, qty in lines],
    }


def event_skus(topic: str, payload: Any) -> tuple[list[str], str | None]:
    """(skus, warehouse_id) a webhook payload names; ([], None) for topics without stock."""
    if not isinstance(payload, Mapping):
        raise ValueError("webhook payload must be an object")
    warehouse = payload.get("warehouse_id")
    warehouse_id = None if warehouse is None else str(warehouse)
    if topic in (TOPIC_INVENTORY_LEVEL_UPDATED, TOPIC_STOCK_MOVEMENT_CREATED):
        sku = payload.get("sku")
        if not isinstance(sku, str) or not sku:
            raise ValueError("webhook payload without a sku")
        return [sku], warehouse_id
    if topic == TOPIC_ORDER_IMPORTED:
        lines = _rows(payload, "line_items")
        skus = [line["sku"] for line in lines if isinstance(line, Mapping) and line.get("sku")]
        return list(dict.fromkeys(str(s) for s in skus)), warehouse_id
    return [], None


# -- webhooks -----------------------------------------------------------------------------------


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Pisell-Signature` value: `sha256=` + hex HMAC-SHA256 of `timestamp.body`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def webhook_headers(
    *, secret: str, topic: str, event_id: str, body: bytes, now: float
) -> dict[str, str]:
    """Every header of one webhook delivery."""
    timestamp = str(int(now))
    return {
        H_WEBHOOK_TOPIC: topic,
        H_WEBHOOK_EVENT_ID: event_id,
        H_WEBHOOK_TIMESTAMP: timestamp,
        H_WEBHOOK_SIGNATURE: sign_webhook(secret, timestamp, body),
    }


def verify_webhook_signature(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Constant-time check of a delivery's signature."""
    expected = sign_webhook(secret, timestamp, body).encode()
    return hmac.compare_digest(expected, signature.strip().encode("utf-8", "replace"))


def csv(values: Iterable[str]) -> str:
    """A comma-joined query value (`sku=A,B`)."""
    return ",".join(values)
