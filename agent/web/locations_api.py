"""/api/locations: this shop's locations, each linked to the warehouses it sells from."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import Connection

from agent import ledger
from agent.config import PRIMARY_KEY, save_locations
from agent.sql import Tx
from agent.warehouses import OWN, Listings, LocationMap, WarehouseError, parse_listing
from agent.web import keys
from agent.web.api import bad_request, json_error, read_json_object

__all__ = ["add_routes", "locations_view"]

MAX_PREVIEW = 1000  # listings a dry run shows (the count says how many there are)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/locations", get_locations)
    app.router.add_post("/locations", post_location)


def _name(location: str) -> str:
    return location or PRIMARY_KEY


def locations_view(request: web.Request) -> dict[str, Any]:
    """The links as configured and as the running agent syncs them."""
    settings = request.config_dict[keys.SETTINGS]
    agent = request.config_dict[keys.AGENT]
    configured = settings.location_map()
    running: LocationMap = agent.reconciler.locations
    return {
        "locations": [
            {"location": _name(location), "warehouses": list(warehouses)}
            for location, warehouses in configured.links.items()
        ],
        "warehouses": sorted({w for ws in configured.links.values() for w in ws}),
        "multi_location": type(agent.channel).multi_location,
        # a location added or dropped is listed by the channel from its next start
        "restart_required": set(configured.others()) != set(running.others()),
    }


async def get_locations(request: web.Request) -> web.Response:
    """This shop's locations and the warehouses each sells from, in order."""
    return web.json_response(locations_view(request))


async def post_location(request: web.Request) -> web.Response:
    """Link a location to warehouses: `{"location": "2", "warehouses": ["north", "main"]}`
    ("primary" is the channel's own location; `[]` unlinks one, so it is no longer synced).
    With `"dry_run": true` nothing changes: the answer says what each listing at that location
    would show. Else the config's [locations] is rewritten and, for a location the agent
    already syncs, applied at once (listings whose count changes are written); a location
    added or dropped is synced from the agent's next start (`restart_required`)."""
    body = await read_json_object(request)
    location, warehouses = body.get("location"), body.get("warehouses")
    dry_run = body.get("dry_run", False)
    if not isinstance(location, str) or not location.strip():
        return json_error(400, "bad_request", 'name the location: {"location": "2", …}')
    if not isinstance(warehouses, list) or not all(isinstance(w, str) for w in warehouses):
        return json_error(400, "bad_request", 'say its warehouses: {"warehouses": ["main"]}')
    if not isinstance(dry_run, bool):
        return json_error(400, "bad_request", "dry_run must be true or false")
    location = OWN if location.strip() == PRIMARY_KEY else location.strip()
    settings = request.config_dict[keys.SETTINGS]
    agent = request.config_dict[keys.AGENT]
    links = {k: list(v) for k, v in settings.location_map().links.items()}
    if warehouses:
        links[location] = warehouses
    elif location == OWN:
        return json_error(400, "bad_locations", "the primary location must sell from a warehouse")
    elif links.pop(location, None) is None:
        return json_error(404, "unknown_location", f"location {location} is not linked")
    try:
        new = LocationMap(OWN, links)
    except WarehouseError as exc:
        raise bad_request("bad_locations", str(exc)) from None
    if new.others() and not type(agent.channel).multi_location:
        channel = type(agent.channel).name
        raise bad_request(
            "bad_locations", f"the {channel} channel syncs only its own location (primary)"
        )
    preview = await agent.db.read(lambda conn: _preview(conn, agent, new, location))
    answer: dict[str, Any] = {"dry_run": dry_run, "preview": preview}
    if dry_run:
        return web.json_response({**locations_view(request), **answer})
    save_locations(settings, links)
    applied = set(new.others()) == set(agent.reconciler.locations.others())
    if applied:
        agent.reconciler.set_locations(new)
    return web.json_response({**locations_view(request), **answer, "applied": applied})


def _preview(conn: Connection, agent: Any, new: LocationMap, location: str) -> dict[str, Any]:
    """What each listing at `location` shows now and would show under `new`."""
    keyed = Tx(conn).rows(
        "SELECT sku, published FROM item WHERE excluded IS NULL AND sku IS NOT NULL ORDER BY sku"
    )
    here = [(k, p) for k, p in keyed if parse_listing(k)[1] == location]
    listings = Listings(agent.rules.bundles, new)
    pools = ledger.pools(conn, listings.keys(k for k, _ in here[:MAX_PREVIEW]))

    def count_of(key: str) -> int | None:
        pool = pools.get(key)
        return None if pool is None else pool.value

    rows = []
    for key, shown in here[:MAX_PREVIEW]:
        made = listings.target(key, count_of, agent.reconciler.writes.decide)
        after = None if made is None else made[0]
        rows.append({"sku": parse_listing(key)[0], "shows": shown, "would_show": after})
    changed = sum(1 for r in rows if r["would_show"] is not None and r["would_show"] != r["shows"])
    return {"listings": len(here), "changes": changed, "rows": rows}
