"""SHOPLINE webhooks: the topics the channel needs, signature check, and the hint each carries."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

from agent.channel import WebhookHint, WebhookRejected, order_reference, parse_json
from plugins.shopline.locations import Sites, located_id

__all__ = ["TOPICS", "hint_from_payload", "signature_matches", "verify"]

TOPICS: tuple[str, ...] = (
    "inventory_levels/update",
    "orders/create",
    "orders/cancelled",
    "refunds/create",
    "products/create",
    "products/update",
)
SIGNATURE_HEADER = "x-shopline-hmac-sha256"
TOPIC_HEADER = "x-shopline-topic"
DELIVERY_HEADER = "x-shopline-webhook-id"


def signature_matches(secret: str, body: bytes, signature: str) -> bool:
    """True if `signature` is the HMAC-SHA256 of `body`, as lowercase hex or as base64.

    SHOPLINE's SDK compares hex while its docs show base64, so both are accepted; each
    comparison runs in constant time.
    """
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    given = signature.strip()
    if len(given) == 64:
        try:
            return hmac.compare_digest(bytes.fromhex(given), digest)
        except ValueError:
            return False
    try:
        decoded = base64.b64decode(given.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return False
    return hmac.compare_digest(decoded, digest)


def _skus(lines: Any, get_sku: Callable[[Any], Any]) -> tuple[str, ...]:
    found: list[str] = []
    for line in lines if isinstance(lines, list) else []:
        sku = get_sku(line) if isinstance(line, dict) else None
        if isinstance(sku, str) and sku.strip() and sku not in found:
            found.append(sku)
    return tuple(found)


def _text(value: Any) -> str | None:
    """An id field as a string; None when absent, empty or not an id."""
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)


def _line_targets(
    lines: list[tuple[Any, Any, Any]], sites: Sites, item_of_variant: Callable[[str], str | None]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(SKUs, item ids) that an order's or refund's lines name, each line given as (SKU,
    variant id, location id).

    A line at the channel's own location, or at one it does not sync, names its SKU as it
    always has (the core maps a SKU to its own-location item). A line at another synced
    location names the variant's item there (``<inventory item>@<location>``); a line that
    names no location names its SKU and the variant's item at every other synced location.
    A variant the channel has not listed yet has no known inventory item: its SKU stands in.
    """
    skus: list[str] = []
    item_ids: list[str] = []
    for raw_sku, raw_variant, raw_location in lines:
        sku = raw_sku if isinstance(raw_sku, str) and raw_sku.strip() else None
        variant_id, location_id = _text(raw_variant), _text(raw_location)
        inventory_id = item_of_variant(variant_id) if variant_id else None
        if location_id is None:
            places = list(sites.others)
        elif location_id in sites.others:
            places = [location_id]
        else:
            places = []
        if inventory_id is not None:
            item_ids.extend(located_id(inventory_id, place) for place in places)
        if sku and (inventory_id is None or location_id not in sites.others):
            skus.append(sku)
    return tuple(dict.fromkeys(skus)), tuple(dict.fromkeys(item_ids))


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def hint_from_payload(
    topic: str,
    payload: Any,
    delivery_id: str,
    *,
    sites: Sites,
    known_count: Callable[[str], int | None],
    item_of_variant: Callable[[str], str | None] = lambda _variant_id: None,
) -> WebhookHint:
    """What a verified delivery of `topic` says changed.

    `inventory_levels/update` names its inventory item at the payload's `location_id` (a
    level without one is the own location's), unless that location is not synced or the
    payload reports the very count the channel last saw (the echo of our own write:
    re-reading it would find nothing new). Orders and refunds name SKUs and located items
    (`_line_targets`), since their variant ids are not the channel's item ids. Product
    topics say the catalogue changed and name their variants' inventory items at every synced
    location, which the core looks up.
    """
    body = payload if isinstance(payload, dict) else {}
    if topic == "inventory_levels/update":
        inventory_id = body.get("inventory_item_id")
        if inventory_id is None:
            return WebhookHint(topic, delivery_id=delivery_id)
        location = body.get("location_id")
        item_id: str | None = str(inventory_id)
        if location is not None:
            item_id = sites.item_id(str(inventory_id), str(location))
        if item_id is None:
            return WebhookHint(topic, delivery_id=delivery_id)
        available = body.get("available")
        if isinstance(available, int) and known_count(item_id) == available:
            return WebhookHint(topic, delivery_id=delivery_id)
        return WebhookHint(topic, item_ids=(item_id,), delivery_id=delivery_id)
    if topic in ("orders/create", "orders/cancelled"):
        lines = [
            (line.get("sku"), line.get("variant_id"), line.get("location_id"))
            for line in _dicts(body.get("line_items"))
        ]
        skus, item_ids = _line_targets(lines, sites, item_of_variant)
        reference = order_reference(body.get("name"), body.get("id"))
        return WebhookHint(
            topic, item_ids=item_ids, skus=skus, delivery_id=delivery_id, reference=reference
        )
    if topic == "refunds/create":
        lines = []
        for refund_line in _dicts(body.get("refund_line_items")):
            nested = refund_line.get("line_item")
            nested = nested if isinstance(nested, dict) else {}
            # SHOPLINE documents no location on a refund: where a line names one, it counts
            location = refund_line.get("location_id", nested.get("location_id"))
            lines.append((nested.get("sku"), nested.get("variant_id"), location))
        skus, item_ids = _line_targets(lines, sites, item_of_variant)
        reference = order_reference(None, body.get("order_id"))
        return WebhookHint(
            topic, item_ids=item_ids, skus=skus, delivery_id=delivery_id, reference=reference
        )
    if topic.startswith("products/"):
        variants = [v for v in body.get("variants") or [] if isinstance(v, dict)]
        items = tuple(
            dict.fromkeys(
                item_id
                for v in variants
                if isinstance(v.get("inventory_item_id"), str | int)
                and not isinstance(v.get("inventory_item_id"), bool)
                for item_id in sites.everywhere(str(v["inventory_item_id"]))
            )
        )
        skus = _skus(variants, lambda variant: variant.get("sku"))
        return WebhookHint(
            topic, item_ids=items, skus=skus, delivery_id=delivery_id, catalogue_changed=True
        )
    return WebhookHint(topic, delivery_id=delivery_id)


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    sites: Sites | None = None,
    known_count: Callable[[str], int | None] = lambda _item_id: None,
    item_of_variant: Callable[[str], str | None] = lambda _variant_id: None,
) -> WebhookHint:
    """Check a delivery's signature over the raw `body`, then read its hint.

    Raises `WebhookRejected` for a missing or wrong signature (before parsing anything) or a
    missing topic; `ValueError` (`JSONError`) for a signed body that is not JSON or is nested
    too deep.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER)
    if not signature:
        raise WebhookRejected("missing X-Shopline-Hmac-Sha256 header")
    if not signature_matches(secret, body, signature):
        raise WebhookRejected("X-Shopline-Hmac-Sha256 does not match the body")
    topic = lowered.get(TOPIC_HEADER, "").strip()
    if not topic:
        raise WebhookRejected("missing X-Shopline-Topic header")
    payload = parse_json(body)  # signed but unreadable: JSONError, a ValueError (400)
    delivery_id = lowered.get(DELIVERY_HEADER, "")
    return hint_from_payload(
        topic,
        payload,
        delivery_id,
        sites=sites if sites is not None else Sites(""),
        known_count=known_count,
        item_of_variant=item_of_variant,
    )
