"""How a channel gets, and renews, the access token it sends to its platform.

Part of the channel contract (`agent.channel` re-exports it). A platform token is either
static (a legacy custom-app token, a private-app token) or issued for a while by a grant the
channel can repeat (Shopify's client credentials, SHOPLINE's refresh). A channel keeps one
`Credentials` and asks it for the token before every call; a `RenewingToken` renews ahead of
expiry, and once more when the platform refuses a token with HTTP 401, so neither the core nor
the operator sees a token expire. Tokens live in memory only: each can be re-derived from the
configured secrets, so nothing is persisted, and no token or secret is ever logged.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

from agent.errors import CredentialsRefused

if TYPE_CHECKING:
    from agent.clock import Clock

__all__ = ["Credentials", "Grant", "RenewingToken", "StaticToken"]

log = structlog.get_logger(__name__)

# Renew this long before expiry: a tenth of the lifetime, at most ten minutes (a 24 h token is
# renewed 10 min early, a 60 s test token 6 s early), so a call never leaves with a token that
# expires on its way.
_AHEAD_SHARE = 0.1
_AHEAD_MAX = 600.0


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """A token as the platform issued it: `expires_at` in epoch seconds, None if unknown."""

    token: str = dataclasses.field(repr=False)
    expires_at: float | None = None
    scope: str = ""


class Credentials(abc.ABC):
    """What a channel authenticates with. `kind` names the scheme for operators (never secrets)."""

    kind: str = "static"
    # Told of every grant: (reason "first" | "expiring" | "rejected", seconds it is valid or
    # None). The core sets it to note renewals in the sync log; a plugin never needs to.
    on_renew: Callable[[str, float | None], None] | None = None
    # Why the platform refuses these credentials now (None while it accepts them): the
    # channel's client says so on a final refusal (`refused`) and on the next accepted call
    # (`accepted`); the core raises the `credentials_failing` alert from it.
    failing: str | None = None

    def refused(self, message: str) -> CredentialsRefused:
        """The platform refused these credentials, and renewing (if any) did not help; returns
        the error for the client to raise (`raise credentials.refused(message)`)."""
        if self.failing != message:
            log.warning("credentials_refused", kind=self.kind, error=message)
        self.failing = message
        return CredentialsRefused(message)

    def accepted(self) -> None:
        """The platform accepted a call made with these credentials."""
        if self.failing is not None:
            log.info("credentials_accepted", kind=self.kind)
            self.failing = None

    @abc.abstractmethod
    async def token(self) -> str:
        """The token to send now (fetched or renewed first if it is missing or expiring)."""

    @abc.abstractmethod
    async def renewed(self, rejected: str) -> str | None:
        """A new token after the platform refused `rejected` (HTTP 401), or None when these
        credentials cannot renew, so the refusal is final (the operator must act)."""

    @property
    def scope(self) -> str:
        """The scopes the platform granted with the current token ("" when it did not say)."""
        return ""


class StaticToken(Credentials):
    """A token configured once that never changes (a 401 is then final)."""

    kind = "static"

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticToken(...)"

    async def token(self) -> str:
        return self._token

    async def renewed(self, rejected: str) -> str | None:
        return None


class RenewingToken(Credentials):
    """A token that `fetch` obtains from the platform and that is renewed as it runs out.

    `fetch` performs the plugin's grant (client credentials, refresh) and returns a `Grant`; it
    raises `agent.channel.ChannelError` with a clear message when the platform refuses the
    secrets. `initial` is a token to start with (expiry unknown: used until refused). Concurrent
    callers share one renewal; a 401 renews only if no other caller has renewed since the
    refused token was handed out.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Grant]],
        *,
        clock: Clock,
        kind: str,
        shop: str = "",
        initial: str = "",
    ) -> None:
        self.kind = kind
        self._fetch = fetch
        self._clock = clock
        self._shop = shop
        self._grant: Grant | None = Grant(initial) if initial else None
        self._renew_at: float | None = None
        self._lock = asyncio.Lock()
        self.renewals = 0  # grants fetched, for tests and metrics

    def __repr__(self) -> str:
        return f"RenewingToken(kind={self.kind!r})"

    @property
    def scope(self) -> str:
        return self._grant.scope if self._grant is not None else ""

    def _fresh(self) -> bool:
        if self._grant is None:
            return False
        return self._renew_at is None or self._clock.now() < self._renew_at

    async def token(self) -> str:
        if not self._fresh():
            async with self._lock:
                if not self._fresh():
                    reason = "first" if self._grant is None else "expiring"
                    await self._renew(reason)
        assert self._grant is not None
        return self._grant.token

    async def renewed(self, rejected: str) -> str | None:
        async with self._lock:
            if self._grant is None or self._grant.token == rejected:
                await self._renew("rejected")
        assert self._grant is not None
        return self._grant.token

    async def _renew(self, reason: str) -> None:
        try:
            grant = await self._fetch()
        except CredentialsRefused as exc:  # the secrets, not a transient fault
            raise self.refused(str(exc)) from None
        now = self._clock.now()
        self._grant = grant
        self.renewals += 1
        if grant.expires_at is None:
            self._renew_at = None
            expires_in = None
        else:
            lifetime = max(0.0, grant.expires_at - now)
            self._renew_at = grant.expires_at - min(_AHEAD_MAX, _AHEAD_SHARE * lifetime)
            expires_in = round(lifetime)
        log.info(
            "token_renewed", shop=self._shop, kind=self.kind, reason=reason, expires_in=expires_in
        )
        if self.on_renew is not None:
            self.on_renew(reason, expires_in)
