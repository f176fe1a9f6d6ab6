"""The sync-log page: filters, keyset paging by `before_id`, and a live tail over SSE."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import json
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from agent import synclog
from agent.console import LOG_COLUMNS
from agent.web import keys
from agent.web.pages.backend import Api, ApiError
from agent.web.pages.format import parse_utc
from agent.web.pages.render import render
from agent.web.pages.session import page

__all__ = ["STOPPING", "log_export", "log_page", "log_stream"]

STOPPING = web.AppKey("pages_stopping", asyncio.Event)
PAGE = 50
POLL = 0.5  # seconds between looks for new entries while a browser tails the log
KEEPALIVE = 15.0


def _filters(request: web.Request) -> tuple[dict[str, str], dict[str, Any], str]:
    """The form's filters as typed, as API parameters, and an error about them (or "")."""
    q = request.query
    form = {k: q.get(k, "").strip() for k in ("sku", "peer", "kind", "since", "until")}
    params: dict[str, Any] = {k: form[k] for k in ("sku", "peer", "kind") if form[k]}
    error = ""
    for name in ("since", "until"):
        try:
            params[name] = parse_utc(form[name])
        except ValueError:
            error = f"'{name}' must be a date and time like 2024-05-01T12:00 (UTC)"
    if form["kind"] and form["kind"] not in synclog.KINDS:  # the page, its tail, its export
        error = f"unknown kind {form['kind']!r}; one of: {', '.join(synclog.KINDS)}"
    return form, params, error


@page
async def log_page(request: web.Request) -> web.StreamResponse:
    """Newest first, filtered; "older" pages continue below the last id shown."""
    form, params, error = _filters(request)
    before_id = request.query.get("before_id", "")
    if before_id and not (before_id.isascii() and before_id.isdigit()):
        before_id, error = "", "before_id must be a number"
    entries: list[dict[str, Any]] = []
    if not error:
        try:
            answer = await Api(request).get(
                "/log", **params, before_id=before_id or None, limit=PAGE + 1
            )
            entries = answer["entries"]
        except ApiError as exc:
            error = exc.message
    more = len(entries) > PAGE
    entries = entries[:PAGE]
    kept = {k: v for k, v in form.items() if v}
    older = (
        "/log?" + urlencode({**kept, "before_id": entries[-1]["id"]}) if more and entries else ""
    )
    # Tail only the newest page, and only while no end time cuts the view off.
    live = not before_id and not form["until"] and not error
    stream = "/log/stream?" + urlencode(
        {**{k: v for k, v in kept.items() if k != "since"}, "after": _newest(entries)}
    )
    return render(
        request,
        "log.html",
        title="Sync log",
        form=form,
        kinds=synclog.KINDS,
        entries=entries,
        error=error,
        older=older,
        newest="/log?" + urlencode(kept) if before_id else "",
        live=live,
        stream=stream,
        export="/log/export?" + urlencode({k: v for k, v in kept.items() if k != "before_id"}),
    )


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _newest(entries: list[dict[str, Any]]) -> int:
    return max((e["id"] for e in entries), default=0)


@page
async def log_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: each new entry matching the filters, as a rendered table row.

    Resumes after `Last-Event-ID` when the browser reconnects, so no entry is missed.
    """
    _, params, error = _filters(request)
    if error:
        raise web.HTTPBadRequest(text=error)
    params.pop("since", None)
    params.pop("until", None)
    last = request.headers.get("Last-Event-ID") or request.query.get("after", "0")
    after = int(last) if last.isascii() and last.isdigit() and len(last) < 19 else 0
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # proxies must not hold events back
        }
    )
    await response.prepare(request)
    api = Api(request)
    stopping = request.config_dict[STOPPING]
    # get_env reads one key, which config_dict finds in whichever app holds it
    env = aiohttp_jinja2.get_env(request.config_dict)  # type: ignore[arg-type]
    row = env.get_template("log_row.html")
    now = request.config_dict[keys.CLOCK].now
    idle = 0.0
    with contextlib.suppress(ConnectionResetError):
        while not stopping.is_set() and not _gone(request):
            try:
                entries = (await api.get("/log", **params, after_id=after, limit=200))["entries"]
            except ApiError:
                entries = []  # the agent is stopping or busy; try again shortly
            for entry in entries:
                after = max(after, entry["id"])
                html = row.render(e=entry, now=now())
                data = json.dumps({"id": entry["id"], "html": html})
                await response.write(f"id: {entry['id']}\nevent: entry\ndata: {data}\n\n".encode())
            idle = 0.0 if entries else idle + POLL
            if idle >= KEEPALIVE:
                await response.write(b": keep-alive\n\n")
                idle = 0.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL):  # not wait_for: it can swallow a cancel
                    await stopping.wait()
    return response


EXPORT_LIMIT = 100_000  # entries one export holds at most (narrow the filter for more)


@page
async def log_export(request: web.Request) -> web.StreamResponse:
    """Every entry the filters match, as CSV or JSON (a download), newest first."""
    form, params, error = _filters(request)
    fmt = request.query.get("format", "csv")
    if error or fmt not in ("csv", "json"):
        raise web.HTTPBadRequest(text=error or "format must be csv or json")
    api, before = Api(request), None
    entries: list[dict[str, Any]] = []
    while len(entries) < EXPORT_LIMIT:
        try:
            page_ = (await api.get("/log", **params, before_id=before, limit=1000))["entries"]
        except ApiError as exc:
            raise web.HTTPBadRequest(text=exc.message) from None
        entries += page_
        if len(page_) < 1000:
            break
        before = page_[-1]["id"]
    name = "shopsync-log-" + "-".join(v for v in form.values() if v)[:80].replace("/", "_")
    if fmt == "json":
        body = json.dumps(entries, indent=1).encode()
        kind = "application/json"
    else:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(LOG_COLUMNS)
        for e in entries:
            at = dt.datetime.fromtimestamp(e["at"], dt.UTC).isoformat(timespec="milliseconds")
            writer.writerow([at if c == "at" else e[c] for c in LOG_COLUMNS])
        body, kind = out.getvalue().encode(), "text/csv"
    return web.Response(
        body=body,
        content_type=kind,
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
    )
