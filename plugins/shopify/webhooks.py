"""Shopify webhook verification (HMAC-SHA256 over the raw body) and topic → hint mapping."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from agent.channel import WebhookHint, WebhookRejected, order_reference, parse_json

__all__ = ["header", "hint_for", "located_hint", "parse_stamp", "signature", "verify"]

_ITEM_GID = "gid://shopify/InventoryItem/{}"
_LOCATION_GID = "gid://shopify/Location/{}"


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name, from a CIMultiDict or a plain dict."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def parse_stamp(value: Any) -> float | None:
    """A Shopify timestamp (ISO 8601 with an offset, REST or GraphQL) as epoch seconds; None
    for anything else (a level without a usable stamp is read, never trusted)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # Shopify always gives the offset; a naive time is not Shopify's
    return moment.timestamp()


def signature(secret: str, body: bytes) -> str:
    """Shopify's signature of a webhook body: base64(HMAC-SHA256(secret, body))."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    location_gid: str | None = None,
    located: Mapping[str, str] | None = None,
    variant_items: Mapping[int, int] | None = None,
) -> WebhookHint:
    """Check `X-Shopify-Hmac-Sha256` before parsing anything, then say what changed.

    `location_gid`, when known, drops inventory updates for other locations (they do not move
    the count this channel syncs). A channel that syncs several locations gives `located`
    instead (see `hint_for`).
    """
    given = header(headers, "X-Shopify-Hmac-Sha256")
    if not given:
        raise WebhookRejected("missing X-Shopify-Hmac-Sha256 header")
    try:
        given_raw = base64.b64decode(given.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("X-Shopify-Hmac-Sha256 is not base64") from None
    expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    if not hmac.compare_digest(given_raw, expected):
        raise WebhookRejected("webhook signature does not match")
    topic = (header(headers, "X-Shopify-Topic") or "").strip().lower()
    delivery_id = header(headers, "X-Shopify-Webhook-Id") or ""
    # Signed but unreadable (not JSON, nested too deep, not an object) is a ValueError: a 400.
    payload = parse_json(body) if body else {}
    if not isinstance(payload, dict):
        raise ValueError("webhook body is not a JSON object")
    if located:
        return located_hint(topic, payload, delivery_id, located, variant_items or {})
    return hint_for(topic, payload, delivery_id, location_gid=location_gid)


def hint_for(
    topic: str, payload: dict[str, Any], delivery_id: str = "", *, location_gid: str | None = None
) -> WebhookHint:
    """The hint a verified payload of `topic` gives; an unknown topic gives an empty hint."""
    if topic == "inventory_levels/update":
        location = payload.get("location_id")
        if location_gid and location is not None and _LOCATION_GID.format(location) != location_gid:
            return WebhookHint(topic, delivery_id=delivery_id)
        return _level_hint(topic, payload, delivery_id)
    # Every change of a level, an order's included, is also an `inventory_levels/update`
    # with its count and time (shopify.md §5): the core waits for that rather than reading.
    if topic in ("orders/create", "orders/cancelled"):
        lines = _dicts(payload.get("line_items"))
        return WebhookHint(
            topic,
            item_ids=_item_ids(line.get("inventory_item_id") for line in lines),
            skus=_skus(line.get("sku") for line in lines),
            delivery_id=delivery_id,
            reference=order_reference(payload.get("name"), payload.get("id")),
            levels_follow=True,
            stamp=parse_stamp(payload.get("cancelled_at") or payload.get("created_at")),
        )
    if topic == "refunds/create":
        refunded = [r.get("line_item") for r in _dicts(payload.get("refund_line_items"))]
        return WebhookHint(
            topic,
            skus=_skus(line.get("sku") for line in refunded if isinstance(line, dict)),
            delivery_id=delivery_id,
            reference=order_reference(None, payload.get("order_id")),
            levels_follow=True,
            stamp=parse_stamp(payload.get("created_at")),
        )
    if topic in ("products/create", "products/update"):
        variants = _dicts(payload.get("variants"))
        return WebhookHint(
            topic,
            item_ids=_item_ids(v.get("inventory_item_id") for v in variants),
            skus=_skus(v.get("sku") for v in variants),
            delivery_id=delivery_id,
            catalogue_changed=True,
        )
    return WebhookHint(topic, delivery_id=delivery_id)


def located_hint(
    topic: str,
    payload: dict[str, Any],
    delivery_id: str,
    located: Mapping[str, str],
    variant_items: Mapping[int, int],
) -> WebhookHint:
    """The hint of a channel that syncs several locations.

    `located` maps each synced Location gid to the suffix of its items' ids ("" for the
    channel's own location, first; "@n" for location n); `variant_items` maps a variant id to
    its inventory item id, as far as the channel has listed them. Items are named at the
    location the payload tells of: a level's `location_id` (one not synced: an empty hint), an
    order's `location_id` or a refund line's; where it tells none, at every synced location.
    An order line names its item through its `inventory_item_id` or, as Shopify's REST lines
    carry none, its `variant_id`; its SKU, which names the own location's item, only where
    that location is meant. A product's variants are named at every synced location.
    """
    if topic == "inventory_levels/update":
        location = payload.get("location_id")
        suffix = "" if location is None else located.get(_LOCATION_GID.format(location))
        if suffix is None:
            return WebhookHint(topic, delivery_id=delivery_id)
        return _level_hint(topic, payload, delivery_id, suffix)
    everywhere = tuple(located.values())

    def at(location: Any) -> tuple[str, ...]:
        if location is None:
            return everywhere
        suffix = located.get(_LOCATION_GID.format(location))
        return () if suffix is None else (suffix,)

    def line_item(line: dict[str, Any]) -> Any:
        number = line.get("inventory_item_id")
        if number is None and isinstance(line.get("variant_id"), int):
            number = variant_items.get(line["variant_id"])
        return number

    item_ids: dict[str, None] = {}
    skus: list[Any] = []

    def name(lines: Iterable[tuple[dict[str, Any], tuple[str, ...]]]) -> None:
        for line, suffixes in lines:
            for suffix in suffixes:
                for item in _item_ids([line_item(line)]):
                    item_ids[item + suffix] = None
            if "" in suffixes:
                skus.append(line.get("sku"))

    if topic in ("orders/create", "orders/cancelled"):
        suffixes = at(payload.get("location_id"))
        name((line, suffixes) for line in _dicts(payload.get("line_items")))
        return WebhookHint(
            topic,
            item_ids=tuple(item_ids),
            skus=_skus(skus),
            delivery_id=delivery_id,
            reference=order_reference(payload.get("name"), payload.get("id")),
            levels_follow=True,
            stamp=parse_stamp(payload.get("cancelled_at") or payload.get("created_at")),
        )
    if topic == "refunds/create":
        name(
            (r["line_item"], at(r.get("location_id")))
            for r in _dicts(payload.get("refund_line_items"))
            if isinstance(r.get("line_item"), dict)
        )
        return WebhookHint(
            topic,
            item_ids=tuple(item_ids),
            skus=_skus(skus),
            delivery_id=delivery_id,
            reference=order_reference(None, payload.get("order_id")),
            levels_follow=True,
            stamp=parse_stamp(payload.get("created_at")),
        )
    if topic in ("products/create", "products/update"):
        variants = _dicts(payload.get("variants"))
        items = _item_ids(v.get("inventory_item_id") for v in variants)
        return WebhookHint(
            topic,
            item_ids=tuple(i + suffix for i in items for suffix in everywhere),
            skus=_skus(v.get("sku") for v in variants),
            delivery_id=delivery_id,
            catalogue_changed=True,
        )
    return WebhookHint(topic, delivery_id=delivery_id)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _item_ids(values: Iterable[Any]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for value in values:
        # Payload ids are 64-bit ints; never accept floats (they lose digits) or junk.
        if isinstance(value, int) and not isinstance(value, bool):
            out[_ITEM_GID.format(value)] = None
        elif isinstance(value, str) and value.isdigit():
            out[_ITEM_GID.format(int(value))] = None
    return tuple(out)


def _skus(values: Iterable[Any]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if isinstance(v, str) and v.strip()))


def _level_hint(
    topic: str, payload: dict[str, Any], delivery_id: str, suffix: str = ""
) -> WebhookHint:
    """An `inventory_levels/update` hint: the item (at the location `suffix` names; "" the
    channel's own), with its stamped count when the payload says it."""
    items = tuple(i + suffix for i in _item_ids([payload.get("inventory_item_id")]))
    available = payload.get("available")
    counts = (
        ((items[0], available),)
        if items and isinstance(available, int) and not isinstance(available, bool)
        else ()
    )
    stamp = parse_stamp(payload.get("updated_at")) if counts else None
    return WebhookHint(topic, item_ids=items, delivery_id=delivery_id, counts=counts, stamp=stamp)
