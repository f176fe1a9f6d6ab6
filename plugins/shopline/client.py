"""HTTP client of the SHOPLINE Open API: URLs, auth, self-pacing, retries and pagination."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import hmac
import json
import random
import re
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import structlog

from agent.channel import ChannelError, Credentials, CredentialsRefused, Grant
from agent.clock import Clock

__all__ = [
    "OutcomeUnknown",
    "Pacer",
    "RequestRefused",
    "Response",
    "ShoplineClient",
    "ShoplineUnavailable",
    "format_time",
    "next_page_info",
    "parse_time",
    "refresh_grant",
]

log = structlog.get_logger(__name__)

# Statuses no retry will fix: the operator must act (token, scope, store frozen or locked).
_FATAL = {
    401: "the access token is missing, invalid or expired",
    402: "the store is frozen",
    403: "the app lacks the scope for this call",
    423: "the store is locked",
}
_LINK = re.compile(r"<([^>]*)>\s*;\s*rel=\"?([A-Za-z]+)\"?")
# Waiting a hair longer than the bucket says keeps float rounding from ever costing a 429.
_PACE_MARGIN = 0.001
_MAX_BACKOFF = 60.0


class OutcomeUnknown(Exception):
    """A write was sent but its outcome was not learnt (timeout, 5xx, dropped connection)."""


class ShoplineUnavailable(ConnectionError):
    """The platform kept failing (429, 5xx, network) through every retry; try again later."""


class RequestRefused(ChannelError):
    """The platform refused the call for good (400, 404, 422…); `status` says which."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """One answered request: status, parsed JSON body, headers, and when it was in flight.

    `sent` and `received` are wall-clock readings of the injected clock: the platform's state
    the body shows was taken somewhere between them.
    """

    status: int
    body: Any
    headers: Mapping[str, str]
    sent: float
    received: float


def parse_time(value: str) -> tuple[float, float]:
    """An ISO 8601 timestamp as (epoch seconds, resolution in seconds).

    SHOPLINE prints whole seconds, so the true moment lies in [t, t + resolution).
    """
    text = value.strip()
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    match = re.search(r"T\d\d:\d\d:\d\d(?:\.(\d+))?", text)
    digits = len(match.group(1)) if match and match.group(1) else 0
    return moment.timestamp(), 10.0 ** -min(digits, 6)


def format_time(epoch: float) -> str:
    """Epoch seconds as the ISO 8601 form SHOPLINE's filters take (UTC, whole seconds)."""
    moment = datetime.datetime.fromtimestamp(int(epoch // 1), tz=datetime.UTC)
    return moment.isoformat(timespec="seconds")


def next_page_info(link: str | None) -> str | None:
    """The opaque `page_info` of the `rel="next"` URL in a `link` header, if any."""
    for url, rel in _LINK.findall(link or ""):
        if rel.lower() == "next":
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
            values = query.get("page_info")
            if values:
                return values[0]
    return None


def _errors_text(body: Any) -> str:
    if isinstance(body, dict) and "errors" in body:
        errors = body["errors"]
        return errors if isinstance(errors, str) else json.dumps(errors, sort_keys=True)
    return ""


async def refresh_grant(
    http: aiohttp.ClientSession,
    clock: Clock,
    url: str,
    app_key: str,
    app_secret: str,
    *,
    timeout: float,
) -> Grant:
    """A new app token from SHOPLINE's ``POST /admin/oauth/token/refresh`` (valid 10 h).

    Signed as SHOPLINE's SDK signs it: headers ``appkey``, ``timestamp`` (milliseconds) and
    ``sign`` = hex HMAC-SHA256 keyed with the app secret over body + timestamp (the body is
    empty). Raises `ChannelError` when SHOPLINE refuses, `ShoplineUnavailable` when it cannot
    be reached; the secret never leaves this function but as that signature.
    """
    timestamp = str(int(clock.now() * 1000))
    sign = hmac.new(app_secret.encode(), timestamp.encode(), hashlib.sha256).hexdigest()
    headers = {
        "appkey": app_key,
        "timestamp": timestamp,
        "sign": sign,
        "Content-Type": "application/json",
    }
    try:
        async with http.post(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            status, raw = resp.status, await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ShoplineUnavailable(f"token refresh failed: {type(exc).__name__}") from None
    if status == 429 or status >= 500:
        raise ShoplineUnavailable(f"token refresh answered HTTP {status}")
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    data = body.get("data") if isinstance(body, dict) else None
    token = data.get("accessToken") if isinstance(data, dict) else None
    # success says "code": 200 (a number in the SDK's TokenResponse); refusals say it as text
    accepted = status == 200 and isinstance(body, dict) and str(body.get("code")) == "200"
    if not accepted or not isinstance(token, str) or not token:
        detail = ""
        if isinstance(body, dict):
            said = body.get("message") or body.get("errors") or body.get("i18nCode") or ""
            detail = str(said)[:200]
        raise CredentialsRefused(
            f"SHOPLINE refused to refresh the app token (HTTP {status}, {detail or 'no detail'})"
            ": check app_key and app_secret, and that the app is installed in the store"
        )
    assert isinstance(data, dict)
    expires_at = None
    if isinstance(data.get("expireTime"), str):
        try:
            expires_at = parse_time(data["expireTime"])[0]
        except ValueError:
            expires_at = None
    return Grant(token, expires_at, str(data.get("scope") or ""))


class Pacer:
    """A local leaky bucket that keeps our requests within SHOPLINE's `burst` and `rate`.

    SHOPLINE sends no usage headers, so we count ourselves, pessimistically: a request in
    flight counts as a whole unit, and a finished one starts draining only when its answer
    arrives (the latest moment the platform can have counted it). Counting from the send
    would let requests delayed on the way bunch up at the platform and meet 429s.
    """

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._fill = 0.0  # units the platform has counted and not drained yet, at most
        self._at = clock.monotonic()
        self._in_flight = 0
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()

    def _leak(self) -> None:
        now = self.clock.monotonic()
        self._fill = max(0.0, self._fill - (now - self._at) * self.rate)
        self._at = now

    async def acquire(self) -> None:
        """Wait until one more request fits, and count it as in flight."""
        async with self._lock:  # FIFO: the first caller to wait is the first served
            while True:
                self._leak()
                excess = self._fill + self._in_flight + 1.0 - self.burst
                if excess <= 0:
                    self._in_flight += 1
                    return
                if self._in_flight + 1 > self.burst:
                    # Only an answer can make room: time alone drains nothing in flight.
                    self._released.clear()
                    await self._released.wait()
                    continue
                await self.clock.sleep(excess / self.rate + _PACE_MARGIN)

    def release(self) -> None:
        """The request's answer (or failure) arrived: it now drains like a counted one."""
        self._leak()
        self._in_flight -= 1
        self._fill += 1.0
        self._released.set()

    def throttled(self) -> None:
        """A 429 came: the platform's bucket is full, whatever we counted."""
        self._leak()
        self._fill = max(self._fill, self.burst)

    def left(self) -> float:
        """The share of the bucket free now, 0 (full: requests wait) to 1 (empty)."""
        self._leak()
        return max(0.0, 1.0 - (self._fill + self._in_flight) / self.burst)


class ShoplineClient:
    """Calls `{api_url}/admin/openapi/{version}/{endpoint}.json` paced, authenticated and retried.

    Reads are retried with exponential backoff and jitter on 429, 5xx and network errors. Writes
    are retried only when the platform certainly did not apply them (429, connection refused);
    any other failure raises `OutcomeUnknown`, because a SHOPLINE write has no idempotency key
    and a blind retry could apply it twice.
    """

    def __init__(
        self,
        *,
        http: aiohttp.ClientSession,
        clock: Clock,
        api_url: str,
        api_version: str,
        credentials: Credentials,
        timeout: float,
        retry_base: float,
        max_retries: int,
        rate: float,
        burst: int,
        rng: random.Random | None = None,
    ) -> None:
        self.http = http
        self.clock = clock
        self.base = f"{api_url.rstrip('/')}/admin/openapi/{api_version}/"
        self.credentials = credentials
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retry_base = retry_base
        self.max_retries = max_retries
        self.pacer = Pacer(rate, burst, clock)
        self.rng = rng or random.Random()
        self.requests = self.throttled = self.retries = 0  # since start, for `/metrics`

    def url(self, endpoint: str) -> str:
        """The full URL of `endpoint` (given without `.json`)."""
        return f"{self.base}{endpoint}.json"

    async def _send(
        self, method: str, endpoint: str, params: Mapping[str, Any] | None, body: Any
    ) -> Response:
        """One request; a 401 (answered before anything is applied) renews the token once and
        sends again. Token renewal failures raise `ChannelError` or `ShoplineUnavailable`."""
        token = await self.credentials.token()
        resp = await self._send_once(method, endpoint, params, body, token)
        if resp.status == 401:
            fresh = await self.credentials.renewed(token)
            if fresh is not None:
                log.info("shopline_token_refused", endpoint=endpoint, retry=True)
                resp = await self._send_once(method, endpoint, params, body, fresh)
        # accepted; a 401 still here is refused where it is raised (`_check`)
        if resp.status < 500 and resp.status not in (401, 429):
            self.credentials.accepted()
        return resp

    async def _send_once(
        self,
        method: str,
        endpoint: str,
        params: Mapping[str, Any] | None,
        body: Any,
        token: str,
    ) -> Response:
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
        }
        await self.pacer.acquire()
        self.requests += 1
        try:
            sent = self.clock.now()
            async with self.http.request(
                method,
                self.url(endpoint),
                params=dict(params) if params else None,
                data=data,
                headers=headers,
                timeout=self.timeout,
            ) as resp:
                raw = await resp.read()
                received = self.clock.now()
        finally:
            self.pacer.release()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return Response(resp.status, parsed, resp.headers, sent, received)

    def _check(self, method: str, endpoint: str, resp: Response) -> None:
        if resp.status < 300:
            return
        detail = _errors_text(resp.body)
        if resp.status == 401:  # still refused after a renewal (`_send`)
            raise self.credentials.refused(
                f"SHOPLINE refused {method} {endpoint}: HTTP 401, {_FATAL[401]} "
                f"({detail or 'no detail'}): check access_token (or app_key and app_secret), "
                "and that the app is installed"
            )
        if resp.status in _FATAL:
            raise ChannelError(
                f"SHOPLINE refused {method} {endpoint}: HTTP {resp.status}, "
                f"{_FATAL[resp.status]} ({detail or 'no detail'})"
            )
        raise RequestRefused(
            resp.status, f"SHOPLINE refused {method} {endpoint}: HTTP {resp.status} {detail}"
        )

    def _backoff(self, attempt: int) -> float:
        self.retries += 1  # asked only before a retry
        return min(_MAX_BACKOFF, self.retry_base * 2**attempt) * self.rng.uniform(0.5, 1.5)

    async def get(self, endpoint: str, params: Mapping[str, Any] | None = None) -> Response:
        """GET `endpoint`, retrying transient failures; raises on refusal or exhaustion."""
        for attempt in range(self.max_retries + 1):
            try:
                resp = await self._send("GET", endpoint, params, None)
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
            else:
                if resp.status != 429 and resp.status < 500:
                    self._check("GET", endpoint, resp)
                    return resp
                if resp.status == 429:
                    self.pacer.throttled()
                    self.throttled += 1
                reason = f"http_{resp.status}"
            if attempt == self.max_retries:
                break
            delay = self._backoff(attempt)
            log.warning("shopline_retry", endpoint=endpoint, reason=reason, delay=round(delay, 3))
            await self.clock.sleep(delay)
        raise ShoplineUnavailable(f"GET {endpoint} failed {self.max_retries + 1} times: {reason}")

    async def post(self, endpoint: str, body: Any) -> Response:
        """POST a write once; retried only while it certainly was not applied.

        Raises `OutcomeUnknown` on a timeout, a dropped connection or a 5xx,
        `ShoplineUnavailable` when 429s outlast every retry (nothing was applied).
        """
        for attempt in range(self.max_retries + 1):
            try:
                resp = await self._send("POST", endpoint, None, body)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # The request never reached the platform: safe to send again.
                reason = type(exc).__name__
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise OutcomeUnknown(f"POST {endpoint}: {type(exc).__name__}") from exc
            else:
                if resp.status >= 500:
                    raise OutcomeUnknown(f"POST {endpoint}: HTTP {resp.status}")
                if resp.status != 429:
                    self._check("POST", endpoint, resp)
                    return resp
                self.pacer.throttled()
                self.throttled += 1
                reason = "http_429"
            if attempt == self.max_retries:
                break
            delay = self._backoff(attempt)
            log.warning("shopline_retry", endpoint=endpoint, reason=reason, delay=round(delay, 3))
            await self.clock.sleep(delay)
        raise ShoplineUnavailable(f"POST {endpoint} not accepted after {attempt + 1} tries")

    async def pages(
        self, endpoint: str, params: Mapping[str, Any], key: str
    ) -> AsyncIterator[tuple[list[Any], Response]]:
        """Every page of a list endpoint: (the rows under `key`, the response), in order.

        Follows the `link` header's `rel="next"`; its `page_info` is opaque and, per SHOPLINE,
        replaces every filter but `limit`, so only those two are sent after the first page.
        """
        query: dict[str, Any] = dict(params)
        while True:
            resp = await self.get(endpoint, query)
            rows = resp.body.get(key, []) if isinstance(resp.body, dict) else []
            yield rows, resp
            page_info = next_page_info(resp.headers.get("link"))
            if not page_info:
                return
            query = {"page_info": page_info}
            if "limit" in params:
                query["limit"] = params["limit"]
