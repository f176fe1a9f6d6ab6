"""HTTP client of the Pisell Open API: signed calls, envelopes, paging, pacing and retries."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import random
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from agent.channel import ChannelError, Credentials, StaticToken
from plugins.pisell import wire

if TYPE_CHECKING:
    from agent.clock import Clock

__all__ = ["ClientConfig", "Pacer", "PisellClient", "PisellRefused", "PisellUnavailable"]

log = structlog.get_logger(__name__)

MAX_BACKOFF = 30.0
# A hair more than the exact refill time, so float rounding never makes a request early.
PACING_MARGIN = 0.002


class PisellUnavailable(ConnectionError):
    """No definite answer after every retry (timeouts, 5xx, dropped connections, 429s).

    For a write this means the outcome is unknown: it may have been applied. A
    `ConnectionError`, so callers that treat network trouble as transient treat this so too.
    """


class PisellRefused(ChannelError):
    """A definite refusal (4xx, or an error envelope): retrying the same call will not help."""

    def __init__(self, status: int, error_code: str | None, message: str) -> None:
        super().__init__(f"Pisell refused the call (HTTP {status}, {error_code}): {message}")
        self.status = status
        self.error_code = error_code


@dataclasses.dataclass(frozen=True, slots=True)
class ClientConfig:
    """Where and as whom to call, and how patiently."""

    api_url: str
    client_id: str
    access_token: str = dataclasses.field(repr=False)
    client_secret: str = dataclasses.field(repr=False)
    timeout: float = 10.0
    retry_base: float = 0.5
    max_retries: int = 8
    bucket: float = 20.0
    restore_rate: float = 5.0


class Pacer:
    """The client's copy of the server's token bucket, so bursts wait instead of getting 429s.

    It refills at the documented rate and follows the server's `X-RateLimit-*` headers, so
    another client spending the same bucket slows us too. The server may not yet have counted
    requests sent after the one it answers, so an answer's `remaining` is read as "less every
    later request still in flight"; only the newest answer so far may raise the estimate (an
    older one arriving late is stale and may only lower it).
    """

    def __init__(self, clock: Clock, capacity: float, rate: float) -> None:
        self.clock = clock
        self.capacity = capacity
        self.rate = rate
        self.level = capacity
        self._at = clock.monotonic()
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()
        self._in_flight: set[int] = set()
        self._tickets = itertools.count()
        self._newest = -1

    def _refill(self) -> float:
        now = self.clock.monotonic()
        self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
        self._at = now
        return now

    async def acquire(self) -> int:
        """Wait until one request may go, spend it, and return its ticket."""
        async with self._lock:  # one waiter at a time keeps the order fair
            while True:
                now = self._refill()
                wait = self._blocked_until - now
                if self.level < 1.0:
                    wait = max(wait, (1.0 - self.level) / self.rate + PACING_MARGIN)
                if wait <= 0:
                    self.level -= 1.0
                    ticket = next(self._tickets)
                    self._in_flight.add(ticket)
                    return ticket
                await self.clock.sleep(wait)

    def left(self) -> float:
        """The share of the bucket left now, 0 (empty: requests wait) to 1 (full)."""
        self._refill()
        return max(0.0, min(1.0, self.level / self.capacity)) if self.capacity > 0 else 0.0

    def release(self, ticket: int) -> None:
        """The request of `ticket` is answered (or failed)."""
        self._in_flight.discard(ticket)

    def observe(self, ticket: int, limit: int | None, remaining: int | None) -> None:
        """Correct the estimate from the headers of the answer to `ticket`."""
        self._refill()
        if limit is not None and limit > 0:
            self.capacity = float(limit)
        if remaining is not None:
            later = sum(1 for t in self._in_flight if t > ticket)
            estimate = min(self.capacity, float(remaining - later))
            if ticket > self._newest:
                self._newest = ticket
                self.level = estimate
            else:
                self.level = min(self.level, estimate)

    def pause(self, seconds: float) -> None:
        """After a 429: no request before `Retry-After` has passed."""
        now = self._refill()
        self._blocked_until = max(self._blocked_until, now + seconds)
        self.level = min(self.level, 0.0)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(float(headers[name]))
    except (KeyError, ValueError):
        return None


class PisellClient:
    """Signed calls with the envelope unwrapped; retries what has no definite answer.

    Every call is paced by `Pacer`. A 429 waits `Retry-After`; a 5xx, a timeout or a dropped
    connection is retried with exponential backoff and jitter, sending the *same body bytes and
    idempotency key*, up to `max_retries` times, then raises `PisellUnavailable`. 401 and 403
    raise `CredentialsRefused`; other refusals raise `PisellRefused`.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        config: ClientConfig,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.http = http
        self.config = config
        # told of refusals and acceptances (the core's credentials alert); Pisell's tokens are
        # static, so nothing is renewed
        self.credentials = credentials or StaticToken(config.access_token)
        self.clock = clock
        self.rng = rng or random.Random()
        self.pacer = Pacer(clock, config.bucket, config.restore_rate)
        self.requests = self.throttled = self.retries = 0  # since start, for `/metrics`

    def _headers(self, key: str | None, has_body: bool) -> dict[str, str]:
        cfg = self.config
        headers = wire.auth_headers(
            client_id=cfg.client_id, access_token=cfg.access_token,
            client_secret=cfg.client_secret, now=self.clock.now(),
        )  # fmt: skip
        if key is not None:
            headers[wire.H_IDEMPOTENCY_KEY] = key
        if has_body:
            headers["Content-Type"] = "application/json"
        return headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        key: str | None = None,
    ) -> wire.Envelope:
        """One API call until a definite answer; returns the success envelope."""
        url = self.config.api_url + path
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        failures = 0
        while True:
            ticket = await self.pacer.acquire()
            self.requests += 1
            headers = self._headers(key, payload is not None)  # re-signed: a fresh Timestamp
            try:
                async with self.http.request(
                    method, url, params=params, data=payload, headers=headers, timeout=timeout
                ) as resp:
                    raw = await resp.read()
                    status, answer_headers = resp.status, resp.headers
                    self.pacer.observe(
                        ticket,
                        _int_header(answer_headers, wire.H_RATE_LIMIT),
                        _int_header(answer_headers, wire.H_RATE_REMAINING),
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
            else:
                envelope = self._definite(status, raw, path)
                if envelope is not None:
                    return envelope
                reason = f"HTTP {status}"
                if status == 429:
                    self.throttled += 1
                    retry_after = answer_headers.get(wire.H_RETRY_AFTER, "1")
                    self.pacer.pause(self._retry_after(retry_after))
            finally:
                self.pacer.release(ticket)
            failures += 1
            if failures > self.config.max_retries:
                log.warning("pisell_call_gave_up", method=method, path=path, reason=reason,
                            attempts=failures)  # fmt: skip
                raise PisellUnavailable(
                    f"{method} {path}: no definite answer after {failures} attempts ({reason})"
                )
            log.info("pisell_call_retry", method=method, path=path, reason=reason,
                     attempt=failures)  # fmt: skip
            self.retries += 1
            if reason != "HTTP 429":  # a 429 waits in the pacer instead
                await self.clock.sleep(self._backoff(failures))

    def _definite(self, status: int, raw: bytes, path: str) -> wire.Envelope | None:
        """The envelope of a definite success; raises on a definite refusal; else None."""
        if status == 429 or status >= 500:
            return None
        try:
            envelope = wire.parse_envelope(raw)
        except ValueError:
            if 200 <= status < 300:
                return None  # a garbled success says nothing definite; the key makes a retry safe
            envelope = wire.Envelope(False, status, "not a Pisell envelope", None, None)
        if status in (401, 403):
            # The server's message may echo what we sent; keep it out of errors and logs.
            raise self.credentials.refused(
                f"Pisell refused the credentials (HTTP {status}, {envelope.error_code}) on {path}:"
                " check access_token, client_id and client_secret"
            )
        if 200 <= status < 300 and envelope.ok:
            self.credentials.accepted()
            return envelope
        if envelope.code == 429 or envelope.code >= 500:
            return None  # a server error wrapped in a 2xx envelope: no definite answer either
        raise PisellRefused(status, envelope.error_code, envelope.message)

    def _backoff(self, failures: int) -> float:
        ceiling = min(MAX_BACKOFF, self.config.retry_base * 2 ** (failures - 1))
        return ceiling * self.rng.uniform(0.5, 1.0)

    @staticmethod
    def _retry_after(value: str) -> float:
        try:
            return max(0.0, float(value))
        except ValueError:
            return 1.0  # an HTTP date: rare enough to wait a plain second

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """The `data` of a GET."""
        return (await self.call("GET", path, params=params)).data

    async def pages(
        self, path: str, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every page of a list, by cursor (stable under inserts), `size` 100."""
        cursor: str | None = None
        while True:
            query = {**(params or {}), wire.Q_SIZE: str(wire.MAX_PAGE_SIZE)}
            if cursor is not None:
                query[wire.Q_CURSOR] = cursor
            page = wire.parse_page(await self.get(path, query))
            yield page.rows
            if page.next_cursor is None:
                return
            if page.next_cursor == cursor:
                raise PisellRefused(200, None, f"{path}: the cursor did not move")
            cursor = page.next_cursor
