"""Admin pages: overview, join requests, products, duplicates, import and maintenance."""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import quote

from aiohttp import web

from agent.web.pages.backend import Api, ApiError
from agent.web.pages.render import redirect, render
from agent.web.pages.session import page

__all__ = [
    "decide",
    "duplicates",
    "import_page",
    "import_progress",
    "join",
    "leave",
    "maintenance",
    "overview",
    "pause",
    "products",
    "requests",
    "resume",
    "resync",
    "start_import",
]

PRODUCTS_PAGE = 100

# What an admin should do about an item the agent does not sync, by reason.
ADVICE = {
    "duplicate": "Give each of these items its own SKU in the shop's admin (or delete the "
    "extra item), then press Resync.",
    "no_sku": "Add the SKU (model number) to this item in the shop's admin, then press Resync.",
    "gone": "The item was removed from the shop; nothing to do.",
}


async def _form(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}


# -- overview -----------------------------------------------------------------------------------


@page
async def overview(request: web.Request) -> web.StreamResponse:
    """This shop, its group, maintenance and import state, and recent alerts."""
    api = Api(request)
    status, peers, pending, oversold, failed = await asyncio.gather(
        api.get("/status"),
        api.get("/peers"),
        api.get("/requests"),
        api.get("/log", kind="oversold", limit=5),
        api.get("/log", kind="write_failed", limit=5),
    )
    alerts = sorted(oversold["entries"] + failed["entries"], key=lambda e: e["id"], reverse=True)[
        :8
    ]
    return render(
        request,
        "overview.html",
        title="Overview",
        status=status,
        peers=peers["peers"],
        pending=pending["requests"],
        alerts=alerts,
        maintenance=_maintenance_state(status),
    )


def _maintenance_state(status: dict[str, Any]) -> str:
    """ "on", "off" or "unknown" (an agent whose status does not say)."""
    value = status.get("maintenance")
    if isinstance(value, dict):
        value = value.get("on", value.get("state"))
    if value in (True, "on"):
        return "on"
    if value in (False, "off", None) and "maintenance" in status:
        return "off"
    return "unknown"


async def _act(request: web.Request, path: str, done: str, back: str) -> web.StreamResponse:
    try:
        await Api(request).post(path)
    except ApiError as exc:
        redirect(back, exc.message or exc.error, ok=False)
    redirect(back, done)


@page
async def pause(request: web.Request) -> web.StreamResponse:
    """Stop syncing with the group for now (`shopsync pause`)."""
    return await _act(request, "/pause", "Sync paused; changes are kept and sent on resume.", "/")


@page
async def resume(request: web.Request) -> web.StreamResponse:
    """Sync again (`shopsync resume`)."""
    return await _act(request, "/resume", "Sync resumed.", "/")


@page
async def leave(request: web.Request) -> web.StreamResponse:
    """Leave the group (`shopsync leave`); the form must be confirmed."""
    if (await _form(request)).get("confirm") != "yes":
        redirect("/", "Tick the box to confirm leaving the group.", ok=False)
    return await _act(request, "/leave", "This shop left the group.", "/")


# -- join requests ------------------------------------------------------------------------------


@page
async def requests(request: web.Request) -> web.StreamResponse:
    """Pending join requests to accept or reject, the members, and a form to join a group."""
    api = Api(request)
    pending, peers = await asyncio.gather(api.get("/requests"), api.get("/peers"))
    return render(
        request,
        "requests.html",
        title="Join requests",
        pending=pending["requests"],
        peers=peers["peers"],
    )


@page
async def decide(request: web.Request) -> web.StreamResponse:
    """Accept or reject one pending request (`shopsync accept|reject DOMAIN`)."""
    domain, verdict = request.match_info["domain"], request.match_info["verdict"]
    try:
        await Api(request).post(f"/requests/{quote(domain, safe='')}/{verdict}")
    except ApiError as exc:
        redirect("/requests", f"Could not {verdict} {domain}: {exc.message}", ok=False)
    done = "accepted: it joins the group now" if verdict == "accept" else "rejected"
    redirect("/requests", f"{domain} {done}.")


@page
async def join(request: web.Request) -> web.StreamResponse:
    """Send a join request to another shop (`shopsync join TARGET`)."""
    target = (await _form(request)).get("target", "").strip()
    if not target:
        redirect("/requests", "Enter the other shop's domain or agent URL.", ok=False)
    try:
        await Api(request).post("/join", {"target": target})
    except ApiError as exc:
        redirect("/requests", f"Join request to {target} failed: {exc.message}", ok=False)
    redirect("/requests", f"Join request sent to {target}; its owner must accept it.")


# -- products and duplicates --------------------------------------------------------------------


@page
async def products(request: web.Request) -> web.StreamResponse:
    """SKU table (pool, published, last change) with search and paging."""
    q = request.query.get("q", "").strip()
    try:
        start = max(0, int(request.query.get("start", "0")))
    except ValueError:
        start = 0
    pools = (await Api(request).get("/pools"))["pools"]
    if q:
        needle = q.casefold()
        pools = [p for p in pools if needle in p["sku"].casefold()]
    shown = pools[start : start + PRODUCTS_PAGE]
    return render(
        request,
        "products.html",
        title="Products",
        q=q,
        pools=shown,
        total=len(pools),
        start=start,
        page_size=PRODUCTS_PAGE,
    )


@page
async def resync(request: web.Request) -> web.StreamResponse:
    """Re-read the whole catalogue now (`POST /api/reconcile`)."""
    back = (await _form(request)).get("back", "/products")
    if not back.startswith("/") or back.startswith("//"):
        back = "/products"
    return await _act(
        request, "/reconcile", "Resync started: the whole catalogue is read again.", back
    )


_EXCLUDED = re.compile(r"^(?P<reason>[a-z_]+): item (?P<item_id>\S+) is not synced")


@page
async def duplicates(request: web.Request) -> web.StreamResponse:
    """Items the agent does not sync (duplicate SKU, no SKU) and what to do about each."""
    api = Api(request)
    found = await api.optional("/duplicates")
    source = "api"
    if found is None:
        # Older agents lack /api/duplicates: the sync log names every item when it was excluded.
        source = "log"
        entries = (await api.get("/log", kind="excluded", limit=1000))["entries"]
        items: dict[str, dict[str, Any]] = {}
        for e in entries:  # newest first: keep the latest word on each item
            m = _EXCLUDED.match(e["message"] or "")
            item_id = m["item_id"] if m else f"entry {e['id']}"
            items.setdefault(
                item_id,
                {
                    "item_id": item_id,
                    "sku": e["sku"],
                    "title": "",
                    "reason": m["reason"] if m else "excluded",
                    "at": e["at"],
                },
            )
        rows = list(items.values())
    else:
        rows = [_dup_row(d) for d in _dup_list(found)]
    for row in rows:
        row.setdefault("advice", ADVICE.get(row["reason"], "Check this item in the shop's admin."))
    rows.sort(key=lambda r: (r["reason"], r["sku"] or "", r["item_id"]))
    return render(request, "duplicates.html", title="Duplicates", rows=rows, source=source)


def _dup_list(found: Any) -> list[dict[str, Any]]:
    if isinstance(found, list):
        return [d for d in found if isinstance(d, dict)]
    for key in ("duplicates", "items", "excluded"):
        if isinstance(found, dict) and isinstance(found.get(key), list):
            return [d for d in found[key] if isinstance(d, dict)]
    return []


def _dup_row(d: dict[str, Any]) -> dict[str, Any]:
    row = {
        "item_id": str(d.get("item_id") or d.get("id") or ""),
        "sku": d.get("sku"),
        "title": d.get("title") or d.get("name") or "",
        "reason": str(d.get("reason") or d.get("excluded") or d.get("kind") or "duplicate"),
        "at": d.get("updated_at") or d.get("at"),
    }
    if d.get("advice") or d.get("action"):
        row["advice"] = d.get("advice") or d.get("action")
    return row


# -- import and maintenance ---------------------------------------------------------------------


async def _progress(api: Api) -> dict[str, Any]:
    """Import progress in the shape of `GET /api/import`, or what `/api/status` says of it."""
    found = await api.optional("/import")
    if isinstance(found, dict):
        return {"available": True, **found}
    status = await api.get("/status")
    known = status.get("import") or {}
    return {
        "available": False,
        "state": known.get("state", "none"),
        "done": known.get("skus") if known.get("state") == "done" else None,
        "total": known.get("skus"),
        "rate": None,
        "eta_seconds": None,
        "dry_run_report": None,
        "master": known.get("master"),
    }


@page
async def import_page(request: web.Request) -> web.StreamResponse:
    """Import progress (done/total, rate, ETA), start an import, dry-run report, maintenance."""
    api = Api(request)
    progress, status = await asyncio.gather(_progress(api), api.get("/status"))
    return render(
        request,
        "import.html",
        title="Import",
        progress=progress,
        maintenance=_maintenance_state(status),
    )


@page
async def import_progress(request: web.Request) -> web.StreamResponse:
    """The progress as JSON, for the page's live progress bar."""
    return web.json_response(await _progress(Api(request)))


@page
async def start_import(request: web.Request) -> web.StreamResponse:
    """Start an import of the master's counts (or a dry run that only reports)."""
    dry_run = (await _form(request)).get("dry_run") == "yes"
    try:
        await Api(request).post("/import", {"dry_run": dry_run})
    except ApiError as exc:
        message = (
            "This agent has no import API yet."
            if exc.error == "no_route"
            else f"Import did not start: {exc.message}"
        )
        redirect("/import", message, ok=False)
    redirect("/import", "Dry run started." if dry_run else "Import started.")


@page
async def maintenance(request: web.Request) -> web.StreamResponse:
    """Turn maintenance mode on or off."""
    on = (await _form(request)).get("on") == "yes"
    try:
        await Api(request).post("/maintenance", {"on": on})
    except ApiError as exc:
        message = (
            "This agent has no maintenance API yet."
            if exc.error == "no_route"
            else f"Maintenance not changed: {exc.message}"
        )
        redirect("/import", message, ok=False)
    redirect("/import", "Maintenance mode is on." if on else "Maintenance mode is off.")
