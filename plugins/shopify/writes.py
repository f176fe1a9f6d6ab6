"""The Shopify write path: compare-and-set rows in idempotent `inventorySetQuantities` calls."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from agent.channel import Write, WriteResult
from plugins.shopify import queries, webhooks
from plugins.shopify.client import ShopifyClient, ShopifyUnavailable
from plugins.shopify.locations import ITEM_GID, Sites
from plugins.shopify.queries import MAX_BATCH
from plugins.shopify.settings import ShopifySettings

if TYPE_CHECKING:
    from agent.clock import Clock

__all__ = ["KEY_NAMESPACE", "Writer"]

log = structlog.get_logger(__name__)

# Per-call idempotency keys derive from the core's batch key in this namespace, so a retried
# batch sends the very same keys.
KEY_NAMESPACE = uuid.UUID("5d0c7d3e-2b8f-4a4e-8f67-0f3b1e9c6a12")
_STALE = frozenset({"CHANGE_FROM_QUANTITY_STALE", "COMPARE_QUANTITY_STALE"})


class Writer:
    """The writes of one channel: ≤ 250 rows per `inventorySetQuantities` call, each row with
    its own `locationId`, and Shopify's answer folded into one `WriteResult` per write."""

    def __init__(
        self, client: ShopifyClient, clock: Clock, settings: ShopifySettings, sites: Sites
    ) -> None:
        self.client = client
        self.clock = clock
        self.settings = settings
        self.sites = sites
        self._set_document = queries.set_quantities(settings.api_version)
        self._change_from = queries.uses_change_from(settings.api_version)

    async def write(
        self, writes: Sequence[Write], *, key: str, location: str, located: bool
    ) -> list[WriteResult]:
        """`ShopifyChannel.write` of a non-empty batch, once the locations are resolved:
        `location` is the own one, `located` whether further ones are synced."""
        results: list[WriteResult | None] = [None] * len(writes)
        chunks = [
            range(s, min(s + MAX_BATCH, len(writes))) for s in range(0, len(writes), MAX_BATCH)
        ]
        for index, chunk in enumerate(chunks):
            call_key = key if len(chunks) == 1 else str(uuid.uuid5(KEY_NAMESPACE, f"{key}/{index}"))
            pending: list[int] = []
            seen: set[str] = set()
            for i in chunk:
                item_id = writes[i].item_id
                if not (self.sites.split(item_id) if located else ITEM_GID.match(item_id)):
                    message = (
                        "not an InventoryItem gid at a synced location"
                        if located
                        else "not an InventoryItem gid"
                    )
                    results[i] = WriteResult(item_id, "error", message=message)
                elif item_id in seen:
                    results[i] = WriteResult(item_id, "error", message="item twice in one batch")
                else:
                    seen.add(item_id)
                    pending.append(i)
            await self._write_rows(writes, pending, call_key, location, results)
        return [
            r if r is not None else WriteResult(w.item_id, "unknown")
            for r, w in zip(results, writes, strict=True)
        ]

    async def _write_rows(
        self,
        writes: Sequence[Write],
        pending: list[int],
        call_key: str,
        location: str,
        results: list[WriteResult | None],
    ) -> None:
        """Send `pending` rows; Shopify rejects a call with a stale row as a whole, so the
        rows it did not object to are re-sent under a key derived from this one."""
        busy = fresh = 0

        def unknown(message: str) -> None:
            for i in pending:
                results[i] = WriteResult(writes[i].item_id, "unknown", message=message)

        while pending:
            variables = self._set_variables([writes[i] for i in pending], location, call_key)
            try:
                document = (
                    queries.set_quantities(self.settings.api_version, len(self.sites.extras))
                    if self.sites.extras
                    else self._set_document
                )
                data = await self.client.call(document, variables, cost=queries.WRITE_COST)
            except ShopifyUnavailable as exc:
                return unknown(str(exc))
            payload = data.get("inventorySetQuantities")
            if not isinstance(payload, dict):
                return unknown("no payload")
            errors = [e for e in payload.get("userErrors") or [] if isinstance(e, dict)]
            group = payload.get("inventoryAdjustmentGroup")
            if any(e.get("code") == "IDEMPOTENCY_CONCURRENT_REQUEST" for e in errors):
                busy += 1  # the same key is still running at Shopify: ask again, same key
                if busy > self.settings.max_retries:
                    return unknown("idempotent request still running")
                await self.clock.sleep(self.client.backoff(busy))
                continue
            if any(e.get("code") == "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED" for e in errors):
                # An earlier attempt under this key failed without applying anything: Shopify
                # wants a new key. Derived from this one, so a retry of the batch walks the same
                # keys and still runs once.
                fresh += 1
                if fresh > self.settings.max_retries:
                    return unknown("every key's attempt failed")
                call_key = str(uuid.uuid5(KEY_NAMESPACE, f"{call_key}/new"))
                log.info("shopify_write_new_key", rows=len(pending))
                continue
            by_row: dict[int, dict[str, Any]] = {}
            general: list[dict[str, Any]] = []
            for error in errors:
                row = _row_index(error.get("field"))
                if row is not None and row < len(pending):
                    by_row[row] = error
                else:
                    general.append(error)
            if not errors and group is None:
                return unknown("no group")
            after, stamps = self._after(group)
            remaining: list[int] = []
            for row, i in enumerate(pending):
                write = writes[i]
                refusal = by_row.get(row)
                if refusal is not None:
                    stale = refusal.get("code") in _STALE
                    results[i] = WriteResult(
                        write.item_id, "conflict" if stale else "error", message=_describe(refusal)
                    )
                elif general:
                    # A call-level refusal (key mismatch, bad reason...): nothing to resend.
                    message = "; ".join(_describe(e) for e in general)
                    results[i] = WriteResult(write.item_id, "error", message=message)
                elif group is not None:
                    available = after.get(write.item_id, write.target)
                    stamp = stamps.get(write.item_id)
                    results[i] = WriteResult(write.item_id, "ok", available=available, stamp=stamp)
                else:
                    remaining.append(i)
            if remaining and by_row:
                log.info("shopify_write_resend", rows=len(remaining), refused=len(by_row))
            pending = remaining
            call_key = str(uuid.uuid5(KEY_NAMESPACE, f"{call_key}/retry"))

    def _after(self, group: Any) -> tuple[dict[str, int], dict[str, float]]:
        """`_after`, keyed by this channel's item ids where it syncs several locations."""
        if not self.sites.extras:
            return _after(group)
        suffixes = self.sites.suffixes()
        aliases = {gid: queries.extra_alias(i) for i, gid in enumerate(self.sites.extras)}
        counts: dict[str, int] = {}
        stamps: dict[str, float] = {}
        changes = group.get("changes") if isinstance(group, dict) else None
        for change in changes or []:
            if not isinstance(change, dict) or change.get("name") != "available":
                continue
            item, place = change.get("item"), change.get("location")
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            location = place.get("id") if isinstance(place, dict) else self.sites.own
            if location != self.sites.own and location not in suffixes:
                continue
            item_id = item["id"] + suffixes.get(str(location), "")
            if isinstance(change.get("quantityAfterChange"), int):
                counts[item_id] = change["quantityAfterChange"]
            level = item.get(aliases.get(str(location), "inventoryLevel"))
            if isinstance(level, dict) and (stamp := webhooks.parse_stamp(level.get("updatedAt"))):
                stamps[item_id] = stamp
        return counts, stamps

    def _set_variables(self, rows: list[Write], location: str, key: str) -> dict[str, Any]:
        if self.sites.extras:
            return self._located_set_variables(rows, key)
        compare = "changeFromQuantity" if self._change_from else "compareQuantity"
        variables: dict[str, Any] = {
            "input": {
                "name": "available",
                "reason": "correction",
                "referenceDocumentUri": "shopsync://sync",
                "quantities": [
                    {
                        "inventoryItemId": w.item_id,
                        "locationId": location,
                        "quantity": w.target,
                        compare: w.expected,
                    }
                    for w in rows
                ],
            }
        }
        variables["loc"] = location
        if self._change_from:
            variables["key"] = key
        return variables

    def _located_set_variables(self, rows: list[Write], key: str) -> dict[str, Any]:
        """`_set_variables` of rows at any synced location (each row its own `locationId`)."""
        compare = "changeFromQuantity" if self._change_from else "compareQuantity"
        quantities = []
        for w in rows:
            split = self.sites.split(w.item_id)
            assert split is not None  # `write` refused the others
            quantities.append(
                {
                    "inventoryItemId": split[0],
                    "locationId": split[1],
                    "quantity": w.target,
                    compare: w.expected,
                }
            )
        variables: dict[str, Any] = {
            "input": {
                "name": "available",
                "reason": "correction",
                "referenceDocumentUri": "shopsync://sync",
                "quantities": quantities,
            },
            "loc": self.sites.own,
            **{f"loc{i}": gid for i, gid in enumerate(self.sites.extras or {})},
        }
        if self._change_from:
            variables["key"] = key
        return variables


def _row_index(field: Any) -> int | None:
    """Row i of a userError whose field is ["input", "quantities", "i", ...]."""
    if isinstance(field, list) and len(field) >= 3 and field[:2] == ["input", "quantities"]:
        try:
            return int(field[2])
        except (TypeError, ValueError):
            return None
    return None


def _after(group: Any) -> tuple[dict[str, int], dict[str, float]]:
    """Each changed item's `available` after the write, and its level's `updatedAt` then
    (the stamp older level webhooks are judged against), from one adjustment group."""
    counts: dict[str, int] = {}
    stamps: dict[str, float] = {}
    if not isinstance(group, dict):
        return counts, stamps
    for change in group.get("changes") or []:
        if not isinstance(change, dict) or change.get("name") != "available":
            continue
        item = change.get("item")
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        after = change.get("quantityAfterChange")
        if isinstance(after, int):
            counts[item["id"]] = after
        level = item.get("inventoryLevel")
        stamp = webhooks.parse_stamp(level.get("updatedAt")) if isinstance(level, dict) else None
        if stamp is not None:
            stamps[item["id"]] = stamp
    return counts, stamps


def _describe(error: dict[str, Any]) -> str:
    code = error.get("code")
    message = str(error.get("message", ""))
    return f"{code}: {message}" if code else message
