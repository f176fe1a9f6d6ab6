"""The admin JSON API under /api (bearer admin token); the CLI and admin pages both use it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy import func
from sqlmodel import col, select

from agent import __version__, activity, alerts, explain, jsonsafe, ledger, synclog
from agent.config import PRIMARY_KEY
from agent.duplicates import duplicates_report
from agent.importer import ImportError_
from agent.models import EventRow, ItemRow, PeerRow, PendingWrite, PoolRow
from agent.replication import behind
from agent.roster import PeerError
from agent.warehouses import DEFAULT, Listings, parse_key, parse_listing
from agent.web import keys, openapi
from agent.web.auth import REVOCATIONS, bearer_ok
from agent.web.bodies import read_body
from agent.wire import vector_from_wire

__all__ = ["bad_request", "create_api_app", "json_error", "read_json_object"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, error: str, message: str) -> web.Response:
    """A 4xx/5xx answer with a JSON body saying what is wrong."""
    return web.json_response({"error": error, "message": message}, status=status)


#: Bytes an admin API body may have: a resync of tens of thousands of SKUs fits.
BODY_LIMIT = 1024**2


@web.middleware
async def _admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The admin token, checked on the headers before any handler reads a byte of the body."""
    if not bearer_ok(request, request.config_dict[keys.SETTINGS].admin_token):
        return json_error(401, "unauthorized", "send the admin token as 'Authorization: Bearer …'")
    return await handler(request)


def create_api_app(parent: web.Application) -> web.Application:
    """The /api sub-app."""
    app = web.Application(middlewares=[_admin_auth])
    app.router.add_get("/status", status)
    app.router.add_get("/log", get_log)
    app.router.add_get("/pools", get_pools)
    app.router.add_get("/explain", get_explain)
    app.router.add_get("/activity", get_activity)
    app.router.add_get("/alerts", get_alerts)
    app.router.add_get("/notify", get_notify)
    app.router.add_post("/notify/test", post_notify_test)
    app.router.add_post("/reconcile", post_reconcile)
    app.router.add_post("/join", post_join)
    app.router.add_get("/requests", get_requests)
    app.router.add_post("/requests/{domain}/accept", post_accept)
    app.router.add_post("/requests/{domain}/reject", post_reject)
    app.router.add_get("/peers", get_peers)
    app.router.add_post("/leave", post_leave)
    app.router.add_post("/pause", post_pause)
    app.router.add_post("/resume", post_resume)
    app.router.add_get("/duplicates", get_duplicates)
    app.router.add_get("/import", get_import)
    app.router.add_post("/import", post_import)
    app.router.add_get("/maintenance", get_maintenance)
    app.router.add_post("/maintenance", post_maintenance)
    app.router.add_post("/resync", post_resync)
    app.router.add_post("/sessions/revoke", post_revoke_sessions)
    # they answer with this module's helpers
    from agent.web import bundles_api, locations_api, rules_api

    rules_api.add_routes(app)
    bundles_api.add_routes(app)
    locations_api.add_routes(app)
    app.router.add_get("/openapi.json", openapi.serve)
    return app


MAX_POOLS_PAGE = 1000
MAX_LOG_PAGE = 1000  # `shopsync log --follow` asks for this many at a time


def bad_request(error: str, message: str) -> web.HTTPBadRequest:
    """An HTTPBadRequest to raise, with a JSON body."""
    body = json.dumps({"error": error, "message": message})
    return web.HTTPBadRequest(text=body, content_type="application/json")


def _int_param(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request("bad_parameter", f"{name} must be an integer") from None
    if not -(2**63) <= value < 2**63:  # beyond a database integer: the query would fail (500)
        raise bad_request("bad_parameter", f"{name} is out of range")
    return value


def _bool_param(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    if raw not in openapi.FLAG_WORDS:
        raise bad_request("bad_parameter", f"{name} must be 1 or 0")
    return raw in ("1", "true", "yes")


def _float_param(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise bad_request("bad_parameter", f"{name} must be a number") from None


async def status(request: web.Request) -> web.Response:
    """This agent, its shop and its work queues."""
    cfg = request.config_dict
    settings, identity, reconciler = (
        cfg[keys.SETTINGS],
        cfg[keys.IDENTITY],
        cfg[keys.AGENT].reconciler,
    )
    async with cfg[keys.DB].sessions() as session:
        # one scan of the item table for both (count(column) counts the non-null values)
        counted = await session.exec(select(func.count(), func.count(col(ItemRow.excluded))))
        items, excluded = counted.one()
        synced = items - excluded
        pools = await session.scalar(select(func.count()).select_from(PoolRow))
        events = await session.scalar(select(func.count()).select_from(EventRow))
        pending_writes = await session.scalar(select(func.count()).select_from(PendingWrite))
        vector = await ledger.load_vector(session)
    from agent.signing import fingerprint  # local: keeps web start-up light

    state = reconciler.status()
    body: dict[str, Any] = {
        "domain": identity.domain,
        "channel": settings.channel,
        "public_url": settings.public_url,
        "version": __version__,
        "epoch": identity.epoch,
        "fingerprint": fingerprint(identity.public_key),
        "uptime": round(cfg[keys.CLOCK].now() - cfg[keys.STARTED], 3),
        "items": synced,
        "excluded": excluded,
        "skus": pools,
        "events": events,
        "compacted": cfg[keys.AGENT].compactor.dropped,
        "vector": [{"origin": o, "epoch": e, "seq": s} for (o, e), s in sorted(vector.items())],
        "pending": {
            "reads": state.pending_reads,
            "skus": state.pending_skus,
            "busy": state.busy,
            "writes": pending_writes,
        },
        "idle": state.idle and not pending_writes,
        "ready": state.ready,
        "last_reconcile": state.last_reconcile,
        "stats": dict(state.stats),
        "paused": cfg[keys.AGENT].mode.paused,
        "sync_mode": cfg[keys.AGENT].mode.name,
        "import": {
            k: v
            for k, v in (await cfg[keys.AGENT].importer.progress(with_report=False)).items()
            if k != "dry_run_report"
        },
        "maintenance": (await cfg[keys.AGENT].importer.maintenance()).get("on", False),
        "alerts": [a.to_wire() for a in await cfg[keys.AGENT].alerts.open()],
    }
    return web.json_response(body)


async def get_alerts(request: web.Request) -> web.Response:
    """The alerts open now (looked at afresh), oldest first, and what each kind means."""
    agent = request.config_dict[keys.AGENT]
    current = await agent.alerts.evaluate()
    return web.json_response({"alerts": [a.to_wire() for a in current], "kinds": alerts.KINDS})


async def get_log(request: web.Request) -> web.Response:
    """Sync-log entries, newest first (or forward from `after_id` for tailing)."""
    q = request.query
    limit = _int_param(request, "limit", 100)
    if limit is None or not 1 <= limit <= MAX_LOG_PAGE:
        raise bad_request("bad_parameter", f"limit must be 1-{MAX_LOG_PAGE}")
    if q.get("kind") and q["kind"] not in synclog.KINDS:
        raise bad_request(
            "bad_parameter", f"unknown kind {q['kind']!r}; one of: {', '.join(synclog.KINDS)}"
        )
    async with request.config_dict[keys.DB].sessions() as session:
        rows = await synclog.query_log(
            session,
            sku=q.get("sku") or None,
            kind=q.get("kind") or None,
            peer=q.get("peer") or None,
            since=_float_param(request, "since"),
            until=_float_param(request, "until"),
            after_id=_int_param(request, "after_id"),
            before_id=_int_param(request, "before_id"),
            limit=limit,
        )
    return web.json_response({"entries": [synclog.entry_json(r) for r in rows]})


async def get_notify(request: web.Request) -> web.Response:
    """Where notifications go (no secrets), the kinds each channel wants, what waits to go."""
    notifier = request.config_dict[keys.AGENT].notifier
    s = notifier.settings
    return web.json_response(
        {
            "channels": s.channels,
            "webhook": {"url": s.webhook_url, "kinds": list(s.webhook_kinds)}
            if s.webhook_url
            else None,
            "email": {"to": list(s.email_to), "kinds": list(s.email_kinds)} if s.email_to else None,
            "pending": len(await notifier.pending()),
        }
    )


async def post_notify_test(request: web.Request) -> web.Response:
    """Send a test notification through every configured channel now; each one's outcome."""
    notifier = request.config_dict[keys.AGENT].notifier
    if not notifier.settings.channels:
        return json_error(
            409, "not_configured", "no notification channel: set [notify] in shopsync.toml"
        )
    return web.json_response({"results": await notifier.test()})


async def get_explain(request: web.Request) -> web.Response:
    """`?sku=X`: X's pool as the sum of its terms (base, each shop's changes, what a join's
    snapshot folded in), the latest events in words, and what each member shows and why."""
    sku = request.query.get("sku", "")
    if not sku or len(sku) > 512:
        raise bad_request("bad_parameter", "sku is required (up to 512 characters)")
    agent = request.config_dict[keys.AGENT]
    bundle = agent.rules.bundles.get(sku)
    if bundle is not None:  # a pool of its own it has not: its components' tell
        message = (
            f"{sku} is a bundle of {bundle.describe()}: it has no count of its own, each "
            "shop shows the whole bundles its components allow (explain those)"
        )
        return json_error(404, "unknown_sku", message)
    found = await explain.account(agent.db, agent.rules, sku)
    if found is None:
        return json_error(404, "unknown_sku", f"no shop of the group has told this one of {sku}")
    return web.json_response(found.to_wire())


async def get_activity(request: web.Request) -> web.Response:
    """`?hours=N` (1-24, default 3): per minute, this shop's changes, the events received
    from peers, and their propagation latency (measured in memory since the agent started)."""
    hours = _int_param(request, "hours", 3)
    if hours is None or not 1 <= hours <= activity.MAX_HOURS:
        raise bad_request("bad_parameter", f"hours must be 1-{activity.MAX_HOURS}")
    agent = request.config_dict[keys.AGENT]
    found = await activity.recent(agent.db, agent.latency, agent.clock.now(), hours)
    return web.json_response(found)


async def get_pools(request: web.Request) -> web.Response:
    """Per SKU: the pool, the count published in this shop, what the rules say it should
    publish (`target`), the item and its title.

    `q` keeps the SKUs that contain it (any case); `mismatch=1` only those whose shop shows
    another count than `target`; `sort=changed` puts the latest changed first (default: SKU
    order); `offset` and `limit` page through them, and `total` counts all that match. Only the
    SKU names are read for all (and, to filter or sort by them, the counts and times); the
    rows, for the page.
    """
    sku, needle = request.query.get("sku"), request.query.get("q", "").strip().casefold()
    offset = _int_param(request, "offset", 0) or 0
    limit = _int_param(request, "limit")
    if offset < 0:
        raise bad_request("bad_parameter", "offset must be 0 or more")
    if limit is not None and not 1 <= limit <= MAX_POOLS_PAGE:
        raise bad_request("bad_parameter", f"limit must be 1-{MAX_POOLS_PAGE}")
    order = request.query.get("sort") or "sku"
    if order not in ("sku", "changed"):
        raise bad_request("bad_parameter", "sort must be sku or changed")
    mismatch = _bool_param(request, "mismatch", False)
    agent = request.config_dict[keys.AGENT]
    kept = col(ItemRow.excluded).is_(None)  # a SKU's duplicates are not its item

    def only(query: Any, column: Any) -> Any:
        return query.where(column == sku) if sku else query

    async with request.config_dict[keys.DB].sessions() as session:
        names = set(await session.exec(only(select(PoolRow.sku), PoolRow.sku)))
        item_names = only(select(ItemRow.sku).where(kept), ItemRow.sku)
        names |= {name for name in await session.exec(item_names) if name}
        matched = sorted(name for name in names if needle in name.casefold())
        if mismatch or order == "changed":
            counts = {
                s: (None if base is None else base + deltas, at)
                for s, base, deltas, at in await session.exec(
                    select(PoolRow.sku, PoolRow.base, PoolRow.deltas, PoolRow.updated_at)
                )
            }
            shown = {
                s: published
                for s, published in await session.exec(
                    select(ItemRow.sku, ItemRow.published).where(kept)
                )
            }
            if mismatch:
                matched = [
                    name
                    for name in matched
                    if _differs(agent, name, counts.get(name, (None, 0))[0], shown.get(name))
                ]
            if order == "changed":
                matched.sort(key=lambda name: -(counts.get(name, (None, 0.0))[1] or 0.0))
        page = matched[offset:] if limit is None else matched[offset : offset + limit]
        # columns, not ORM objects: the whole catalogue (no limit) is 100,000 rows and more
        pools_q = select(PoolRow.sku, PoolRow.base, PoolRow.deltas, PoolRow.updated_at)
        items_q = select(ItemRow.sku, ItemRow.published, ItemRow.item_id, ItemRow.title)
        items_q = items_q.where(kept)
        if limit is not None:  # at most MAX_POOLS_PAGE names: read only their rows
            pools_q = pools_q.where(col(PoolRow.sku).in_(page))
            items_q = items_q.where(col(ItemRow.sku).in_(page))
        pools = {
            name: (None if base is None else base + deltas, at)
            for name, base, deltas, at in await session.exec(only(pools_q, PoolRow.sku))
        }
        items = {row[0]: row[1:] for row in await session.exec(only(items_q, ItemRow.sku))}
        bundles = agent.rules.bundles
        parts = sorted(bundles.components_of(page)) if bundles else []
        part_pools = {
            name: None if base is None else base + deltas
            for name, base, deltas in await session.exec(
                select(PoolRow.sku, PoolRow.base, PoolRow.deltas).where(
                    col(PoolRow.sku).in_(parts)
                )
            )
        } if parts else {}  # fmt: skip

    def count_of(part: str) -> int | None:
        value = part_pools.get(part)
        return None if value is None else agent.rules.decide(part, value).count

    out = []
    for name in page:
        value, at = pools.get(name, (None, None))
        published, item_id, title = items.get(name, (None, None, None))
        row = {
            "sku": name,
            "pool": value,
            "published": published,
            "target": None if value is None else agent.rules.decide(name, value).count,
            "item_id": item_id,
            "title": title,
            "updated_at": at,
        }
        bundle = bundles.get(name)
        if bundle is not None:  # no pool of its own: what its components allow
            row["pool"] = None
            row["target"] = bundles.target(name, count_of).count
            row["bundle"] = bundle.to_wire()["components"]
        out.append(row)
    listings = agent.reconciler.listings()
    if not listings.plain:
        await _locate(request, listings, out)
    return web.json_response({"pools": out, "total": len(matched)})


async def _locate(request: web.Request, listings: Listings, rows: list[dict[str, Any]]) -> None:
    """The rows of a shop with warehouses, told apart: a listing at a location shows the
    SKU, the location, its warehouses, their summed pool and what it should show; a
    warehouse's pool shows the SKU and the warehouse."""
    agent = request.config_dict[keys.AGENT]
    listed = [row["sku"] for row in rows if row["item_id"] is not None]
    async with request.config_dict[keys.DB].sessions() as session:
        pools = await ledger.get_pools(session, listings.keys(listed))

    def count_of(key: str) -> int | None:
        pool = pools.get(key)
        return None if pool is None else pool.value

    for row in rows:
        key = row["sku"]
        sku, location = parse_listing(key)
        if row["item_id"] is not None:
            row["sku"], row["location"] = sku, location or PRIMARY_KEY
            row["sells_from"] = list(listings.locations.warehouses(location))
            if "bundle" not in row:
                row["pool"] = listings.known(key, count_of).value
            made = listings.target(key, count_of, agent.reconciler.writes.decide)
            row["target"] = None if made is None else made[0]
        elif parse_key(key)[1] != DEFAULT:
            row["sku"], row["warehouse"] = parse_key(key)


def _differs(agent: Any, sku: str, pool: int | None, published: int | None) -> bool:
    """The shop shows another count of `sku` than its rules say it should."""
    if pool is None or published is None:
        return False
    return bool(published != agent.rules.decide(sku, pool).count)


async def post_reconcile(request: web.Request) -> web.Response:
    """Start a full catalogue reconciliation now."""
    request.config_dict[keys.AGENT].reconciler.request_reconcile()
    return web.json_response({"ok": True}, status=202)


# -- peering ------------------------------------------------------------------------------------


def _peer_errors(handler: Handler) -> Handler:
    """Answer PeerError as its HTTP status with a JSON body."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except PeerError as exc:
            return json_error(exc.status, exc.error, exc.message)

    return wrapped


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, at most BODY_LIMIT bytes and 64 levels deep.

    Too large or too slow (BodyError) is answered 413/408 by the app's error middleware.
    """
    try:
        body = jsonsafe.loads(await read_body(request, BODY_LIMIT))
    except jsonsafe.JSONError as exc:
        raise bad_request("bad_json", str(exc)) from None
    if not isinstance(body, dict):
        raise bad_request("bad_json", "body must be a JSON object")
    return body


@_peer_errors
async def post_join(request: web.Request) -> web.Response:
    """Send a join request to another shop's agent (by agent URL or shop domain)."""
    body = await read_json_object(request)
    target = body.get("target")
    if not isinstance(target, str) or not target.strip():
        return json_error(400, "bad_target", "target must be an agent URL or a shop domain")
    while_out = body.get("while_out", "count")  # send_join refuses anything else (400)
    result = await request.config_dict[keys.AGENT].peering.send_join(target, while_out=while_out)
    return web.json_response(result, status=202)


async def get_requests(request: web.Request) -> web.Response:
    """Pending join requests: domain, agent URL, key fingerprint, received time."""
    return web.json_response(
        {"requests": await request.config_dict[keys.AGENT].joins.list_requests()}
    )


async def _fingerprint(request: web.Request) -> str | None:
    """The optional `fingerprint` of an accept or reject (a body may be absent)."""
    if not await request.read():
        return None
    value = (await read_json_object(request)).get("fingerprint")
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("SHA256:") or len(value) > 64:
        raise bad_request("bad_fingerprint", "fingerprint must look like SHA256:… (43 chars)")
    return value


@_peer_errors
async def post_accept(request: web.Request) -> web.Response:
    """Accept a pending request; with several claiming the domain, the one of `fingerprint`."""
    joins = request.config_dict[keys.AGENT].joins
    key = await _fingerprint(request)
    return web.json_response(await joins.accept(request.match_info["domain"], key))


@_peer_errors
async def post_reject(request: web.Request) -> web.Response:
    """Reject the pending request of `fingerprint`, or every one of the domain."""
    joins = request.config_dict[keys.AGENT].joins
    key = await _fingerprint(request)
    return web.json_response(await joins.reject(request.match_info["domain"], key))


async def get_peers(request: web.Request) -> web.Response:
    """Every peer: state, last contact, events behind."""
    cfg = request.config_dict
    now = cfg[keys.CLOCK].now()
    async with cfg[keys.DB].sessions() as session:
        peers = list(await session.exec(select(PeerRow).order_by(PeerRow.domain)))
        mine = await ledger.load_vector(session)
    out = []
    for p in peers:
        theirs = vector_from_wire(json.loads(p.acked or "[]"))
        if p.state != "active":
            shown = p.state
        elif p.last_error:
            shown = "unreachable"
        elif p.last_contact is not None and now - p.last_contact < 30:
            shown = "connected"
        else:
            shown = "connecting"
        out.append(
            {
                "domain": p.domain,
                "agent_url": p.agent_url,
                "fingerprint": p.fingerprint,
                "state": shown,
                "last_contact": p.last_contact,
                "events_behind": behind(mine, theirs),
                "last_error": p.last_error,
            }
        )
    return web.json_response({"peers": out})


@_peer_errors
async def post_leave(request: web.Request) -> web.Response:
    return web.json_response(await request.config_dict[keys.AGENT].peering.leave())


@_peer_errors
async def post_pause(request: web.Request) -> web.Response:
    return web.json_response(await request.config_dict[keys.AGENT].peering.set_paused(True))


@_peer_errors
async def post_resume(request: web.Request) -> web.Response:
    return web.json_response(await request.config_dict[keys.AGENT].peering.set_paused(False))


# -- import, maintenance, duplicates, resync ----------------------------------------------------


async def get_duplicates(request: web.Request) -> web.Response:
    """Duplicates, SKU-less items, SKUs the group has that this shop lacks (and vice versa)."""
    cfg = request.config_dict
    report = await cfg[keys.DB].get_state("import_report", {})
    only_here = (report or {}).get("only_here", [])
    bundles = cfg[keys.AGENT].rules.bundles
    async with cfg[keys.DB].sessions() as session:
        report = await duplicates_report(session, only_here=only_here, bundles=bundles)
    return web.json_response(report)


async def get_import(request: web.Request) -> web.Response:
    """Progress of the current or last import: done/total, rate, ETA, pre-flight report
    (`report=0` leaves the report out: a poll's answer stays small at any catalogue size)."""
    with_report = _bool_param(request, "report", True)
    progress = await request.config_dict[keys.AGENT].importer.progress(with_report=with_report)
    return web.json_response(progress)


async def post_import(request: web.Request) -> web.Response:
    """Start an import of the group's counts into this shop; `dry_run` only reports."""
    body = await read_json_object(request)
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        return json_error(400, "bad_request", "dry_run must be true or false")
    cfg = request.config_dict
    if not await cfg[keys.AGENT].roster.in_group():
        return json_error(409, "not_in_group", "join a group first: an import writes its counts")
    importer = cfg[keys.AGENT].importer
    if dry_run:
        return web.json_response({"dry_run": True, "report": await importer.preflight()})
    try:
        report = await importer.start(reason="admin")
    except ImportError_ as exc:
        return json_error(exc.status, exc.error, exc.message)
    return web.json_response({"dry_run": False, "report": report}, status=202)


async def get_maintenance(request: web.Request) -> web.Response:
    return web.json_response(await request.config_dict[keys.AGENT].importer.maintenance())


async def post_maintenance(request: web.Request) -> web.Response:
    """Turn maintenance mode on or off: `{"on": true}`."""
    body = await read_json_object(request)
    if not isinstance(body.get("on"), bool):
        return json_error(400, "bad_request", 'send {"on": true} or {"on": false}')
    importer = request.config_dict[keys.AGENT].importer
    if not body["on"] and importer.running:
        return json_error(409, "import_running", "an import is running; it ends maintenance")
    return web.json_response(await importer.set_maintenance(body["on"]))


async def post_resync(request: web.Request) -> web.Response:
    """Re-read and re-write SKUs: `{"skus": [...]}` or `{"all": true}`."""
    body = await read_json_object(request)
    skus, everything = body.get("skus"), body.get("all", False)
    if everything is not True and (
        not isinstance(skus, list) or not skus or not all(isinstance(s, str) for s in skus)
    ):
        return json_error(400, "bad_request", 'send {"skus": ["A-1", ...]} or {"all": true}')
    reconciler = request.config_dict[keys.AGENT].reconciler
    queued = reconciler.resync(None if everything is True else skus)
    unknown = [] if everything is True else sorted(set(skus or ()) - set(queued))
    return web.json_response({"queued": queued, "unknown": unknown})


# -- admin-page sessions ------------------------------------------------------------------------


async def post_revoke_sessions(request: web.Request) -> web.Response:
    """Log out every admin-page session issued until now (kept across restarts)."""
    cfg = request.config_dict
    now = cfg[keys.CLOCK].now()
    await cfg[REVOCATIONS].end_all(cfg[keys.DB], now)
    return web.json_response({"ended_before": now})
