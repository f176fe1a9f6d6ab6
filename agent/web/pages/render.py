"""Rendering admin pages: common template context, flash messages, redirects after a POST."""

from __future__ import annotations

from typing import Any, NoReturn
from urllib.parse import quote, unquote

import aiohttp_jinja2
from aiohttp import web

from agent.web import keys
from agent.web.pages.session import SESSION, Session

__all__ = ["NAV", "redirect", "render"]

FLASH = "shopsync_flash"

# (path, label) of the navigation, in the order an admin needs them.
NAV = [
    ("/", "Overview"),
    ("/requests", "Join requests"),
    ("/log", "Sync log"),
    ("/products", "Products"),
    ("/rules", "Rules"),
    ("/duplicates", "Duplicates"),
    ("/import", "Import"),
]


def render(
    request: web.Request, template: str, http_status: int = 200, **context: Any
) -> web.Response:
    """Render `template` with the context every page shares (shop, nav, CSRF, flash, now)."""
    cfg = request.config_dict
    session: Session | None = request.get(SESSION)
    flash = _read_flash(request)
    context.setdefault("title", "")
    context.update(
        domain=cfg[keys.IDENTITY].domain if keys.IDENTITY in cfg else cfg[keys.SETTINGS].domain,
        nav=NAV,
        path=request.path,
        csrf=session.csrf if session else context.get("csrf", ""),
        logged_in=session is not None,
        flash=flash,
        now=cfg[keys.CLOCK].now(),
    )
    response = aiohttp_jinja2.render_template(template, request, context, status=http_status)
    if flash is not None:
        response.del_cookie(FLASH, path="/")
    return response


def _read_flash(request: web.Request) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH)
    if not raw:
        return None
    kind, _, text = raw.partition(":")
    # A cookie that is not UTF-8 (surrogate escapes) would fail to encode in the page.
    text = unquote(text).encode("utf-8", "replace").decode("utf-8")
    return ("error" if kind == "error" else "ok", text[:300])


def redirect(location: str, message: str = "", *, ok: bool = True) -> NoReturn:
    """Post/Redirect/Get: 303 to `location`, with a one-time message for the next page."""
    response = web.HTTPSeeOther(location)
    if message:
        response.set_cookie(
            FLASH,
            f"{'ok' if ok else 'error'}:{quote(message[:300])}",
            httponly=True,
            samesite="Strict",
            path="/",
            max_age=60,
        )
    raise response
