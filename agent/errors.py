"""The errors a channel raises for what a retry will not fix (re-exported by `agent.channel`)."""

from __future__ import annotations

__all__ = ["ChannelError", "CredentialsRefused"]


class ChannelError(RuntimeError):
    """The platform refused a call for a reason a retry will not fix (auth, scope, bad input)."""


class CredentialsRefused(ChannelError):
    """The platform refused the channel's credentials (a token it will not take, even renewed,
    or secrets it will not grant a token for); the message says what to check."""
