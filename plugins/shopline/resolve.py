"""Pure rules that decide, from facts, whether a SHOPLINE adjust of unknown outcome was applied."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from agent.channel import Write
from plugins.shopline.client import parse_time

__all__ = [
    "MAX_UNPLACED",
    "Observation",
    "PendingWrite",
    "StockEvent",
    "judge",
    "order_events",
    "possible_sums",
]

# Beyond this many events we cannot place in time, the candidate sums stop meaning anything.
MAX_UNPLACED = 16

Verdict = Literal["applied", "not_applied", "unclear"]


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    """A count the platform returned, taken somewhere between `sent` and `received`."""

    count: int
    sent: float
    received: float


@dataclasses.dataclass(frozen=True, slots=True)
class PendingWrite:
    """An adjust whose outcome is not known yet, and the facts to resolve it from.

    `base` is the count the adjust started from; `variant_id` and `sku` pick the item's lines
    out of orders.
    """

    write: Write
    base: Observation
    sent_at: float
    variant_id: str | None
    sku: str | None

    def to_json(self) -> dict[str, Any]:
        """The facts as JSON, for the channel's journal."""
        return {
            "write": [self.write.item_id, self.write.expected, self.write.target],
            "base": [self.base.count, self.base.sent, self.base.received],
            "sent_at": self.sent_at,
            "variant_id": self.variant_id,
            "sku": self.sku,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PendingWrite:
        item_id, expected, target = raw["write"]
        count, sent, received = raw["base"]
        return cls(
            Write(str(item_id), int(expected), int(target)),
            Observation(int(count), float(sent), float(received)),
            float(raw["sent_at"]),
            raw.get("variant_id"),
            raw.get("sku"),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class StockEvent:
    """One change of the item's count by an order: at `at` (true moment < at + resolution)."""

    at: float
    resolution: float
    delta: int


def _line_matches(
    line: Mapping[str, Any], variant_id: str | None, sku: str | None, location: str | None
) -> bool:
    line_location = line.get("location_id")
    if location and line_location not in (None, "") and str(line_location) != location:
        return False
    line_variant = line.get("variant_id")
    if variant_id and line_variant not in (None, ""):
        return str(line_variant) == variant_id
    return bool(sku) and line.get("sku") == sku


def _quantity(line: Mapping[str, Any]) -> int:
    quantity = line.get("quantity")
    return quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else 0


def order_events(
    order: Mapping[str, Any], *, variant_id: str | None, sku: str | None, location: str | None
) -> list[StockEvent]:
    """The count changes `order` made to one item: placed (-), refunds restocked, cancelled (+).

    A cancellation restocks what refunds have not restocked already, so an order refunded
    and then cancelled is not counted back twice.
    """
    lines = [
        line
        for line in order.get("line_items") or []
        if isinstance(line, dict) and _line_matches(line, variant_id, sku, location)
    ]
    if not lines:
        return []
    line_ids = {str(line.get("id")) for line in lines if line.get("id") is not None}
    ordered = sum(_quantity(line) for line in lines)
    events: list[StockEvent] = []
    if order.get("created_at") and ordered:
        events.append(StockEvent(*parse_time(order["created_at"]), -ordered))
    restocked = 0
    for refund in order.get("refunds") or []:
        if not isinstance(refund, dict) or not refund.get("created_at"):
            continue
        back = 0
        for refund_line in refund.get("refund_line_items") or []:
            if not isinstance(refund_line, dict) or refund_line.get("restock_type") == "no_restock":
                continue
            nested = refund_line.get("line_item") or {}
            ours = str(refund_line.get("line_item_id")) in line_ids or (
                isinstance(nested, dict) and _line_matches(nested, variant_id, sku, location)
            )
            if ours:
                back += _quantity(refund_line)
        if back:
            events.append(StockEvent(*parse_time(refund["created_at"]), back))
            restocked += back
    if order.get("cancelled_at") and ordered > restocked:
        events.append(StockEvent(*parse_time(order["cancelled_at"]), ordered - restocked))
    return events


def possible_sums(
    events: Iterable[StockEvent], start: Observation, end: Observation, skew: float
) -> set[int] | None:
    """Every net change `N` the events may have made between two observations.

    An event certainly before `start` is already in its count; one certainly after `end` is
    not yet in `end`'s; one certainly between counts. One too close to either reading (given
    the timestamp resolution and a clock difference of up to `skew`) may or may not count,
    so both are tried. None when too many events cannot be placed.
    """
    certain = 0
    unplaced: list[int] = []
    for event in events:
        latest = event.at + event.resolution + skew  # the true moment is before this
        earliest = event.at - skew  # ... and not before this, on our clock
        if latest <= start.sent or earliest >= end.received:
            continue
        if earliest >= start.received and latest <= end.sent:
            certain += event.delta
        else:
            unplaced.append(event.delta)
    if len(unplaced) > MAX_UNPLACED:
        return None
    sums = {certain}
    for delta in unplaced:
        sums |= {value + delta for value in sums}
    return sums


def judge(base: int, adjustment: int, level: int, sums: set[int] | None) -> Verdict:
    """Was an adjust by `adjustment` from `base` applied, given the level now and `sums`?

    Applied means ``level == base + adjustment + N`` for a possible `N`, not applied means
    ``level == base + N``; only when exactly one of them fits is there an answer.
    """
    if sums is None:
        return "unclear"
    applied = (level - base - adjustment) in sums
    not_applied = (level - base) in sums
    if applied and not not_applied:
        return "applied"
    if not_applied and not applied:
        return "not_applied"
    return "unclear"
