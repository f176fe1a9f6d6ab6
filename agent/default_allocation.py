"""The core's allocation: the shop's stock rules and the group's priority rule, applied.

With no rules set, every shop shows the group's whole count, and an oversold pool shows 0.
"""

from __future__ import annotations

from agent.hookspecs import hookimpl
from agent.rules import Priority, ShopRules, decide


@hookimpl(trylast=True)
def allocate(sku: str, pool: int, shop: str, rules: ShopRules, priority: Priority | None) -> int:
    """What the rules publish (`agent.rules.decide`)."""
    return decide(sku, pool, shop, rules, priority).count
