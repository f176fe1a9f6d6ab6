"""The SHOPLINE write path: a noted relative adjust per write, unknown outcomes resolved from facts.

Write path. SHOPLINE has no compare-and-set, no version or ETag and no idempotency key, and
writes one item at one location per call. So every `Write` becomes one relative
``POST inventory_levels/adjust.json`` by ``target - expected`` rather than an absolute ``set``:
a sale that lands between our read and our write survives an adjust (a ``set`` would erase
it), and the adjust answers with the count after it, so any difference from ``target`` is that
sale, which the core records as a local change. The result is ``ok`` with that count.

Unknown outcomes. An adjust that times out, gets a 5xx or loses its connection may or may not
have been applied, and a retry would apply it twice, so it is never retried blindly and never
guessed. It is resolved from facts. The channel keeps, per item, the last count it observed
and when (every list, read and write answer; the request's send and receive times bound the
moment the platform took it). That count ``B`` is what the adjust started from. The channel
re-reads the level ``L`` and fetches the orders updated since then (``status=any``), summing
the net effect ``N`` on this item of orders placed, cancelled and refunds restocked in that
window. Then:

- ``L == B + (target - expected) + N``: it was applied. Result ``ok``, available ``L``.
- ``L == B + N``: it was not applied. The adjust is sent again at once: a fresh decision from
  a fresh read, not a blind retry, and cheaper than a ``conflict`` round trip through the core.
  Its answer minus ``target`` is still exactly the local change, because the adjust is
  relative. If that second send is unknown too and also proves not applied, the result is
  ``conflict`` with available ``L`` (true: not applied, and the shop holds ``L``).
- otherwise (a manual edit in the window, or events too close to a reading to place): result
  ``unknown``, and the write is remembered under its key, so that when the core retries the
  same key the channel resolves again instead of sending again.

Platform timestamps have whole-second resolution and the platform's clock may differ from ours
by up to ``clock_skew`` seconds, so an event that close to a reading is counted as "maybe":
the channel tries both and decides only when exactly one of "applied" and "not applied" fits.

Since the platform keeps no idempotency key, the channel keeps one, in its journal (the core
keeps it in the agent's database): before an adjust leaves, its facts (base count and when it
was seen, the write, the item's variant and SKU) are noted under the batch key; a definite
answer replaces them. A retry of that key, in this process or after a crash, gets the noted
answer, or resolves the noted facts as above; it never sends a second adjust blindly. The core
drops the note once it has recorded the outcome.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from agent.channel import Channel, Write, WriteResult
from plugins.shopline.client import (
    OutcomeUnknown,
    RequestRefused,
    ShoplineUnavailable,
    format_time,
)
from plugins.shopline.resolve import (
    Observation,
    PendingWrite,
    StockEvent,
    judge,
    order_events,
    possible_sums,
)

if TYPE_CHECKING:
    from plugins.shopline.client import ShoplineClient
    from plugins.shopline.locations import Sites
    from plugins.shopline.settings import ShoplineSettings

__all__ = ["ShoplineWrites"]

log = structlog.get_logger(__name__)

_TIMESTAMP_RESOLUTION = 1.0  # SHOPLINE prints whole seconds
# The orders list's page maximum (shopline.md §2).
_ORDERS_PAGE = 100


@dataclasses.dataclass(frozen=True, slots=True)
class _Call:
    """One adjust of a write batch: its notes live under the batch `key`, as `part`."""

    key: str
    part: str


class ShoplineWrites(Channel):
    """The write path of `ShoplineChannel` (see the module docstring). The channel supplies
    its settings, client, the counts it observed and its catalogue, and how it reads."""

    options: ShoplineSettings
    client: ShoplineClient
    _observed: dict[str, Observation]  # by the channel's item id
    # inventory item id -> (variant id, SKU)
    _catalogue: dict[str, tuple[str | None, str | None]]

    @abc.abstractmethod
    async def _where(self) -> Sites:
        """The synced locations."""

    @abc.abstractmethod
    async def _levels(self, item_ids: Sequence[str]) -> dict[str, Observation]:
        """Fresh counts of these items (the channel's ids), each recorded in `_observed`."""

    # -- writing -----------------------------------------------------------------------------

    async def write(self, writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        """One adjust per write (see the module docstring); `key` guards unknown outcomes."""
        results = []
        for index, one in enumerate(writes):
            call = _Call(key, f"{index}:{one.item_id}")
            note = await self._noted(call)
            if "result" in note:
                # The platform has no idempotency key, so we are it: a repeat gets the answer.
                results.append(WriteResult(**note["result"]))
                continue
            if "pending" in note:
                # Sent before, outcome unknown: find out, never send blindly.
                pending = PendingWrite.from_json(note["pending"])
                result = await self._resolve(call, pending, may_resend=True)
            else:
                result = await self._write_one(one, call)
            if result.status != "unknown":
                await self._note(call, {"result": dataclasses.asdict(result)})
            results.append(result)
        return results

    async def _noted(self, call: _Call) -> dict[str, Any]:
        notes = await self.journal.get(call.key)
        entry = notes.get(call.part) if isinstance(notes, dict) else None
        return entry if isinstance(entry, dict) else {}

    async def _note(self, call: _Call, entry: dict[str, Any] | None) -> None:
        """Note (or with None, forget) what is known of one call of batch `call.key`."""
        notes = await self.journal.get(call.key)
        notes = dict(notes) if isinstance(notes, dict) else {}
        if entry is None:
            notes.pop(call.part, None)
        else:
            notes[call.part] = entry
        if notes:
            await self.journal.put(call.key, notes)
        else:
            await self.journal.delete(call.key)

    async def _write_one(self, write: Write, call: _Call) -> WriteResult:
        try:
            parts = (await self._where()).split(write.item_id)
        except ShoplineUnavailable as exc:
            return WriteResult(write.item_id, "unknown", message=f"not sent: {exc}")
        except RequestRefused as exc:
            return WriteResult(write.item_id, "error", message=str(exc))
        if parts is None:
            return WriteResult(
                write.item_id, "error", message="not a SHOPLINE inventory item id of this channel"
            )
        try:
            if write.item_id not in self._observed:
                # An unknown outcome can only be resolved from a count we saw and when.
                await self._levels([write.item_id])
        except ShoplineUnavailable as exc:
            return WriteResult(write.item_id, "unknown", message=f"not sent: {exc}")
        except RequestRefused as exc:
            return WriteResult(write.item_id, "error", message=str(exc))
        base = self._observed.get(write.item_id)
        if base is None:
            return WriteResult(
                write.item_id, "error", message="item is not stocked at the location"
            )
        return await self._adjust(call, write, base, may_resend=True)

    async def _adjust(
        self, call: _Call, write: Write, base: Observation, *, may_resend: bool
    ) -> WriteResult:
        parts = (await self._where()).split(write.item_id)
        if parts is None:  # a noted write at a location no longer synced
            return WriteResult(write.item_id, "error", message="its location is not synced")
        inventory_id, location = parts
        body = {
            "inventory_item_id": inventory_id,
            "location_id": location,
            "available_adjustment": write.target - write.expected,
        }
        variant_id, sku = self._catalogue.get(inventory_id, (None, None))
        pending = PendingWrite(write, base, self.clock.now(), variant_id, sku)
        # On disk before the adjust leaves: after a crash, a retry resolves it from these facts.
        await self._note(call, {"pending": pending.to_json()})
        try:
            resp = await self.client.post("inventory_levels/adjust", body)
        except OutcomeUnknown as exc:
            log.warning("shopline_write_unknown", item_id=write.item_id, sku=sku, reason=str(exc))
            return await self._resolve(call, pending, may_resend=may_resend)
        except ShoplineUnavailable as exc:
            await self._note(call, None)  # surely not applied: a retry sends afresh
            return WriteResult(write.item_id, "unknown", message=f"not applied: {exc}")
        except RequestRefused as exc:
            return WriteResult(write.item_id, "error", message=str(exc))
        level = resp.body.get("inventory_level") if isinstance(resp.body, dict) else None
        available = level.get("available") if isinstance(level, dict) else None
        if not isinstance(available, int) or isinstance(available, bool):
            # Applied (2xx) but the count is missing: the core re-reads, as for a conflict.
            return WriteResult(write.item_id, "ok", None, message="adjust answer had no count")
        self._observed[write.item_id] = Observation(available, resp.sent, resp.received)
        return WriteResult(write.item_id, "ok", available)

    async def _resolve(
        self, call: _Call, pending: PendingWrite, *, may_resend: bool
    ) -> WriteResult:
        write = pending.write
        adjustment = write.target - write.expected
        try:
            # Wait out a timestamp's resolution and the clocks' disagreement, so that every
            # event up to now will be placed certainly before the re-read, not "maybe".
            await self.clock.sleep(self.options.clock_skew + _TIMESTAMP_RESOLUTION)
            now = (await self._levels([write.item_id])).get(write.item_id)
            if now is None:
                return WriteResult(write.item_id, "error", message="item left the location")
            sums: set[int] | None = {0}
            if adjustment != 0:
                events = await self._events_since(pending)
                sums = possible_sums(events, pending.base, now, self.options.clock_skew)
        except (ShoplineUnavailable, RequestRefused) as exc:
            log.warning("shopline_resolve_failed", item_id=write.item_id, reason=str(exc))
            return WriteResult(write.item_id, "unknown", message=f"could not resolve: {exc}")
        # An adjust by 0 changes nothing, so whether it landed does not matter.
        verdict = "applied"
        if adjustment:
            verdict = judge(pending.base.count, adjustment, now.count, sums)
        log.info(
            "shopline_write_resolved",
            item_id=write.item_id,
            sku=pending.sku,
            verdict=verdict,
            before=pending.base.count,
            delta=adjustment,
            level=now.count,
        )
        if verdict == "applied":
            return WriteResult(write.item_id, "ok", now.count)
        if verdict == "not_applied":
            if may_resend:
                return await self._adjust(call, write, now, may_resend=False)
            return WriteResult(
                write.item_id, "conflict", now.count, message="the adjust was not applied"
            )
        return WriteResult(
            write.item_id,
            "unknown",
            message="cannot tell whether the adjust was applied; a retry with the same key "
            "resolves again",
        )

    async def _events_since(self, pending: PendingWrite) -> list[StockEvent]:
        """Stock events on the item from orders updated since the base count was taken."""
        # An order's updated_at is at or after each of its events, so this window misses none.
        since = pending.base.sent - self.options.clock_skew - 1.0
        params = {"status": "any", "updated_at_min": format_time(since), "limit": _ORDERS_PAGE}
        parts = (await self._where()).split(pending.write.item_id)
        location = None if parts is None else parts[1]
        events: list[StockEvent] = []
        async for orders, _resp in self.client.pages("orders", params, "orders"):
            for order in orders:
                if isinstance(order, dict):
                    events.extend(
                        order_events(
                            order, variant_id=pending.variant_id, sku=pending.sku, location=location
                        )
                    )
        return events
