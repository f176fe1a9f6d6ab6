"""Notifications: when alerts open or clear, a signed webhook and an e-mail, from an outbox.

Every change of the alerts (`agent.alerts`) becomes one message per channel (webhook, e-mail)
holding the alerts that opened and cleared, filtered by the kinds that channel wants. Messages
go into an outbox kept in the database (state key "notify_outbox") before any is sent, so a
crash or a restart loses none; a delivery that fails for a reason that may pass (a network
error, a timeout, 429 or 5xx, an SMTP error) is retried with exponential backoff (5 s, 10 s,
20 s … up to 10 min, at most `MAX_ATTEMPTS` times), and every outcome is a `notification` row
in the sync log. A refusal that will not pass (another 4xx) is given up at once.

The webhook is a POST of JSON with `X-Shopsync-Timestamp` (Unix seconds) and
`X-Shopsync-Signature: sha256=HEX`, the HMAC-SHA256 with the shared secret of
`TIMESTAMP.BODY` (the raw body bytes): a receiver recomputes it and refuses a timestamp more
than five minutes old, so a captured message cannot be replayed later. E-mail goes through
SMTP (`aiosmtplib`), with STARTTLS or TLS and a login when configured.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import json
import secrets
from email.message import EmailMessage
from typing import Any

import aiohttp
import structlog

from agent import synclog
from agent.alerts import KINDS, Alert
from agent.clock import Clock
from agent.db import Database

__all__ = ["MAX_ATTEMPTS", "NotifySettings", "Notifier", "sign", "verify"]

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 8
FIRST_RETRY = 5.0  # seconds; doubled after each failure
LONGEST_RETRY = 600.0
TIMEOUT = 15.0  # seconds one delivery may take
TOLERANCE = 300  # seconds a receiver should accept a signature's timestamp for
OUTBOX = "notify_outbox"


@dataclasses.dataclass(frozen=True, slots=True)
class NotifySettings:
    """`[notify]` of the config: where notifications go, and which kinds each channel wants."""

    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_kinds: tuple[str, ...] = tuple(KINDS)
    email_to: tuple[str, ...] = ()
    email_from: str = ""
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_security: str = "starttls"  # starttls | tls | none
    email_kinds: tuple[str, ...] = tuple(KINDS)

    @property
    def channels(self) -> list[str]:
        """The channels configured: "webhook", "email"."""
        return [
            name for name, on in (("webhook", self.webhook_url), ("email", self.email_to)) if on
        ]

    def to_wire(self) -> dict[str, Any]:
        """The settings as written to the config (defaults left out)."""
        default = NotifySettings()
        return {
            f.name: list(v) if isinstance(v, tuple) else v
            for f in dataclasses.fields(self)
            if (v := getattr(self, f.name)) != getattr(default, f.name)
        }


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Shopsync-Signature` of `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, now: float) -> bool:
    """What a receiver checks (the test receiver uses it, and so can yours): the signature over
    the raw body, and a timestamp within `TOLERANCE` seconds of `now`."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


class _Permanent(Exception):
    """A delivery refused for a reason a retry will not change."""


class Notifier:
    """Turns alert changes into outbox messages and delivers them, retrying what may pass."""

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        shop: str,
        settings: NotifySettings | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self.db, self.clock, self.shop = db, clock, shop
        self.settings = settings or NotifySettings()
        self.http = http
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    # -- what goes out -------------------------------------------------------------------------

    async def alerts_changed(self, opened: list[Alert], cleared: list[Alert]) -> None:
        """An alerts listener: one message per channel that wants any of these kinds."""
        messages = []
        for channel, kinds in (
            ("webhook", self.settings.webhook_kinds),
            ("email", self.settings.email_kinds),
        ):
            if channel not in self.settings.channels:
                continue
            o = [a.to_wire() for a in opened if a.kind in kinds]
            c = [a.to_wire() for a in cleared if a.kind in kinds]
            if o or c:
                messages.append(self._message(channel, "alerts", {"opened": o, "cleared": c}))
        await self._enqueue(messages)

    async def test(self) -> list[dict[str, Any]]:
        """Send a test message through every configured channel now; each one's outcome."""
        results = []
        for channel in self.settings.channels:
            message = self._message(channel, "test", {"opened": [], "cleared": []})
            try:
                await self._deliver(message)
                results.append({"channel": channel, "ok": True, "detail": "delivered"})
            except Exception as exc:
                results.append({"channel": channel, "ok": False, "detail": _reason(exc)})
        return results

    def _message(self, channel: str, event: str, alerts: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": secrets.token_hex(8),
            "channel": channel,
            "event": event,
            "shop": self.shop,
            "at": self.clock.now(),
            **alerts,
            "attempts": 0,
            "due": 0.0,
        }

    # -- the outbox ----------------------------------------------------------------------------

    async def _enqueue(self, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        async with self._lock:
            box = await self.db.get_state(OUTBOX, [])
            await self.db.set_state(OUTBOX, box + messages)
        self._wake.set()

    async def pending(self) -> list[dict[str, Any]]:
        """The messages not yet delivered (nor given up)."""
        return list(await self.db.get_state(OUTBOX, []))

    async def run(self) -> None:
        """Deliver what is due, then sleep until the next is due or a message arrives."""
        while True:
            self._wake.clear()
            wait = await self.deliver_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def deliver_due(self) -> float:
        """Try every due message once; seconds until the next one is due (60 if none)."""
        now = self.clock.now()
        due = [m for m in await self.pending() if m["due"] <= now]
        outcomes: dict[str, dict[str, Any] | None] = {}  # id -> updated message, None: done
        entries = []
        for message in due:
            try:
                await self._deliver(message)
                outcomes[message["id"]] = None
                entries.append(_entry(message, now, "delivered"))
            except Exception as exc:
                attempts = message["attempts"] + 1
                final = isinstance(exc, _Permanent) or attempts >= MAX_ATTEMPTS
                outcomes[message["id"]] = (
                    None
                    if final
                    else {
                        **message,
                        "attempts": attempts,
                        "due": now + min(LONGEST_RETRY, FIRST_RETRY * 2 ** (attempts - 1)),
                    }
                )
                how = "given up" if final else f"attempt {attempts} failed, retried later"
                entries.append(_entry(message, now, f"{how}: {_reason(exc)}"))
                log.warning("notification_failed", channel=message["channel"], error=_reason(exc))
        if outcomes:
            async with self._lock:
                box = await self.db.get_state(OUTBOX, [])
                updated = [outcomes.get(m["id"], m) for m in box]
                kept = [m for m in updated if m is not None]
                await self.db.set_state(OUTBOX, kept)
            await self.db.run(lambda conn: synclog.insert(conn, entries))
        left = [m["due"] for m in await self.pending()]
        return max(0.05, min(left) - self.clock.now()) if left else 60.0

    # -- delivery ------------------------------------------------------------------------------

    async def _deliver(self, message: dict[str, Any]) -> None:
        if message["channel"] == "webhook":
            await self._post(message)
        else:
            await self._mail(message)

    async def _post(self, message: dict[str, Any]) -> None:
        assert self.http is not None, "webhooks need the agent's HTTP session"
        body = json.dumps(_public(message), sort_keys=True).encode()
        stamp = int(self.clock.now())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "shopsync-notify",
            "X-Shopsync-Timestamp": str(stamp),
            "X-Shopsync-Signature": sign(self.settings.webhook_secret, stamp, body),
        }
        async with self.http.post(
            self.settings.webhook_url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
            allow_redirects=False,
        ) as resp:
            if resp.status < 300:
                return
            text = f"HTTP {resp.status}"
            if resp.status == 429 or resp.status >= 500:
                raise RuntimeError(text)
            raise _Permanent(text)

    async def _mail(self, message: dict[str, Any]) -> None:
        import aiosmtplib  # only an agent that sends e-mail loads it

        s = self.settings
        mail = EmailMessage()
        mail["From"] = s.email_from or f"shopsync@{self.shop}"
        mail["To"] = ", ".join(s.email_to)
        mail["Subject"] = _subject(message)
        mail.set_content(_text(message))
        try:
            await aiosmtplib.send(
                mail,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_user or None,
                password=s.smtp_password or None,
                use_tls=s.smtp_security == "tls",
                start_tls=s.smtp_security == "starttls",
                timeout=TIMEOUT,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise _Permanent(f"recipients refused: {exc}") from None


def _public(message: dict[str, Any]) -> dict[str, Any]:
    """What a receiver gets: the message without the outbox's bookkeeping."""
    return {k: v for k, v in message.items() if k not in ("channel", "attempts", "due")}


def _subject(message: dict[str, Any]) -> str:
    if message["event"] == "test":
        return f"[shopsync] test notification from {message['shop']}"
    return f"[shopsync] {message['shop']}: {_summary(message)}"


def _summary(message: dict[str, Any]) -> str:
    """How many alerts of each kind opened and cleared: "1 oversold opened, 2 … cleared"."""
    parts = []
    for verb in ("opened", "cleared"):
        kinds = collections.Counter(a["kind"] for a in message[verb])
        parts += [f"{n} {kind.replace('_', ' ')} {verb}" for kind, n in kinds.items()]
    return ", ".join(parts)


def _text(message: dict[str, Any]) -> str:
    if message["event"] == "test":
        return f"A test notification from the shopsync agent of {message['shop']}.\n"
    lines = [f"The shopsync agent of {message['shop']}:", ""]
    for title, key in (("Opened", "opened"), ("Cleared", "cleared")):
        if message[key]:
            lines.append(f"{title}:")
            lines += [f"  - {a['kind'].replace('_', ' ')}: {a['message']}" for a in message[key]]
            lines.append("")
    return "\n".join(lines)


def _entry(message: dict[str, Any], now: float, outcome: str) -> dict[str, Any]:
    what = "test" if message["event"] == "test" else _summary(message)
    return synclog.entry("notification", now, message=f"{message['channel']} ({what}): {outcome}")


def _reason(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:300]
