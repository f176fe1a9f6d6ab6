"""Stock rules: how much of the group's pool each shop publishes (pure values and decisions).

A shop's own rules, applied in this fixed order to a SKU's pool:

1. ``buffer N`` — publish 0 while the pool is N or less (BigSeller "stock threshold",
   Linnworks "end when");
2. ``percent P`` (``plus K``) — publish ⌊pool * P / 100⌋ + K, never more than the pool
   (BigSeller "sync rate" with virtual units, Sellbrite "% of available");
3. ``max N`` — never publish more than N (Linnworks "max listed", Sellbrite "max qty").

Overrides per SKU or SKU pattern (a glob: ``*``, ``?``, ``[…]``) set the fields they name over
the shop's defaults; the most specific one that matches wins: an exact SKU before any pattern,
then the pattern with the most literal characters, then the first in sort order.

One group rule, the same at every member: a **priority shop when low** (BigSeller "about to be
sold out"): while a SKU's pool is N or less, the priority shop publishes the whole pool (its
own max still caps it, its buffer and percent do not apply) and every other shop 0.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "Allocate",
    "Decision",
    "Priority",
    "RuleError",
    "ShopRule",
    "ShopRules",
    "decide",
    "edited",
    "most_specific",
    "priority_from_wire",
    "rules_from_wire",
]

MAX_PATTERN = 512  # as long as a SKU may be
MAX_OVERRIDES = 10_000
_GLOB = set("*?[")
_FIELDS = ("buffer", "percent", "plus", "max")


class RuleError(ValueError):
    """A rule is malformed or out of range; the message says which and why."""


@dataclasses.dataclass(frozen=True, slots=True)
class ShopRule:
    """One set of rules; None leaves a field to the shop's default (or to no rule)."""

    buffer: int | None = None
    percent: float | None = None
    plus: int | None = None
    max: int | None = None

    def over(self, base: ShopRule) -> ShopRule:
        """These fields where set, `base`'s elsewhere."""
        return ShopRule(
            *(
                mine if mine is not None else theirs
                for mine, theirs in zip(self.fields(), base.fields(), strict=True)
            )
        )

    def fields(self) -> tuple[Any, ...]:
        return (self.buffer, self.percent, self.plus, self.max)

    def to_wire(self) -> dict[str, Any]:
        return {k: v for k, v in zip(_FIELDS, self.fields(), strict=True) if v is not None}

    def describe(self) -> str:
        """``buffer 2, percent 80 + 1, max 50`` (or ``no rule``)."""
        parts = []
        if self.buffer is not None:
            parts.append(f"buffer {self.buffer}")
        if self.percent is not None:
            parts.append(f"percent {_num(self.percent)}" + (f" + {self.plus}" if self.plus else ""))
        elif self.plus:
            parts.append(f"plus {self.plus}")
        if self.max is not None:
            parts.append(f"max {self.max}")
        return ", ".join(parts) or "no rule"


@dataclasses.dataclass(frozen=True, slots=True)
class ShopRules:
    """A shop's rules: its defaults and its overrides by SKU or pattern."""

    default: ShopRule = ShopRule()
    overrides: Mapping[str, ShopRule] = dataclasses.field(default_factory=dict)

    def for_sku(self, sku: str) -> tuple[ShopRule, str | None]:
        """The rule that applies to `sku`, and the override (SKU or pattern) it came from."""
        best = most_specific(sku, self.overrides)
        if best is None:
            return self.default, None
        return self.overrides[best].over(self.default), best

    def to_wire(self) -> dict[str, Any]:
        out = self.default.to_wire()
        if self.overrides:
            out["skus"] = {p: r.to_wire() for p, r in sorted(self.overrides.items())}
        return out

    def unmatched(self, skus: Iterable[str]) -> list[str]:
        """The override patterns that match none of `skus` (a typo, most likely)."""
        known = list(skus)
        return sorted(
            p
            for p in self.overrides
            if not (p in known if not is_pattern(p) else fnmatch.filter(known, p))
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Priority:
    """The group rule: while a pool is `at_most` or less, only `shop` publishes it."""

    shop: str
    at_most: int

    def to_wire(self) -> dict[str, Any]:
        return {"shop": self.shop, "at_most": self.at_most}


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What a shop publishes for a pool, and the rules that made it differ from the pool."""

    count: int
    why: str = ""  # e.g. "buffer 5: publishing 0 of 4"; empty when the whole pool is published


#: One shop's allocation: (sku, pool, its rules, the group's priority rule) -> decision.
Allocate = Callable[[str, int, ShopRules, Priority | None], Decision]


def is_pattern(text: str) -> bool:
    return any(c in _GLOB for c in text)


def most_specific(sku: str, overrides: Mapping[str, Any]) -> str | None:
    """The key of `overrides` that applies to `sku`: the SKU itself, else the matching glob
    pattern with the most literal characters (ties: the first in sort order); None if none."""
    if sku in overrides:
        return sku
    matching = [p for p in overrides if is_pattern(p) and fnmatch.fnmatchcase(sku, p)]
    if not matching:
        return None
    return min(matching, key=lambda p: (-sum(c not in _GLOB for c in p), p))


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def decide(
    sku: str, pool: int, shop: str, rules: ShopRules, priority: Priority | None = None
) -> Decision:
    """What `shop` publishes of `sku` when the group's pool holds `pool` (pure)."""
    rule, _ = rules.for_sku(sku)
    whole = max(0, pool)
    steps: list[str] = []
    if priority is not None and pool <= priority.at_most:
        name = f"priority {priority.shop} at ≤ {priority.at_most}"
        if shop != priority.shop:
            return Decision(0, f"{name}: publishing 0 of {pool}")
        count = whole if rule.max is None else min(whole, rule.max)
        if rule.max is not None and count < whole:
            name += f", max {rule.max}"
        return Decision(count, f"{name}: publishing {count} of {pool}")
    count = whole
    if rule.buffer is not None and pool <= rule.buffer:
        return Decision(0, f"buffer {rule.buffer}: publishing 0 of {pool}")
    if rule.percent is not None or rule.plus:
        percent = 100.0 if rule.percent is None else rule.percent
        count = min(whole, int(whole * percent // 100) + (rule.plus or 0))
        if count != whole:
            steps.append(f"percent {_num(percent)}" + (f" + {rule.plus}" if rule.plus else ""))
    if rule.max is not None and count > rule.max:
        count = rule.max
        steps.append(f"max {rule.max}")
    if not steps:
        return Decision(count)
    return Decision(count, f"{', '.join(steps)}: publishing {count} of {pool}")


# -- parsing (config, API, CLI): one clear error, nothing half-taken ---------------------------


def _int(raw: Any, name: str, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < 2**31:
        raise RuleError(f"{where}{name} must be a whole number of 0 or more, got {raw!r}")
    return raw


def rule_from_wire(raw: Any, where: str = "") -> ShopRule:
    """One rule set from ``{"buffer": 2, "percent": 80, "plus": 1, "max": 50}`` (each optional)."""
    if not isinstance(raw, Mapping):
        raise RuleError(f"{where}rules must be a table of buffer, percent, plus and max")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise RuleError(
            f"{where}unknown rule {unknown[0]!r} (the rules are buffer, percent, plus and max)"
        )
    percent = raw.get("percent")
    if percent is not None:
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise RuleError(f"{where}percent must be a number from 0 to 100, got {percent!r}")
        if not 0 <= percent <= 100:  # also refuses NaN
            raise RuleError(f"{where}percent must be from 0 to 100, got {_num(percent)}")
    return ShopRule(
        buffer=None if raw.get("buffer") is None else _int(raw["buffer"], "buffer", where),
        percent=None if percent is None else float(percent),
        plus=None if raw.get("plus") is None else _int(raw["plus"], "plus", where),
        max=None if raw.get("max") is None else _int(raw["max"], "max", where),
    )


def rules_from_wire(raw: Any) -> ShopRules:
    """A shop's rules from its ``[rules]`` table (or the API's JSON): the defaults, and
    ``skus`` mapping a SKU or pattern to its own rules. RuleError on anything malformed."""
    if raw is None:
        return ShopRules()
    if not isinstance(raw, Mapping):
        raise RuleError("rules must be a table")
    defaults = {k: v for k, v in raw.items() if k != "skus"}
    overrides_raw = raw.get("skus", {})
    if not isinstance(overrides_raw, Mapping):
        raise RuleError("rules.skus must be a table of SKU or pattern = { rules }")
    if len(overrides_raw) > MAX_OVERRIDES:
        raise RuleError(f"at most {MAX_OVERRIDES} SKU rules")
    overrides = {}
    for pattern, rule in overrides_raw.items():
        if not isinstance(pattern, str) or not pattern.strip() or len(pattern) > MAX_PATTERN:
            raise RuleError(f"a SKU or pattern must be 1 to {MAX_PATTERN} characters")
        if not pattern.isprintable():
            raise RuleError(f"the SKU or pattern {pattern!r} has control characters")
        overrides[pattern] = rule_from_wire(rule, f"rules for {pattern}: ")
    return ShopRules(rule_from_wire(defaults), overrides)


def priority_from_wire(raw: Any, members: Iterable[str] | None = None) -> Priority | None:
    """The group rule from ``{"shop": DOMAIN, "at_most": N}`` (None: no priority shop).
    With `members`, a shop that is not one of them is refused."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) != {"shop", "at_most"}:
        raise RuleError('the priority rule is {"shop": DOMAIN, "at_most": N}')
    shop = raw["shop"]
    if not isinstance(shop, str) or not shop:
        raise RuleError("the priority shop must be a member's domain")
    if members is not None and shop not in set(members):
        raise RuleError(f"{shop} is not a member of this group, so it cannot be the priority shop")
    return Priority(shop, _int(raw["at_most"], "at_most", "priority rule: "))


def _value(name: str, text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise RuleError(f"{name} must be a number, got {text!r}") from None


def edited(
    rules: ShopRules, *, put: Iterable[str] = (), drop: Iterable[str] = (), sku: str | None = None
) -> ShopRules:
    """`rules` with ``NAME=VALUE`` settings `put` and rule names `drop`, on the shop's defaults
    or on the override of `sku` (a SKU or pattern); dropping every rule of an override (or
    naming none with `sku`) removes the override. RuleError on anything malformed."""
    wire = rules.to_wire()
    overrides = dict(wire.pop("skus", {}))
    target = dict(overrides.get(sku, {})) if sku is not None else wire
    for item in put:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in _FIELDS:
            raise RuleError(f"say NAME=VALUE with NAME one of buffer, percent, plus, max: {item!r}")
        target[name] = _value(name, text.strip())
    names = list(drop)
    for name in names:
        if name not in _FIELDS:
            raise RuleError(f"unknown rule {name!r} (the rules are buffer, percent, plus and max)")
        target.pop(name, None)
    if sku is not None:
        if target and (put or names):
            overrides[sku] = target
        else:
            overrides.pop(sku, None)
    if overrides:
        wire["skus"] = overrides
    return rules_from_wire(wire)
