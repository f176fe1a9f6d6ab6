"""Verification of Pisell webhooks: HMAC-SHA256 over `timestamp.body`, then the hint."""

from __future__ import annotations

from collections.abc import Mapping

from agent.channel import WebhookHint, WebhookRejected, order_reference, parse_json
from plugins.pisell import wire

__all__ = ["header", "verify"]


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name from any mapping (plain dicts included)."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, val in headers.items():
        if key.lower() == lowered:
            return val
    return None


def verify(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    now: float,
    warehouse_id: str | None,
) -> WebhookHint:
    """Check a delivery's signature and age, then say which items it names.

    The signature is checked (in constant time) before the body is parsed. A timestamp more
    than five minutes from `now` is rejected, so a captured delivery cannot be replayed later.
    Stock topics name `sku@warehouse_id` items of `warehouse_id` (other warehouses are not
    this channel's items); `order.imported` names SKUs; other topics give an empty hint. A
    signed body that cannot be read (not JSON, nested too deep, no SKU) raises ValueError.
    """
    signature = header(headers, wire.H_WEBHOOK_SIGNATURE)
    stamp = header(headers, wire.H_WEBHOOK_TIMESTAMP)
    if not signature or not stamp:
        raise WebhookRejected("missing X-Pisell-Signature or X-Pisell-Timestamp")
    if not wire.verify_webhook_signature(secret, stamp.strip(), body, signature):
        raise WebhookRejected("bad signature")
    try:
        age = abs(now - int(stamp.strip()))
    except ValueError:
        raise WebhookRejected("X-Pisell-Timestamp is not unix seconds") from None
    if age > wire.WEBHOOK_SKEW_SECONDS:
        raise WebhookRejected(f"stale or future timestamp ({int(age)} s off)")
    topic = (header(headers, wire.H_WEBHOOK_TOPIC) or "").strip()
    delivery_id = (header(headers, wire.H_WEBHOOK_EVENT_ID) or "").strip()
    try:
        payload = parse_json(body)
        skus, warehouse = wire.event_skus(topic, payload)
    except ValueError as exc:  # signed but unreadable (JSONError included): a 400, not a 401
        raise ValueError(f"malformed {topic or 'webhook'} payload: {exc}") from None
    if warehouse is not None and warehouse_id is not None and warehouse != warehouse_id:
        return WebhookHint(topic=topic, delivery_id=delivery_id)
    if topic == wire.TOPIC_ORDER_IMPORTED:
        reference = order_reference(None, payload.get("order_id"))
        return WebhookHint(
            topic=topic, skus=tuple(skus), delivery_id=delivery_id, reference=reference
        )
    item_ids: tuple[str, ...] = ()
    if warehouse is not None:
        item_ids = tuple(wire.format_item_id(sku, warehouse) for sku in skus)
    return WebhookHint(topic=topic, item_ids=item_ids, skus=tuple(skus), delivery_id=delivery_id)
