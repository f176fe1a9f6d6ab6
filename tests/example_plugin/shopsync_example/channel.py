"""`AcmeChannel`: one Acme shop through its REST API (see `shopsync_example.emulator`).

Small but honest: cursor pages, batched reads, compare-and-set writes under the core's
idempotency key (a lost answer is retried with the same key, so it is never applied twice),
signed webhooks, and a client-side copy of the shop's rate bucket so bursts wait, not fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from agent.channel import (
    Channel,
    ChannelError,
    ChannelSettings,
    ConfigError,
    Item,
    RateBudget,
    WebhookHint,
    WebhookRejected,
    Write,
    WriteResult,
)

if TYPE_CHECKING:
    from agent.clock import Clock

__all__ = ["AcmeChannel", "AcmeSettings"]

MAX_IDS = 50
TOPIC = "stock.changed"
# A batch split into several calls gives each call a key derived from the core's key.
KEY_NAMESPACE = uuid.UUID("1b7e3c0e-8f3a-4d52-9a57-3f0c8e6d2a41")


class AcmeUnavailable(Exception):
    """No definite answer after every retry (timeouts, 5xx, dropped connections)."""


@dataclasses.dataclass
class AcmeSettings(ChannelSettings):
    """The ``[channel.options]`` of an Acme shop."""

    api_url: str
    access_token: str = dataclasses.field(repr=False)
    webhook_secret: str = dataclasses.field(repr=False)
    page_size: int = 25
    timeout: float = 10.0
    retry_base: float = 0.5
    max_retries: int = 5

    def __post_init__(self) -> None:
        self.api_url = str(self.api_url).rstrip("/")
        if not self.api_url.startswith(("http://", "https://")):
            raise ConfigError("channel option api_url must be an http(s) URL")
        if not self.access_token or not self.webhook_secret:
            raise ConfigError("channel options access_token and webhook_secret are required")
        if not 1 <= self.page_size <= 25:
            raise ConfigError("channel option page_size must be 1..25")


class AcmeChannel(Channel):
    """One Acme shop; `item_id` is Acme's stock item id."""

    name = "acme"
    settings_class = AcmeSettings
    budget = RateBudget(bucket=10, restore_rate=5, max_write_batch=MAX_IDS, max_read_batch=MAX_IDS)

    def __init__(
        self, settings: ChannelSettings, *, http: aiohttp.ClientSession, clock: Clock
    ) -> None:
        if not isinstance(settings, AcmeSettings):
            raise ConfigError("AcmeChannel needs AcmeSettings")
        super().__init__(settings, http=http, clock=clock)
        self.options = settings
        self._tokens = self.budget.bucket
        self._at = clock.monotonic()
        self._pace = asyncio.Lock()

    # -- HTTP --------------------------------------------------------------------------------

    async def _take_token(self) -> None:
        """Wait for a request's worth of our copy of the shop's bucket."""
        async with self._pace:
            while True:
                now = self.clock.monotonic()
                refill = (now - self._at) * self.budget.restore_rate
                self._tokens = min(self.budget.bucket, self._tokens + refill)
                self._at = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await self.clock.sleep((1 - self._tokens) / self.budget.restore_rate)

    async def _call(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None,
        body: Any = None, key: str | None = None,
    ) -> Any:  # fmt: skip
        """One API call; timeouts, 5xx and 429 are retried (writes with the same key)."""
        headers = {"Authorization": f"Bearer {self.options.access_token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        data = None if body is None else json.dumps(body, sort_keys=True).encode()
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        for attempt in range(self.options.max_retries + 1):
            await self._take_token()
            wait = self.options.retry_base * 2**attempt
            try:
                async with self.http.request(
                    method, self.options.api_url + path, params=params, data=data,
                    headers={**headers, "Content-Type": "application/json"}, timeout=timeout,
                ) as resp:  # fmt: skip
                    answer = await resp.json(content_type=None)
                    if resp.status == 429:
                        wait = float(resp.headers.get("Retry-After", wait))
                    elif resp.status == 401:  # told to the core: its credentials alert
                        raise self.credentials.refused(
                            f"Acme refused the access token on {path}: check access_token"
                        )
                    elif resp.status < 500:
                        if resp.status >= 400:
                            raise ChannelError(f"Acme {method} {path}: {resp.status} {answer}")
                        self.credentials.accepted()
                        return answer
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass  # outcome unknown; the idempotency key makes the retry safe
            await self.clock.sleep(wait)
        raise AcmeUnavailable(f"Acme {method} {path}: no answer after retries")

    # -- reading -----------------------------------------------------------------------------

    async def list_items(self) -> AsyncIterator[Item]:
        """Every item, page by page along the cursor."""
        cursor = "0"
        while cursor:
            params = {"limit": str(self.options.page_size), "cursor": cursor}
            page = await self._call("GET", "/v1/items", params=params)
            for row in page["items"]:
                created = dt.datetime.fromisoformat(row["created_at"].replace("Z", "+00:00"))
                yield Item(
                    item_id=row["id"],
                    sku=row.get("sku") or None,
                    available=int(row["available"]),
                    created_at=created.timestamp(),
                    title=row.get("title", ""),
                )
            cursor = page.get("next_cursor") or ""

    async def read(self, item_ids: Sequence[str]) -> dict[str, int | None]:
        """Counts, 50 ids a call; None for ids the shop lacks."""
        counts: dict[str, int | None] = dict.fromkeys(item_ids)
        ids = [i for i in counts if i.isdigit()]
        for start in range(0, len(ids), MAX_IDS):
            chunk = ids[start : start + MAX_IDS]
            answer = await self._call("GET", "/v1/stock", params={"ids": ",".join(chunk)})
            for row in answer["stock"]:
                counts[row["id"]] = int(row["available"])
        return counts

    # -- writing -----------------------------------------------------------------------------

    async def write(self, writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        """Compare-and-set, 50 rows a call; a call without a definite answer → unknown."""
        results: list[WriteResult] = []
        chunks = [writes[n : n + MAX_IDS] for n in range(0, len(writes), MAX_IDS)]
        for number, chunk in enumerate(chunks):
            call_key = (
                key if len(chunks) == 1 else str(uuid.uuid5(KEY_NAMESPACE, f"{key}/{number}"))
            )
            changes = [
                {"id": w.item_id, "expected": w.expected, "available": w.target} for w in chunk
            ]
            try:
                answer = await self._call(
                    "POST", "/v1/stock", body={"changes": changes}, key=call_key
                )
            except AcmeUnavailable as exc:
                results.extend(WriteResult(w.item_id, "unknown", message=str(exc)) for w in chunk)
                continue
            for write, row in zip(chunk, answer["results"], strict=True):
                results.append(_result(write, row))
        return results

    # -- webhooks ----------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookHint:
        """Check ``X-Acme-Signature`` over the raw body, then name the item that changed."""
        lower = {k.lower(): v for k, v in headers.items()}
        given = lower.get("x-acme-signature", "")
        secret = self.options.webhook_secret.encode()
        wanted = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not given or not hmac.compare_digest(given.encode(), wanted.encode()):
            raise WebhookRejected("bad or missing X-Acme-Signature")
        topic = lower.get("x-acme-topic", "")
        if topic != TOPIC:
            raise WebhookRejected(f"unexpected topic {topic!r}")
        try:
            payload = json.loads(body)
            item_id, sku = str(payload["id"]), payload.get("sku") or ""
        except (ValueError, KeyError, TypeError):
            raise WebhookRejected("malformed stock.changed body") from None
        return WebhookHint(
            topic=topic,
            item_ids=(item_id,),
            skus=(sku,) if sku else (),
            delivery_id=lower.get("x-acme-delivery", ""),
        )

    async def subscribe(self, callback_url: str) -> None:
        """Subscribe `callback_url` to ``stock.changed`` unless it already is."""
        existing = await self._call("GET", "/v1/webhooks")
        if any(w["topic"] == TOPIC and w["url"] == callback_url for w in existing["webhooks"]):
            return
        await self._call("POST", "/v1/webhooks", body={"topic": TOPIC, "url": callback_url})


def _result(write: Write, row: dict[str, Any]) -> WriteResult:
    if row.get("id") != write.item_id:
        return WriteResult(write.item_id, "unknown", message="answer rows out of order")
    if row["status"] == "applied":
        return WriteResult(write.item_id, "ok", available=row["available"])
    if row["status"] == "stale":
        return WriteResult(write.item_id, "conflict", available=row["available"])
    return WriteResult(write.item_id, "error", message=f"Acme: {row['status']}")
