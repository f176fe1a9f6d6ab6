"""The core's default allocation: publish the whole pool, never below zero."""

from __future__ import annotations

from agent.hookspecs import hookimpl


@hookimpl(trylast=True)
def allocate(sku: str, pool: int, shop: str) -> int:
    """Every shop shows the group's whole count; an oversold pool shows 0."""
    return max(0, pool)
