"""Access tokens an emulated platform issues, each valid for a lifetime on the emulator's clock."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable

__all__ = ["TokenIssuer"]


class TokenIssuer:
    """Issues tokens that expire `lifetime` seconds after issue, as the emulator's clock runs.

    The emulator's configured static token (`EmulatorOptions.token`, a legacy custom-app or
    private-app token) is not one of these and never expires.
    """

    def __init__(self, clock: Callable[[], float], lifetime: float, prefix: str = "") -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.prefix = prefix
        self.issued = 0
        self._expiry: dict[str, float] = {}

    def issue(self) -> tuple[str, float]:
        """A new token and the moment it expires (epoch seconds)."""
        token = self.prefix + secrets.token_hex(16)
        expires_at = self.clock() + self.lifetime
        self._expiry[token] = expires_at
        self.issued += 1
        return token, expires_at

    def valid(self, token: str) -> bool:
        """Whether `token` was issued here and has not expired (constant-time per token)."""
        now = self.clock()
        found = False
        for known, expires_at in self._expiry.items():
            if hmac.compare_digest(known.encode(), token.encode()) and now < expires_at:
                found = True
        return found

    def retire_others(self, keep: str, grace: float) -> None:
        """Every token but `keep` expires within `grace` seconds (a refresh's old tokens)."""
        deadline = self.clock() + grace
        for token, expires_at in list(self._expiry.items()):
            if token != keep:
                if expires_at <= self.clock():
                    del self._expiry[token]
                else:
                    self._expiry[token] = min(expires_at, deadline)
