"""The SHOPLINE emulator speaks the Open API subset described in shared/platforms/shopline.md."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import urllib.parse
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.emulator import EmulatorOptions
from plugins.shopline.emulator import ShoplineEmulator

API = "/admin/openapi/v20260601/"
AUTH = {"Authorization": "Bearer emulator-token"}


class FakeClock:
    """A settable wall clock for the emulator (its bucket and timestamps)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


def make(skus: int = 5, *, rate_limit: bool = False, clock: FakeClock | None = None, **kw: Any):
    options = EmulatorOptions(skus=skus, rate_limit=rate_limit, **kw)
    return ShoplineEmulator(options, clock=clock or FakeClock())


async def start(aiohttp_client: Any, emulator: ShoplineEmulator) -> TestClient:
    return await aiohttp_client(emulator.build_app())


def first_item(emulator: ShoplineEmulator) -> str:
    variant = next(iter(emulator.store.variants.values()))
    return str(10**18 + variant.inventory_item_id)


def next_link(link: str | None) -> str | None:
    if not link:
        return None
    for part in link.split(","):
        url, _, rel = part.partition(";")
        if 'rel="next"' in rel:
            return url.strip()[1:-1]
    return None


async def test_missing_or_wrong_token_is_401_with_errors_body_and_trace_id(aiohttp_client):
    client = await start(aiohttp_client, make())
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "emulator-token"}):
        resp = await client.get(API + "locations/list.json", headers=headers)
        assert resp.status == 401
        assert "errors" in await resp.json()
        assert resp.headers.get("traceId")
    resp = await client.get(API + "locations/list.json", headers=AUTH)
    assert resp.status == 200
    assert resp.headers.get("traceId")


async def test_any_dated_version_is_served_and_other_shapes_are_not(aiohttp_client):
    client = await start(aiohttp_client, make())
    ok = await client.get("/admin/openapi/v20250301/locations/list.json", headers=AUTH)
    assert ok.status == 200
    bad = await client.get("/admin/openapi/2026-01/locations/list.json", headers=AUTH)
    assert bad.status == 404
    assert "errors" in await bad.json()


async def test_one_default_location_with_a_long_string_id(aiohttp_client):
    client = await start(aiohttp_client, make())
    body = await (await client.get(API + "locations/list.json", headers=AUTH)).json()
    [location] = body["locations"]
    assert location["is_default"] is True
    assert isinstance(location["id"], str) and location["id"].isdigit()
    assert 19 <= len(location["id"]) <= 26


async def test_products_paginate_through_link_header_exactly_once(aiohttp_client):
    client = await start(aiohttp_client, make(skus=7))
    url: str | None = API + "products/products.json?limit=3"
    seen: list[str] = []
    pages = 0
    while url:
        resp = await client.get(url, headers=AUTH)
        assert resp.status == 200
        products = (await resp.json())["products"]
        for product in products:
            for variant in product["variants"]:
                assert isinstance(variant["id"], str) and len(variant["id"]) >= 19
                assert isinstance(variant["inventory_item_id"], str)
                seen.append(variant["sku"])
        pages += 1
        link = resp.headers.get("link")
        target = next_link(link)
        if target is None:
            assert link is None  # no link header at all on the last page
            url = None
        else:
            parsed = urllib.parse.urlsplit(target)
            assert "page_info" in urllib.parse.parse_qs(parsed.query)
            url = f"{parsed.path}?{parsed.query}"
    assert pages == 3
    assert sorted(seen) == sorted(make(skus=7).store.inventory())
    assert len(seen) == len(set(seen)) == 7


async def test_page_info_overrides_filters(aiohttp_client):
    emulator = make(skus=4)
    client = await start(aiohttp_client, emulator)
    first = await client.get(API + "products/products.json?limit=2", headers=AUTH)
    target = urllib.parse.urlsplit(next_link(first.headers["link"]) or "")
    query = urllib.parse.parse_qs(target.query)
    bogus_ids = "1"
    resp = await client.get(
        API + "products/products.json",
        params={"page_info": query["page_info"][0], "limit": "2", "ids": bogus_ids},
        headers=AUTH,
    )
    assert len((await resp.json())["products"]) == 2


async def test_limit_above_250_is_refused(aiohttp_client):
    client = await start(aiohttp_client, make())
    resp = await client.get(API + "products/products.json?limit=251", headers=AUTH)
    assert resp.status == 400
    assert "errors" in await resp.json()
    ok = await client.get(API + "products/products.json?limit=250", headers=AUTH)
    assert ok.status == 200


async def test_a_burst_of_40_is_queued_then_429_without_headers_then_recovery(aiohttp_client):
    clock = FakeClock()
    emulator = make(rate_limit=True, clock=clock)
    waits: list[float] = []

    async def wait(seconds: float) -> None:  # the clock stands still: record the queue's waits
        waits.append(seconds)

    emulator.queue_wait = wait
    client = await start(aiohttp_client, emulator)
    for _ in range(40):
        assert (await client.get(API + "locations/list.json", headers=AUTH)).status == 200
    # the first runs at once, each later one when those queued ahead have leaked out at 4/s
    assert [0.0, *waits] == [n / 4 for n in range(40)]
    resp = await client.get(API + "locations/list.json", headers=AUTH)
    assert resp.status == 429  # the bucket holds 40: no room to queue
    assert await resp.json() == {"errors": "Too many request"}
    assert "Retry-After" not in resp.headers
    assert not [name for name in resp.headers if "ratelimit" in name.lower()]
    clock.t += 0.25  # one request drains at 4/s
    assert (await client.get(API + "locations/list.json", headers=AUTH)).status == 200
    assert waits[-1] == 39 / 4
    assert (await client.get(API + "locations/list.json", headers=AUTH)).status == 429


async def test_queued_requests_run_at_4_per_second(aiohttp_client):
    client = await start(aiohttp_client, make(rate_limit=True))
    started = time.monotonic()
    statuses = await asyncio.gather(
        *(client.get(API + "locations/list.json", headers=AUTH) for _ in range(9))
    )
    assert {r.status for r in statuses} == {200}
    assert time.monotonic() - started >= 8 / 4 - 0.1  # the ninth waited for eight ahead


async def test_enterprise_plan_and_switch_have_no_rate_limit(aiohttp_client):
    client = await start(aiohttp_client, make(rate_limit=True, plan="enterprise"))
    statuses = {
        (await client.get(API + "locations/list.json", headers=AUTH)).status for _ in range(45)
    }
    assert statuses == {200}


async def test_levels_need_ids_and_cap_them(aiohttp_client):
    emulator = make()
    client = await start(aiohttp_client, emulator)
    item = first_item(emulator)
    missing = await client.get(API + "inventory_levels.json", headers=AUTH)
    assert missing.status == 400
    many = ",".join(str(10**18 + n) for n in range(51))
    assert (
        await client.get(
            API + "inventory_levels.json", params={"inventory_item_ids": many}, headers=AUTH
        )
    ).status == 400
    locations = ",".join(str(10**18 + n) for n in range(11))
    params = {"inventory_item_ids": item, "location_ids": locations}
    assert (
        await client.get(API + "inventory_levels.json", params=params, headers=AUTH)
    ).status == 400
    resp = await client.get(
        API + "inventory_levels.json", params={"inventory_item_ids": item}, headers=AUTH
    )
    [level] = (await resp.json())["inventory_levels"]
    assert level["inventory_item_id"] == item
    assert level["available"] == 100
    assert {"location_id", "variant_id", "updated_at"} <= set(level)


async def test_adjust_answers_update_at_and_set_answers_updated_at(aiohttp_client):
    emulator = make()
    client = await start(aiohttp_client, emulator)
    item = first_item(emulator)
    location = emulator.location_id
    resp = await client.post(
        API + "inventory_levels/adjust.json",
        json={"inventory_item_id": item, "location_id": location, "available_adjustment": -3},
        headers=AUTH,
    )
    level = (await resp.json())["inventory_level"]
    assert level["available"] == 97
    assert "update_at" in level and "updated_at" not in level
    resp = await client.post(
        API + "inventory_levels/set.json",
        json={"inventory_item_id": item, "location_id": location, "available": 10},
        headers=AUTH,
    )
    level = (await resp.json())["inventory_level"]
    assert level["available"] == 10
    assert "updated_at" in level and "update_at" not in level
    assert [(w.kind, w.before, w.after) for w in emulator.store.write_log] == [
        ("adjust", 100, 97),
        ("set", 97, 10),
    ]


async def test_adjust_has_no_idempotency_a_repeat_applies_twice(aiohttp_client):
    emulator = make()
    client = await start(aiohttp_client, emulator)
    body = {
        "inventory_item_id": first_item(emulator),
        "location_id": emulator.location_id,
        "available_adjustment": -1,
    }
    for _ in range(2):
        await client.post(API + "inventory_levels/adjust.json", json=body, headers=AUTH)
    assert next(iter(emulator.store.variants.values())).available == 98


async def test_write_errors_bad_json_unknown_item_and_location(aiohttp_client):
    emulator = make()
    client = await start(aiohttp_client, emulator)
    item, location = first_item(emulator), emulator.location_id
    url = API + "inventory_levels/adjust.json"
    headers = {**AUTH, "Content-Type": "application/json"}
    assert (await client.post(url, data=b"{nope", headers=headers)).status == 400
    numeric = {"inventory_item_id": int(item), "location_id": location, "available_adjustment": 1}
    assert (await client.post(url, json=numeric, headers=AUTH)).status == 400
    unknown = {"inventory_item_id": "1999999999999999999", "location_id": location}
    resp = await client.post(url, json={**unknown, "available_adjustment": 1}, headers=AUTH)
    assert resp.status == 404
    assert "errors" in await resp.json()
    elsewhere = {"inventory_item_id": item, "location_id": "1000000000000000002"}
    resp = await client.post(url, json={**elsewhere, "available_adjustment": 1}, headers=AUTH)
    assert resp.status == 422
    assert emulator.store.write_log == []


async def test_injected_failure_does_not_apply_and_timeout_after_apply_does(aiohttp_client):
    emulator = make()
    client = await start(aiohttp_client, emulator)
    body = {
        "inventory_item_id": first_item(emulator),
        "location_id": emulator.location_id,
        "available_adjustment": -5,
    }
    emulator.faults.fail_requests = 1
    resp = await client.post(API + "inventory_levels/adjust.json", json=body, headers=AUTH)
    assert resp.status == 503
    assert emulator.store.write_log == []
    emulator.faults.timeout_after_apply = 1
    with pytest.raises(aiohttp.ClientError):  # the client sees a dropped connection
        await client.post(API + "inventory_levels/adjust.json", json=body, headers=AUTH)
    assert [w.after for w in emulator.store.write_log] == [95]


async def test_orders_list_filters_status_and_time(aiohttp_client):
    clock = FakeClock()
    emulator = make(clock=clock)
    client = await start(aiohttp_client, emulator)
    sku = next(iter(emulator.store.inventory()))
    first = await client.post(
        "/_emulator/orders", json={"line_items": [{"sku": sku, "quantity": 2}]}
    )
    order_id = (await first.json())["order"]["id"]
    clock.t += 100
    await client.post("/_emulator/orders", json={"line_items": [{"sku": sku, "quantity": 1}]})
    await client.post(f"/_emulator/orders/{order_id}/cancel")
    default = await (await client.get(API + "orders.json", headers=AUTH)).json()
    assert len(default["orders"]) == 1  # open only by default
    every = await (await client.get(API + "orders.json?status=any", headers=AUTH)).json()
    assert [o["status"] for o in every["orders"]] == ["canceled", "open"]
    cancelled = every["orders"][0]
    assert cancelled["cancelled_at"] is not None
    [line] = cancelled["line_items"]
    assert line["sku"] == sku and line["quantity"] == 2 and line["location_id"]
    assert isinstance(cancelled["id"], str) and isinstance(line["variant_id"], str)
    since = "2027-01-15T08:00:01+00:00"  # after the first order, before the second (clock+100)
    params = {"status": "any", "created_at_min": since}
    recent = await (await client.get(API + "orders.json", params=params, headers=AUTH)).json()
    assert [o["status"] for o in recent["orders"]] == ["open"]
    params = {"status": "any", "updated_at_min": since}
    updated = await (await client.get(API + "orders.json", params=params, headers=AUTH)).json()
    assert len(updated["orders"]) == 2  # the cancel updated the first order


async def test_webhook_subscriptions_crud(aiohttp_client):
    client = await start(aiohttp_client, make())
    hook = {
        "address": "http://127.0.0.1:1/hook",
        "topic": "orders/create",
        "api_version": "v20260601",
    }
    created = await client.post(API + "webhooks.json", json={"webhook": hook}, headers=AUTH)
    assert created.status == 200
    webhook = (await created.json())["webhook"]
    assert isinstance(webhook["id"], int)
    again = await client.post(API + "webhooks.json", json={"webhook": hook}, headers=AUTH)
    assert again.status == 422
    bad = {**hook, "topic": "orders/made"}
    assert (
        await client.post(API + "webhooks.json", json={"webhook": bad}, headers=AUTH)
    ).status == 422
    count = await (await client.get(API + "webhooks/count.json", headers=AUTH)).json()
    assert count == {"count": 1}
    one = await client.get(f"{API}{webhook['id']}/webhooks.json", headers=AUTH)
    assert (await one.json())["webhook"]["topic"] == "orders/create"
    change = {"webhook": {"address": "http://127.0.0.1:2/hook"}}
    put = await client.put(f"{API}{webhook['id']}/webhooks.json", json=change, headers=AUTH)
    assert (await put.json())["webhook"]["address"] == "http://127.0.0.1:2/hook"
    listed = await (await client.get(API + "webhooks.json", headers=AUTH)).json()
    assert [w["address"] for w in listed["webhooks"]] == ["http://127.0.0.1:2/hook"]
    assert (await client.delete(f"{API}{webhook['id']}/webhooks.json", headers=AUTH)).status == 200
    assert (await client.get(f"{API}{webhook['id']}/webhooks.json", headers=AUTH)).status == 404


async def test_deliveries_carry_seven_headers_and_hex_hmac(aiohttp_client, aiohttp_server):
    received: list[tuple[dict[str, str], bytes]] = []
    arrived = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        if len(received) >= 3:
            arrived.set()
        return web.Response(text="ok")

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    server = await aiohttp_server(receiver)
    emulator = make(webhook_secret="s3cret")
    client = await start(aiohttp_client, emulator)
    for topic in ("inventory_levels/update", "orders/create"):
        hook = {"address": str(server.make_url("/hook")), "topic": topic}
        await client.post(API + "webhooks.json", json={"webhook": hook}, headers=AUTH)
    sku = next(iter(emulator.store.inventory()))
    await client.post("/_emulator/orders", json={"line_items": [{"sku": sku, "quantity": 1}]})
    body = {
        "inventory_item_id": first_item(emulator),
        "location_id": emulator.location_id,
        "available_adjustment": 5,
    }
    await client.post(API + "inventory_levels/adjust.json", json=body, headers=AUTH)
    await asyncio.wait_for(arrived.wait(), 5)
    topics = sorted(headers["X-Shopline-Topic"] for headers, _ in received)
    assert topics == ["inventory_levels/update", "inventory_levels/update", "orders/create"]
    for headers, raw in received:
        for name in ("Topic", "Hmac-Sha256", "Shop-Domain", "Shop-Id", "Merchant-Id",
                     "API-Version", "Webhook-Id"):  # fmt: skip
            assert headers.get(f"X-Shopline-{name}"), name
        expected = hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
        assert headers["X-Shopline-Hmac-Sha256"] == expected
    levels = [json.loads(raw) for h, raw in received if h["X-Shopline-Topic"].startswith("inv")]
    assert sorted(level["available"] for level in levels) == [99, 104]  # the API write echoes too


async def test_control_routes_follow_the_contract(aiohttp_client):
    emulator = make(skus=3)
    client = await start(aiohttp_client, emulator)
    inventory = await (await client.get("/_emulator/inventory")).json()
    sku = next(iter(inventory))
    assert (
        await client.post("/_emulator/inventory", json={"sku": sku, "available": 7})
    ).status == 200
    short = await client.post(
        "/_emulator/orders", json={"line_items": [{"sku": sku, "quantity": 8}]}
    )
    assert short.status == 409
    bought = await client.post(
        "/_emulator/orders", json={"line_items": [{"sku": sku, "quantity": 2}]}
    )
    assert bought.status == 201
    created = await client.post("/_emulator/products", json={"sku": "NEW-1", "available": 3})
    assert created.status == 201
    inventory = await (await client.get("/_emulator/inventory")).json()
    assert inventory[sku] == 5 and inventory["NEW-1"] == 3
    items = await (await client.get("/_emulator/items")).json()
    assert all(item["item_id"].isdigit() and len(item["item_id"]) >= 19 for item in items)


# -- app tokens: refresh and expiry -------------------------------------------------------------


def refresh_headers(secret: str = "emulator-secret", appkey: str = "emulator-client-id"):
    timestamp = "1800000000000"
    sign = hmac.new(secret.encode(), timestamp.encode(), hashlib.sha256).hexdigest()
    return {"appkey": appkey, "timestamp": timestamp, "sign": sign}


async def refresh(client: TestClient, **kw: str) -> Any:
    return await client.post("/admin/oauth/token/refresh", headers=refresh_headers(**kw))


async def test_a_signed_refresh_grants_a_token_for_10_hours(aiohttp_client):
    clock = FakeClock()
    client = await start(aiohttp_client, make(clock=clock))
    resp = await refresh(client)
    assert resp.status == 200
    body = await resp.json()
    assert (body["code"], body["i18nCode"]) == (200, "SUCCESS")
    token = body["data"]["accessToken"]
    assert body["data"]["expireTime"] == "2027-01-15T18:00:00.000+00:00"
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await client.get(API + "locations/list.json", headers=bearer)).status == 200
    clock.t += 36000
    expired = await client.get(API + "locations/list.json", headers=bearer)
    wrong = await client.get(API + "locations/list.json", headers={"Authorization": "Bearer x"})
    assert expired.status == wrong.status == 401
    assert await expired.json() == await wrong.json()
    # a private app's static token does not expire
    assert (await client.get(API + "locations/list.json", headers=AUTH)).status == 200


async def test_a_refresh_leaves_the_old_token_valid_for_5_minutes(aiohttp_client):
    clock = FakeClock()
    client = await start(aiohttp_client, make(clock=clock))
    old = (await (await refresh(client)).json())["data"]["accessToken"]
    new = (await (await refresh(client)).json())["data"]["accessToken"]
    assert old != new
    clock.t += 299
    for token in (old, new):
        headers = {"Authorization": f"Bearer {token}"}
        assert (await client.get(API + "locations/list.json", headers=headers)).status == 200
    clock.t += 2
    headers = {"Authorization": f"Bearer {old}"}
    assert (await client.get(API + "locations/list.json", headers=headers)).status == 401


async def test_a_refresh_with_a_wrong_sign_or_app_key_is_refused(aiohttp_client):
    client = await start(aiohttp_client, make())
    for kw in ({"secret": "wrong"}, {"appkey": "other-app"}):
        resp = await refresh(client, **kw)
        assert resp.status == 401
        refusal = await resp.json()
        # as the SDK's error decoder reads it: code as text, a message, no data
        assert (refusal["code"], "data" in refusal) == ("401", False)
        assert refusal["message"]
    lifetime = await start(aiohttp_client, make(token_lifetime=5))
    body = await (await refresh(lifetime)).json()
    assert (await (await lifetime.get("/_emulator/tokens")).json()) == {"issued": 1, "lifetime": 5}
    assert body["data"]["accessToken"]


async def test_each_list_refuses_a_page_larger_than_its_documented_maximum(aiohttp_client):
    client = await start(aiohttp_client, make())
    for path, maximum in (("orders.json", 100), ("products/products.json", 250)):
        ok = await client.get(API + path, params={"limit": str(maximum)}, headers=AUTH)
        assert ok.status == 200
        over = await client.get(API + path, params={"limit": str(maximum + 1)}, headers=AUTH)
        assert over.status == 400
        assert str(maximum) in (await over.json())["errors"]


# -- several locations --------------------------------------------------------------------------


def record_webhooks(emulator: ShoplineEmulator) -> list[tuple[str, dict[str, Any]]]:
    """Every webhook the emulator emits from now on, as (topic, payload)."""
    emitted: list[tuple[str, dict[str, Any]]] = []

    def emit(topic: str, payload: dict[str, Any]) -> int:
        emitted.append((topic, json.loads(json.dumps(payload))))
        return 0

    emulator.webhooks.emit = emit  # type: ignore[method-assign]
    return emitted


def location(n: int) -> str:
    return str(10**18 + n)


async def test_a_shop_lists_each_of_its_locations_the_default_first(aiohttp_client):
    client = await start(aiohttp_client, make(locations=3))
    body = await (await client.get(API + "locations/list.json", headers=AUTH)).json()
    ids = [loc["id"] for loc in body["locations"]]
    assert ids == [location(1), location(2), location(3)]
    assert [loc["is_default"] for loc in body["locations"]] == [True, False, False]
    assert len({loc["name"] for loc in body["locations"]}) == 3
    count = await (await client.get(API + "locations/count.json", headers=AUTH)).json()
    assert count == {"count": 3}
    one = await (await client.get(f"{API}locations/{location(2)}.json", headers=AUTH)).json()
    assert one["location"]["id"] == location(2)
    missing = await client.get(f"{API}locations/{location(4)}.json", headers=AUTH)
    assert missing.status == 404 and "errors" in await missing.json()


async def test_levels_are_read_per_location_through_the_location_ids_filter(aiohttp_client):
    emulator = make(locations=3)
    client = await start(aiohttp_client, emulator)
    item, sku = first_item(emulator), next(iter(emulator.store.inventory()))
    edit = {"sku": sku, "available": 7, "location": 2}
    assert (await client.post("/_emulator/inventory", json=edit)).status == 200

    async def levels(**filters: str) -> list[tuple[str, int]]:
        params = {"inventory_item_ids": item, **filters}
        resp = await client.get(API + "inventory_levels.json", params=params, headers=AUTH)
        assert resp.status == 200
        return [
            (lv["location_id"], lv["available"]) for lv in (await resp.json())["inventory_levels"]
        ]

    assert await levels() == [(location(1), 100), (location(2), 7)]  # where it is stocked
    assert await levels(location_ids=location(2)) == [(location(2), 7)]
    assert await levels(location_ids=f"{location(1)},{location(2)}") == [
        (location(1), 100),
        (location(2), 7),
    ]
    assert await levels(location_ids=location(3)) == []  # not stocked there
    assert await levels(location_ids=location(9)) == []  # no such location: no level
    there = await (await client.get("/_emulator/inventory", params={"location": "2"})).json()
    assert there == {sku: 7}
    products = await (await client.get(API + "products/products.json", headers=AUTH)).json()
    variant = next(v for p in products["products"] for v in p["variants"] if v["sku"] == sku)
    assert variant["inventory_quantity"] == 107  # the sum over all locations


async def test_set_and_adjust_write_at_the_location_they_name(aiohttp_client):
    emulator = make(locations=3)
    client = await start(aiohttp_client, emulator)
    item, sku = first_item(emulator), next(iter(emulator.store.inventory()))
    emulator.store.edit(sku, 7, 2)
    at_2 = {"inventory_item_id": item, "location_id": location(2)}
    resp = await client.post(
        API + "inventory_levels/adjust.json",
        json={**at_2, "available_adjustment": -2},
        headers=AUTH,
    )
    level = (await resp.json())["inventory_level"]
    assert (level["location_id"], level["available"]) == (location(2), 5)
    assert "update_at" in level
    resp = await client.post(
        API + "inventory_levels/set.json", json={**at_2, "available": 11}, headers=AUTH
    )
    level = (await resp.json())["inventory_level"]
    assert (level["location_id"], level["available"]) == (location(2), 11)
    variant = emulator.store.find_sku(sku)
    assert (variant.count(1), variant.count(2), variant.count(3)) == (100, 11, None)
    assert [(w.kind, w.location, w.before, w.after) for w in emulator.store.write_log] == [
        ("adjust", 2, 7, 5),
        ("set", 2, 5, 11),
    ]
    # not stocked at 3, and the shop has no location 4: refused, nothing written or stocked
    for where in (location(3), location(4)):
        body = {"inventory_item_id": item, "location_id": where}
        adjust = {**body, "available_adjustment": 1}
        resp = await client.post(API + "inventory_levels/adjust.json", json=adjust, headers=AUTH)
        assert resp.status == 422 and "errors" in await resp.json()
        resp = await client.post(
            API + "inventory_levels/set.json", json={**body, "available": 1}, headers=AUTH
        )
        assert resp.status == 422
    assert len(emulator.store.write_log) == 2
    assert variant.count(3) is None


async def test_a_change_at_another_location_sends_its_level_webhook(aiohttp_client):
    emulator = make(locations=3)
    client = await start(aiohttp_client, emulator)
    emitted = record_webhooks(emulator)
    item, sku = first_item(emulator), next(iter(emulator.store.inventory()))
    await client.post("/_emulator/inventory", json={"sku": sku, "available": 7, "location": 2})
    body = {"inventory_item_id": item, "location_id": location(2), "available_adjustment": -3}
    await client.post(API + "inventory_levels/adjust.json", json=body, headers=AUTH)
    levels = [payload for topic, payload in emitted if topic == "inventory_levels/update"]
    assert [(lv["location_id"], lv["available"]) for lv in levels] == [
        (location(2), 7),
        (location(2), 4),
    ]
    assert all(lv["inventory_item_id"] == item and lv["onhand"] == lv["available"] for lv in levels)


async def test_an_order_at_another_location_names_it_on_each_line(aiohttp_client):
    emulator = make(locations=3)
    client = await start(aiohttp_client, emulator)
    emitted = record_webhooks(emulator)
    sku = next(iter(emulator.store.inventory()))
    await client.post("/_emulator/inventory", json={"sku": sku, "available": 7, "location": 2})
    order = {"line_items": [{"sku": sku, "quantity": 2}], "location": 2}
    assert (await client.post("/_emulator/orders", json=order)).status == 201
    elsewhere = {"line_items": [{"sku": sku, "quantity": 1}], "location": 3}
    assert (await client.post("/_emulator/orders", json=elsewhere)).status == 409  # not stocked
    [created] = [payload for topic, payload in emitted if topic == "orders/create"]
    assert [line["location_id"] for line in created["line_items"]] == [location(2)]
    assert "location_id" not in created  # SHOPLINE's order names locations per line only
    level = [p for t, p in emitted if t == "inventory_levels/update"][-1]
    assert (level["location_id"], level["available"]) == (location(2), 5)
    listed = await (await client.get(API + "orders.json", headers=AUTH)).json()
    assert listed["orders"][0]["line_items"][0]["location_id"] == location(2)
    assert emulator.store.find_sku(sku).count(1) == 100  # the default location is untouched
