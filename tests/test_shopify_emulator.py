"""The Shopify emulator speaks the Admin GraphQL subset the plugin relies on, like Shopify."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from aiohttp import web

from agent.emulator import EmulatorOptions
from plugins.shopify.emulator import ShopifyEmulator

TOKEN = "shpat_test"
SECRET = "whsec"
LOC = "gid://shopify/Location/1"

SET = """
mutation Set($input: InventorySetQuantitiesInput!, $key: String!) {
  inventorySetQuantities(input: $input) @idempotent(key: $key) {
    inventoryAdjustmentGroup { id changes { name delta quantityAfterChange item { id } } }
    userErrors { field message code }
  }
}
"""
SET_NO_KEY = """
mutation Set($input: InventorySetQuantitiesInput!) {
  inventorySetQuantities(input: $input) {
    inventoryAdjustmentGroup { id }
    userErrors { field message code }
  }
}
"""
PAGE = """
query Page($first: Int!, $after: String) {
  productVariants(first: $first, after: $after) {
    edges { cursor node { id sku inventoryItem { id } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


class FakeTime:
    """A wall clock the test moves by hand (the emulator's bucket reads it)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make_emulator(**kwargs: Any) -> ShopifyEmulator:
    clock = kwargs.pop("clock", None)
    defaults: dict[str, Any] = {
        "shop": "dk-test.myshopify.com",
        "skus": 5,
        "token": TOKEN,
        "webhook_secret": SECRET,
        "rate_limit": False,
        "seed": 7,
    }
    options = EmulatorOptions(**{**defaults, **kwargs})
    return ShopifyEmulator(options, clock=clock) if clock else ShopifyEmulator(options)


@pytest.fixture
def emulator() -> ShopifyEmulator:
    return make_emulator()


@pytest.fixture
async def client(aiohttp_client: Any, emulator: ShopifyEmulator) -> Any:
    return await aiohttp_client(emulator.build_app())


async def gql(
    client: Any,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    version: str = "2026-10",
    token: str | None = TOKEN,
) -> tuple[int, dict[str, Any]]:
    headers = {"X-Shopify-Access-Token": token} if token is not None else {}
    resp = await client.post(
        f"/admin/api/{version}/graphql.json",
        json={"query": query, "variables": variables or {}},
        headers=headers,
    )
    return resp.status, await resp.json()


def item_gid(emulator: ShopifyEmulator, n: int = 0) -> str:
    variant = list(emulator.store.variants.values())[n]
    return f"gid://shopify/InventoryItem/{variant.inventory_item_id}"


def set_input(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "available",
        "reason": "correction",
        "referenceDocumentUri": "shopsync://sync",
        "quantities": [{"locationId": LOC, **row} for row in rows],
    }


# -- HTTP surface ------------------------------------------------------------------------------


async def test_missing_or_wrong_token_gets_401(client: Any) -> None:
    for token in (None, "wrong"):
        status, body = await gql(client, "{ locations(first: 1) { nodes { id } } }", token=token)
        assert status == 401
        assert "Invalid API key or access token" in body["errors"]


async def test_unknown_api_version_gets_404(client: Any) -> None:
    status, body = await gql(client, "{ locations(first: 1) { nodes { id } } }", version="2019-01")
    assert status == 404
    assert body == {"errors": "Not Found"}


async def test_a_body_that_is_not_json_gets_400(client: Any) -> None:
    resp = await client.post(
        "/admin/api/2026-10/graphql.json",
        data=b"{not json",
        headers={"X-Shopify-Access-Token": TOKEN, "Content-Type": "application/json"},
    )
    assert resp.status == 400


async def test_injected_failure_answers_its_status_before_running(
    client: Any, emulator: ShopifyEmulator
) -> None:
    emulator.faults.fail_requests, emulator.faults.fail_status = 1, 503
    status, _ = await gql(client, SET, {"input": set_input([]), "key": "k"})
    assert status == 503
    status, body = await gql(client, "{ locations(first: 1) { nodes { id } } }")
    assert status == 200
    assert body["data"]["locations"]["nodes"] == [{"id": LOC}]


async def test_every_reply_carries_cost_extensions_with_refund(client: Any) -> None:
    _, body = await gql(client, PAGE, {"first": 100})
    cost = body["extensions"]["cost"]
    # 2 + 100 x (variant 1 + inventoryItem 1) requested; only 5 variants came back.
    assert cost["requestedQueryCost"] == 202
    assert cost["actualQueryCost"] == 2 + 5 * 2
    assert cost["throttleStatus"]["maximumAvailable"] == 2000.0
    assert cost["throttleStatus"]["restoreRate"] == 100.0


# -- reading -----------------------------------------------------------------------------------


async def test_pagination_visits_every_variant_exactly_once(
    aiohttp_client: Any,
) -> None:
    emulator = make_emulator(skus=7)
    client = await aiohttp_client(emulator.build_app())
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        _, body = await gql(client, PAGE, {"first": 3, "after": after})
        conn = body["data"]["productVariants"]
        seen += [edge["node"]["id"] for edge in conn["edges"]]
        pages += 1
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    expected = [f"gid://shopify/ProductVariant/{v}" for v in emulator.store.variants]
    assert seen == expected
    assert pages == 3


async def test_first_over_250_is_refused(client: Any) -> None:
    _, body = await gql(client, PAGE, {"first": 251})
    assert "data" not in body
    assert body["errors"][0]["message"] == "first cannot exceed 250"


async def test_sku_search_finds_the_variant(client: Any, emulator: ShopifyEmulator) -> None:
    query = '{ productVariants(first: 5, query: "sku:SKU-00003") { nodes { sku } } }'
    _, body = await gql(client, query)
    assert body["data"]["productVariants"]["nodes"] == [{"sku": "SKU-00003"}]


async def test_nodes_answer_null_for_unknown_ids_and_unstocked_levels(
    client: Any, emulator: ShopifyEmulator
) -> None:
    await client.post("/_emulator/shopify/items", json={"sku": "SKU-00002", "stocked": False})
    query = """query($ids: [ID!]!) { nodes(ids: $ids) { ... on InventoryItem { id
      inventoryLevel(locationId: "gid://shopify/Location/1") {
        quantities(names: ["available"]) { quantity } } } } }"""
    ids = [item_gid(emulator, 0), item_gid(emulator, 1), "gid://shopify/InventoryItem/999999"]
    _, body = await gql(client, query, {"ids": ids})
    nodes = body["data"]["nodes"]
    assert nodes[0]["inventoryLevel"]["quantities"] == [{"quantity": 100}]
    assert nodes[1] == {"id": ids[1], "inventoryLevel": None}
    assert nodes[2] is None


# -- rate limits -------------------------------------------------------------------------------

BIG_PAGE = "{ productVariants(first: 250) { nodes { id inventoryItem { id } } } }"  # 502 points


async def test_burst_beyond_the_bucket_is_throttled_and_it_restores(aiohttp_client: Any) -> None:
    clock = FakeTime()
    emulator = make_emulator(skus=250, rate_limit=True, clock=clock)
    client = await aiohttp_client(emulator.build_app())
    for _ in range(3):
        _, body = await gql(client, BIG_PAGE)
        assert body["extensions"]["cost"]["actualQueryCost"] == 502
    _, body = await gql(client, BIG_PAGE)  # 2000 - 3 x 502 = 494 left < 502
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "THROTTLED"
    cost = body["extensions"]["cost"]
    assert cost["requestedQueryCost"] == 502
    assert cost["actualQueryCost"] is None
    assert cost["throttleStatus"]["currentlyAvailable"] == 494
    assert emulator.stats["throttled"] == 1
    clock.now += 3.0  # 100 points per second on Standard
    _, body = await gql(client, "{ locations(first: 1) { nodes { id } } }")
    assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 494 + 300 - 3
    _, body = await gql(client, BIG_PAGE)
    assert body["data"] is not None


async def test_query_over_1000_points_is_refused_uncharged(aiohttp_client: Any) -> None:
    clock = FakeTime()
    emulator = make_emulator(rate_limit=True, clock=clock)
    client = await aiohttp_client(emulator.build_app())
    query = """{ productVariants(first: 250) { nodes { id inventoryItem { id
      inventoryLevel(locationId: "gid://shopify/Location/1") {
        quantities(names: ["available"]) { quantity } } } } } }"""
    status, body = await gql(client, query)
    assert status == 200
    error = body["errors"][0]
    assert error["extensions"] == {"code": "MAX_COST_EXCEEDED", "cost": 1002, "maxCost": 1000}
    assert error["message"].startswith("Query cost is 1002, which exceeds")
    assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 2000


# -- writes ------------------------------------------------------------------------------------


async def test_stale_change_from_quantity_rejects_the_whole_call(
    client: Any, emulator: ShopifyEmulator
) -> None:
    first, second = item_gid(emulator, 0), item_gid(emulator, 1)
    rows = [
        {"inventoryItemId": first, "quantity": 7, "changeFromQuantity": 100},
        {"inventoryItemId": second, "quantity": 8, "changeFromQuantity": 99},  # stale
    ]
    _, body = await gql(client, SET, {"input": set_input(rows), "key": "k-stale"})
    payload = body["data"]["inventorySetQuantities"]
    assert payload["inventoryAdjustmentGroup"] is None
    assert payload["userErrors"] == [
        {
            "field": ["input", "quantities", "1", "changeFromQuantity"],
            "message": "The changeFromQuantity value does not match persisted value.",
            "code": "CHANGE_FROM_QUANTITY_STALE",
        }
    ]
    assert list(emulator.store.inventory().values())[:2] == [100, 100]
    assert not any(w.applied for w in emulator.store.write_log)


async def test_idempotent_replay_applies_once_and_other_parameters_mismatch(
    client: Any, emulator: ShopifyEmulator
) -> None:
    row = {"inventoryItemId": item_gid(emulator), "quantity": 40, "changeFromQuantity": 100}
    variables = {"input": set_input([row]), "key": "key-1"}
    _, first = await gql(client, SET, variables)
    _, again = await gql(client, SET, variables)
    assert again["data"] == first["data"]
    change = first["data"]["inventorySetQuantities"]["inventoryAdjustmentGroup"]["changes"][0]
    assert change == {"name": "available", "delta": -60, "quantityAfterChange": 40,
                      "item": {"id": row["inventoryItemId"]}}  # fmt: skip
    assert [w.applied for w in emulator.store.write_log] == [True]
    other = {
        "input": set_input([{**row, "quantity": 41, "changeFromQuantity": 40}]),
        "key": "key-1",
    }
    _, mismatch = await gql(client, SET, other)
    errors = mismatch["data"]["inventorySetQuantities"]["userErrors"]
    assert errors[0]["code"] == "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"
    assert emulator.store.inventory()["SKU-00001"] == 40


async def test_change_from_quantity_is_required_from_2026_04(
    client: Any, emulator: ShopifyEmulator
) -> None:
    item = item_gid(emulator)
    omitted = {"input": set_input([{"inventoryItemId": item, "quantity": 5}]), "key": "a"}
    _, body = await gql(client, SET, omitted, version="2026-04")
    error = body["data"]["inventorySetQuantities"]["userErrors"][0]
    assert error["field"] == ["input", "quantities", "0", "changeFromQuantity"]
    assert emulator.store.inventory()["SKU-00001"] == 100
    # An explicit null skips the check; 2026-01 still accepted the omission with ignore.
    explicit = {
        "input": set_input([{"inventoryItemId": item, "quantity": 5, "changeFromQuantity": None}]),
        "key": "b",
    }
    _, body = await gql(client, SET, explicit, version="2026-04")
    assert body["data"]["inventorySetQuantities"]["userErrors"] == []
    assert emulator.store.inventory()["SKU-00001"] == 5


async def test_idempotent_directive_is_required_from_2026_04_only(
    client: Any, emulator: ShopifyEmulator
) -> None:
    row = {"inventoryItemId": item_gid(emulator), "quantity": 3, "changeFromQuantity": None}
    _, body = await gql(client, SET_NO_KEY, {"input": set_input([row])}, version="2026-04")
    assert body["data"]["inventorySetQuantities"] is None
    assert "@idempotent" in body["errors"][0]["message"]
    _, body = await gql(client, SET_NO_KEY, {"input": set_input([row])}, version="2026-01")
    assert body["data"]["inventorySetQuantities"]["userErrors"] == []
    assert emulator.store.inventory()["SKU-00001"] == 3


async def test_old_versions_compare_with_compare_quantity(
    client: Any, emulator: ShopifyEmulator
) -> None:
    item = item_gid(emulator)
    rows = [{"inventoryItemId": item, "quantity": 9, "compareQuantity": 50}]
    _, body = await gql(client, SET_NO_KEY, {"input": set_input(rows)}, version="2025-10")
    assert body["data"]["inventorySetQuantities"]["userErrors"][0]["code"] == (
        "COMPARE_QUANTITY_STALE"
    )
    rows = [{"inventoryItemId": item, "quantity": 9, "changeFromQuantity": 100}]
    _, body = await gql(client, SET_NO_KEY, {"input": set_input(rows)}, version="2025-10")
    assert "changeFromQuantity" in body["errors"][0]["message"]  # not in that schema


async def test_duplicate_and_unknown_items_are_refused(
    client: Any, emulator: ShopifyEmulator
) -> None:
    item = item_gid(emulator)
    rows = [
        {"inventoryItemId": item, "quantity": 1, "changeFromQuantity": None},
        {"inventoryItemId": item, "quantity": 2, "changeFromQuantity": None},
        {"inventoryItemId": "gid://shopify/InventoryItem/1", "quantity": 2,
         "changeFromQuantity": None},
    ]  # fmt: skip
    _, body = await gql(client, SET, {"input": set_input(rows), "key": "dup"})
    codes = [e["code"] for e in body["data"]["inventorySetQuantities"]["userErrors"]]
    assert codes == ["NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR", "INVALID_INVENTORY_ITEM"]
    assert emulator.store.inventory()["SKU-00001"] == 100


async def test_more_than_250_rows_is_refused(client: Any, emulator: ShopifyEmulator) -> None:
    rows = [{"inventoryItemId": item_gid(emulator), "quantity": 1, "changeFromQuantity": None}]
    _, body = await gql(client, SET, {"input": set_input(rows * 251), "key": "big"})
    assert body["errors"][0]["extensions"]["code"] == "MAX_INPUT_SIZE_EXCEEDED"
    assert not emulator.store.write_log


# -- bulk --------------------------------------------------------------------------------------


async def test_bulk_query_completes_and_serves_jsonl(
    client: Any, emulator: ShopifyEmulator
) -> None:
    inner = "{ productVariants { edges { node { id sku inventoryItem { id } } } } }"
    run = """mutation($q: String!) { bulkOperationRunQuery(query: $q) {
      bulkOperation { id status } userErrors { message } } }"""
    _, body = await gql(client, run, {"q": inner})
    assert body["data"]["bulkOperationRunQuery"]["bulkOperation"]["status"] == "CREATED"
    poll = "{ currentBulkOperation { id status url objectCount } }"
    statuses = []
    for _ in range(3):
        _, body = await gql(client, poll)
        statuses.append(body["data"]["currentBulkOperation"]["status"])
    assert statuses == ["RUNNING", "COMPLETED", "COMPLETED"]
    op = body["data"]["currentBulkOperation"]
    assert op["objectCount"] == "5"
    path = op["url"].split("//", 1)[1].split("/", 1)[1]
    resp = await client.get("/" + path)
    lines = (await resp.text()).splitlines()
    assert len(lines) == 5
    assert '"inventoryItem":{"id":"gid://shopify/InventoryItem/' in lines[0]


async def test_a_running_bulk_query_does_not_stop_the_shop(aiohttp_client: Any) -> None:
    """As on Shopify, a bulk query runs beside the shop: while it reads 10,000 variants, a
    write is answered and applied, and the operation is still running after it."""
    emulator = make_emulator(skus=10_000)
    client = await aiohttp_client(emulator.build_app())
    inner = (
        "{ productVariants { edges { node { id sku inventoryItem { id "
        'inventoryLevel(locationId: "gid://shopify/Location/1") { '
        'quantities(names: ["available"]) { quantity } } } } } } }'
    )
    run = """mutation($q: String!) { bulkOperationRunQuery(query: $q) {
      bulkOperation { id status } userErrors { message } } }"""
    _, body = await gql(client, run, {"q": inner})
    assert body["data"]["bulkOperationRunQuery"]["userErrors"] == []
    poll = "{ currentBulkOperation { id status url objectCount } }"
    _, body = await gql(client, poll)
    assert body["data"]["currentBulkOperation"]["status"] == "RUNNING"  # started

    item = item_gid(emulator, 9_999)
    rows = [{"inventoryItemId": item, "quantity": 3, "changeFromQuantity": None}]
    _, body = await gql(client, SET, {"input": set_input(rows), "key": "during-bulk"})
    assert body["data"]["inventorySetQuantities"]["userErrors"] == []
    assert emulator.store.by_item[int(item.rsplit("/", 1)[1])].available == 3
    _, body = await gql(client, poll)
    assert body["data"]["currentBulkOperation"]["status"] == "RUNNING"  # the write did not wait

    for _ in range(1200):
        _, body = await gql(client, poll)
        if body["data"]["currentBulkOperation"]["status"] != "RUNNING":
            break
        await asyncio.sleep(0.1)
    op = body["data"]["currentBulkOperation"]
    assert op["status"] == "COMPLETED" and op["objectCount"] == "10000"
    resp = await client.get("/" + op["url"].split("//", 1)[1].split("/", 1)[1])
    lines = (await resp.text()).splitlines()
    assert len(lines) == 10_000 and all('"quantities":[{"quantity":' in line for line in lines)


# -- webhooks and control routes ---------------------------------------------------------------


async def receiver(aiohttp_server: Any) -> tuple[str, list[tuple[dict[str, str], bytes]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook")), got


async def subscribe(client: Any, topic: str, url: str) -> dict[str, Any]:
    mutation = """mutation($topic: WebhookSubscriptionTopic!, $sub: WebhookSubscriptionInput!) {
      webhookSubscriptionCreate(topic: $topic, webhookSubscription: $sub) {
        webhookSubscription { id topic uri } userErrors { field message } } }"""
    _, body = await gql(client, mutation, {"topic": topic, "sub": {"uri": url, "format": "JSON"}})
    return body["data"]["webhookSubscriptionCreate"]


async def wait_for(got: list[Any], count: int) -> None:
    for _ in range(200):
        if len(got) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} deliveries, got {len(got)}")


async def test_webhook_delivery_is_signed_with_shopify_headers(
    client: Any, aiohttp_server: Any
) -> None:
    url, got = await receiver(aiohttp_server)
    created = await subscribe(client, "INVENTORY_LEVELS_UPDATE", url)
    assert created["webhookSubscription"]["topic"] == "INVENTORY_LEVELS_UPDATE"
    resp = await client.post(
        "/_emulator/orders", json={"line_items": [{"sku": "SKU-00002", "quantity": 2}]}
    )
    assert resp.status == 201
    await wait_for(got, 1)
    headers, body = got[0]
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    assert headers["X-Shopify-Hmac-Sha256"] == base64.b64encode(digest).decode()
    assert headers["X-Shopify-Topic"] == "inventory_levels/update"
    assert headers["X-Shopify-Shop-Domain"] == "dk-test.myshopify.com"
    for name in ("X-Shopify-API-Version", "X-Shopify-Webhook-Id", "X-Shopify-Event-Id",
                 "X-Shopify-Triggered-At"):  # fmt: skip
        assert headers[name]
    assert b'"available":98' in body
    again = await subscribe(client, "INVENTORY_LEVELS_UPDATE", url)
    assert again["userErrors"][0]["message"] == "Address for this topic has already been taken"


async def test_duplicate_fault_delivers_the_same_webhook_id_twice(
    client: Any, emulator: ShopifyEmulator, aiohttp_server: Any
) -> None:
    url, got = await receiver(aiohttp_server)
    await subscribe(client, "INVENTORY_LEVELS_UPDATE", url)
    emulator.faults.webhook_duplicate = 1.0
    await client.post("/_emulator/inventory", json={"sku": "SKU-00001", "available": 12})
    await wait_for(got, 2)
    assert got[0][0]["X-Shopify-Webhook-Id"] == got[1][0]["X-Shopify-Webhook-Id"]
    assert got[0][1] == got[1][1]


async def test_order_refund_and_product_emit_their_topics(client: Any, aiohttp_server: Any) -> None:
    url, got = await receiver(aiohttp_server)
    for topic in ("ORDERS_CREATE", "ORDERS_CANCELLED", "REFUNDS_CREATE", "PRODUCTS_CREATE"):
        await subscribe(client, topic, url)
    order_ids = []
    for _ in range(2):
        resp = await client.post(
            "/_emulator/orders", json={"line_items": [{"sku": "SKU-00003", "quantity": 1}]}
        )
        order_ids.append((await resp.json())["order"]["id"])
    await client.post("/_emulator/refunds", json={"order_id": order_ids[0]})
    await client.post(f"/_emulator/orders/{order_ids[1]}/cancel")
    await client.post("/_emulator/products", json={"sku": "NEW-1", "available": 4})
    await wait_for(got, 5)
    topics = sorted(h["X-Shopify-Topic"] for h, _ in got)  # several in flight: any order
    assert topics == [
        "orders/cancelled", "orders/create", "orders/create", "products/create", "refunds/create"
    ]  # fmt: skip
    bodies = {h["X-Shopify-Topic"]: body for h, body in got}
    assert b'"restock_type":"return"' in bodies["refunds/create"]
    assert b'"restock_type":"cancel"' in bodies["orders/cancelled"]
    assert b'"sku":"NEW-1"' in bodies["products/create"]


@pytest.mark.parametrize("parallel", [1, 3])
async def test_deliveries_in_flight_at_once_are_capped_by_webhook_parallel(
    client: Any, emulator: ShopifyEmulator, aiohttp_server: Any, parallel: int
) -> None:
    """Several deliveries are under way at once, as Shopify sends them, up to the fault's
    figure; with 1 they go one at a time, in the order the changes were made."""
    in_flight, most, got = 0, 0, []
    release = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        got.append(json.loads(await request.read())["available"])
        if in_flight >= parallel or len(got) >= 7:
            release.set()  # hold each answer until the emulator has sent all it may
        await release.wait()
        in_flight -= 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    await subscribe(client, "INVENTORY_LEVELS_UPDATE", str(server.make_url("/hook")))
    faults = await client.post("/_emulator/faults", json={"webhook_parallel": parallel})
    assert (await faults.json())["webhook_parallel"] == parallel
    for available in range(7):
        await client.post("/_emulator/inventory", json={"sku": "SKU-00001", "available": available})
    await wait_for(got, 7)
    assert most == parallel
    assert sorted(got) == list(range(7))
    if parallel == 1:
        assert got == list(range(7))


async def test_short_order_gets_409_and_changes_nothing(
    client: Any, emulator: ShopifyEmulator
) -> None:
    resp = await client.post(
        "/_emulator/orders",
        json={"line_items": [{"sku": "SKU-00001", "quantity": 1},
                             {"sku": "SKU-00002", "quantity": 101}]},
    )  # fmt: skip
    assert resp.status == 409
    resp = await client.get("/_emulator/inventory")
    assert await resp.json() == {f"SKU-0000{n}": 100 for n in range(1, 6)}


# -- tokens: client credentials, expiry, the emulator's clock ---------------------------------

LOCATIONS = "{ locations(first: 5) { nodes { id } } }"


async def grant(client: Any, **fields: str) -> Any:
    form = {"grant_type": "client_credentials", "client_id": "emulator-client-id",
            "client_secret": SECRET, **fields}  # fmt: skip
    return await client.post("/admin/oauth/access_token", data=form)


async def test_client_credentials_grant_a_token_that_expires_after_24_hours(client: Any) -> None:
    resp = await grant(client)
    assert resp.status == 200
    body = await resp.json()
    assert body["expires_in"] == 86399
    assert set(body["scope"].split(",")) >= {"read_inventory", "write_inventory", "read_locations"}
    token = body["access_token"]
    assert token.startswith("shpat_")
    status, _ = await gql(client, LOCATIONS, token=token)
    assert status == 200
    advanced = await client.post("/_emulator/clock/advance", json={"seconds": 86398})
    assert advanced.status == 200
    assert (await gql(client, LOCATIONS, token=token))[0] == 200
    await client.post("/_emulator/clock/advance", json={"seconds": 2})
    status, body = await gql(client, LOCATIONS, token=token)
    assert status == 401
    assert body == {
        "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
    }
    # a legacy custom app's static token does not expire
    assert (await gql(client, LOCATIONS))[0] == 200
    assert (await (await client.get("/_emulator/tokens")).json())["issued"] == 1


async def test_client_credentials_accept_a_json_body_and_refuse_a_wrong_secret_or_grant(
    client: Any,
) -> None:
    resp = await client.post(
        "/admin/oauth/access_token",
        json={"grant_type": "client_credentials", "client_id": "emulator-client-id",
              "client_secret": SECRET},
    )  # fmt: skip
    assert resp.status == 200
    wrong = await grant(client, client_secret="nope")
    assert wrong.status == 400
    assert (await wrong.json())["error"] == "invalid_client"
    other = await grant(client, grant_type="password")
    assert (await other.json())["error"] == "unsupported_grant_type"
    # a client id of no app installed here: Shopify's error page, not JSON
    stranger = await grant(client, client_id="someone-else")
    assert stranger.status == 400
    assert "Oauth error app_not_installed: The application is not installed on this shop." in (
        await stranger.text()
    )


async def test_token_lifetime_is_configurable(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_emulator(token_lifetime=60).build_app())
    body = await (await grant(client)).json()
    assert body["expires_in"] == 60
    await client.post("/_emulator/clock/advance", json={"seconds": 61})
    assert (await gql(client, LOCATIONS, token=body["access_token"]))[0] == 401


async def test_clock_advance_refuses_a_negative_or_missing_amount(client: Any) -> None:
    for body in ({"seconds": -1}, {}, {"seconds": "1"}):
        assert (await client.post("/_emulator/clock/advance", json=body)).status == 400


# -- locations: the primary one is not the first by name ---------------------------------------


async def test_several_locations_sort_by_name_and_location_without_id_is_the_primary(
    aiohttp_client: Any,
) -> None:
    client = await aiohttp_client(make_emulator(locations=3).build_app())
    query = "{ locations(first: 10) { nodes { id name isActive } } location { id name } }"
    status, body = await gql(client, query)
    assert status == 200
    nodes = body["data"]["locations"]["nodes"]
    assert [n["name"] for n in nodes] == ["Annex 2", "Annex 3", "Shop location"]
    assert nodes[0]["id"] == "gid://shopify/Location/2"
    assert body["data"]["location"] == {"id": LOC, "name": "Shop location"}
    by_id = '{ location(id: "gid://shopify/Location/3") { name } }'
    assert (await gql(client, by_id))[1]["data"]["location"] == {"name": "Annex 3"}


async def test_a_write_at_a_location_that_stocks_nothing_is_refused(aiohttp_client: Any) -> None:
    emulator = make_emulator(locations=2)
    client = await aiohttp_client(emulator.build_app())
    row = {"inventoryItemId": item_gid(emulator), "quantity": 5, "changeFromQuantity": 100,
           "locationId": "gid://shopify/Location/2"}  # fmt: skip
    _, body = await gql(client, SET, {"input": set_input([row]), "key": "k-annex"})
    errors = body["data"]["inventorySetQuantities"]["userErrors"]
    assert [e["code"] for e in errors] == ["ITEM_NOT_STOCKED_AT_LOCATION"]


# -- a failed attempt's key: IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED --------------------------------


async def test_a_key_whose_attempt_failed_answers_previous_attempt_failed(
    client: Any, emulator: ShopifyEmulator
) -> None:
    armed = await client.post("/_emulator/shopify/idempotency", json={"fail_attempts": 1})
    assert await armed.json() == {"fail_attempts": 1}
    variables = {"input": set_input([{"inventoryItemId": item_gid(emulator), "quantity": 5,
                                      "changeFromQuantity": 100}]), "key": "k-fail"}  # fmt: skip
    _, failed = await gql(client, SET, variables)
    assert failed["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert emulator.store.write_log == []
    _, again = await gql(client, SET, variables)
    errors = again["data"]["inventorySetQuantities"]["userErrors"]
    assert [e["code"] for e in errors] == ["IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED"]
    _, fresh = await gql(client, SET, {**variables, "key": "k-new"})
    assert fresh["data"]["inventorySetQuantities"]["userErrors"] == []
    bad = await client.post("/_emulator/shopify/idempotency", json={"fail_attempts": -1})
    assert bad.status == 400


async def test_a_subscription_is_deleted_after_deliveries_that_failed_every_retry(
    aiohttp_client: Any, aiohttp_server: Any
) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    receiver = web.Application()
    receiver.router.add_post("/hook", broken)
    server = await aiohttp_server(receiver)
    emulator = make_emulator()
    emulator.webhooks.retry_base, emulator.webhooks.max_attempts = 0.001, 2
    client = await aiohttp_client(emulator.build_app())
    faults = await client.post("/_emulator/faults", json={"webhook_delete_after": 2})
    assert (await faults.json())["webhook_delete_after"] == 2
    emulator.webhooks.subscribe("inventory_levels/update", str(server.make_url("/hook")))
    sku = next(iter(emulator.store.variants.values())).sku
    for count in (5, 6):
        assert len(emulator.webhooks.subscriptions) == 1  # one failed delivery is not enough
        await client.post("/_emulator/inventory", json={"sku": sku, "available": count})
        for _ in range(200):
            if emulator.webhooks.stats["failed"] >= count - 4:
                break
            await asyncio.sleep(0.01)
    assert emulator.webhooks.subscriptions == {}
    assert emulator.webhooks.deleted == 1


# -- several locations: annexes stock what an edit there stocked --------------------------------

ANNEX = "gid://shopify/Location/2"
LEVELS = """query($ids: [ID!]!) { nodes(ids: $ids) { ... on InventoryItem { id
  primary: inventoryLevel(locationId: "gid://shopify/Location/1") {
    quantities(names: ["available"]) { quantity } }
  annex: inventoryLevel(locationId: "gid://shopify/Location/2") {
    id location { id name } quantities(names: ["available", "on_hand"]) { name quantity } }
  inventoryLevels(first: 5) { nodes { location { id } } }
  variant { inventoryQuantity } } } }"""


async def annex_shop(aiohttp_client: Any) -> tuple[ShopifyEmulator, Any]:
    emulator = make_emulator(locations=3)
    client = await aiohttp_client(emulator.build_app())
    resp = await client.post(
        "/_emulator/inventory", json={"sku": "SKU-00002", "available": 7, "location": 2}
    )
    assert resp.status == 200
    return emulator, client


async def test_levels_read_at_an_annex_that_stocks_the_item_and_null_where_it_does_not(
    aiohttp_client: Any,
) -> None:
    emulator, client = await annex_shop(aiohttp_client)
    _, body = await gql(client, LEVELS, {"ids": [item_gid(emulator, 0), item_gid(emulator, 1)]})
    unstocked, stocked = body["data"]["nodes"]
    assert unstocked["annex"] is None
    assert [n["location"]["id"] for n in unstocked["inventoryLevels"]["nodes"]] == [LOC]
    assert stocked["primary"]["quantities"] == [{"quantity": 100}]
    assert stocked["annex"]["quantities"] == [
        {"name": "available", "quantity": 7},
        {"name": "on_hand", "quantity": 7},
    ]
    assert stocked["annex"]["location"] == {"id": ANNEX, "name": "Annex 2"}
    assert stocked["annex"]["id"].startswith("gid://shopify/InventoryLevel/2?inventory_item_id=")
    levels = [n["location"]["id"] for n in stocked["inventoryLevels"]["nodes"]]
    assert levels == [LOC, ANNEX]
    assert stocked["variant"]["inventoryQuantity"] == 107  # the sum over the locations


async def test_a_bulk_query_reads_levels_at_several_locations(aiohttp_client: Any) -> None:
    _, client = await annex_shop(aiohttp_client)
    query = (
        '{ productVariants { edges { node { sku inventoryItem { id a: inventoryLevel(locationId: "'
        + ANNEX
        + '") { quantities(names: ["available"]) { quantity } } } } } } }'
    )
    run = "mutation($q: String!) { bulkOperationRunQuery(query: $q) { bulkOperation { id } } }"
    await gql(client, run, {"q": query})
    poll = "{ currentBulkOperation { status url } }"
    for _ in range(50):
        op = (await gql(client, poll))[1]["data"]["currentBulkOperation"]
        if op["status"] == "COMPLETED":
            break
    resp = await client.get("/" + op["url"].split("//", 1)[1].split("/", 1)[1])
    rows = [json.loads(line) for line in (await resp.text()).splitlines()]
    annex = {r["sku"]: r["inventoryItem"]["a"] for r in rows}
    assert annex["SKU-00002"] == {"quantities": [{"quantity": 7}]}
    assert annex["SKU-00001"] is None


async def test_a_set_at_an_annex_compares_and_applies_there_in_one_call_with_the_primary(
    aiohttp_client: Any,
) -> None:
    emulator, client = await annex_shop(aiohttp_client)
    item = item_gid(emulator, 1)
    mutation = SET.replace("item { id }", "item { id } location { id }")
    stale = [
        {"inventoryItemId": item, "quantity": 3, "changeFromQuantity": 8, "locationId": ANNEX},
    ]
    _, body = await gql(client, mutation, {"input": set_input(stale), "key": "k-stale"})
    errors = body["data"]["inventorySetQuantities"]["userErrors"]
    assert [e["code"] for e in errors] == ["CHANGE_FROM_QUANTITY_STALE"]
    rows = [
        {"inventoryItemId": item, "quantity": 3, "changeFromQuantity": 7, "locationId": ANNEX},
        {"inventoryItemId": item, "quantity": 90, "changeFromQuantity": 100},
    ]
    _, body = await gql(client, mutation, {"input": set_input(rows), "key": "k-both"})
    payload = body["data"]["inventorySetQuantities"]
    assert payload["userErrors"] == []
    changes = [
        (c["location"]["id"], c["quantityAfterChange"])
        for c in payload["inventoryAdjustmentGroup"]["changes"]
        if c["name"] == "available"
    ]
    assert changes == [(ANNEX, 3), (LOC, 90)]
    variant = emulator.store.find_sku("SKU-00002")
    assert (variant.count(2), variant.available) == (3, 90)
    log = [(w.location, w.before, w.after, w.applied) for w in emulator.store.write_log]
    assert log == [(2, 7, 7, False), (2, 7, 3, True), (1, 100, 90, True)]
    twice = [dict(rows[0], changeFromQuantity=3), dict(rows[0], changeFromQuantity=3)]
    _, body = await gql(client, mutation, {"input": set_input(twice), "key": "k-twice"})
    codes = [e["code"] for e in body["data"]["inventorySetQuantities"]["userErrors"]]
    assert codes == ["NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR"]


async def test_changes_at_an_annex_send_their_level_webhook_and_orders_say_their_location(
    aiohttp_client: Any, aiohttp_server: Any
) -> None:
    emulator, client = await annex_shop(aiohttp_client)
    url, got = await receiver(aiohttp_server)
    for topic in ("INVENTORY_LEVELS_UPDATE", "ORDERS_CREATE", "REFUNDS_CREATE"):
        await subscribe(client, topic, url)
    order = {"line_items": [{"sku": "SKU-00002", "quantity": 2}], "location": 2}
    resp = await client.post("/_emulator/orders", json=order)
    assert resp.status == 201
    order_id = (await resp.json())["order"]["id"]
    await client.post("/_emulator/refunds", json={"order_id": order_id})
    await client.post(
        "/_emulator/orders", json={"line_items": [{"sku": "SKU-00001", "quantity": 1}]}
    )
    await wait_for(got, 6)
    bodies: dict[str, list[dict[str, Any]]] = {}
    for headers, body in got:
        bodies.setdefault(headers["X-Shopify-Topic"], []).append(json.loads(body))
    variant = emulator.store.find_sku("SKU-00002")
    levels = sorted(
        (b["location_id"], b["inventory_item_id"], b["available"])
        for b in bodies["inventory_levels/update"]
    )
    first = emulator.store.find_sku("SKU-00001").inventory_item_id
    item = variant.inventory_item_id
    assert levels == sorted([(2, item, 5), (2, item, 7), (1, first, 99)])
    annex = next(b for b in bodies["inventory_levels/update"] if b["location_id"] == 2)
    assert annex["admin_graphql_api_id"].startswith("gid://shopify/InventoryLevel/2?")
    by_line = {o["line_items"][0]["sku"]: o["location_id"] for o in bodies["orders/create"]}
    assert by_line == {"SKU-00002": 2, "SKU-00001": 1}
    [refund] = bodies["refunds/create"]
    assert refund["refund_line_items"][0]["location_id"] == 2


async def test_a_one_location_shop_sends_its_orders_as_it_always_did(
    client: Any, aiohttp_server: Any
) -> None:
    url, got = await receiver(aiohttp_server)
    await subscribe(client, "ORDERS_CREATE", url)
    await client.post(
        "/_emulator/orders", json={"line_items": [{"sku": "SKU-00001", "quantity": 1}]}
    )
    await wait_for(got, 1)
    assert "location_id" not in json.loads(got[0][1])
