"""Bundles: a SKU sold as a fixed set of other SKUs (a case of 6 packs, a kit).

A bundle is not a pool of its own. What a shop publishes for it is how many whole bundles its
components allow: ⌊min over components of (the component's count for this shop ÷ quantity)⌋,
each component's count after the shop's stock rules. A sale of n bundles in a shop (its
count there going down by n) is counted as changes of its components (n times each one's
quantity taken), so every shop's components, and every bundle sharing one, follow. A bundle
whose component is unknown to the group publishes 0 and says why.

Definitions are a group setting (`group_rules.RuleBook`, one signed record per bundle, set from
any member). A component is a stocked SKU, never a bundle: definitions that two members made
at once and that nest (one bundle a component of another) are both held but the nested ones
are not used, and say so (`BundleMap.refused`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agent.ledger import INTRODUCE, NewEvent

__all__ = [
    "MAX_BUNDLES",
    "MAX_COMPONENTS",
    "MAX_QUANTITY",
    "Bundle",
    "BundleError",
    "BundleMap",
    "components_from_text",
    "components_from_wire",
]

MAX_BUNDLES = 1000
MAX_COMPONENTS = 50
MAX_QUANTITY = 100_000
MAX_SKU = 255
_SPEC = re.compile(r"^\s*(?P<sku>[^:=\s][^:=]*?)\s*(?:[:=x*]\s*(?P<qty>[^\s]+))?\s*$")

Components = tuple[tuple[str, int], ...]  # (component SKU, quantity), sorted by SKU


class BundleError(ValueError):
    """A bundle definition that cannot be taken; the message says what is wrong."""


@dataclasses.dataclass(frozen=True, slots=True)
class Bundle:
    sku: str
    components: Components

    def to_wire(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "components": [{"sku": s, "quantity": q} for s, q in self.components],
        }

    def describe(self) -> str:
        return " + ".join(f"{q} x {s}" for s, q in self.components)


def _check_sku(sku: Any, what: str) -> str:
    if not isinstance(sku, str) or not sku.strip():
        raise BundleError(f"{what} must be a SKU (a non-empty string)")
    if len(sku) > MAX_SKU:
        raise BundleError(f"{what} is longer than {MAX_SKU} characters")
    return sku.strip()


def _check_quantity(value: Any, sku: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        else:
            raise BundleError(f"the quantity of {sku} must be a whole number, not {value!r}")
    if not 1 <= value <= MAX_QUANTITY:
        raise BundleError(f"the quantity of {sku} must be between 1 and {MAX_QUANTITY}")
    return int(value)


def components_from_wire(bundle_sku: Any, raw: Any) -> Bundle:
    """A bundle from its JSON form (`[{"sku", "quantity"}]`), checked in itself: a SKU, 1 to
    `MAX_COMPONENTS` components, each a SKU other than the bundle's, once, with a positive
    whole quantity. BundleError says what is wrong."""
    sku = _check_sku(bundle_sku, "the bundle's sku")
    if not isinstance(raw, list) or not raw:
        raise BundleError("components must be a non-empty list of {sku, quantity}")
    if len(raw) > MAX_COMPONENTS:
        raise BundleError(f"a bundle has at most {MAX_COMPONENTS} components")
    parts: dict[str, int] = {}
    for part in raw:
        if not isinstance(part, Mapping):
            raise BundleError("each component is an object {sku, quantity}")
        name = _check_sku(part.get("sku"), "a component's sku")
        if name == sku:
            raise BundleError(f"{sku} cannot be a component of itself")
        if name in parts:
            raise BundleError(f"component {name} is named twice")
        parts[name] = _check_quantity(part.get("quantity", 1), name)
    return Bundle(sku, tuple(sorted(parts.items())))


def components_from_text(bundle_sku: str, specs: Iterable[str]) -> Bundle:
    """A bundle from the command line's component specs: `SKU:QTY` (or `SKU=QTY`, or `SKU`
    for one)."""
    raw = []
    for spec in specs:
        for piece in spec.split(","):
            if not piece.strip():
                continue
            match = _SPEC.match(piece)
            if match is None:
                raise BundleError(f"{piece!r}: write a component as SKU:QUANTITY")
            raw.append({"sku": match["sku"], "quantity": match["qty"] or 1})
    return components_from_wire(bundle_sku, raw)


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """What a shop publishes for a bundle, and why (for its write log row)."""

    count: int
    why: str


class BundleMap:
    """The group's bundles as this agent holds them: which are used, and which SKUs they take."""

    def __init__(self, bundles: Iterable[Bundle] = ()) -> None:
        held = {b.sku: b for b in bundles}
        self.refused: dict[str, str] = {}
        for bundle in held.values():
            for part, _ in bundle.components:
                if part in held:  # nested: made at two members at once
                    self.refused[bundle.sku] = f"its component {part} is itself a bundle"
                    break
        self.bundles = {s: b for s, b in held.items() if s not in self.refused}
        self.of_component: dict[str, set[str]] = {}
        for bundle in self.bundles.values():
            for part, _ in bundle.components:
                self.of_component.setdefault(part, set()).add(bundle.sku)

    def __bool__(self) -> bool:
        return bool(self.bundles)

    def get(self, sku: str) -> Bundle | None:
        return self.bundles.get(sku)

    def is_bundle(self, sku: str | None) -> bool:
        return sku is not None and sku in self.bundles

    def affected(self, skus: Iterable[str]) -> set[str]:
        """`skus` and every bundle that takes one of them: what to publish again when their
        pools move."""
        out = set(skus)
        if self.of_component:
            for sku in list(out):
                out |= self.of_component.get(sku, set())
        return out

    def components_of(self, skus: Iterable[str]) -> set[str]:
        """The components of the bundles among `skus`."""
        return {p for s in skus if (b := self.bundles.get(s)) for p, _ in b.components}

    def taken(self, sku: str, delta: int) -> list[tuple[str, int]]:
        """A change of `delta` bundles as changes of its components."""
        return [(part, delta * quantity) for part, quantity in self.bundles[sku].components]

    def target(self, sku: str, count_of: Callable[[str], int | None]) -> Target:
        """What to publish for bundle `sku`: whole bundles the components allow, where
        `count_of` is what this shop publishes of a component (None: unknown to the group)."""
        bundle = self.bundles[sku]
        best: int | None = None
        limit = ""
        for part, quantity in bundle.components:
            have = count_of(part)
            if have is None:
                return Target(0, f"bundle: component {part} is unknown to the group")
            whole = max(0, have) // quantity
            if best is None or whole < best:
                best, limit = whole, f"bundle: {have} of {part} ÷ {quantity}"
        return Target(best or 0, limit)

    def expand(self, events: list[NewEvent]) -> tuple[list[NewEvent], set[str]]:
        """This shop's observed changes with those of bundles made changes of their
        components (a bundle never introduces a pool), and the SKUs to publish again for
        them: the components and every bundle taking one."""
        if not self.bundles:
            return events, set()
        out: list[NewEvent] = []
        moved: set[str] = set()
        for event in events:
            bundle = self.bundles.get(event.sku)
            if bundle is None:
                out.append(event)
                if event.sku in self.of_component:
                    moved.add(event.sku)
                continue
            moved.add(event.sku)  # its first sighting, or its sale: publish it again
            if event.kind == INTRODUCE or not event.delta:
                continue
            cause = f"{event.cause}, {event.delta:+d} x bundle {event.sku}".lstrip(", ")
            for part, delta in self.taken(event.sku, event.delta):
                out.append(NewEvent(part, "change", delta=delta, cause=cause[:200]))
                moved.add(part)
        return out, self.affected(moved)
