"""The emulator's GraphQL schema: the Shopify Admin API subset shopsync uses, per API version."""

from __future__ import annotations

import functools

from graphql import GraphQLSchema, build_schema

__all__ = ["LATEST_VERSION", "VERSIONS", "cas_mode", "schema_for"]

# Supported versions, oldest first; "unstable" is treated as newer than every dated one.
VERSIONS = ("2025-10", "2026-01", "2026-04", "2026-07", "2026-10", "unstable")
LATEST_VERSION = "2026-10"

_BASE_SDL = """
schema { query: QueryRoot mutation: Mutation }

"Makes a mutation safe to retry: same key and parameters run once (2026-01+)."
directive @idempotent(key: String!) on FIELD

scalar DateTime
scalar URL
scalar UnsignedInt64

interface Node { id: ID! }

type PageInfo {
  hasNextPage: Boolean!
  hasPreviousPage: Boolean!
  startCursor: String
  endCursor: String
}

enum ProductVariantInventoryPolicy { DENY CONTINUE }

type Product implements Node {
  id: ID!
  title: String!
  createdAt: DateTime!
  updatedAt: DateTime!
}

type ProductVariant implements Node {
  id: ID!
  sku: String
  title: String!
  displayName: String!
  createdAt: DateTime!
  updatedAt: DateTime!
  inventoryQuantity: Int
  inventoryPolicy: ProductVariantInventoryPolicy!
  inventoryItem: InventoryItem!
  product: Product!
}

type ProductVariantEdge { cursor: String! node: ProductVariant! }
type ProductVariantConnection {
  nodes: [ProductVariant!]!
  edges: [ProductVariantEdge!]!
  pageInfo: PageInfo!
}

type InventoryItem implements Node {
  id: ID!
  sku: String
  tracked: Boolean!
  createdAt: DateTime!
  updatedAt: DateTime!
  inventoryLevel(locationId: ID!): InventoryLevel
  inventoryLevels(
    first: Int, last: Int, after: String, before: String, reverse: Boolean = false
  ): InventoryLevelConnection!
  variant: ProductVariant!
}

type InventoryLevel implements Node {
  id: ID!
  quantities(names: [String!]!): [InventoryQuantity!]!
  location: Location!
  item: InventoryItem!
  createdAt: DateTime!
  updatedAt: DateTime!
}

type InventoryLevelEdge { cursor: String! node: InventoryLevel! }
type InventoryLevelConnection {
  nodes: [InventoryLevel!]!
  edges: [InventoryLevelEdge!]!
  pageInfo: PageInfo!
}

type InventoryQuantity {
  id: ID!
  name: String!
  quantity: Int!
  updatedAt: DateTime
}

type Location implements Node {
  id: ID!
  name: String!
  isActive: Boolean!
}

type LocationEdge { cursor: String! node: Location! }
type LocationConnection {
  nodes: [Location!]!
  edges: [LocationEdge!]!
  pageInfo: PageInfo!
}

type InventoryAdjustmentGroup implements Node {
  id: ID!
  createdAt: DateTime!
  reason: String!
  referenceDocumentUri: String
  changes(
    inventoryItemIds: [ID!], locationIds: [ID!], quantityNames: [String!]
  ): [InventoryChange!]!
}

type InventoryChange {
  name: String!
  delta: Int!
  quantityAfterChange: Int
  item: InventoryItem
  location: Location
  ledgerDocumentUri: URL
}

enum InventorySetQuantitiesUserErrorCode {
  CHANGE_FROM_QUANTITY_STALE
  COMPARE_QUANTITY_REQUIRED
  COMPARE_QUANTITY_STALE
  IDEMPOTENCY_CONCURRENT_REQUEST
  IDEMPOTENCY_KEY_PARAMETER_MISMATCH
  IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED
  INVALID_INVENTORY_ITEM
  INVALID_LOCATION
  INVALID_NAME
  INVALID_QUANTITY_NEGATIVE
  INVALID_QUANTITY_TOO_HIGH
  INVALID_QUANTITY_TOO_LOW
  INVALID_REASON
  INVALID_REFERENCE_DOCUMENT
  ITEM_NOT_STOCKED_AT_LOCATION
  NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR
  NON_MUTABLE_INVENTORY_ITEM
}

type InventorySetQuantitiesUserError {
  field: [String!]
  message: String!
  code: InventorySetQuantitiesUserErrorCode
}

type InventorySetQuantitiesPayload {
  inventoryAdjustmentGroup: InventoryAdjustmentGroup
  userErrors: [InventorySetQuantitiesUserError!]!
}

enum InventoryAdjustQuantitiesUserErrorCode {
  CHANGE_FROM_QUANTITY_STALE
  IDEMPOTENCY_CONCURRENT_REQUEST
  IDEMPOTENCY_KEY_PARAMETER_MISMATCH
  INTERNAL_LEDGER_DOCUMENT
  INVALID_AVAILABLE_DOCUMENT
  INVALID_INVENTORY_ITEM
  INVALID_LEDGER_DOCUMENT
  INVALID_LOCATION
  INVALID_QUANTITY_DOCUMENT
  INVALID_QUANTITY_NAME
  INVALID_QUANTITY_TOO_HIGH
  INVALID_QUANTITY_TOO_LOW
  INVALID_REASON
  INVALID_REFERENCE_DOCUMENT
  ITEM_NOT_STOCKED_AT_LOCATION
  MAX_ONE_LEDGER_DOCUMENT
  NON_MUTABLE_INVENTORY_ITEM
}

type InventoryAdjustQuantitiesUserError {
  field: [String!]
  message: String!
  code: InventoryAdjustQuantitiesUserErrorCode
}

type InventoryAdjustQuantitiesPayload {
  inventoryAdjustmentGroup: InventoryAdjustmentGroup
  userErrors: [InventoryAdjustQuantitiesUserError!]!
}

type UserError {
  field: [String!]
  message: String!
}

type InventoryActivatePayload {
  inventoryLevel: InventoryLevel
  userErrors: [UserError!]!
}

enum BulkOperationStatus { CANCELED CANCELING COMPLETED CREATED EXPIRED FAILED RUNNING }
enum BulkOperationErrorCode { ACCESS_DENIED INTERNAL_SERVER_ERROR TIMEOUT }
enum BulkOperationType { MUTATION QUERY }
enum BulkOperationUserErrorCode { INVALID OPERATION_IN_PROGRESS }

type BulkOperation implements Node {
  id: ID!
  status: BulkOperationStatus!
  type: BulkOperationType!
  query: String!
  url: URL
  partialDataUrl: URL
  objectCount: UnsignedInt64!
  rootObjectCount: UnsignedInt64!
  fileSize: UnsignedInt64
  errorCode: BulkOperationErrorCode
  createdAt: DateTime!
  completedAt: DateTime
}

type BulkOperationUserError {
  field: [String!]
  message: String!
  code: BulkOperationUserErrorCode
}

type BulkOperationRunQueryPayload {
  bulkOperation: BulkOperation
  userErrors: [BulkOperationUserError!]!
}

enum WebhookSubscriptionTopic {
  APP_UNINSTALLED
  BULK_OPERATIONS_FINISH
  INVENTORY_ITEMS_UPDATE
  INVENTORY_LEVELS_UPDATE
  ORDERS_CANCELLED
  ORDERS_CREATE
  PRODUCTS_CREATE
  PRODUCTS_UPDATE
  REFUNDS_CREATE
}

enum WebhookSubscriptionFormat { JSON XML }

type WebhookSubscription implements Node {
  id: ID!
  topic: WebhookSubscriptionTopic!
  uri: String!
  callbackUrl: URL!
  format: WebhookSubscriptionFormat!
  createdAt: DateTime!
  updatedAt: DateTime!
}

type WebhookSubscriptionEdge { cursor: String! node: WebhookSubscription! }
type WebhookSubscriptionConnection {
  nodes: [WebhookSubscription!]!
  edges: [WebhookSubscriptionEdge!]!
  pageInfo: PageInfo!
}

input WebhookSubscriptionInput {
  uri: String
  callbackUrl: URL
  format: WebhookSubscriptionFormat
  includeFields: [String!]
  filter: String
  name: String
}

type WebhookSubscriptionCreatePayload {
  webhookSubscription: WebhookSubscription
  userErrors: [UserError!]!
}

type WebhookSubscriptionDeletePayload {
  deletedWebhookSubscriptionId: ID
  userErrors: [UserError!]!
}

type QueryRoot {
  productVariants(
    first: Int, last: Int, after: String, before: String, query: String, reverse: Boolean = false
  ): ProductVariantConnection!
  productVariant(id: ID!): ProductVariant
  nodes(ids: [ID!]!): [Node]!
  node(id: ID!): Node
  inventoryItem(id: ID!): InventoryItem
  location(id: ID): Location
  locations(first: Int, last: Int, after: String, before: String): LocationConnection!
  currentBulkOperation(type: BulkOperationType = QUERY): BulkOperation
  webhookSubscriptions(
    first: Int, last: Int, after: String, before: String, topics: [WebhookSubscriptionTopic!]
  ): WebhookSubscriptionConnection!
  currentAppInstallation: AppInstallation!
}

type AppInstallation {
  accessScopes: [AccessScope!]!
}

type AccessScope {
  handle: String!
  description: String!
}

type Mutation {
  inventorySetQuantities(input: InventorySetQuantitiesInput!): InventorySetQuantitiesPayload
  inventoryAdjustQuantities(
    input: InventoryAdjustQuantitiesInput!
  ): InventoryAdjustQuantitiesPayload
  inventoryActivate(
    inventoryItemId: ID!, locationId: ID!, available: Int, onHand: Int
  ): InventoryActivatePayload
  bulkOperationRunQuery(query: String!): BulkOperationRunQueryPayload
  webhookSubscriptionCreate(
    topic: WebhookSubscriptionTopic!, webhookSubscription: WebhookSubscriptionInput!
  ): WebhookSubscriptionCreatePayload
  webhookSubscriptionDelete(id: ID!): WebhookSubscriptionDeletePayload
}
"""

# The compare-and-set inputs are what changed between versions (shopify.md §3).
_INPUTS_COMPARE = """
input InventorySetQuantitiesInput {
  name: String!
  reason: String!
  referenceDocumentUri: String
  ignoreCompareQuantity: Boolean = false
  quantities: [InventoryQuantityInput!]!
}
input InventoryQuantityInput {
  inventoryItemId: ID!
  locationId: ID!
  quantity: Int!
  compareQuantity: Int
  %(change_from)s
}
input InventoryAdjustQuantitiesInput {
  name: String!
  reason: String!
  referenceDocumentUri: String
  changes: [InventoryChangeInput!]!
}
input InventoryChangeInput {
  inventoryItemId: ID!
  locationId: ID!
  delta: Int!
  ledgerDocumentUri: URL
  %(change_from)s
}
"""

_INPUTS_CHANGE_FROM = """
input InventorySetQuantitiesInput {
  name: String!
  reason: String!
  referenceDocumentUri: String
  quantities: [InventoryQuantityInput!]!
}
input InventoryQuantityInput {
  inventoryItemId: ID!
  locationId: ID!
  quantity: Int!
  changeFromQuantity: Int
}
input InventoryAdjustQuantitiesInput {
  name: String!
  reason: String!
  referenceDocumentUri: String
  changes: [InventoryChangeInput!]!
}
input InventoryChangeInput {
  inventoryItemId: ID!
  locationId: ID!
  delta: Int!
  ledgerDocumentUri: URL
  changeFromQuantity: Int
}
"""


def cas_mode(version: str) -> str:
    """How `inventorySetQuantities` compares in `version`.

    ``compare`` (≤ 2025-10: `compareQuantity`/`ignoreCompareQuantity`), ``both`` (2026-01: the
    new optional `changeFromQuantity` overrides the old fields) or ``change_from`` (≥ 2026-04:
    `changeFromQuantity` on every row, `@idempotent` required).
    """
    if version == "unstable" or version >= "2026-04":
        return "change_from"
    if version >= "2026-01":
        return "both"
    return "compare"


@functools.cache
def schema_for(version: str) -> GraphQLSchema:
    """The schema served at `version` (built once per version)."""
    mode = cas_mode(version)
    if mode == "change_from":
        inputs = _INPUTS_CHANGE_FROM
    else:
        inputs = _INPUTS_COMPARE % {
            "change_from": "changeFromQuantity: Int" if mode == "both" else ""
        }
    return build_schema(_BASE_SDL + inputs)
