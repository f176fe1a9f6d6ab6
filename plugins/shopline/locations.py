"""The SHOPLINE locations a channel syncs, and the item id of an inventory item at each.

The channel's own location keeps the plain inventory item id (``7177011084762551696``), which
databases already key on. At every other synced location the item is
``<inventory item id>@<location id>`` (``7177011084762551696@5421704248135526901``): both halves
are SHOPLINE's digit strings, so the ``@`` is unambiguous and the id says where to write.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agent.channel import ChannelError, ConfigError

__all__ = ["SEPARATOR", "Sites", "located_id", "resolve_sites"]

SEPARATOR = "@"
_DIGITS = re.compile(r"^\d{1,64}$")


def located_id(inventory_item_id: str, location_id: str) -> str:
    """The item id of an inventory item at a synced location other than the channel's own."""
    return f"{inventory_item_id}{SEPARATOR}{location_id}"


@dataclasses.dataclass(frozen=True, slots=True)
class Sites:
    """The locations a channel syncs: its own (`own`, "" while not known) and the others.

    `others` maps each other location's id to the entry the merchant wrote for it in
    `Channel.locations` (what `Item.location` says, exactly as given); `names` holds the
    shop's name of each location, for `check()`.
    """

    own: str
    others: Mapping[str, str] = dataclasses.field(default_factory=dict)
    names: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def all(self) -> tuple[str, ...]:
        """Every synced location id, the own one first (the others as configured)."""
        return (self.own, *self.others) if self.own else tuple(self.others)

    def item_id(self, inventory_item_id: str, location_id: str) -> str | None:
        """The channel's id of the item at `location_id`; None at a location not synced."""
        if location_id in self.others:
            return located_id(inventory_item_id, location_id)
        if not self.own or location_id == self.own:
            return inventory_item_id
        return None

    def label(self, location_id: str) -> str:
        """`Item.location` of a synced location: "" for the own one, else the entry as given."""
        return self.others.get(location_id, "")

    def split(self, item_id: str) -> tuple[str, str] | None:
        """(inventory item id, location id) of one of the channel's item ids; None for an id
        that is not one (malformed, or at a location the channel does not sync: the own
        location's items are never written ``…@<own id>``)."""
        inventory_item_id, separator, location_id = item_id.partition(SEPARATOR)
        if not _DIGITS.match(inventory_item_id):
            return None
        if not separator:
            return inventory_item_id, self.own
        if location_id in self.others:
            return inventory_item_id, location_id
        return None

    def describe(self) -> str:
        """The synced locations in words, for `check()`."""

        def named(location_id: str) -> str:
            name = self.names.get(location_id)
            return f"{location_id} ({name})" if name else location_id

        others = ", ".join(f"{named(i)} as {entry!r}" for i, entry in self.others.items())
        return f"own location {named(self.own)}; also syncs {others or 'no other'}"

    def everywhere(self, inventory_item_id: str) -> tuple[str, ...]:
        """The item's ids at every synced location (the own one first)."""
        own = (inventory_item_id,)
        return own + tuple(located_id(inventory_item_id, loc) for loc in self.others)


def resolve_sites(
    shop: Iterable[Mapping[str, Any]], configured: str | None, entries: Sequence[str]
) -> Sites:
    """The channel's locations from the shop's list (`locations/list.json`).

    The own location is `configured` (ConfigError if the shop lacks it) or the shop's default;
    each of `entries` must be another location of the shop: ChannelError names every one it
    does not have, or that repeats the own location or another entry.
    """
    locations = [loc for loc in shop if isinstance(loc, Mapping) and loc.get("id") is not None]
    names = {str(loc["id"]): str(loc.get("name") or "") for loc in locations}
    if configured is not None:
        if configured not in names:
            known = ", ".join(names)
            raise ConfigError(f"location_id {configured} is not a location of this store ({known})")
        own = configured
    else:
        default = next((loc for loc in locations if loc.get("is_default")), None)
        if default is None:
            raise ChannelError("the store reports no default location; set location_id")
        own = str(default["id"])
    others: dict[str, str] = {}
    unknown, repeated = [], []
    for entry in entries:
        location_id = str(entry).strip()
        if location_id not in names:
            unknown.append(repr(entry))
        elif location_id == own or location_id in others:
            repeated.append(repr(entry))
        else:
            others[location_id] = entry
    problems = []
    if unknown:
        known = ", ".join(f"{i} ({name})" if name else i for i, name in names.items())
        problems.append(
            f"location(s) {', '.join(unknown)} not in this SHOPLINE store (its locations: {known})"
        )
    if repeated:
        problems.append(
            f"location(s) {', '.join(repeated)} repeat the channel's own location {own} or "
            "another entry"
        )
    if problems:
        raise ChannelError("; ".join(problems))
    return Sites(own, others, names)
