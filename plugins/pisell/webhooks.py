"""Verification of Pisell webhooks: HMAC-SHA256 over `timestamp.body`, then the hint."""

from __future__ import annotations

from collections.abc import Collection, Mapping

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
    others: Collection[str] = (),
    combos: Collection[str] = (),
) -> WebhookHint:
    """Check a delivery's signature and age, then say which items it names.

    The signature is checked (in constant time) before the body is parsed. A timestamp more
    than five minutes from `now` is rejected, so a captured delivery cannot be replayed later.
    A signed body that cannot be read (not JSON, nested too deep, no SKU) raises ValueError.

    The channel syncs its own warehouse `warehouse_id` (None before it started: any) and
    `others`. The hint's `skus` name the own warehouse's items (the core resolves a SKU to
    its item there); `item_ids` name items as `sku@warehouse_id`:

    - a payload in a warehouse not synced gives an empty hint (not this channel's items);
    - stock topics in the own warehouse: the item and its SKU; in another synced one: that
      warehouse's item only; with no warehouse: the SKU and its item in every other one;
    - `order.imported` in the own warehouse: its line SKUs (no ids, as a single-warehouse
      channel always did); in another synced one: each line's `sku@that warehouse` only;
      with no warehouse: the SKUs, and each line's item in every other synced warehouse. A
      line of a known combo (`combos`) names no item in another warehouse: it is no item.

    Other topics give an empty hint.
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
    elsewhere: tuple[str, ...] = ()  # the other synced warehouses the payload may be about
    if warehouse is None:
        elsewhere = tuple(others)
    elif warehouse_id is not None and warehouse != warehouse_id:
        if warehouse not in others:
            return WebhookHint(topic=topic, delivery_id=delivery_id)
        elsewhere = (warehouse,)
    own_skus = () if warehouse is not None and elsewhere else tuple(skus)
    if topic == wire.TOPIC_ORDER_IMPORTED:
        reference = order_reference(None, payload.get("order_id"))
        located = tuple(
            wire.format_item_id(sku, where)
            for sku in skus
            if sku not in combos
            for where in elsewhere
        )
        return WebhookHint(
            topic=topic, item_ids=located, skus=own_skus, delivery_id=delivery_id,
            reference=reference,
        )  # fmt: skip
    named = elsewhere if warehouse is None else (warehouse,)
    item_ids = tuple(wire.format_item_id(sku, where) for sku in skus for where in named)
    return WebhookHint(topic=topic, item_ids=item_ids, skus=own_skus, delivery_id=delivery_id)
