"""The GraphQL documents the Shopify plugin sends, with their cost under Shopify's cost model."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

__all__ = [
    "BULK_POLL",
    "BULK_POLL_COST",
    "ACCESS_SCOPES",
    "BULK_RUN",
    "LOOKUP",
    "LOOKUP_SIZE",
    "MAX_BATCH",
    "LOCATIONS",
    "LOCATIONS_COST",
    "PRIMARY_LOCATION",
    "PRIMARY_LOCATION_COST",
    "PAGE_SIZE",
    "READ",
    "WEBHOOKS",
    "WEBHOOKS_COST",
    "WEBHOOK_CREATE",
    "WRITE_COST",
    "bulk_variants_query",
    "located_items_query",
    "lookup_cost",
    "page_cost",
    "page_size",
    "read_cost",
    "set_quantities",
    "uses_change_from",
    "variants_page",
]

# Costs follow Shopify's published model: object 1, connection 2 + n x node, mutation 10.
# A variant node below costs 4 (variant, inventoryItem, inventoryLevel, quantities), and 2
# more for each further location it is read at (one more inventoryLevel with its quantities).
_NODE_COST = 4
_LEVEL_COST = 2
MAX_COST = 1000  # Shopify's single query limit
MAX_BATCH = 250  # the most ids a read, and rows a write, sends in one call
PAGE_SIZE = 200  # 2 + 200 x 4 = 802 points, under the 1000-point single query limit
WRITE_COST = 10
BULK_POLL_COST = 1
LOCATIONS_COST = 2 + 250
WEBHOOKS_COST = 2 + 100


_LEVEL = '{ updatedAt quantities(names: ["available"]) { name quantity } }'


def extra_alias(index: int) -> str:
    """The response key of the level at the channel's `index`-th further location."""
    return f"at{index}"


def _variant_fields(location: str, extras: Sequence[str] = ()) -> str:
    """A variant's fields with its level at `location` (`inventoryLevel`) and at each of
    `extras` (aliased `at0`, `at1`...); `location` and `extras` are variables or literals."""
    levels = "".join(
        f"{extra_alias(i)}: inventoryLevel(locationId: {extra}) {_LEVEL} "
        for i, extra in enumerate(extras)
    )
    return (
        "id sku displayName createdAt inventoryItem { id tracked "
        f"inventoryLevel(locationId: {location}) "
        f"{_LEVEL} {levels}}}"
    )


def page_cost(first: int, locations: int = 1) -> int:
    """Requested cost of one `variants_page` call of `first` variants at `locations`."""
    return 2 + first * (_NODE_COST + _LEVEL_COST * (locations - 1))


def page_size(locations: int = 1) -> int:
    """The most variants one page read at `locations` may ask for under the cost limit."""
    return min(PAGE_SIZE, (MAX_COST - 2) // (_NODE_COST + _LEVEL_COST * (locations - 1)))


def read_cost(count: int) -> int:
    """Requested cost of one `READ` call for `count` ids (3 points each)."""
    return 3 * count


# The app's granted scopes, whatever the token (a static one reports none itself).
ACCESS_SCOPES = "query AccessScopes { currentAppInstallation { accessScopes { handle } } }"

LOCATIONS = "query Locations { locations(first: 250) { nodes { id name isActive } } }"
# `location` without an id is the shop's primary location (`Shop.primaryLocation` and REST's
# `primary_location_id` are deprecated since 2024-04); `locations` sorts by name instead.
PRIMARY_LOCATION = "query PrimaryLocation { location { id name isActive } }"
PRIMARY_LOCATION_COST = 1


def _items_query(name: str, extra: str = "") -> str:
    """Inventory items by id with their available count at `$loc` (and `extra` fields)."""
    return (
        f"query {name}($ids: [ID!]!, $loc: ID!) {{\n  nodes(ids: $ids) {{\n"
        "    ... on InventoryItem {\n      id tracked\n"
        '      inventoryLevel(locationId: $loc) { updatedAt quantities(names: ["available"]) '
        f"{{ name quantity }} }}\n      {extra}\n    }}\n  }}\n}}\n"
    )


READ = _items_query("ReadLevels")


@functools.lru_cache(maxsize=64)
def located_items_query(groups: int, lookup: bool = False) -> str:
    """Items by id at several locations in one call: group `i` is `at{i}: nodes(ids: $ids{i})`
    with each item's level at `$loc{i}` (and its variant for a lookup). Costs the sum of each
    group's `read_cost` (`lookup_cost`), as that many calls of `READ` (`LOOKUP`) would."""
    extra = "variant { id sku displayName createdAt }" if lookup else ""
    heads = ", ".join(f"$ids{i}: [ID!]!, $loc{i}: ID!" for i in range(groups))
    body = "".join(
        f"  {extra_alias(i)}: nodes(ids: $ids{i}) {{\n    ... on InventoryItem {{\n"
        f"      id tracked\n      inventoryLevel(locationId: $loc{i}) {_LEVEL}\n"
        f"      {extra}\n    }}\n  }}\n"
        for i in range(groups)
    )
    name = "LookupItems" if lookup else "ReadLevels"
    return f"query {name}({heads}) {{\n{body}}}\n"


# Items by id with their variant (SKU, title, creation time): what a product webhook names.
LOOKUP = _items_query("LookupItems", "variant { id sku displayName createdAt }")
LOOKUP_SIZE = 200  # 2 + 200 x 4 = 802 points, as a page


def lookup_cost(count: int) -> int:
    """Requested cost of one `LOOKUP` call for `count` ids."""
    return 2 + count * _NODE_COST


def variants_page(extras: int = 0) -> str:
    """One page of variants with their available count at `$loc` (and at `$loc0`... for
    `extras` further locations, aliased `at0`...)."""
    names = [f"$loc{i}" for i in range(extras)]
    heads = "".join(f", {name}: ID!" for name in names)
    return (
        f"query VariantsPage($first: Int!, $after: String, $loc: ID!{heads}) {{\n"
        "  productVariants(first: $first, after: $after) "
        f"{{ nodes {{ {_variant_fields('$loc', names)} }}"
        " pageInfo { hasNextPage endCursor } }\n}"
    )


def bulk_variants_query(location_gid: str, extras: Sequence[str] = ()) -> str:
    """The bulk query over every variant (bulk queries take no variables: inline the ids)."""
    fields = _variant_fields(json.dumps(location_gid), [json.dumps(e) for e in extras])
    return f"{{ productVariants {{ edges {{ node {{ {fields} }} }} }} }}"


BULK_RUN = """
mutation BulkRun($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { field message code }
  }
}
"""

BULK_POLL = "query BulkPoll { currentBulkOperation { id status url objectCount errorCode } }"


def uses_change_from(api_version: str) -> bool:
    """True from 2026-01, where `changeFromQuantity` and `@idempotent` exist."""
    return api_version == "unstable" or api_version >= "2026-01"


def set_quantities(api_version: str, extras: int = 0) -> str:
    """The compare-and-set write; the idempotency key is the `$key` variable from 2026-01.

    With `extras` further locations (`$loc0`...), each change also says its location, and its
    item's level at each of them is aliased `at0`... (a change's stamp is its location's)."""
    more = "".join(f", $loc{i}: ID!" for i in range(extras))
    if uses_change_from(api_version):
        head = (
            "mutation SetQuantities($input: InventorySetQuantitiesInput!, $key: String!, "
            f"$loc: ID!{more})"
            if extras
            else "mutation SetQuantities($input: InventorySetQuantitiesInput!, $key: String!, "
            "$loc: ID!)"
        )
        field = "inventorySetQuantities(input: $input) @idempotent(key: $key)"
    else:
        head = f"mutation SetQuantities($input: InventorySetQuantitiesInput!, $loc: ID!{more})"
        field = "inventorySetQuantities(input: $input)"
    # each changed item's level as it stands after the write: its `updatedAt` is the stamp
    # that level webhooks are judged against (`WriteResult.stamp`)
    if not extras:
        return (
            f"{head} {{\n  {field} {{\n"
            "    inventoryAdjustmentGroup {\n"
            "      id changes { name delta quantityAfterChange\n"
            "        item { id inventoryLevel(locationId: $loc) { updatedAt } } }\n    }\n"
            "    userErrors { field message code }\n  }\n}"
        )
    levels = "".join(
        f" {extra_alias(i)}: inventoryLevel(locationId: $loc{i}) {{ updatedAt }}"
        for i in range(extras)
    )
    return (
        f"{head} {{\n  {field} {{\n"
        "    inventoryAdjustmentGroup {\n"
        "      id changes { name delta quantityAfterChange location { id }\n"
        f"        item {{ id inventoryLevel(locationId: $loc) {{ updatedAt }}{levels} }} }}\n"
        "    }\n"
        "    userErrors { field message code }\n  }\n}"
    )


WEBHOOKS = "query Webhooks { webhookSubscriptions(first: 100) { nodes { id topic uri } } }"

WEBHOOK_CREATE = """
mutation WebhookCreate($topic: WebhookSubscriptionTopic!, $sub: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $sub) {
    webhookSubscription { id topic uri }
    userErrors { field message }
  }
}
"""
