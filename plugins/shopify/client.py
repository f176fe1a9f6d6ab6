"""A Shopify Admin GraphQL client: cost-bucket pacing, throttle handling and safe retries."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import structlog

from agent.channel import ChannelError, Credentials, CredentialsRefused, Grant
from agent.clock import Clock

__all__ = ["CostExceeded", "ShopifyClient", "ShopifyUnavailable", "client_credentials_grant"]

log = structlog.get_logger(__name__)

_MAX_THROTTLED = 100  # THROTTLED answers are not failures, but a bound keeps a bug from looping
_MAX_BACKOFF = 60.0
_UNAUTHORIZED = {
    "static": "Shopify refused the access token (HTTP 401): check access_token",
    "client_credentials": "Shopify refused a freshly granted token (HTTP 401): check that the "
    "app is installed on the shop",
}
_FATAL_STATUS = {
    400: "Shopify rejected the request as malformed (HTTP 400)",
    402: "the shop is frozen for non-payment (HTTP 402)",
    403: "Shopify forbids this call (HTTP 403): check the app's scopes",
    404: "Shopify answered 404: check api_url and api_version",
    423: "the shop is locked (HTTP 423)",
}
# The line of a token endpoint's error page that says what is wrong.
_OAUTH_ERROR = re.compile(r"Oauth error [a-z_]+:[^<\n]*")
_FATAL_CODES = {
    "ACCESS_DENIED": "Shopify denied access (ACCESS_DENIED): check the app's scopes",
    "SHOP_INACTIVE": "the shop is inactive (SHOP_INACTIVE)",
}


class ShopifyUnavailable(ChannelError):
    """Transient failures (5xx, timeouts, dropped connections) outlasted every retry.

    For a write this means the outcome is unknown: the caller retries with the same key.
    """


class CostExceeded(ChannelError):
    """The query asks for more than Shopify's single-query cost limit (MAX_COST_EXCEEDED)."""


class _Transient(Exception):
    """One attempt failed in a way worth retrying; `retry_after` overrides the backoff."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class ShopifyClient:
    """Sends GraphQL documents to one shop's Admin API endpoint.

    Pacing: the client keeps its own estimate of the shop's cost bucket (the last
    `currentlyAvailable` plus `restoreRate` x elapsed, capped at `maximumAvailable`) and, before
    each call, sleeps on the injected clock until the call's estimated cost plus a small margin
    fits. Calls in flight are debited up front, so concurrent callers share one budget.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        clock: Clock,
        *,
        endpoint: str,
        credentials: Credentials,
        timeout: float = 10.0,
        retry_base: float = 0.5,
        max_retries: int = 8,
        rng: random.Random | None = None,
        on_status: Callable[[float, float], None] | None = None,
    ) -> None:
        self.http = http
        self.clock = clock
        self.endpoint = endpoint
        self.credentials = credentials
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retry_base = retry_base
        self.max_retries = max_retries
        self.rng = rng or random.Random()
        self.on_status = on_status
        # The bucket as last reported (Standard plan until the first answer says otherwise).
        self.maximum = 2000.0
        self.restore_rate = 100.0
        self._level = self.maximum
        self._at = clock.monotonic()
        self._inflight: dict[int, float] = {}
        self._lock = asyncio.Lock()
        # Until the first answer tells the real bucket size, only one call goes out (the probe),
        # so a burst at start-up cannot overrun a bucket smaller than the default guess.
        self._learned = asyncio.Event()
        self._probe: int | None = None
        self.throttled = 0  # THROTTLED answers seen, for tests and metrics
        self.requests = 0  # HTTP requests sent (every attempt), for metrics
        self.retries = 0  # attempts repeated after a transient failure, for metrics

    # -- pacing --------------------------------------------------------------------------------

    def available(self) -> float:
        """The client's estimate of the points available now."""
        now = self.clock.monotonic()
        self._level = min(self.maximum, self._level + (now - self._at) * self.restore_rate)
        self._at = now
        return self._level

    async def _pace(self, cost: float, ticket: int) -> None:
        if not self._learned.is_set():
            if self._probe is None:
                self._probe = ticket
            elif self._probe != ticket:
                await self._learned.wait()
        async with self._lock:
            while True:
                margin = max(1.0, 0.01 * self.maximum)
                need = min(cost + margin, self.maximum)
                have = self.available()
                if have >= need:
                    break
                await self.clock.sleep((need - have) / self.restore_rate)
            self._level -= cost
            self._inflight[ticket] = cost

    def _update(self, body: Any, ticket: int) -> None:
        self._inflight.pop(ticket, None)
        try:
            status = body["extensions"]["cost"]["throttleStatus"]
            maximum = float(status["maximumAvailable"])
            rate = float(status["restoreRate"])
            current = float(status["currentlyAvailable"])
        except (KeyError, TypeError, ValueError):
            return
        if maximum <= 0 or rate <= 0:
            return
        self.maximum, self.restore_rate = maximum, rate
        # Other calls may still be on their way to Shopify: count them as spent (conservative).
        self._level = min(maximum, current) - sum(self._inflight.values())
        self._at = self.clock.monotonic()
        if self.on_status is not None:
            self.on_status(maximum, rate)

    def backoff(self, attempt: int) -> float:
        """Seconds before retry `attempt`: exponential from `retry_base`, with jitter."""
        return min(_MAX_BACKOFF, self.retry_base * 2**attempt) * (0.5 + self.rng.random())

    def budget(self) -> float:
        """The cost bucket's level as this client last knew it, 0 (empty) to 1 (full)."""
        return max(0.0, min(1.0, self.available() / self.maximum)) if self.maximum else 0.0

    # -- calls ---------------------------------------------------------------------------------

    async def call(
        self, document: str, variables: dict[str, Any], *, cost: float
    ) -> dict[str, Any]:
        """Run one document and return its `data`.

        The body is serialised once, so every retry sends identical bytes (what an idempotency
        key needs). Raises `ChannelError` for what a retry cannot fix, `CostExceeded` for
        MAX_COST_EXCEEDED, `ShopifyUnavailable` once transient failures outlast `max_retries`.
        """
        payload = json.dumps({"query": document, "variables": variables}).encode()
        attempt = throttled = 0
        renewed = False
        ticket = id(payload)
        while True:
            await self._pace(cost, ticket)
            try:
                token = await self.credentials.token()
                self.requests += 1
                body = await self._post(payload, ticket, token)
                self.credentials.accepted()
                return self._data(body)
            except _Unauthorized:
                # A 401 is answered before anything runs: renew once and send the same bytes.
                fresh = None if renewed else await self.credentials.renewed(token)
                if fresh is None:
                    refused = _UNAUTHORIZED.get(self.credentials.kind, _UNAUTHORIZED["static"])
                    raise self.credentials.refused(refused) from None
                renewed = True
                log.info("shopify_token_refused", retry=True)
            except _Throttled:
                throttled += 1
                self.throttled += 1
                if throttled > _MAX_THROTTLED:
                    raise ShopifyUnavailable("Shopify kept throttling the call") from None
                log.debug("shopify_throttled", requested=cost, available=round(self._level, 1))
            except _Transient as exc:
                self._inflight.pop(ticket, None)
                if attempt >= self.max_retries:
                    raise ShopifyUnavailable(
                        f"Shopify call failed {attempt + 1} times, last: {exc}"
                    ) from None
                delay = exc.retry_after if exc.retry_after is not None else self.backoff(attempt)
                log.info(
                    "shopify_retry", attempt=attempt + 1, reason=str(exc), delay=round(delay, 3)
                )
                attempt += 1
                self.retries += 1
                await self.clock.sleep(delay)
            finally:
                self._inflight.pop(ticket, None)
                if self._probe == ticket:
                    self._learned.set()

    async def _post(self, payload: bytes, ticket: int, token: str) -> Any:
        headers = {"X-Shopify-Access-Token": token, "Content-Type": "application/json"}
        try:
            async with self.http.post(
                self.endpoint, data=payload, headers=headers, timeout=self.timeout
            ) as response:
                status = response.status
                text = await response.text()
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Transient(type(exc).__name__) from None
        body: Any = None
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        if isinstance(body, dict):
            self._update(body, ticket)
        if _has_code(body, "THROTTLED"):
            raise _Throttled
        if status == 401:
            raise _Unauthorized
        if status in _FATAL_STATUS:
            raise ChannelError(_FATAL_STATUS[status])
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}", _seconds(retry_after) if status == 429 else None)
        if status != 200:
            raise ChannelError(f"Shopify answered HTTP {status}")
        if not isinstance(body, dict):
            raise _Transient("HTTP 200 without a JSON object")
        return body

    @staticmethod
    def _data(body: dict[str, Any]) -> dict[str, Any]:
        errors = body.get("errors") or []
        if errors:
            for code, message in _FATAL_CODES.items():
                if _has_code(body, code):
                    said = _messages(errors)[:300]  # e.g. which scope the field requires
                    raise ChannelError(f"{message} ({said})" if said else message)
            if _has_code(body, "MAX_COST_EXCEEDED"):
                raise CostExceeded(_messages(errors))
            if _has_code(body, "INTERNAL_SERVER_ERROR"):
                raise _Transient("INTERNAL_SERVER_ERROR")
            if body.get("data") is None:
                raise ChannelError(f"Shopify refused the query: {_messages(errors)}")
            log.warning("shopify_partial_errors", errors=_messages(errors))
        data = body.get("data")
        if not isinstance(data, dict):
            raise _Transient("reply without data")
        return data

    async def lines(self, url: str) -> AsyncIterator[dict[str, Any]]:
        """The JSON lines of a bulk operation result (a pre-signed URL: no token is sent)."""
        per_read = self.timeout.total
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=per_read, sock_read=per_read)
        attempt = 0
        while True:
            started = False
            try:
                async with self.http.get(url, timeout=timeout) as resp:
                    if resp.status != 200:
                        raise _Transient(f"HTTP {resp.status}")
                    async for raw in resp.content:
                        line = raw.strip()
                        if line:
                            started = True
                            yield json.loads(line)
                    return
            except (aiohttp.ClientError, TimeoutError, _Transient) as exc:
                # Once lines were handed out, a retry would repeat them: give up instead.
                if started or attempt >= self.max_retries:
                    raise ShopifyUnavailable(f"bulk result download failed: {exc}") from None
                attempt += 1
                await self.clock.sleep(self.backoff(attempt))


async def client_credentials_grant(
    http: aiohttp.ClientSession,
    clock: Clock,
    url: str,
    client_id: str,
    client_secret: str,
    *,
    timeout: float,
) -> Grant:
    """A token from the OAuth client-credentials grant of a Dev Dashboard app (valid 24 h).

    Raises `ChannelError` when Shopify refuses the credentials, `ShopifyUnavailable` when it
    cannot be reached. The secret travels only in the request body; nothing here logs it.
    """
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
    }
    try:
        async with http.post(
            url, data=form, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            status, text = response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ShopifyUnavailable(
            f"cannot reach Shopify for a token: {type(exc).__name__}"
        ) from None
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if status >= 500 or status == 429:
        raise ShopifyUnavailable(f"Shopify answered HTTP {status} to the token request")
    token = body.get("access_token") if isinstance(body, dict) else None
    if status != 200 or not isinstance(token, str) or not token:
        detail = ""
        if isinstance(body, dict):
            detail = str(body.get("error_description") or body.get("error") or "")
        else:  # an error page: "Oauth error app_not_installed: The application is not ..."
            said = _OAUTH_ERROR.search(text)
            detail = said.group(0).strip() if said else ""
        detail = f", {detail[:200]}" if detail else ""
        raise CredentialsRefused(
            f"Shopify refused the client credentials (HTTP {status}{detail}): check client_id "
            "and client_secret, and that the app is installed on the shop"
        )
    assert isinstance(body, dict)
    expires_in = body.get("expires_in")
    expires_at = None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        expires_at = clock.now() + float(expires_in)
    return Grant(token, expires_at, str(body.get("scope") or ""))


class _Unauthorized(Exception):
    """Shopify answered 401: the token is wrong or expired."""


class _Throttled(Exception):
    """Shopify answered THROTTLED; the bucket state was updated from its throttleStatus."""


def _has_code(body: Any, code: str) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return False
    return any(
        isinstance(e, dict) and (e.get("extensions") or {}).get("code") == code
        for e in body["errors"]
    )


def _messages(errors: Any) -> str:
    if isinstance(errors, list):
        return "; ".join(
            str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors
        )
    return str(errors)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
