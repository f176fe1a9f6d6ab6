"""Write side of the Shopify emulator: inventory mutations, idempotency, webhooks, bulk start."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from graphql import GraphQLError, GraphQLResolveInfo
from graphql.execution.values import get_directive_values

from agent.emulator import Variant
from plugins.shopify.emulator_graph import LOCATION_ID, TOPICS, Graph, gid, iso, parse_gid
from plugins.shopify.schema import cas_mode

if TYPE_CHECKING:
    from plugins.shopify.emulator import ShopifyEmulator

__all__ = ["MutationRoot"]

REASONS = frozenset(
    {
        "correction",
        "cycle_count_available",
        "damaged",
        "movement_created",
        "movement_updated",
        "movement_received",
        "movement_canceled",
        "other",
        "promotion",
        "quality_control",
        "received",
        "reservation_created",
        "reservation_deleted",
        "reservation_updated",
        "restock",
        "safety_stock",
        "shrinkage",
    }
)
MAX_QUANTITY = 1_000_000_000
_STALE_MESSAGE = "The {field} value does not match persisted value."
_MISMATCH = "The same idempotency key cannot be used with different operation parameters."
# Wording unverified; the code is in the 2026-10 InventorySetQuantitiesUserErrorCode enum.
_PREVIOUS_FAILED = "A previous attempt with this idempotency key failed. Retry with a new key."

# (index, variant, location, target available, expected)
Row = tuple[int, Variant, int, int, int | None]


def _error(field: list[str] | None, message: str, code: str | None = None) -> dict[str, Any]:
    return {"field": field, "message": message, "code": code}


def _is_uri(value: str) -> bool:
    scheme, sep, rest = value.partition(":")
    return bool(sep and rest and scheme.isascii() and scheme[:1].isalpha())


class MutationRoot:
    """The Mutation fields; graphql-core's default resolver calls them with their arguments.

    Idempotency (``@idempotent(key:)``) is honoured on the inventory mutations in every version
    and required from 2026-04: without it the field resolves to null with a top-level error
    (code ``BAD_REQUEST``), as Shopify's changelog says "an error at runtime". A key is stored
    with a fingerprint of the field name and its coerced arguments: the same key and arguments
    return the stored payload and change nothing; other arguments give
    ``IDEMPOTENCY_KEY_PARAMETER_MISMATCH``. Rejected payloads (userErrors) are stored too.
    With ``fail_attempts`` armed (``POST /_emulator/shopify/idempotency``), the next
    ``inventorySetQuantities`` attempts fail with ``INTERNAL_SERVER_ERROR`` before applying
    anything, and their keys then answer ``IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED``: retry with
    a new key.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.emu: ShopifyEmulator = graph.emu
        self._group_ids = itertools.count(1)

    # -- inventory -----------------------------------------------------------------------------

    def inventorySetQuantities(
        self, info: GraphQLResolveInfo, input: dict[str, Any]
    ) -> dict[str, Any]:
        return self._idempotent(info, {"input": input}, lambda key: self._set(info, input, key))

    def inventoryAdjustQuantities(
        self, info: GraphQLResolveInfo, input: dict[str, Any]
    ) -> dict[str, Any]:
        return self._idempotent(info, {"input": input}, lambda key: self._adjust(info, input, key))

    def inventoryActivate(self, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
        return self._idempotent(info, args, lambda key: self._activate(args, key))

    # -- bulk and webhooks ---------------------------------------------------------------------

    def bulkOperationRunQuery(self, info: GraphQLResolveInfo, query: str) -> dict[str, Any]:
        return self.emu.bulk.start(query, info.context.version, info.context.base_url)

    def webhookSubscriptionCreate(
        self, info: GraphQLResolveInfo, topic: str, webhookSubscription: dict[str, Any]
    ) -> dict[str, Any]:
        sub_input = webhookSubscription
        uri = sub_input.get("uri") or sub_input.get("callbackUrl")
        if not uri:
            return {
                "webhookSubscription": None,
                "userErrors": [_error(["webhookSubscription", "uri"], "Address can't be blank")],
            }
        if not uri.startswith(("https://", "http://", "pubsub://", "arn:")):
            return {
                "webhookSubscription": None,
                "userErrors": [
                    _error(["webhookSubscription", "uri"], "Address protocol is not supported")
                ],
            }
        rest = TOPICS[topic]
        if any(s.topic == rest and s.url == uri for s in self.emu.webhooks.subscriptions.values()):
            return {
                "webhookSubscription": None,
                "userErrors": [
                    _error(
                        ["webhookSubscription", "callbackUrl"],
                        "Address for this topic has already been taken",
                    )
                ],
            }
        sub = self.emu.webhooks.subscribe(
            rest,
            uri,
            now=self.emu.clock(),
            format=sub_input.get("format") or "JSON",
            api_version=info.context.version,
        )
        return {"webhookSubscription": self.graph.subscription(sub), "userErrors": []}

    def webhookSubscriptionDelete(self, info: GraphQLResolveInfo, id: str) -> dict[str, Any]:
        number = parse_gid(id, "WebhookSubscription")
        if number is None or not self.emu.webhooks.unsubscribe(number):
            return {
                "deletedWebhookSubscriptionId": None,
                "userErrors": [_error(["id"], "Webhook subscription does not exist")],
            }
        return {"deletedWebhookSubscriptionId": id, "userErrors": []}

    # -- idempotency ---------------------------------------------------------------------------

    def _idempotent(
        self,
        info: GraphQLResolveInfo,
        args: dict[str, Any],
        run: Callable[[str | None], dict[str, Any]],
    ) -> dict[str, Any]:
        directive = info.schema.get_directive("idempotent")
        values = (
            get_directive_values(directive, info.field_nodes[0], info.variable_values)
            if directive is not None
            else None
        )
        key = values["key"] if values else None
        if key is None:
            if cas_mode(info.context.version) == "change_from":
                raise GraphQLError(
                    f"The @idempotent directive is required for {info.field_name} "
                    f"from API version 2026-04.",
                    extensions={"code": "BAD_REQUEST"},
                )
            return run(None)
        canonical = json.dumps([info.field_name, args], sort_keys=True, default=str)
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
        if key in self.emu.failed_keys:
            return {
                "userErrors": [
                    _error(None, _PREVIOUS_FAILED, "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED")
                ]
            }
        stored = self.emu.idempotency.get(key)
        if (
            stored is None
            and self.emu.fail_attempts
            and info.field_name == "inventorySetQuantities"
        ):
            self.emu.fail_attempts -= 1
            self.emu.failed_keys.add(key)
            raise GraphQLError(
                "Internal error. Looks like something went wrong on our end.",
                extensions={"code": "INTERNAL_SERVER_ERROR"},
            )
        if stored is not None:
            if stored[0] != fingerprint:
                return {
                    "userErrors": [_error(None, _MISMATCH, "IDEMPOTENCY_KEY_PARAMETER_MISMATCH")]
                }
            self.emu.stats["idempotent_replays"] = self.emu.stats.get("idempotent_replays", 0) + 1
            return stored[1]
        result = run(key)
        self.emu.idempotency[key] = (fingerprint, result)
        return result

    # -- the writes ----------------------------------------------------------------------------

    def _set(
        self, info: GraphQLResolveInfo, inp: dict[str, Any], key: str | None
    ) -> dict[str, Any]:
        mode = cas_mode(info.context.version)
        name, reason = inp["name"], inp["reason"]
        errors = self._header_errors(reason, inp.get("referenceDocumentUri"))
        if name not in ("available", "on_hand"):
            errors.append(
                _error(
                    ["input", "name"],
                    "The quantity name must be either 'available' or 'on_hand'.",
                    "INVALID_NAME",
                )
            )
        rows: list[Row] = []
        stale: list[Row] = []
        seen: set[tuple[int, int]] = set()
        for index, row in enumerate(inp["quantities"]):
            path = ["input", "quantities", str(index)]
            found = self._row_variant(row, path, seen, errors)
            if found is None:
                continue
            variant, location = found
            held = self._held(variant, location)
            quantity = row["quantity"]
            if quantity > MAX_QUANTITY or quantity < -MAX_QUANTITY:
                code = "INVALID_QUANTITY_TOO_HIGH" if quantity > 0 else "INVALID_QUANTITY_TOO_LOW"
                errors.append(_error([*path, "quantity"], "The quantity is out of range.", code))
                continue
            # on_hand = available + committed (nothing is committed at an annex)
            offset = variant.committed if name == "on_hand" and location == LOCATION_ID else 0
            compare = self._compare(mode, row, bool(inp.get("ignoreCompareQuantity")), path, errors)
            if compare is None:
                continue
            field, expected = compare
            entry: Row = (
                index,
                variant,
                location,
                quantity - offset,
                None if expected is None else expected - offset,
            )
            if expected is not None and expected - offset != held:
                code = (
                    "CHANGE_FROM_QUANTITY_STALE"
                    if field == "changeFromQuantity"
                    else ("COMPARE_QUANTITY_STALE")
                )
                errors.append(_error([*path, field], _STALE_MESSAGE.format(field=field), code))
                stale.append(entry)
                continue
            rows.append(entry)
        self._maybe_drop(info)
        if errors:
            # All or nothing: log the stale rows as refused writes, apply nothing.
            for _, variant, location, target, expected in stale:
                self._api_set(variant, location, target, key=key, expected=expected, reason=reason)
            return {"inventoryAdjustmentGroup": None, "userErrors": errors}
        changes = []
        for _, variant, location, target, expected in rows:
            before = self._held(variant, location)
            self._api_set(variant, location, target, key=key, expected=expected, reason=reason)
            self.emu.stats["writes"] += 1
            changes.extend(self._changes(variant, before, location))
        group = self._group(reason, inp.get("referenceDocumentUri"), changes)
        return {"inventoryAdjustmentGroup": group, "userErrors": []}

    def _adjust(
        self, info: GraphQLResolveInfo, inp: dict[str, Any], key: str | None
    ) -> dict[str, Any]:
        mode = cas_mode(info.context.version)
        name, reason = inp["name"], inp["reason"]
        errors = self._header_errors(reason, inp.get("referenceDocumentUri"))
        if name != "available":
            errors.append(
                _error(
                    ["input", "name"],
                    "The quantity name is not adjustable.",
                    "INVALID_QUANTITY_NAME",
                )
            )
        rows: list[tuple[Variant, int, int]] = []
        seen: set[tuple[int, int]] = set()
        for index, change in enumerate(inp["changes"]):
            path = ["input", "changes", str(index)]
            found = self._row_variant(change, path, seen, errors, duplicates_ok=True)
            if found is None:
                continue
            variant, location = found
            expected = change.get("changeFromQuantity") if mode != "compare" else None
            if expected is not None and expected != self._held(variant, location):
                errors.append(
                    _error(
                        [*path, "changeFromQuantity"],
                        _STALE_MESSAGE.format(field="changeFromQuantity"),
                        "CHANGE_FROM_QUANTITY_STALE",
                    )
                )
                continue
            rows.append((variant, location, change["delta"]))
        self._maybe_drop(info)
        if errors:
            return {"inventoryAdjustmentGroup": None, "userErrors": errors}
        changes = []
        for variant, location, delta in rows:
            before = self._held(variant, location)
            if location == LOCATION_ID:
                self.emu.store.api_adjust(variant.inventory_item_id, delta, key=key, reason=reason)
            else:
                self.emu.store.api_adjust(
                    variant.inventory_item_id, delta, key=key, reason=reason, location=location
                )
            self.emu.stats["writes"] += 1
            changes.extend(self._changes(variant, before, location))
        group = self._group(reason, inp.get("referenceDocumentUri"), changes)
        return {"inventoryAdjustmentGroup": group, "userErrors": []}

    def _activate(self, args: dict[str, Any], key: str | None) -> dict[str, Any]:
        number = parse_gid(args["inventoryItemId"], "InventoryItem")
        variant = self.emu.store.by_item.get(number) if number is not None else None
        if variant is None:
            return {
                "inventoryLevel": None,
                "userErrors": [_error(["inventoryItemId"], "Inventory item does not exist")],
            }
        location = parse_gid(args["locationId"], "Location")
        if location is None or location not in self.graph.location_ids():
            return {
                "inventoryLevel": None,
                "userErrors": [_error(["locationId"], "Location does not exist")],
            }
        if location != LOCATION_ID:
            return self._activate_annex(variant, location, args)
        if variant.inventory_item_id in self.emu.unstocked:
            self.emu.unstocked.discard(variant.inventory_item_id)
            available = args.get("available")
            if available is None and args.get("onHand") is not None:
                available = args["onHand"] - variant.committed
            self.emu.store.api_set(
                variant.inventory_item_id, available or 0, key=key, reason="inventory_activate"
            )
        return {"inventoryLevel": self.graph.level(variant), "userErrors": []}

    def _activate_annex(
        self, variant: Variant, location: int, args: dict[str, Any]
    ) -> dict[str, Any]:
        """Stock the item at an annex (through the store's admin edit, the one way it stocks
        a location; a variant whose SKU another variant holds first cannot be named by it)."""
        if variant.count(location) is None:
            store = self.emu.store
            if not variant.sku or store.find_sku(variant.sku) is not variant:
                return {
                    "inventoryLevel": None,
                    "userErrors": [
                        _error(["inventoryItemId"], "The emulator cannot stock this item there")
                    ],
                }
            store.edit(variant.sku, args.get("available") or args.get("onHand") or 0, location)
        return {"inventoryLevel": self.graph.level(variant, location), "userErrors": []}

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _header_errors(reason: str, uri: str | None) -> list[dict[str, Any]]:
        errors = []
        if reason not in REASONS:
            errors.append(
                _error(["input", "reason"], "The specified reason is invalid.", "INVALID_REASON")
            )
        if uri is not None and not _is_uri(uri):
            errors.append(
                _error(
                    ["input", "referenceDocumentUri"],
                    "The specified reference document is invalid.",
                    "INVALID_REFERENCE_DOCUMENT",
                )
            )
        return errors

    def _row_variant(
        self,
        row: dict[str, Any],
        path: list[str],
        seen: set[tuple[int, int]],
        errors: list[dict[str, Any]],
        *,
        duplicates_ok: bool = False,
    ) -> tuple[Variant, int] | None:
        """The row's variant and location number, or None after recording its error."""
        number = parse_gid(row["inventoryItemId"], "InventoryItem")
        variant = self.emu.store.by_item.get(number) if number is not None else None
        if variant is None:
            errors.append(
                _error(
                    [*path, "inventoryItemId"],
                    "The specified inventory item could not be found.",
                    "INVALID_INVENTORY_ITEM",
                )
            )
            return None
        location = parse_gid(row["locationId"], "Location")
        if location is None or location not in self.graph.location_ids():
            errors.append(
                _error(
                    [*path, "locationId"],
                    "The specified location could not be found.",
                    "INVALID_LOCATION",
                )
            )
            return None
        if (variant.inventory_item_id, location) in seen and not duplicates_ok:
            errors.append(
                _error(
                    [*path],
                    "The combination of inventoryItemId and locationId must be unique.",
                    "NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR",
                )
            )
            return None
        seen.add((variant.inventory_item_id, location))
        if self.graph.level(variant, location) is None:  # an annex stocks what was stocked there
            errors.append(
                _error(
                    [*path, "inventoryItemId"],
                    "The specified inventory item is not stocked at the location.",
                    "ITEM_NOT_STOCKED_AT_LOCATION",
                )
            )
            return None
        return variant, location

    @staticmethod
    def _held(variant: Variant, location: int) -> int:
        """The available count at a location that stocks the variant."""
        return variant.available if location == LOCATION_ID else (variant.count(location) or 0)

    def _api_set(self, variant: Variant, location: int, target: int, **kwargs: Any) -> None:
        # the primary's call stays as it always was (third-party stores may not know locations)
        if location == LOCATION_ID:
            self.emu.store.api_set(variant.inventory_item_id, target, **kwargs)
        else:
            self.emu.store.api_set(variant.inventory_item_id, target, location=location, **kwargs)

    @staticmethod
    def _compare(
        mode: str, row: dict[str, Any], ignore: bool, path: list[str], errors: list[dict[str, Any]]
    ) -> tuple[str, int | None] | None:
        """(field, expected) for a row's compare-and-set, or None after recording an error.

        `expected` None means "no check". Omitted keys are absent from the coerced input,
        explicit nulls are present with None, which is how 2026-01+ tells them apart.
        """
        if mode != "compare" and "changeFromQuantity" in row:
            return "changeFromQuantity", row["changeFromQuantity"]
        if mode == "change_from":
            errors.append(
                _error(
                    [*path, "changeFromQuantity"],
                    "changeFromQuantity must be given for each quantity "
                    "(pass null to skip the check).",
                    "COMPARE_QUANTITY_REQUIRED",
                )
            )
            return None
        if ignore:
            return "compareQuantity", None
        if row.get("compareQuantity") is None:
            errors.append(
                _error(
                    [*path, "compareQuantity"],
                    "The compareQuantity argument must be given to each quantity "
                    "or ignored using ignoreCompareQuantity.",
                    "COMPARE_QUANTITY_REQUIRED",
                )
            )
            return None
        return "compareQuantity", row["compareQuantity"]

    def _maybe_drop(self, info: GraphQLResolveInfo) -> None:
        # A fresh (not replayed) write may be armed to lose its answer after it is applied.
        if self.emu.take_timeout_after_apply():
            info.context.drop_after = True

    def _changes(
        self, variant: Variant, before: int, location: int = LOCATION_ID
    ) -> list[dict[str, Any]]:
        after = self._held(variant, location)
        delta = after - before
        if delta == 0:
            return []  # Shopify lists no change for a row that moved nothing
        item = self.graph.item(variant)
        place = self.graph.location_obj(location)
        committed = variant.committed if location == LOCATION_ID else 0
        return [
            {
                "name": "available",
                "delta": delta,
                "quantityAfterChange": after,
                "item": item,
                "location": place,
                "ledgerDocumentUri": None,
            },
            {
                "name": "on_hand",
                "delta": delta,
                "quantityAfterChange": after + committed,
                "item": item,
                "location": place,
                "ledgerDocumentUri": None,
            },
        ]

    def _group(self, reason: str, uri: str | None, changes: list[dict[str, Any]]) -> dict[str, Any]:
        def filtered(
            info: GraphQLResolveInfo,
            inventoryItemIds: list[str] | None = None,
            locationIds: list[str] | None = None,
            quantityNames: list[str] | None = None,
        ) -> list[dict[str, Any]]:
            return [
                c
                for c in changes
                if (inventoryItemIds is None or c["item"]["id"] in inventoryItemIds)
                and (locationIds is None or c["location"]["id"] in locationIds)
                and (quantityNames is None or c["name"] in quantityNames)
            ]

        return {
            "__typename": "InventoryAdjustmentGroup",
            "id": gid("InventoryAdjustmentGroup", next(self._group_ids)),
            "createdAt": iso(self.emu.clock()),
            "reason": reason,
            "referenceDocumentUri": uri,
            "changes": filtered,
        }
