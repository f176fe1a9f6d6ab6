"""Warehouses: the group's stock per (warehouse, SKU), and a shop's locations linked to it.

The rules below work on plain values; `Listings` is what the catalogue, the observation rule,
the write pipeline and the reconciler ask of them (with the group's bundles).

**Listings.** A shop lists a variant once per location it syncs (`Item.location`); the item
table keys each by its listing key: the SKU itself at the channel's own location (""), so a
shop that syncs one location keeps its items exactly, and ``SKU##location`` at another
(`listing_key`). A SKU with ``@@`` or ``##`` in it cannot be told from a key: the catalogue
leaves it out of the sync and says why (`RESERVED`).

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
- a stock edit sets the warehouse of a location linked to one. At a location linked to
  several, stock added by hand is refused (`Taken.refused` says why and what to do; the
  location shows its warehouses' count again): the agent cannot tell whose stock was
  counted. Stock gone is always counted, as a sale is, from the first warehouse on: the
  platforms do not always say whether a count went down by a sale or by hand (a level
  webhook may come without its order), and ignoring a real sale would oversell.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from agent.bundles import BundleMap
from agent.causes import in_words
from agent.ledger import INTRODUCE, NewEvent

__all__ = [
    "DEFAULT",
    "LOCATION_SEP",
    "OWN",
    "SEP",
    "Listings",
    "LocationMap",
    "Taken",
    "WarehouseError",
    "check_name",
    "listing_key",
    "parse_key",
    "parse_listing",
    "reserved",
    "stock_key",
]

DEFAULT = "main"  # the warehouse every group has: its keys are the bare SKUs
SEP = "@@"
LOCATION_SEP = "##"
OWN = ""  # the channel's own location (`Item.location`)
MAX_LOCATION = 255  # characters of a location id
MAX_LINKS = 20  # warehouses one location sells from
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


def listing_key(sku: str, location: str = OWN) -> str:
    """The item table's key of `sku` listed at `location` ("" for the channel's own)."""
    return f"{sku}{LOCATION_SEP}{location}" if location else sku


def parse_listing(key: str) -> tuple[str, str]:
    """(SKU, location) of a listing key."""
    sku, sep, location = key.rpartition(LOCATION_SEP)
    return (sku, location) if sep and sku and location else (key, OWN)


def reserved(sku: str) -> bool:
    """Whether `sku` holds a separator of the keys, and so cannot be synced."""
    return SEP in sku or LOCATION_SEP in sku


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
            if not location and location != primary:
                raise WarehouseError("a location must be named (its id or name at the platform)")
            if LOCATION_SEP in location or len(location) > MAX_LOCATION:
                raise WarehouseError(
                    f"{location[:40]!r} is no location id: at most {MAX_LOCATION} characters, "
                    f"without {LOCATION_SEP!r}"
                )
            if len(names) > MAX_LINKS:
                raise WarehouseError(
                    f"location {location} sells from {MAX_LINKS} warehouses at most"
                )
            if not names:
                raise WarehouseError(f"location {location} must be linked to a warehouse at least")
            if len(set(names)) != len(names):
                raise WarehouseError(f"location {location} names a warehouse twice")
            self.links[location] = names

    def plain(self) -> bool:
        """Only the primary location, selling from the default warehouse (the default)."""
        return self.links == {self.primary: (DEFAULT,)}

    def others(self) -> tuple[str, ...]:
        """The locations synced besides the primary (what the channel lists besides its
        own), in the order they were given."""
        return tuple(location for location in self.links if location != self.primary)

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

    def refuses(self, location: str, delta: int, cause: str) -> bool:
        """Whether a change of `delta` at `location` for `cause` is refused: stock added at a
        location of several warehouses, but by a refund or a cancelled order."""
        if delta <= 0 or len(self.warehouses(location)) < 2:
            return False
        return not in_words(cause).startswith(("refund", "cancelled"))

    def taken(self, location: str, sku: str, delta: int, cause: str, count_of: Count) -> Taken:
        """What a change of `delta` units of `sku` seen at `location` (for `cause`) does."""
        keys = self.keys(location, sku)
        if not keys or delta == 0:
            return Taken()
        if len(keys) == 1:
            return Taken(((keys[0], delta),))
        if delta > 0:
            if not self.refuses(location, delta, cause):
                return Taken(((keys[0], delta),))  # back to the first warehouse
            words = in_words(cause)
            names = ", ".join(self.warehouses(location))
            named = location or "primary"  # as `[locations]` and `shopsync locations` name it
            one = self.warehouses(location)[0]
            return Taken(
                refused=f"{words} at location {named} (+{delta} of {sku}), which sells from "
                f"several warehouses ({names}): not counted, since the agent cannot tell whose "
                "stock it is. Edit the count at a location linked to one of them, or link "
                f"{named} to one warehouse (`shopsync locations set {named} {one} --dry-run` "
                "says what that would change)"
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


@dataclasses.dataclass(frozen=True, slots=True)
class Known:
    """A listing's count as the group knows it: the sum of its warehouses' pools, or None
    while the group counts it in none (what the observation rule asks of a pool)."""

    value: int | None


class Listings:
    """One shop's listings (location, SKU) over the group's stock: its locations' links and
    the group's bundles, as the pipeline asks them. Keys of the ledger (`stock_key`) and of
    the item table (`listing_key`) meet here only."""

    def __init__(self, bundles: BundleMap | None = None, locations: LocationMap | None = None):
        self.bundles = bundles or BundleMap()
        self.locations = locations or LocationMap(OWN)
        # a warehouse -> the locations selling from it (what to publish again when it moves)
        self.of_warehouse: dict[str, list[str]] = {}
        for location, warehouses in self.locations.links.items():
            for warehouse in warehouses:
                self.of_warehouse.setdefault(warehouse, []).append(location)
        self.plain = self.locations.plain()  # ledger keys are listing keys

    def __bool__(self) -> bool:
        return bool(self.bundles) or not self.plain

    def keys(self, listings: Iterable[str]) -> set[str]:
        """The ledger keys what `listings` publish is made of (their warehouses' pools, and
        their components' for bundles)."""
        out: set[str] = set()
        for listing in listings:
            sku, location = parse_listing(listing)
            bundle = self.bundles.get(sku)
            for part in [p for p, _ in bundle.components] if bundle else [sku]:
                out.update(self.locations.keys(location, part))
        return out

    def refuses(self, listing: str, delta: int, cause: str) -> bool:
        """Whether this change seen at `listing` would be refused (`LocationMap.refuses`; a
        bundle's, at its location, as its components' would)."""
        location = parse_listing(listing)[1]
        return not self.plain and self.locations.refuses(location, delta, cause)

    def known(self, listing: str, count_of: Count) -> Known:
        """The group's count of what `listing` sells (for the observation rule)."""
        sku, location = parse_listing(listing)
        counts = [c for k in self.locations.keys(location, sku) if (c := count_of(k)) is not None]
        return Known(sum(counts) if counts else None)

    def affected(self, keys: Iterable[str]) -> set[str]:
        """The listings to publish again when the pools of `keys` moved: each location
        selling from the key's warehouse, and there every bundle taking the SKU."""
        if self.plain:
            return self.bundles.affected(keys) if self.bundles else set(keys)
        out: set[str] = set()
        for key in keys:
            sku, warehouse = parse_key(key)
            skus = self.bundles.affected([sku]) if self.bundles else {sku}
            for location in self.of_warehouse.get(warehouse, ()):
                out.update(listing_key(s, location) for s in skus)
        return out

    def target(
        self, listing: str, count_of: Count, decide: Callable[[str, int], tuple[int, str]]
    ) -> tuple[int, str] | None:
        """What `listing` publishes and which rules decided; None while the group counts it
        nowhere (nothing to write). `count_of`: a ledger key's pool; `decide`: the shop's
        rules for (SKU, count)."""
        sku, location = parse_listing(listing)

        def shown(part: str) -> int | None:
            return self.locations.publish(location, part, count_of, lambda n: decide(part, n)[0])

        if self.bundles.is_bundle(sku):
            made = self.bundles.target(sku, shown)
            return made.count, made.why
        total = self.known(listing, count_of).value
        if total is None:
            return None
        return decide(sku, total)

    def expand(
        self, events: list[NewEvent], count_of: Count
    ) -> tuple[list[NewEvent], set[str], list[tuple[str, str]]]:
        """This shop's observed changes (on listing keys) as changes of the group's stock
        (on ledger keys): a bundle's as its components', each then taken from the location's
        warehouses (`LocationMap.taken`). Returns the events, the listings to publish again,
        and the changes refused ((SKU, why), for the sync log)."""
        if not self:
            return events, set(), []
        if self.plain:
            return (*self.bundles.expand(events), [])
        out: list[NewEvent] = []
        refused: list[tuple[str, str]] = []  # (SKU, why)
        moved: set[str] = set()  # listings to publish again
        touched: set[str] = set()  # ledger keys changed
        taken: dict[str, int] = {}  # what this batch took already, per key

        def now_count(key: str) -> int | None:
            held = count_of(key)
            return None if held is None and key not in taken else (held or 0) + taken.get(key, 0)

        def take(listing: str, sku: str, location: str, event: NewEvent) -> None:
            made = self.locations.taken(location, sku, event.delta, event.cause, now_count)
            if made.refused:
                refused.append((sku, made.refused))
                moved.add(listing)  # the shop shows the warehouses' count again
                return
            for key, delta in made.changes:
                out.append(dataclasses.replace(event, sku=key, delta=delta))
                taken[key] = taken.get(key, 0) + delta
                touched.add(key)

        for event in events:
            sku, location = parse_listing(event.sku)
            if self.bundles.is_bundle(sku):  # its components' change, at the same location
                moved.add(event.sku)
                if event.kind == INTRODUCE or not event.delta:
                    continue
                cause = f"{event.cause}, {event.delta:+d} x bundle {sku}".lstrip(", ")[:200]
                for part, delta in self.bundles.taken(sku, event.delta):
                    part_event = NewEvent(part, "change", delta=delta, cause=cause)
                    take(listing_key(part, location), part, location, part_event)
                continue
            if event.kind == INTRODUCE:
                keys = self.locations.keys(location, sku)
                if keys:  # new stock seen at a location: its first warehouse's
                    out.append(dataclasses.replace(event, sku=keys[0]))
                    touched.add(keys[0])
                continue
            take(event.sku, sku, location, event)
        return out, moved | self.affected(touched), refused
