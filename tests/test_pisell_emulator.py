"""The Pisell emulator speaks the proposed IS Open API of `plugins/pisell/wire.py`."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import web

from agent.emulator import EmulatorOptions
from plugins.pisell import wire
from plugins.pisell.emulator import PisellEmulator

TOKEN = "tok-pisell"
SECRET = "whsec-pisell"
P = wire.PATHS


class Wall:
    """A wall clock the test can move (the emulator's bucket and signatures use it)."""

    def __init__(self) -> None:
        self.t = 1_780_000_000.0

    def __call__(self) -> float:
        return self.t


def make(
    skus: int = 5, *, rate_limit: bool = False, wall: Wall | None = None, locations: int = 1
) -> PisellEmulator:
    options = EmulatorOptions(
        shop="demo.example.com", skus=skus, token=TOKEN, webhook_secret=SECRET,
        rate_limit=rate_limit, seed=7, locations=locations,
    )  # fmt: skip
    return PisellEmulator(options, clock=wall or time.time)


def signed(
    now: float | None = None, *, token: str = TOKEN, secret: str | None = None, key: str = ""
) -> dict[str, str]:
    headers = wire.auth_headers(
        client_id="shopsync", access_token=token, client_secret=secret or token,
        now=time.time() if now is None else now,
    )  # fmt: skip
    if key:
        headers[wire.H_IDEMPOTENCY_KEY] = key
    return headers


@pytest.fixture
def emulator() -> PisellEmulator:
    return make()


@pytest.fixture
async def api(aiohttp_client: Any, emulator: PisellEmulator) -> Any:
    return await aiohttp_client(emulator.build_app())


async def get(api: Any, path: str, **params: str) -> dict[str, Any]:
    resp = await api.get(path, params=params, headers=signed())
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def post(api: Any, path: str, body: Any, key: str) -> tuple[int, dict[str, Any]]:
    resp = await api.post(path, json=body, headers=signed(key=key))
    return resp.status, await resp.json()


def set_body(*rows: tuple[str, int, int | None]) -> dict[str, Any]:
    return wire.write_request(wire.SetItem(sku, "1", target, exp) for sku, target, exp in rows)


async def inventory(api: Any) -> dict[str, int]:
    return await (await api.get("/_emulator/inventory")).json()


# -- auth and envelope ----------------------------------------------------------------------


async def test_bad_sign_is_refused_with_401(api: Any) -> None:
    resp = await api.get(P["warehouses"], headers=signed(secret="not-the-secret"))
    body = await resp.json()
    assert resp.status == 401
    assert body["status"] is False and body["error_code"] == wire.UNAUTHORIZED


async def test_missing_auth_headers_are_refused_with_401(api: Any) -> None:
    assert (await api.get(P["warehouses"])).status == 401


async def test_timestamp_skew_over_300_seconds_is_refused_with_401(api: Any) -> None:
    assert (await api.get(P["shops"], headers=signed(time.time() - 301))).status == 401
    assert (await api.get(P["shops"], headers=signed(time.time() + 301))).status == 401
    assert (await api.get(P["shops"], headers=signed(time.time() - 250))).status == 200


async def test_token_of_another_shop_is_refused_with_403(api: Any) -> None:
    resp = await api.get(P["shops"], headers=signed(token="other-shop-token"))
    assert resp.status == 403
    assert (await resp.json())["error_code"] == wire.FORBIDDEN


async def test_envelope_and_list_shape(api: Any) -> None:
    resp = await api.get(P["warehouses"], headers=signed())
    body = await resp.json()
    assert set(body) >= {"status", "code", "message", "data"}
    assert body["status"] is True and body["code"] == 200
    assert set(body["data"]) == {"list", "count", "skip", "size", "next_cursor"}
    assert body["data"]["list"][0]["id"] == "1"
    assert resp.headers[wire.H_RATE_LIMIT] == "20"
    assert wire.H_RATE_REMAINING in resp.headers


async def test_shops_give_the_timezone_and_bound_shops(api: Any) -> None:
    shops = [wire.Shop.from_wire(r) for r in (await get(api, P["shops"]))["data"]["list"]]
    assert shops[0].platform == "pisell" and shops[0].timezone == wire.DEFAULT_TIMEZONE
    assert any(s.platform == "shopify" for s in shops)


async def test_unknown_api_path_answers_an_error_envelope(api: Any) -> None:
    resp = await api.get(wire.API_PREFIX + "/nope", headers=signed())
    assert resp.status == 404
    assert (await resp.json())["status"] is False


# -- paging ---------------------------------------------------------------------------------


async def test_cursor_paging_yields_every_item_once_despite_inserts(aiohttp_client: Any) -> None:
    emulator = make(250)
    api = await aiohttp_client(emulator.build_app())
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"size": "100", **({"cursor": cursor} if cursor else {})}
        data = (await get(api, P["stock_items"], **params))["data"]
        seen += [row["sku"] for row in data["list"]]
        pages += 1
        if pages == 1:  # a product created mid-read lands after the cursor, not twice
            resp = await api.post("/_emulator/products", json={"sku": "NEW-1", "available": 1})
            assert resp.status == 201
        cursor = data["next_cursor"]
        if not cursor:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 251
    assert data["count"] == 251


async def test_skip_paging_is_one_based_and_size_capped_at_100(aiohttp_client: Any) -> None:
    api = await aiohttp_client(make(120).build_app())
    first = (await get(api, P["stock_items"], skip="1", size="500"))["data"]
    second = (await get(api, P["stock_items"], skip="2", size="100"))["data"]
    assert first["size"] == 100 and len(first["list"]) == 100
    assert [r["sku"] for r in second["list"]] == [f"SKU-{n:05d}" for n in range(101, 121)]


async def test_levels_refuse_more_than_50_skus(api: Any) -> None:
    skus = ",".join(f"X{n}" for n in range(51))
    resp = await api.get(P["levels"], params={"sku": skus}, headers=signed())
    assert resp.status == 400


# -- writes ---------------------------------------------------------------------------------


async def test_set_applies_and_records_a_movement_and_the_write_log(
    api: Any, emulator: PisellEmulator
) -> None:
    status, body = await post(api, P["levels_set"], set_body(("SKU-00001", 40, 100)), "k1")
    assert status == 200
    (result,) = wire.parse_write_response(body["data"])
    assert result.ok and result.available == 40 and result.version == 2
    assert (await inventory(api))["SKU-00001"] == 40
    moves = (await get(api, P["movements"]))["data"]["list"]
    assert moves[-1] | {"created_at": ""} == {
        "id": moves[-1]["id"], "direction": "out", "type": "stocktake", "sku": "SKU-00001",
        "warehouse_id": "1", "quantity": 60, "balance_after": 40, "source": "api",
        "created_at": "",
    }  # fmt: skip
    assert [(w.key, w.applied) for w in emulator.store.write_log] == [("k1", True)]


async def test_cas_conflict_reports_current_count_and_changes_nothing(
    api: Any, emulator: PisellEmulator
) -> None:
    order = {"line_items": [{"sku": "SKU-00002", "quantity": 3}]}
    assert (await api.post("/_emulator/orders", json=order)).status == 201
    status, body = await post(api, P["levels_set"], set_body(("SKU-00002", 50, 100)), "k2")
    (result,) = wire.parse_write_response(body["data"])
    assert status == 200
    assert not result.ok and result.error_code == wire.STOCK_CONFLICT and result.available == 97
    assert (await inventory(api))["SKU-00002"] == 97
    assert not any(w.applied for w in emulator.store.write_log)


async def test_replay_of_a_key_applies_once_and_returns_the_first_answer(
    api: Any, emulator: PisellEmulator
) -> None:
    body = set_body(("SKU-00003", 10, 100))
    first = await post(api, P["levels_set"], body, "same-key")
    second = await post(api, P["levels_set"], body, "same-key")
    assert first == second
    assert wire.parse_write_response(second[1]["data"])[0].ok  # not a conflict with itself
    assert sum(w.applied for w in emulator.store.write_log) == 1


async def test_same_key_with_another_body_is_refused_with_409(api: Any) -> None:
    await post(api, P["levels_set"], set_body(("SKU-00003", 10, 100)), "reused")
    status, body = await post(api, P["levels_set"], set_body(("SKU-00003", 11, 10)), "reused")
    assert status == 409 and body["error_code"] == wire.KEY_REUSED
    assert (await inventory(api))["SKU-00003"] == 10


async def test_writes_need_a_key_and_at_most_50_items(api: Any) -> None:
    resp = await api.post(P["levels_set"], json=set_body(("SKU-00001", 1, None)), headers=signed())
    assert resp.status == 400 and (await resp.json())["error_code"] == wire.KEY_REQUIRED
    many = set_body(*[("SKU-00001", 1, None)] * 51)
    assert (await post(api, P["levels_set"], many, "big"))[0] == 400


async def test_write_dropped_after_apply_is_applied_and_replayable(
    api: Any, emulator: PisellEmulator
) -> None:
    emulator.faults.timeout_after_apply = 1
    body = set_body(("SKU-00004", 7, 100))
    with pytest.raises(Exception):  # noqa: B017 - any client-side disconnect error
        await api.post(P["levels_set"], json=body, headers=signed(key="drop"))
    assert (await inventory(api))["SKU-00004"] == 7
    status, answer = await post(api, P["levels_set"], body, "drop")
    assert status == 200 and wire.parse_write_response(answer["data"])[0].available == 7
    assert sum(w.applied for w in emulator.store.write_log) == 1


async def test_adjust_returns_the_new_count_and_refuses_going_negative(api: Any) -> None:
    rows = [wire.AdjustItem("SKU-00005", "1", -30, "shipment"),
            wire.AdjustItem("SKU-00001", "1", -500, "other")]  # fmt: skip
    status, body = await post(api, P["levels_adjust"], wire.write_request(rows), "adj")
    ok, refused = wire.parse_write_response(body["data"])
    assert status == 200 and ok.ok and ok.available == 70
    assert not refused.ok and refused.error_code == wire.INSUFFICIENT_STOCK


async def test_a_sale_locks_stock_and_bumps_the_version(api: Any) -> None:
    await api.post("/_emulator/orders", json={"line_items": [{"sku": "SKU-00001", "quantity": 4}]})
    rows = (await get(api, P["levels"], warehouse_id="1", sku="SKU-00001"))["data"]["list"]
    level = wire.Level.from_wire(rows[0])
    assert (level.on_hand, level.locked, level.available, level.version) == (100, 4, 96, 2)


# -- combos ---------------------------------------------------------------------------------


async def make_combo(api: Any) -> None:
    await api.post("/_emulator/inventory", json={"sku": "SKU-00002", "available": 9})
    combo = {"sku": "CASE-1", "components": [{"sku": "SKU-00001", "quantity": 4},
                                              {"sku": "SKU-00002", "quantity": 2}]}  # fmt: skip
    resp = await api.post("/_emulator/combos", json=combo)
    assert resp.status == 201, await resp.text()


async def test_combo_available_is_the_min_over_components(api: Any) -> None:
    await make_combo(api)
    assert (await inventory(api))["CASE-1"] == min(100 // 4, 9 // 2)
    items = (await get(api, P["stock_items"], sku="CASE-1"))["data"]["list"]
    assert wire.StockItem.from_wire(items[0]).is_combo


async def test_selling_a_combo_takes_its_components(api: Any) -> None:
    await make_combo(api)
    order = {"line_items": [{"sku": "CASE-1", "quantity": 2}]}
    assert (await api.post("/_emulator/orders", json=order)).status == 201
    inv = await inventory(api)
    assert (inv["SKU-00001"], inv["SKU-00002"], inv["CASE-1"]) == (92, 5, 2)
    too_many = {"line_items": [{"sku": "CASE-1", "quantity": 3}]}
    assert (await api.post("/_emulator/orders", json=too_many)).status == 409
    assert await inventory(api) == inv


async def test_writes_to_a_combo_are_refused(api: Any) -> None:
    await make_combo(api)
    _, body = await post(api, P["levels_set"], set_body(("CASE-1", 1, None)), "c")
    assert wire.parse_write_response(body["data"])[0].error_code == wire.COMBO_NOT_WRITABLE
    assert (await inventory(api))["CASE-1"] == 4


# -- rate limit -----------------------------------------------------------------------------


async def test_empty_bucket_gives_429_with_retry_after(aiohttp_client: Any) -> None:
    wall = Wall()
    api = await aiohttp_client(make(rate_limit=True, wall=wall).build_app())
    for n in range(20):
        resp = await api.get(P["shops"], headers=signed(wall.t))
        assert resp.status == 200
        assert resp.headers[wire.H_RATE_REMAINING] == str(19 - n)
    resp = await api.get(P["shops"], headers=signed(wall.t))
    assert resp.status == 429 and int(resp.headers[wire.H_RETRY_AFTER]) >= 1
    assert (await resp.json())["error_code"] == wire.RATE_LIMITED
    wall.t += 0.2  # 5 per second: one request's worth
    assert (await api.get(P["shops"], headers=signed(wall.t))).status == 200


async def test_each_client_id_has_its_own_bucket(aiohttp_client: Any) -> None:
    wall = Wall()
    api = await aiohttp_client(make(rate_limit=True, wall=wall).build_app())
    for _ in range(20):
        await api.get(P["shops"], headers=signed(wall.t))
    other = wire.auth_headers(client_id="other", access_token=TOKEN, client_secret=TOKEN,
                              now=wall.t)  # fmt: skip
    assert (await api.get(P["shops"], headers=other)).status == 200


# -- webhooks -------------------------------------------------------------------------------


async def test_webhooks_are_signed_and_delivered(
    aiohttp_client: Any, aiohttp_server: Any, api: Any
) -> None:
    got: list[tuple[dict[str, str], bytes]] = []
    arrived = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        got.append((dict(request.headers), await request.read()))
        arrived.set()
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    server = await aiohttp_server(receiver)
    url = str(server.make_url("/hook"))
    status, created = await post(
        api, P["webhooks"], wire.webhook_request(url, wire.TOPICS[:3]), "unused"
    )
    assert status == 200 and created["data"]["secret"] == SECRET
    assert (await post(api, P["webhooks"], wire.webhook_request(url, wire.TOPICS), "x"))[0] == 409
    listed = (await get(api, P["webhooks"]))["data"]["list"]
    assert "secret" not in listed[0]

    order = {"line_items": [{"sku": "SKU-00001", "quantity": 1}]}
    await api.post("/_emulator/orders", json=order)
    while {h[wire.H_WEBHOOK_TOPIC] for h, _ in got} != set(wire.TOPICS[:3]):
        arrived.clear()
        await asyncio.wait_for(arrived.wait(), 5)
    for headers, body in got:
        assert wire.verify_webhook_signature(
            SECRET, headers[wire.H_WEBHOOK_TIMESTAMP], body, headers[wire.H_WEBHOOK_SIGNATURE]
        )
        assert headers[wire.H_WEBHOOK_EVENT_ID]
    level = next(json.loads(b) for h, b in got if h[wire.H_WEBHOOK_TOPIC] == wire.TOPICS[0])
    assert level == {"sku": "SKU-00001", "warehouse_id": "1"}

    hook_id = created["data"]["id"]
    resp = await api.delete(P["webhook"].format(webhook_id=hook_id), headers=signed())
    assert resp.status == 200
    assert (await get(api, P["webhooks"]))["data"]["list"] == []


# -- control routes -------------------------------------------------------------------------


async def test_short_order_is_refused_with_409_and_changes_nothing(api: Any) -> None:
    before = await inventory(api)
    order = {"line_items": [{"sku": "SKU-00001", "quantity": 2},
                            {"sku": "SKU-00002", "quantity": 101}]}  # fmt: skip
    assert (await api.post("/_emulator/orders", json=order)).status == 409
    assert await inventory(api) == before


async def test_a_product_with_a_known_sku_is_refused_with_409(api: Any) -> None:
    resp = await api.post("/_emulator/products", json={"sku": "SKU-00001", "available": 3})
    assert resp.status == 409
    resp = await api.post("/_emulator/products", json={"sku": " ", "available": 3})
    assert resp.status == 400
    assert len(await inventory(api)) == 5


async def test_a_bound_shop_order_lands_on_the_next_15_minute_pull(api: Any) -> None:
    order = {"shop_id": "2", "line_items": [{"sku": "SKU-00001", "quantity": 5}]}
    resp = await api.post("/_emulator/orders", json=order)
    assert resp.status == 202
    assert (await inventory(api))["SKU-00001"] == 100
    advanced = await (await api.post("/_emulator/clock/advance", json={"seconds": 60})).json()
    assert advanced["imported"] == 0 and (await inventory(api))["SKU-00001"] == 100
    advanced = await (await api.post("/_emulator/clock/advance", json={"seconds": 900})).json()
    assert advanced["imported"] == 1 and (await inventory(api))["SKU-00001"] == 95
    # Advancing IS time does not make wall-clock signatures stale.
    assert (await api.get(P["shops"], headers=signed())).status == 200


async def test_stock_changes_make_sync_records_and_manual_push_works(api: Any) -> None:
    await api.post("/_emulator/inventory", json={"sku": "SKU-00001", "available": 12})
    records = (await get(api, P["sync_records"]))["data"]["list"]
    assert records[-1] | {"id": 0, "created_at": ""} == {
        "id": 0, "shop_id": "2", "sku": "SKU-00001", "mode": "auto", "status": "success",
        "quantity": 12, "message": "", "created_at": "",
    }  # fmt: skip
    body = wire.sync_push_request("2", ["SKU-00002", "NOPE"])
    status, pushed = await post(api, P["sync_push"], body, "push")
    assert status == 200
    assert [r["status"] for r in pushed["data"]["list"]] == ["success", "failed"]


async def test_product_links_name_the_stock_item_per_shop(api: Any) -> None:
    links = (await get(api, P["product_links"], shop_id="2"))["data"]["list"]
    assert len(links) == 5 and {link["shop_id"] for link in links} == {"2"}
    assert all(link["sku"] == link["shop_sku"] for link in links)


async def test_faults_force_a_429_and_a_5xx(api: Any) -> None:
    resp = await api.post("/_emulator/faults", json={"fail_requests": 1, "fail_status": 429})
    assert resp.status == 200
    resp = await api.get(P["shops"], headers=signed())
    assert resp.status == 429 and resp.headers[wire.H_RETRY_AFTER] == "1"
    await api.post("/_emulator/faults", json={"fail_requests": 1, "fail_status": 503})
    assert (await api.get(P["shops"], headers=signed())).status == 503
    assert (await api.get(P["shops"], headers=signed())).status == 200
    resp = await api.post("/_emulator/faults", json={"latency": -1})
    assert resp.status == 400


async def test_a_bad_fault_is_refused_and_sets_none_of_its_request(api: Any) -> None:
    before = await (await api.post("/_emulator/faults", json={})).json()
    for bad in (
        {"fail_requests": 2, "api_delay": -1},  # the good field first: it must not stick
        {"fail_requests": 2, "api_delay": float("nan")},  # sent as JSON's NaN
        {"fail_requests": 2, "webhook_delay": float("inf")},
        {"fail_requests": 2, "rate_limit": "no"},
        {"rate_limit": False, "nonsense": 1},
    ):
        resp = await api.post("/_emulator/faults", json=bad)
        assert resp.status == 400, bad
        assert "error" in await resp.json()
        assert await (await api.post("/_emulator/faults", json={})).json() == before, bad
    assert (await api.get(P["shops"], headers=signed())).status == 200  # no fault took


# -- several warehouses (the kit's locations) -----------------------------------------------


@pytest.fixture
async def multi(aiohttp_client: Any) -> tuple[PisellEmulator, Any]:
    """An emulator with three warehouses; warehouse 2 stocks SKU-00002 (7), 3 stocks nothing."""
    emulator = make(locations=3)
    api = await aiohttp_client(emulator.build_app())
    resp = await api.post("/_emulator/inventory", json={"sku": "SKU-00002", "available": 7,
                                                        "location": 2})  # fmt: skip
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"sku": "SKU-00002", "available": 7, "before": None,
                                 "location": 2, "warehouse_id": "2"}  # fmt: skip
    return emulator, api


def levels_of(data: dict[str, Any]) -> dict[str, wire.Level]:
    return {row["sku"]: wire.Level.from_wire(row) for row in data["data"]["list"]}


async def test_locations_1_to_n_are_warehouses_1_to_n(multi: tuple[PisellEmulator, Any]) -> None:
    _, api = multi
    listed = [
        wire.Warehouse.from_wire(r) for r in (await get(api, P["warehouses"]))["data"]["list"]
    ]
    assert [w.id for w in listed] == ["1", "2", "3"] and listed[0].name == "Main warehouse"
    zones = (await get(api, P["zones"], warehouse_id="2"))["data"]["list"]
    assert [(z["id"], z["warehouse_id"], z["type"]) for z in zones] == [
        ("3", "2", "picking"), ("4", "2", "storage")
    ]  # fmt: skip
    bins = (await get(api, P["bins"], warehouse_id="3"))["data"]["list"]
    assert [b["zone_id"] for b in bins] == ["5", "6"]
    resp = await api.get(P["zones"], params={"warehouse_id": "9"}, headers=signed())
    assert resp.status == 404 and (await resp.json())["error_code"] == wire.WAREHOUSE_NOT_FOUND


async def test_a_warehouse_lists_levels_only_of_what_it_stocks(
    multi: tuple[PisellEmulator, Any],
) -> None:
    _, api = multi
    in_2 = levels_of(await get(api, P["levels"], warehouse_id="2"))
    assert list(in_2) == ["SKU-00002"]
    level = in_2["SKU-00002"]
    assert (level.warehouse_id, level.on_hand, level.locked, level.available) == ("2", 7, 0, 7)
    assert levels_of(await get(api, P["levels"], warehouse_id="3")) == {}
    asked = await get(api, P["levels"], warehouse_id="2", sku="SKU-00001,SKU-00002")
    assert list(levels_of(asked)) == ["SKU-00002"]  # SKU-00001: IS has it, not warehouse 2
    assert levels_of(await get(api, P["levels"], sku="SKU-00002"))["SKU-00002"].available == 100
    resp = await api.get(P["levels"], params={"warehouse_id": "4"}, headers=signed())
    assert resp.status == 404 and (await resp.json())["error_code"] == wire.WAREHOUSE_NOT_FOUND
    # the control API reads a warehouse by location number or by id, and only its stock
    assert await (await api.get("/_emulator/inventory?location=2")).json() == {"SKU-00002": 7}
    assert await (await api.get("/_emulator/inventory?warehouse_id=2")).json() == {"SKU-00002": 7}
    assert await (await api.get("/_emulator/inventory?warehouse_id=3")).json() == {}
    assert (await inventory(api))["SKU-00002"] == 100
    assert (await api.get("/_emulator/inventory?warehouse_id=9")).status == 404
    assert (await api.get("/_emulator/inventory?location=4")).status == 400


async def test_control_routes_take_a_location_or_a_warehouse_id(
    multi: tuple[PisellEmulator, Any],
) -> None:
    _, api = multi
    edit = {"sku": "SKU-00003", "available": 4, "warehouse_id": "3"}
    assert (await api.post("/_emulator/inventory", json=edit)).status == 200
    assert await (await api.get("/_emulator/inventory?location=3")).json() == {"SKU-00003": 4}
    both = {"sku": "SKU-00003", "available": 5, "warehouse_id": "3", "location": 3}
    assert (await api.post("/_emulator/inventory", json=both)).status == 200
    for bad, status in (({"warehouse_id": "2", "location": 3}, 400), ({"location": 4}, 400),
                        ({"location": "2"}, 400), ({"warehouse_id": "9"}, 404)):  # fmt: skip
        body = {"sku": "SKU-00003", "available": 1, **bad}
        resp = await api.post("/_emulator/inventory", json=body)
        assert resp.status == status, bad
        assert "error" in await resp.json()
    assert await (await api.get("/_emulator/inventory?location=3")).json() == {"SKU-00003": 5}
    product = {"sku": "NEW-1", "available": 1, "location": 2}
    assert (await api.post("/_emulator/products", json=product)).status == 400


async def test_set_and_adjust_act_in_the_given_warehouse(
    multi: tuple[PisellEmulator, Any],
) -> None:
    emulator, api = multi
    rows = [
        wire.SetItem("SKU-00002", "2", 5, 7),  # compare-and-set in warehouse 2
        wire.SetItem("SKU-00002", "2", 9, 7),  # the same expectation, now stale
        wire.SetItem("SKU-00001", "2", 1, None),  # IS has it, warehouse 2 does not
        wire.SetItem("SKU-00002", "9", 1, None),  # no such warehouse
    ]
    status, body = await post(api, P["levels_set"], wire.write_request(rows), "m1")
    ok, conflict, not_stocked, nowhere = wire.parse_write_response(body["data"])
    assert status == 200
    assert (ok.ok, ok.warehouse_id, ok.available, ok.version) == (True, "2", 5, 3)
    assert (conflict.error_code, conflict.available, conflict.version) == (
        wire.STOCK_CONFLICT, 5, 3
    )  # fmt: skip
    assert (not_stocked.error_code, not_stocked.available) == (wire.NOT_STOCKED, None)
    assert nowhere.error_code == wire.WAREHOUSE_NOT_FOUND
    rows_adjust = [wire.AdjustItem("SKU-00002", "2", -2, "shipment"),
                   wire.AdjustItem("SKU-00002", "2", -9, "other"),
                   wire.AdjustItem("SKU-00004", "3", 1, "purchase")]  # fmt: skip
    _, body = await post(api, P["levels_adjust"], wire.write_request(rows_adjust), "m2")
    adjusted, short, absent = wire.parse_write_response(body["data"])
    assert (adjusted.ok, adjusted.available) == (True, 3)
    assert short.error_code == wire.INSUFFICIENT_STOCK
    assert absent.error_code == wire.NOT_STOCKED
    assert await (await api.get("/_emulator/inventory?location=2")).json() == {"SKU-00002": 3}
    assert (await inventory(api))["SKU-00002"] == 100  # warehouse 1 untouched
    applied = [(w.sku, w.location, w.before, w.after) for w in emulator.store.write_log
               if w.applied]  # fmt: skip
    assert applied == [("SKU-00002", 2, 7, 5), ("SKU-00002", 2, 5, 3)]
    moves = [m for m in (await get(api, P["movements"]))["data"]["list"] if m["source"] == "api"]
    assert [(m["warehouse_id"], m["type"], m["balance_after"]) for m in moves] == [
        ("2", "stocktake", 5), ("2", "shipment", 3)
    ]  # fmt: skip


def captured(emulator: PisellEmulator) -> list[tuple[str, dict[str, Any]]]:
    """What the emulator sends from now on, as (topic, payload)."""
    sent: list[tuple[str, dict[str, Any]]] = []
    emulator.inventory.emit = lambda topic, payload: sent.append((topic, payload))
    return sent


async def test_changes_in_another_warehouse_send_webhooks_naming_it(
    multi: tuple[PisellEmulator, Any],
) -> None:
    emulator, api = multi
    sent = captured(emulator)
    edit = {"sku": "SKU-00003", "available": 6, "location": 3}
    assert (await api.post("/_emulator/inventory", json=edit)).status == 200
    order = {"line_items": [{"sku": "SKU-00002", "quantity": 2}], "warehouse_id": "2"}
    resp = await api.post("/_emulator/orders", json=order)
    assert resp.status == 201, await resp.text()
    answer = (await resp.json())["order"]
    assert (answer["warehouse_id"], answer["location"]) == ("2", 2)
    levels = [p for t, p in sent if t == wire.TOPIC_INVENTORY_LEVEL_UPDATED]
    assert levels == [wire.level_event("SKU-00003", "3"), wire.level_event("SKU-00002", "2")]
    (imported,) = [p for t, p in sent if t == wire.TOPIC_ORDER_IMPORTED]
    assert imported == wire.order_event(answer["id"], "1", "2", [("SKU-00002", 2)])
    moves = [p for t, p in sent if t == wire.TOPIC_STOCK_MOVEMENT_CREATED]
    assert [(m["warehouse_id"], m["type"], m["balance_after"]) for m in moves] == [
        ("3", "stocktake", 6), ("2", "shipment", 5)
    ]  # fmt: skip
    level = levels_of(await get(api, P["levels"], warehouse_id="2"))["SKU-00002"]
    assert (level.on_hand, level.locked, level.available) == (7, 2, 5)
    # the sale is in warehouse 2 only; bound shops are pushed the total over warehouses
    assert (await inventory(api))["SKU-00002"] == 100
    record = (await get(api, P["sync_records"]))["data"]["list"][-1]
    assert (record["sku"], record["quantity"]) == ("SKU-00002", 105)


async def test_a_cancelled_order_in_a_warehouse_restocks_it_there(
    multi: tuple[PisellEmulator, Any],
) -> None:
    _, api = multi
    order = {"location": 2, "line_items": [{"sku": "SKU-00002", "quantity": 3}]}
    order_id = (await (await api.post("/_emulator/orders", json=order)).json())["order"]["id"]
    assert (await api.post(f"/_emulator/orders/{order_id}/cancel")).status == 200
    level = levels_of(await get(api, P["levels"], warehouse_id="2"))["SKU-00002"]
    assert (level.on_hand, level.locked, level.available) == (7, 0, 7)
    assert (await inventory(api))["SKU-00002"] == 100


async def test_an_order_in_a_warehouse_that_lacks_a_line_is_refused(
    multi: tuple[PisellEmulator, Any],
) -> None:
    _, api = multi
    before = await (await api.get("/_emulator/inventory?location=2")).json()
    order = {"location": 2, "line_items": [{"sku": "SKU-00002", "quantity": 1},
                                           {"sku": "SKU-00001", "quantity": 1}]}  # fmt: skip
    resp = await api.post("/_emulator/orders", json=order)
    assert resp.status == 409 and "not stocked in warehouse 2" in (await resp.json())["error"]
    assert await (await api.get("/_emulator/inventory?location=2")).json() == before


async def test_a_bound_shop_order_in_a_warehouse_is_pulled_there(
    multi: tuple[PisellEmulator, Any],
) -> None:
    emulator, api = multi
    order = {"shop_id": "2", "location": 2, "line_items": [{"sku": "SKU-00002", "quantity": 3}]}
    resp = await api.post("/_emulator/orders", json=order)
    assert resp.status == 202 and (await resp.json())["order"]["warehouse_id"] == "2"
    sent = captured(emulator)
    await api.post("/_emulator/clock/advance", json={"seconds": 900})
    assert await (await api.get("/_emulator/inventory?location=2")).json() == {"SKU-00002": 4}
    (imported,) = [p for t, p in sent if t == wire.TOPIC_ORDER_IMPORTED]
    assert (imported["shop_id"], imported["warehouse_id"]) == ("2", "2")


async def test_a_combo_sold_in_a_warehouse_takes_its_components_there(
    multi: tuple[PisellEmulator, Any],
) -> None:
    emulator, api = multi
    combo = {"sku": "PAIR", "components": [{"sku": "SKU-00001", "quantity": 2},
                                           {"sku": "SKU-00002", "quantity": 1}]}  # fmt: skip
    assert (await api.post("/_emulator/combos", json=combo)).status == 201
    # warehouse 2 lacks SKU-00001: no PAIR there, and none can be sold there
    assert "PAIR" not in levels_of(await get(api, P["levels"], warehouse_id="2"))
    sale = {"location": 2, "line_items": [{"sku": "PAIR", "quantity": 1}]}
    assert (await api.post("/_emulator/orders", json=sale)).status == 409
    sent = captured(emulator)
    edit = {"sku": "SKU-00001", "available": 9, "location": 2}
    assert (await api.post("/_emulator/inventory", json=edit)).status == 200
    assert (wire.TOPIC_INVENTORY_LEVEL_UPDATED, wire.level_event("PAIR", "2")) in sent
    pair = levels_of(await get(api, P["levels"], warehouse_id="2"))["PAIR"]
    assert (pair.available, pair.on_hand, pair.locked) == (4, 4, 0)  # min(9 // 2, 7 // 1)
    three = {**sale, "line_items": [{"sku": "PAIR", "quantity": 3}]}
    assert (await api.post("/_emulator/orders", json=three)).status == 201
    in_2 = await (await api.get("/_emulator/inventory?location=2")).json()
    assert in_2 == {"SKU-00001": 3, "SKU-00002": 4, "PAIR": 1}
    in_1 = await inventory(api)
    assert (in_1["SKU-00001"], in_1["SKU-00002"], in_1["PAIR"]) == (100, 100, 50)
    _, body = await post(api, P["levels_set"], set_body(("PAIR", 1, None)), "c2")
    assert wire.parse_write_response(body["data"])[0].error_code == wire.COMBO_NOT_WRITABLE
