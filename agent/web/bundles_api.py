"""/api/bundles: the group's bundles (a SKU sold as a set of others), set from any member."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent.bundles import BundleError, components_from_wire
from agent.group_rules import RuleBook
from agent.rules import RuleError
from agent.web import keys
from agent.web.api import bad_request, json_error, read_json_object

__all__ = ["add_routes", "bundles_view"]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/bundles", get_bundles)
    app.router.add_post("/bundles", post_bundle)
    app.router.add_delete("/bundles/{sku}", delete_bundle)


def bundles_view(book: RuleBook) -> list[dict[str, Any]]:
    """Every bundle held: its components, who set it and when, and whether it is used."""
    out = []
    for record, bundle in book.bundle_definitions():
        refused = book.bundles.refused.get(bundle.sku)
        out.append(
            {
                **bundle.to_wire(),
                "set_by": record.by,
                "changed_at": record.changed_at,
                "in_use": refused is None,
                "why_not": refused,
            }
        )
    return out


def _book(request: web.Request) -> RuleBook:
    book: RuleBook = request.config_dict[keys.AGENT].rules
    return book


async def get_bundles(request: web.Request) -> web.Response:
    """The group's bundles."""
    return web.json_response({"bundles": bundles_view(_book(request))})


async def post_bundle(request: web.Request) -> web.Response:
    """Define or redefine a bundle for every member: `{"sku": "PACK-6", "components":
    [{"sku": "SAUSAGE", "quantity": 6}]}`. Each component must be a SKU of the group, not a
    bundle."""
    body = await read_json_object(request)
    book = _book(request)
    try:
        bundle = components_from_wire(body.get("sku"), body.get("components"))
        told = (await book.set_bundle(bundle))["told"]
    except (BundleError, RuleError) as exc:
        raise bad_request("bad_bundle", str(exc)) from None
    return web.json_response({"bundles": bundles_view(book), "told": told})


async def delete_bundle(request: web.Request) -> web.Response:
    """Stop selling `sku` as a bundle, in every member: its items then sync as a SKU of their
    own, from the count its components allowed (`Agent.remove_bundle`)."""
    sku = request.match_info["sku"]
    book = _book(request)
    try:
        told = (await request.config_dict[keys.AGENT].remove_bundle(sku))["told"]
    except RuleError as exc:
        return json_error(404, "unknown_bundle", str(exc))
    return web.json_response({"bundles": bundles_view(book), "told": told})
