"""The GraphQL documents the Shopify plugin sends, with their cost under Shopify's cost model."""

from __future__ import annotations

import json

__all__ = [
    "BULK_POLL",
    "BULK_POLL_COST",
    "ACCESS_SCOPES",
    "BULK_RUN",
    "LOOKUP",
    "LOOKUP_SIZE",
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
    "lookup_cost",
    "page_cost",
    "read_cost",
    "set_quantities",
    "uses_change_from",
    "variants_page",
]

# Costs follow Shopify's published model: object 1, connection 2 + n x node, mutation 10.
# A variant node below costs 4 (variant, inventoryItem, inventoryLevel, quantities).
_NODE_COST = 4
PAGE_SIZE = 200  # 2 + 200 x 4 = 802 points, under the 1000-point single query limit
WRITE_COST = 10
BULK_POLL_COST = 1
LOCATIONS_COST = 2 + 250
WEBHOOKS_COST = 2 + 100


def _variant_fields(location: str) -> str:
    return (
        "id sku displayName createdAt inventoryItem { id tracked "
        f"inventoryLevel(locationId: {location}) "
        '{ updatedAt quantities(names: ["available"]) { name quantity } } }'
    )


def page_cost(first: int) -> int:
    """Requested cost of one `variants_page` call of `first` variants."""
    return 2 + first * _NODE_COST


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


# Items by id with their variant (SKU, title, creation time): what a product webhook names.
LOOKUP = _items_query("LookupItems", "variant { id sku displayName createdAt }")
LOOKUP_SIZE = 200  # 2 + 200 x 4 = 802 points, as a page


def lookup_cost(count: int) -> int:
    """Requested cost of one `LOOKUP` call for `count` ids."""
    return 2 + count * _NODE_COST


def variants_page() -> str:
    """One page of variants with their available count at `$loc`."""
    return (
        "query VariantsPage($first: Int!, $after: String, $loc: ID!) {\n"
        f"  productVariants(first: $first, after: $after) {{ nodes {{ {_variant_fields('$loc')} }}"
        " pageInfo { hasNextPage endCursor } }\n}"
    )


def bulk_variants_query(location_gid: str) -> str:
    """The bulk query over every variant (bulk queries take no variables: inline the id)."""
    fields = _variant_fields(json.dumps(location_gid))
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


def set_quantities(api_version: str) -> str:
    """The compare-and-set write; the idempotency key is the `$key` variable from 2026-01."""
    if uses_change_from(api_version):
        head = (
            "mutation SetQuantities($input: InventorySetQuantitiesInput!, $key: String!, $loc: ID!)"
        )
        field = "inventorySetQuantities(input: $input) @idempotent(key: $key)"
    else:
        head = "mutation SetQuantities($input: InventorySetQuantitiesInput!, $loc: ID!)"
        field = "inventorySetQuantities(input: $input)"
    # each changed item's level as it stands after the write: its `updatedAt` is the stamp
    # that level webhooks are judged against (`WriteResult.stamp`)
    return (
        f"{head} {{\n  {field} {{\n"
        "    inventoryAdjustmentGroup {\n"
        "      id changes { name delta quantityAfterChange\n"
        "        item { id inventoryLevel(locationId: $loc) { updatedAt } } }\n    }\n"
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
