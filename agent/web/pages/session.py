"""Admin-page sessions: a signed cookie from the admin token, CSRF tokens, security headers."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import html
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from agent.web import keys
from agent.web.auth import REVOCATIONS, same_secret
from agent.web.bodies import BodyError, read_body
from agent.web.pages.backend import ApiError

__all__ = [
    "COOKIE",
    "FORM_LIMIT",
    "LOGIN_COOKIE",
    "MAX_AGE",
    "SESSION",
    "FormError",
    "Session",
    "cookie_secure",
    "csrf_ok",
    "current_session",
    "forget",
    "issue",
    "page",
    "read_form",
    "refused",
    "secure",
    "verify",
]

COOKIE = "shopsync_session"
LOGIN_COOKIE = "shopsync_login"  # double-submit CSRF token of the log-in form (no session yet)
MAX_AGE = 12 * 3600

# Scripts and styles only from our own /static (no inline code, no CDN); nothing may frame us.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

SESSION = "shopsync_pages_session"  # request key of the current Session
#: Bytes a page's form may have: a SKU, a domain, a CSRF token and a few flags fit many times.
FORM_LIMIT = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Session:
    """A logged-in admin: the random id of the session and its CSRF token."""

    __slots__ = ("csrf", "issued", "sid")

    def __init__(self, sid: str, issued: int, csrf: str) -> None:
        self.sid, self.issued, self.csrf = sid, issued, csrf


def _key(admin_token: str) -> bytes:
    # Derived from the admin token, so that a new token logs every browser out.
    return hmac.new(admin_token.encode(), b"shopsync admin pages v1", hashlib.sha256).digest()


def _mac(key: bytes, text: str) -> str:
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue(admin_token: str, now: float) -> str:
    """A new session cookie value: `issued.sid.mac`."""
    payload = f"{int(now)}.{secrets.token_urlsafe(18)}"
    return f"{payload}.{_mac(_key(admin_token), payload)}"


def verify(admin_token: str, value: str, now: float) -> Session | None:
    """The session a cookie value stands for, or None if forged, malformed or expired.

    Any text is answered, bytes that are not UTF-8 included: they are only ever a mismatch.
    """
    if not value.isascii():  # `issue` makes ASCII only; the rest could not even be hashed
        return None
    issued, _, rest = value.partition(".")
    sid, _, mac = rest.partition(".")
    if not (issued.isdigit() and len(issued) <= 12) or not sid or not mac:
        return None
    key = _key(admin_token)
    if not same_secret(mac, _mac(key, f"{issued}.{sid}")):
        return None
    if not 0 <= now - int(issued) <= MAX_AGE:
        return None
    return Session(sid, int(issued), _mac(key, f"csrf.{sid}"))


def current_session(request: web.Request) -> Session | None:
    """The valid, not logged-out session of this request, if any."""
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    cfg = request.config_dict
    session = verify(cfg[keys.SETTINGS].admin_token, value, cfg[keys.CLOCK].now())
    if session is None or cfg[REVOCATIONS].revoked(session.sid, session.issued):
        return None
    return session


def csrf_ok(sent: Any, expected: str) -> bool:
    """Whether a submitted CSRF token is the expected one (constant time)."""
    return isinstance(sent, str) and bool(sent) and bool(expected) and same_secret(sent, expected)


def cookie_secure(request: web.Request) -> bool:
    """Whether cookies must be `Secure`: when the agent is reached over https.

    Behind the TLS proxy the request itself is plain http, so `public_url` decides.
    """
    return request.secure or request.config_dict[keys.SETTINGS].public_url.startswith("https:")


class FormError(Exception):
    """A form that cannot be read: answered with `refused(status, message)`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def read_form(request: web.Request, limit: int = FORM_LIMIT) -> Any:
    """The POSTed form, read with a size cap and a deadline; FormError if it cannot be read.

    The pages send `application/x-www-form-urlencoded` only. A body over `limit` is 413, a
    slow one 408, one that is not text in its charset 400: never a 500.
    """
    if request.content_type == "multipart/form-data":
        raise FormError(400, "The form must be sent URL-encoded, as these pages send it.")
    try:
        await read_body(request, limit)
        return await request.post()
    except BodyError as exc:
        raise FormError(exc.status, exc.message.capitalize() + ".") from None
    except (ValueError, LookupError):  # undecodable in its charset, or an unknown charset
        raise FormError(400, "The form could not be read; reload the page.") from None


def secure(response: web.StreamResponse) -> web.StreamResponse:
    """Add the headers every admin page carries (a stream already started keeps its own)."""
    if response.prepared:
        return response
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def refused(status: int, message: str) -> web.Response:
    """A plain error page: 403 for a bad CSRF token or a POST without a session, 502/503 when
    the admin API fails."""
    body = (
        f"<!doctype html><title>{status}</title><h1>{status}</h1><p>{html.escape(message)}</p>"
        '<p><a href="/">Back to the overview</a></p>'
    )
    response = web.Response(status=status, text=body, content_type="text/html")
    secure(response)
    return response


def page(handler: Handler) -> Handler:
    """Require a session; on POST also the session's CSRF token. Adds the security headers.

    A GET without a session is sent to the log-in page; a POST without one, or with a
    missing or wrong CSRF token, is refused with 403 and does nothing.
    """

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = current_session(request)
        if session is None:
            if request.method in ("GET", "HEAD"):
                target = request.rel_url.path_qs
                location = "/login" if target == "/" else f"/login?next={_quote(target)}"
                raise web.HTTPSeeOther(location)
            return refused(403, "Log in first.")
        if request.method == "POST":
            try:
                form = await read_form(request)
            except FormError as exc:
                return refused(exc.status, exc.message)
            if not csrf_ok(form.get("csrf"), session.csrf):
                return refused(403, "The form's CSRF token is missing or wrong; reload the page.")
        request[SESSION] = session
        try:
            return secure(await handler(request))
        except ApiError as exc:  # the API refused or is unreachable: say so, don't crash
            return refused(502 if exc.status < 500 else 503, f"The agent's API: {exc.message}")

    return wrapped


def _quote(path: str) -> str:
    return quote(path, safe="")


async def forget(request: web.Request, session: Session) -> None:
    """Log a session out: its cookie is refused from now on, across restarts, until it would
    expire anyway."""
    cfg = request.config_dict
    await cfg[REVOCATIONS].log_out(cfg[keys.DB], session.sid, session.issued, cfg[keys.CLOCK].now())
