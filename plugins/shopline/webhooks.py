"""SHOPLINE webhooks: the topics the channel needs, signature check, and the hint each carries."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

from agent.channel import WebhookHint, WebhookRejected, order_reference, parse_json

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


def hint_from_payload(
    topic: str,
    payload: Any,
    delivery_id: str,
    *,
    location_id: str | None,
    known_count: Callable[[str], int | None],
) -> WebhookHint:
    """What a verified delivery of `topic` says changed.

    `inventory_levels/update` names its inventory item, unless it is at another location or
    reports the very count the channel last saw (the echo of our own write: re-reading it
    would find nothing new). Orders and refunds name SKUs, since their variant ids are not
    the channel's item ids. Product topics say the catalogue changed and name their variants'
    inventory items, which the core looks up.
    """
    body = payload if isinstance(payload, dict) else {}
    if topic == "inventory_levels/update":
        item_id = body.get("inventory_item_id")
        if item_id is None:
            return WebhookHint(topic, delivery_id=delivery_id)
        item_id = str(item_id)
        location = body.get("location_id")
        if location_id and location is not None and str(location) != location_id:
            return WebhookHint(topic, delivery_id=delivery_id)
        available = body.get("available")
        if isinstance(available, int) and known_count(item_id) == available:
            return WebhookHint(topic, delivery_id=delivery_id)
        return WebhookHint(topic, item_ids=(item_id,), delivery_id=delivery_id)
    if topic in ("orders/create", "orders/cancelled"):
        skus = _skus(body.get("line_items"), lambda line: line.get("sku"))
        reference = order_reference(body.get("name"), body.get("id"))
        return WebhookHint(topic, skus=skus, delivery_id=delivery_id, reference=reference)
    if topic == "refunds/create":
        skus = _skus(
            body.get("refund_line_items"),
            lambda line: (line.get("line_item") or {}).get("sku"),
        )
        reference = order_reference(None, body.get("order_id"))
        return WebhookHint(topic, skus=skus, delivery_id=delivery_id, reference=reference)
    if topic.startswith("products/"):
        variants = [v for v in body.get("variants") or [] if isinstance(v, dict)]
        items = tuple(
            dict.fromkeys(
                str(v["inventory_item_id"])
                for v in variants
                if isinstance(v.get("inventory_item_id"), str | int)
                and not isinstance(v.get("inventory_item_id"), bool)
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
    location_id: str | None = None,
    known_count: Callable[[str], int | None] = lambda _item_id: None,
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
        topic, payload, delivery_id, location_id=location_id, known_count=known_count
    )
