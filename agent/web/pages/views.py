"""Admin pages: overview, join requests, products, duplicates, import and maintenance."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from agent.importer import IMPORT_MODES
from agent.web.pages import charts
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
    "notify_test",
    "overview",
    "pause",
    "products",
    "requests",
    "resume",
    "resync",
    "start_import",
]

PRODUCTS_PAGE = 100


async def _form(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}


# -- overview -----------------------------------------------------------------------------------


@page
async def overview(request: web.Request) -> web.StreamResponse:
    """This shop, its group, maintenance and import state, recent alerts and activity."""
    api = Api(request)
    status, peers, pending, alerts, notify, activity = await asyncio.gather(
        api.get("/status"),
        api.get("/peers"),
        api.get("/requests"),
        api.get("/alerts"),
        api.get("/notify"),
        api.get("/activity", hours=ACTIVITY_HOURS),
    )
    return render(
        request,
        "overview.html",
        title="Overview",
        status=status,
        peers=peers["peers"],
        pending=pending["requests"],
        alerts=_grouped(alerts["alerts"]),
        kinds=alerts["kinds"],
        notify=notify,
        maintenance=_maintenance_state(status),
        changes_chart=charts.changes_chart(activity),
        latency_chart=charts.latency_chart(activity),
    )


ACTIVITY_HOURS = 3  # the overview's charts
ALERTS_SHOWN = 5  # of each kind; the rest are counted


def _grouped(alerts: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]], int]]:
    """Open alerts by kind, oldest first: (kind, the first few, how many more)."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        kinds.setdefault(alert["kind"], []).append(alert)
    return [(k, a[:ALERTS_SHOWN], max(0, len(a) - ALERTS_SHOWN)) for k, a in kinds.items()]


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
async def notify_test(request: web.Request) -> web.StreamResponse:
    """Send a test notification through each channel (`shopsync notify test`)."""
    try:
        results = (await Api(request).post("/notify/test"))["results"]
    except ApiError as exc:
        redirect("/", exc.message or exc.error, ok=False)
    said = "; ".join(f"{r['channel']}: {r['detail']}" for r in results)
    redirect("/", f"Test notification — {said}", ok=all(r["ok"] for r in results))


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
    pending, peers, status = await asyncio.gather(
        api.get("/requests"), api.get("/peers"), api.get("/status")
    )
    return render(
        request,
        "requests.html",
        title="Join requests",
        pending=pending["requests"],
        peers=peers["peers"],
        fingerprint=status["fingerprint"],
    )


@page
async def decide(request: web.Request) -> web.StreamResponse:
    """Accept or reject one pending request, the one whose fingerprint the page showed
    (`shopsync accept|reject DOMAIN --fingerprint F`)."""
    domain, verdict = request.match_info["domain"], request.match_info["verdict"]
    key = (await _form(request)).get("fingerprint", "").strip()
    body = {"fingerprint": key} if key else {}
    try:
        await Api(request).post(f"/requests/{quote(domain, safe='')}/{verdict}", body)
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
    sort = "changed" if request.query.get("sort") == "changed" else "sku"
    mismatch = "1" if request.query.get("mismatch") == "1" else ""
    found = await Api(request).get(
        "/pools", q=q, offset=start, limit=PRODUCTS_PAGE, sort=sort, mismatch=mismatch or None
    )
    view = {"q": q, "sort": sort, "mismatch": mismatch}
    return render(
        request,
        "products.html",
        title="Products",
        q=q,
        sort=sort,
        mismatch=mismatch,
        here=urlencode({k: v for k, v in view.items() if v and v != "sku"}),
        pools=found["pools"],
        total=found["total"],
        start=start,
        page_size=PRODUCTS_PAGE,
    )


@page
async def resync(request: web.Request) -> web.StreamResponse:
    """Re-read and re-write one SKU, or all (`shopsync resync`); or, with `catalogue`, re-read
    the whole catalogue so that fixed duplicates and new items are found (`POST /api/reconcile`).
    """
    form = await _form(request)
    back = form.get("back", "/products")
    if not back.startswith("/") or back.startswith("//"):
        back = "/products"
    api = Api(request)
    try:
        if form.get("catalogue") == "yes":
            await api.post("/reconcile")
            redirect(back, "The whole catalogue is being read again.")
        sku = form.get("sku", "").strip()
        if not sku and form.get("confirm") != "yes":
            redirect(back, "Tick the box to confirm a resync of every product.", ok=False)
        answer = await api.post("/resync", {"skus": [sku]} if sku else {"all": True})
    except ApiError as exc:
        redirect(back, f"Resync did not start: {exc.message}", ok=False)
    if sku and answer.get("unknown"):
        redirect(back, f"{sku} is not a synced item of this shop.", ok=False)
    redirect(back, f"Resync of {sku or 'every SKU'} started: counts are read and written again.")


@page
async def duplicates(request: web.Request) -> web.StreamResponse:
    """Items the agent does not sync (duplicate SKU, no SKU) and what to do; missing SKUs."""
    report = await Api(request).get("/duplicates")
    rows = [
        {"sku": group["sku"], "reason": "duplicate", "advice": group.get("advice", ""), **item}
        for group in report.get("duplicates", [])
        for item in group.get("items", [])
    ]
    rows += [
        {"sku": None, "reason": "no_sku", "advice": item.get("advice", ""), **item}
        for item in report.get("no_sku", [])
    ]
    return render(
        request,
        "duplicates.html",
        title="Duplicates",
        rows=rows,
        missing_here=report.get("missing_here", []),
        only_here=report.get("only_here", []),
        bundles_short=report.get("bundles_short", []),
    )


# -- import and maintenance ---------------------------------------------------------------------


@page
async def import_page(request: web.Request) -> web.StreamResponse:
    """Import progress (done/total, rate, ETA), start an import or a dry run, maintenance."""
    return await _import_view(request)


async def _import_view(
    request: web.Request, dry_run_report: dict[str, Any] | None = None
) -> web.Response:
    progress = await Api(request).get("/import")
    return render(
        request,
        "import.html",
        title="Import",
        progress=progress,
        maintenance="on" if progress.get("maintenance") else "off",
        dry_run_report=dry_run_report,
        import_modes=IMPORT_MODES,
    )


@page
async def import_progress(request: web.Request) -> web.StreamResponse:
    """The progress as JSON, for the page's live progress bar."""
    progress = await Api(request).get("/import")
    progress.pop("dry_run_report", None)
    return web.json_response(progress)


@page
async def start_import(request: web.Request) -> web.StreamResponse:
    """Start an import of the group's counts, or a dry run whose report is shown at once."""
    dry_run = (await _form(request)).get("dry_run") == "yes"
    try:
        answer = await Api(request).post("/import", {"dry_run": dry_run})
    except ApiError as exc:
        redirect("/import", f"Import did not start: {exc.message}", ok=False)
    if dry_run:  # changes nothing, so showing it in the POST's answer is safe to reload
        return await _import_view(request, dry_run_report=answer.get("report") or {})
    redirect("/import", "Import started: the group's counts are being written to this shop.")


@page
async def maintenance(request: web.Request) -> web.StreamResponse:
    """Turn maintenance mode on or off."""
    on = (await _form(request)).get("on") == "yes"
    try:
        await Api(request).post("/maintenance", {"on": on})
    except ApiError as exc:
        redirect("/import", f"Maintenance not changed: {exc.message}", ok=False)
    redirect("/import", "Maintenance mode is on." if on else "Maintenance mode is off.")
