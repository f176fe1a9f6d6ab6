"""Who may act as admin: token checks, the client's address, log-in throttling, revoked sessions.

Everything here takes whatever a client sends — header values that are not UTF-8 arrive with
surrogate escapes — and answers yes or no; nothing raises on hostile input.
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
from typing import Any

from aiohttp import web

from agent.clock import Clock
from agent.db import Database, write_state

__all__ = [
    "REVOCATIONS",
    "THROTTLE",
    "LoginThrottle",
    "Revocations",
    "bearer_ok",
    "client_address",
    "same_secret",
]


def same_secret(given: str, expected: str) -> bool:
    """Whether `given` equals `expected`, in constant time, for any text at all.

    `surrogatepass` encodes every str, the surrogate escapes of undecodable bytes included,
    so a hostile value is a mismatch rather than an exception (a 500).
    """
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def bearer_ok(request: web.Request, expected: str) -> bool:
    """Whether the request carries `Authorization: Bearer <expected>` (never for an empty one)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and same_secret(token, expected)


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def client_address(request: web.Request) -> str:
    """The address a request came from, for throttling.

    The peer's address; but when the peer is this machine (the TLS proxy in front of the
    agent), the last address in `X-Forwarded-For`, which is the one that proxy saw: entries
    before it are the client's own claims. Anything that is not an IP address is ignored.
    """
    peer = request.remote or ""
    peer_ip = _ip(peer)
    if peer_ip is not None and ipaddress.ip_address(peer_ip).is_loopback:
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
        if forwarded and (last := _ip(forwarded.rsplit(",", 1)[-1])) is not None:
            return last
    return peer_ip or peer


class LoginThrottle:
    """At most `limit` failed log-ins per address within `window` seconds.

    An address over the limit is refused until its oldest failure in the window ages out;
    other addresses are not affected, and a successful log-in clears its own address. Kept
    in memory (a restart forgives), for at most `max_addresses` addresses: past that, those
    whose last failure is oldest are forgotten first.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        limit: int = 10,
        window: float = 300.0,
        max_addresses: int = 10_000,
    ) -> None:
        self.clock, self.limit, self.window, self.max_addresses = (
            clock,
            limit,
            window,
            max_addresses,
        )
        self._failures: dict[str, collections.deque[float]] = {}

    def _recent(self, address: str) -> collections.deque[float]:
        failures = self._failures.get(address, collections.deque())
        horizon = self.clock.now() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures

    def retry_after(self, address: str) -> float:
        """Seconds until `address` may try again; 0 when it may try now."""
        failures = self._recent(address)
        if len(failures) < self.limit:
            return 0.0
        return max(0.0, failures[0] + self.window - self.clock.now())

    def failed(self, address: str) -> None:
        """Count one failed log-in from `address`."""
        failures = self._recent(address)
        self._failures.pop(address, None)  # re-inserted last: the dict stays in age order
        failures.append(self.clock.now())
        self._failures[address] = failures
        while len(self._failures) > self.max_addresses:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, address: str) -> None:
        """Forget the failures of `address`: its admin got in."""
        self._failures.pop(address, None)


THROTTLE = web.AppKey("login_throttle", LoginThrottle)

#: State keys (`db.get_state`) of the revocations.
LOGGED_OUT_STATE = "pages_logged_out"
VALID_AFTER_STATE = "pages_sessions_valid_after"


class Revocations:
    """Admin-page sessions refused before they expire, kept in the database.

    A log-out revokes one session (by its random id, until it would have expired anyway);
    "end all sessions" revokes every session issued before that moment. Both are stored in
    the agent's state table, so a restart forgets neither, and read into memory at start,
    since every page request asks. At most `max_entries` log-outs are kept: one more ends all
    sessions instead, which keeps the list bounded whatever happens.
    """

    def __init__(self, max_age: float, *, max_entries: int = 10_000) -> None:
        self.max_age, self.max_entries = max_age, max_entries
        self.logged_out: dict[str, int] = {}
        self.valid_after = 0.0

    async def load(self, db: Database) -> None:
        """Read the revocations from the database (at start)."""
        logged_out = await db.get_state(LOGGED_OUT_STATE, {})
        self.logged_out = {str(k): int(v) for k, v in dict(logged_out).items()}
        self.valid_after = float(await db.get_state(VALID_AFTER_STATE, 0.0))

    def revoked(self, sid: str, issued: int) -> bool:
        """Whether the session `sid` issued at `issued` (whole seconds) was revoked.

        The cookie holds whole seconds, so a session issued in the very second of an "end all
        sessions" is refused too: refusing one too many is the safe side.
        """
        return issued < self.valid_after or sid in self.logged_out

    async def log_out(self, db: Database, sid: str, issued: int, now: float) -> None:
        """Revoke one session; entries that expired meanwhile are dropped."""
        async with db.transaction() as session:
            oldest = max(now - self.max_age, self.valid_after)
            kept = {s: at for s, at in self.logged_out.items() if at >= oldest}
            if len(kept) >= self.max_entries:
                await self._end_all(session, now)
                return
            kept[sid] = issued
            await write_state(session, LOGGED_OUT_STATE, kept)
            self.logged_out = kept

    async def end_all(self, db: Database, now: float) -> None:
        """Revoke every session issued up to `now`."""
        async with db.transaction() as session:
            await self._end_all(session, now)

    async def _end_all(self, session: Any, now: float) -> None:
        await write_state(session, VALID_AFTER_STATE, now)
        await write_state(session, LOGGED_OUT_STATE, {})
        self.valid_after, self.logged_out = now, {}


REVOCATIONS = web.AppKey("session_revocations", Revocations)
