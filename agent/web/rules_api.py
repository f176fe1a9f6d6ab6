"""/api/rules: this shop's stock rules, the group's rule, and what each shop would publish."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent import ledger
from agent.config import save_rules
from agent.rules import RuleError, priority_from_wire, rules_from_wire
from agent.web import keys
from agent.web.api import bad_request, json_error, read_json_object

__all__ = ["add_routes"]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/rules", get_rules)
    app.router.add_post("/rules", post_rules)
    app.router.add_post("/rules/priority", post_priority)
    app.router.add_get("/rules/test", get_test)


def _view(request: web.Request) -> dict[str, Any]:
    book = request.config_dict[keys.AGENT].rules
    return {
        "shop": book.shop,
        "rules": book.shop_rules.to_wire(),
        "priority": None if book.priority is None else book.priority.to_wire(),
        "shops": {shop: rules.to_wire() for shop, rules in sorted(book.known_rules().items())},
    }


async def get_rules(request: web.Request) -> web.Response:
    """This shop's rules, every shop's as this agent knows them, and the group's rule."""
    return web.json_response(_view(request))


async def post_rules(request: web.Request) -> web.Response:
    """Replace this shop's rules: `{"rules": {"buffer": 2, …, "skus": {"CASE-*": {…}}}}`.
    Stored in the config's [rules], applied at once (SKUs whose count changes are written),
    and told to every member."""
    body = await read_json_object(request)
    if not isinstance(body.get("rules"), dict):
        return json_error(400, "bad_request", 'send {"rules": {...}} ({} for none)')
    book = request.config_dict[keys.AGENT].rules
    try:
        rules = rules_from_wire(body["rules"])
        await book.check(rules)
    except RuleError as exc:
        raise bad_request("bad_rules", str(exc)) from None
    save_rules(request.config_dict[keys.SETTINGS], rules)
    told = (await book.set_shop_rules(rules))["told"]
    return web.json_response({**_view(request), "told": told})


async def post_priority(request: web.Request) -> web.Response:
    """Set the group's rule: `{"priority": {"shop": DOMAIN, "at_most": N}}`, or null for none."""
    body = await read_json_object(request)
    if "priority" not in body:
        return json_error(400, "bad_request", 'send {"priority": {"shop": …, "at_most": N}}')
    book = request.config_dict[keys.AGENT].rules
    try:
        told = (await book.set_priority(priority_from_wire(body["priority"])))["told"]
    except RuleError as exc:
        raise bad_request("bad_rules", str(exc)) from None
    return web.json_response({**_view(request), "told": told})


async def get_test(request: web.Request) -> web.Response:
    """`?sku=X[&pool=N]`: what each member would publish of X at pool N (default: X's pool
    now), and which rule decided."""
    sku = request.query.get("sku", "")
    if not sku or len(sku) > 512:
        raise bad_request("bad_parameter", "sku is required")
    agent = request.config_dict[keys.AGENT]
    raw = request.query.get("pool")
    if raw is None or raw == "":
        async with agent.db.sessions() as session:
            held = await ledger.get_pool(session, sku)
        if held is None or held.value is None:
            raise bad_request("unknown_sku", f"{sku} has no pool here: give one with pool=N")
        pool = held.value
    else:
        try:
            pool = int(raw)
        except ValueError:
            raise bad_request("bad_parameter", "pool must be an integer") from None
        if not -(2**31) <= pool < 2**31:
            raise bad_request("bad_parameter", "pool is out of range")
    shops = await agent.rules.explain(sku, pool)
    return web.json_response({"sku": sku, "pool": pool, "shops": shops})
