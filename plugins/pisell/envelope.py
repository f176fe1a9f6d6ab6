"""Pisell's answer envelope (`{status, code, message, data, error_code}`) and its error codes.

Part of the wire format: `plugins.pisell.wire` re-exports every name here, so the client and
the emulator read them as `wire.<name>` like the rest of it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

__all__ = [
    "STOCK_CONFLICT",
    "COMBO_NOT_WRITABLE",
    "SKU_NOT_FOUND",
    "NOT_STOCKED",
    "WAREHOUSE_NOT_FOUND",
    "INVALID_QUANTITY",
    "INSUFFICIENT_STOCK",
    "INVALID_REQUEST",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "DUPLICATE",
    "RATE_LIMITED",
    "KEY_REQUIRED",
    "KEY_REUSED",
    "INTERNAL_ERROR",
    "Envelope",
    "envelope_error",
    "envelope_ok",
    "parse_envelope",
]

# `error_code` values: per row in a write answer, or for a whole call.
STOCK_CONFLICT = "STOCK_CONFLICT"
COMBO_NOT_WRITABLE = "COMBO_NOT_WRITABLE"
SKU_NOT_FOUND = "SKU_NOT_FOUND"
NOT_STOCKED = "SKU_NOT_STOCKED"  # a known SKU that the warehouse does not stock
WAREHOUSE_NOT_FOUND = "WAREHOUSE_NOT_FOUND"
INVALID_QUANTITY = "INVALID_QUANTITY"
INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
INVALID_REQUEST = "INVALID_REQUEST"
UNAUTHORIZED = "UNAUTHORIZED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
DUPLICATE = "DUPLICATE"
RATE_LIMITED = "RATE_LIMITED"
KEY_REQUIRED = "IDEMPOTENCY_KEY_REQUIRED"
KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
INTERNAL_ERROR = "INTERNAL_ERROR"


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed response envelope."""

    ok: bool
    code: int
    message: str
    data: Any
    error_code: str | None


def envelope_ok(data: Any, message: str = "success") -> dict[str, Any]:
    """A success envelope around `data`."""
    return {"status": True, "code": 200, "message": message, "data": data}


def envelope_error(code: int, error_code: str, message: str, data: Any = None) -> dict[str, Any]:
    """An error envelope: HTTP-like `code`, machine `error_code`, human `message`."""
    return {
        "status": False,
        "code": code,
        "message": message,
        "error_code": error_code,
        "data": data,
    }


def _unwrap_key(key: str) -> str:
    # The report API sometimes sends keys as "[name]"; accept both spellings.
    if len(key) > 2 and key.startswith("[") and key.endswith("]"):
        return key[1:-1]
    return key


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {_unwrap_key(str(k)): _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def parse_envelope(body: bytes | str) -> Envelope:
    """Parse a response body; raises ValueError when it is not an envelope at all."""
    raw = _normalise(json.loads(body))
    if not isinstance(raw, dict) or "status" not in raw or "code" not in raw:
        raise ValueError("response is not a Pisell envelope")
    try:
        code = int(raw.get("code") or 0)
    except (TypeError, ValueError):
        code = 0
    status = bool(raw.get("status"))
    # Pisell's own error test (report API): not status and code != 200.
    ok = status or code == 200
    return Envelope(
        ok=ok,
        code=code,
        message=str(raw.get("message") or ""),
        data=raw.get("data"),
        error_code=raw.get("error_code") or None,
    )
