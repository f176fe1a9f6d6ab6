"""JSON from untrusted bytes: bounded nesting, and every failure a ValueError (never a 500)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_DEPTH", "JSONError", "loads"]

#: Deeper than anything shopsync sends (an event list is three levels): enough for platform
#: webhooks, far below the interpreter's recursion limit.
MAX_DEPTH = 64


class JSONError(ValueError):
    """The bytes are not JSON this agent will read; the message says why, for a 400."""


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `raw` as JSON, refusing invalid UTF-8, invalid JSON and nesting over `max_depth`.

    The decoder is C code that raises RecursionError on deep input rather than crashing; that
    and a nesting count over the result (skipped when the text cannot nest that deep) turn any
    hostile input into a JSONError.
    """
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise JSONError("body is not valid UTF-8") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise JSONError(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise JSONError(f"body is not valid JSON: {exc.args[0] if exc.args else exc}") from None
    if text.count("[") + text.count("{") > max_depth and _depth(value) > max_depth:
        raise JSONError(f"JSON nested deeper than {max_depth} levels")
    return value


def _depth(value: Any) -> int:
    """The nesting depth of a parsed JSON value (iterative: no recursion to exhaust)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))
    return deepest
