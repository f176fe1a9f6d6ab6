"""Who may act as admin: constant-time checks of the tokens and secrets clients send.

Everything here takes whatever a client sends — header values that are not UTF-8 arrive with
surrogate escapes — and answers yes or no; nothing raises on hostile input.
"""

from __future__ import annotations

import hmac

from aiohttp import web

__all__ = ["bearer_ok", "same_secret"]


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
