"""Warehouses: the group's stock per (warehouse, SKU), and a shop's locations linked to it.

The building block of issue 17's second part: the rules below, on plain values. Its wiring
into the catalogue (an item per location), the write pipeline and the plugins comes next; no
agent uses it yet.

**Keys.** The ledger counts stock by key and knows nothing of warehouses. The key of a SKU in
the default warehouse (`DEFAULT`) is the SKU itself, so a group that names no other warehouse
keeps exactly the pools, events and wire format it has (nothing to migrate); the key of a SKU in
warehouse W is ``SKU@@W`` (`stock_key`). Once wired, the catalogue must refuse a SKU with
``@@`` in it (as it does a blank one).

**Links.** Each shop links each of its platform locations to an ordered list of warehouses
(`LocationMap`); by default its primary location to the default warehouse alone, which is
today's behaviour, and no other location (those are not synced). Then, at a location:
- it publishes the sum of its warehouses' counts, the shop's stock rules applied to the sum
  (a buffer of 2 is kept once per listing, not once per warehouse);
- a sale takes from its warehouses in order, each down to zero; what none holds is taken from
  the first (which goes below zero: oversold, reported as any pool is);
- stock coming back (a refund, a cancelled order) goes to the first warehouse;
- a stock edit sets the warehouse of a location linked to one; at a location linked to
  several it is refused (`Taken.refused` says why and what to do): the agent cannot tell
  whose stock was counted.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence

from agent.causes import in_words

__all__ = [
    "DEFAULT",
    "SEP",
    "LocationMap",
    "Taken",
    "WarehouseError",
    "check_name",
    "parse_key",
    "stock_key",
]

DEFAULT = "main"  # the warehouse every group has: its keys are the bare SKUs
SEP = "@@"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


class WarehouseError(ValueError):
    """A warehouse name or a location's links are malformed; the message says which and why."""


def check_name(name: object) -> str:
    """`name` if it is a warehouse name: 1-40 letters, digits, ``_.-``, from a letter or digit."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise WarehouseError(
            f"{name!r} is no warehouse name: 1 to 40 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def stock_key(sku: str, warehouse: str = DEFAULT) -> str:
    """The ledger's key of `sku` in `warehouse`."""
    return sku if warehouse == DEFAULT else f"{sku}{SEP}{warehouse}"


def parse_key(key: str) -> tuple[str, str]:
    """(SKU, warehouse) of a ledger key."""
    sku, sep, warehouse = key.rpartition(SEP)
    return (sku, warehouse) if sep and sku and warehouse else (key, DEFAULT)


@dataclasses.dataclass(frozen=True, slots=True)
class Taken:
    """What a change seen at a location does to the group's stock: (key, delta) per warehouse,
    or, refused, why (and nothing changes)."""

    changes: tuple[tuple[str, int], ...] = ()
    refused: str = ""


Count = Callable[[str], int | None]  # a key's pool count; None: the group has none


class LocationMap:
    """One shop's locations, each linked to the warehouses it sells from, in order."""

    def __init__(self, primary: str, links: Mapping[str, Sequence[str]] | None = None) -> None:
        self.primary = primary
        self.links: dict[str, tuple[str, ...]] = {primary: (DEFAULT,)}
        for location, warehouses in (links or {}).items():
            names = tuple(check_name(w) for w in warehouses)
            if not location:
                raise WarehouseError("a location must be named (its id or name at the platform)")
            if not names:
                raise WarehouseError(f"location {location} must be linked to a warehouse at least")
            if len(set(names)) != len(names):
                raise WarehouseError(f"location {location} names a warehouse twice")
            self.links[location] = names

    def synced(self, location: str) -> bool:
        return location in self.links

    def warehouses(self, location: str) -> tuple[str, ...]:
        """The warehouses `location` sells from, in order (none: it is not synced)."""
        return self.links.get(location, ())

    def keys(self, location: str, sku: str) -> list[str]:
        return [stock_key(sku, w) for w in self.warehouses(location)]

    def publish(
        self, location: str, sku: str, count_of: Count, decide: Callable[[int], int]
    ) -> int | None:
        """What `location` shows of `sku`: its warehouses' counts summed, the shop's rules
        (`decide`) applied to the sum; None while the group counts it in none of them."""
        counts = [c for key in self.keys(location, sku) if (c := count_of(key)) is not None]
        if not counts:
            return None
        return decide(sum(counts))

    def taken(self, location: str, sku: str, delta: int, cause: str, count_of: Count) -> Taken:
        """What a change of `delta` units of `sku` seen at `location` (for `cause`) does."""
        keys = self.keys(location, sku)
        if not keys or delta == 0:
            return Taken()
        if len(keys) == 1:
            return Taken(((keys[0], delta),))
        if delta > 0:
            words = in_words(cause)
            if words.startswith(("refund", "cancelled")):
                return Taken(((keys[0], delta),))  # back to the first warehouse
            names = ", ".join(self.warehouses(location))
            return Taken(
                refused=f"{words} at location {location} (+{delta} of {sku}), which sells from "
                f"several warehouses ({names}): not counted, since the agent cannot tell whose "
                "stock it is. Edit the count at a location linked to one of them, or link "
                f"{location} to one warehouse"
            )
        left = -delta
        changes: list[tuple[str, int]] = []
        for key in keys:
            take = min(left, max(0, count_of(key) or 0))
            if take:
                changes.append((key, -take))
                left -= take
        if left:  # no warehouse holds it: the first goes below zero
            first = next((i for i, (k, _) in enumerate(changes) if k == keys[0]), None)
            if first is None:
                changes.insert(0, (keys[0], -left))
            else:
                changes[first] = (keys[0], changes[first][1] - left)
        return Taken(tuple(changes))
