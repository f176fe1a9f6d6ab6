"""The admin pages at `/`: server-rendered HTML over the admin JSON API, for the browser.

`setup_pages(app)` adds them to the agent's root app. Every page but the log-in page needs a
session (a signed, HttpOnly, SameSite=Strict cookie got by entering the admin token); every
form carries a CSRF token; every answer a Content-Security-Policy. Wrong tokens are throttled
per client address; log-outs and "end all sessions" are kept in the database
(`agent.web.auth`), so a restart forgets neither. Live parts (sync-log tail, import progress)
are small scripts in `static/app.js`; all else works without JavaScript.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import secrets
from pathlib import Path

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web

from agent.web import keys
from agent.web.auth import (
    REVOCATIONS,
    THROTTLE,
    LoginThrottle,
    Revocations,
    client_address,
    same_secret,
)
from agent.web.pages import explain_page, logview, rules_page, views
from agent.web.pages.backend import Api, ApiError
from agent.web.pages.format import FILTERS
from agent.web.pages.render import redirect, render
from agent.web.pages.session import (
    COOKIE,
    LOGIN_COOKIE,
    MAX_AGE,
    FormError,
    cookie_secure,
    csrf_ok,
    current_session,
    forget,
    issue,
    page,
    read_form,
    refused,
    secure,
)

__all__ = ["setup_pages"]

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
STATIC = "pages_static"
# A path on this site: no scheme, no host, no backslash or control character to smuggle one in.
_LOCAL = re.compile(r"/[A-Za-z0-9/_.~%&=+?-]*")
# What `secrets.token_urlsafe` makes; any other log-in cookie is ignored, never echoed.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: Bytes the log-in form may have: a token, a CSRF token and a `next` path, with room to spare.
LOGIN_FORM_LIMIT = 8 * 1024


def setup_pages(app: web.Application) -> None:
    """Add the admin pages, their templates and static files to the agent's root app."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        filters=FILTERS,
        undefined=jinja2.ChainableUndefined,  # a field an older API lacks renders empty
    )
    app[REVOCATIONS] = Revocations(MAX_AGE)
    app[THROTTLE] = LoginThrottle(app[keys.CLOCK])
    app[logview.STOPPING] = asyncio.Event()
    app.on_startup.append(_load_revocations)  # after the cleanup contexts: the database is open
    app.on_shutdown.append(_stop_streams)
    r = app.router
    r.add_get("/login", login_form)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_post("/sessions/end", end_sessions)
    r.add_get("/", views.overview)
    r.add_post("/pause", views.pause)
    r.add_post("/resume", views.resume)
    r.add_post("/notify/test", views.notify_test)
    r.add_post("/leave", views.leave)
    r.add_get("/requests", views.requests)
    r.add_post("/requests/{domain}/{verdict:accept|reject}", views.decide)
    r.add_post("/join", views.join)
    r.add_get("/log", logview.log_page)
    r.add_get("/log/stream", logview.log_stream)
    r.add_get("/log/export", logview.log_export)
    r.add_get("/products", views.products)
    r.add_get("/explain", explain_page.explain_page)
    r.add_post("/resync", views.resync)
    r.add_get("/rules", rules_page.rules_page)
    r.add_post("/rules", rules_page.post_rules)
    r.add_post("/rules/priority", rules_page.post_priority)
    r.add_post("/rules/bundles", rules_page.post_bundles)
    r.add_post("/rules/locations", rules_page.post_locations)
    r.add_get("/duplicates", views.duplicates)
    r.add_get("/import", views.import_page)
    r.add_get("/import/progress", views.import_progress)
    r.add_post("/import", views.start_import)
    r.add_post("/maintenance", views.maintenance)
    r.add_static("/static/", HERE / "static", name=STATIC, append_version=True)
    env = aiohttp_jinja2.get_env(app)
    env.globals["static"] = functools.lru_cache(maxsize=16)(
        lambda name: str(app.router[STATIC].url_for(filename=name))
    )


async def _load_revocations(app: web.Application) -> None:
    await app[REVOCATIONS].load(app[keys.DB])


async def _stop_streams(app: web.Application) -> None:
    # Live tails would otherwise hold a graceful shutdown until its timeout.
    app[logview.STOPPING].set()


def _next_path(raw: str | None) -> str:
    """Where to go after logging in: a local path only, never another site."""
    if raw and _LOCAL.fullmatch(raw) and not raw.startswith("//"):
        return raw
    return "/"


async def login_form(request: web.Request) -> web.StreamResponse:
    """The log-in page; already logged in goes straight on."""
    if current_session(request) is not None:
        raise web.HTTPSeeOther(_next_path(request.query.get("next")))
    token = _login_csrf(request) or secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        title="Log in",
        csrf=token,
        next=_next_path(request.query.get("next")),
        error="",
    )
    _set_login_cookie(request, response, token)
    return secure(response)


def _login_csrf(request: web.Request) -> str:
    """The log-in form's CSRF token from its cookie, or "" if there is none that we made."""
    token = request.cookies.get(LOGIN_COOKIE, "")
    return token if _TOKEN.fullmatch(token) else ""


def _set_login_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        path="/login",
        max_age=3600,
        secure=cookie_secure(request),
    )


async def login(request: web.Request) -> web.StreamResponse:
    """Check the admin token from the form (POST body, never the URL); start a session.

    An address with too many recent failures is answered 429 before its form is even read.
    """
    cfg = request.config_dict
    throttle, address = cfg[THROTTLE], client_address(request)
    wait = throttle.retry_after(address)
    if wait > 0:
        log.warning("admin_login_throttled", remote=address)
        minutes = math.ceil(wait / 60)
        response = refused(
            429,
            f"Too many wrong admin tokens from your address ({throttle.limit} within "
            f"{throttle.window / 60:.0f} minutes). Try again in {minutes} "
            f"minute{'s' if minutes != 1 else ''}.",
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    try:
        form = await read_form(request, LOGIN_FORM_LIMIT)
    except FormError as exc:
        return refused(exc.status, exc.message)
    expected_csrf = _login_csrf(request)
    if not csrf_ok(form.get("csrf"), expected_csrf):
        return refused(403, "The form's CSRF token is missing or wrong; reload the log-in page.")
    given = form.get("token")
    expected = cfg[keys.SETTINGS].admin_token
    if not isinstance(given, str) or not same_secret(given.strip(), expected):
        throttle.failed(address)
        log.warning("admin_login_failed", remote=address)
        await asyncio.sleep(0.3)  # makes guessing slower still; a real token is 32 random bytes
        response = render(
            request,
            "login.html",
            http_status=401,
            title="Log in",
            csrf=expected_csrf,
            next=_next_path(str(form.get("next") or "")),
            error="That is not this agent's admin token.",
        )
        return secure(response)
    throttle.succeeded(address)
    log.info("admin_login", remote=address)
    response = web.HTTPSeeOther(_next_path(str(form.get("next") or "")))
    response.set_cookie(
        COOKIE,
        issue(expected, cfg[keys.CLOCK].now()),
        httponly=True,
        samesite="Strict",
        path="/",
        max_age=MAX_AGE,
        secure=cookie_secure(request),
    )
    response.del_cookie(LOGIN_COOKIE, path="/login")
    raise response


@page
async def logout(request: web.Request) -> web.StreamResponse:
    """End the session: its cookie is refused from now on, even if replayed after a restart."""
    session = current_session(request)
    if session is not None:
        await forget(request, session)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


@page
async def end_sessions(request: web.Request) -> web.StreamResponse:
    """Log out every browser, this one included (`POST /api/sessions/revoke`)."""
    try:
        await Api(request).post("/sessions/revoke")
    except ApiError as exc:
        redirect("/", f"Sessions not ended: {exc.message}", ok=False)
    redirect("/login", "Every session was ended, this one too; log in again.")
