"""The Shopify locations a channel syncs, and the item id of an inventory item at each.

The channel's own location keeps the bare InventoryItem gid, which existing databases key on;
at each further location (`Channel.locations`) the item is ``gid://shopify/InventoryItem/N@n``,
n being the location's number.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

import structlog

from agent.channel import ChannelError
from plugins.shopify import queries
from plugins.shopify.client import ShopifyClient

__all__ = ["ITEM_GID", "LOCATED", "Sites"]

log = structlog.get_logger(__name__)

ITEM_GID = re.compile(r"^gid://shopify/InventoryItem/\d+$")
# An item at one of the channel's further locations: the item's gid, "@" and the location's
# number (the own location's items keep the bare gid, which existing databases key on).
LOCATED = re.compile(r"^(gid://shopify/InventoryItem/\d+)(?:@(\d+))?$")
_LOCATION_GID = re.compile(r"^gid://shopify/Location/(\d+)$")


def _suffix(location: str) -> str:
    """What the item ids at a further location (a Location gid) end in: "@" and its number."""
    return "@" + location.rsplit("/", 1)[-1]


class Sites:
    """The locations one channel syncs: its own (`own`, None until resolved) and the further
    ones (`extras`, None until resolved), each resolved once against the shop."""

    def __init__(self, client: ShopifyClient, location_id: str) -> None:
        self.client = client
        self.own: str | None = location_id or None
        self._lock = asyncio.Lock()
        # the further locations, resolved at start: Location gid -> the name given for it
        self.extras: dict[str, str] | None = None
        self.names: dict[str, str] = {}  # Location gid -> the shop's name for it

    async def location(self) -> str:
        """The Location gid: configured, else the shop's primary location."""
        if self.own is not None:
            return self.own
        async with self._lock:
            if self.own is None:
                data = await self.client.call(
                    queries.PRIMARY_LOCATION, {}, cost=queries.PRIMARY_LOCATION_COST
                )
                primary = data.get("location")
                if not isinstance(primary, dict) or not primary.get("id"):
                    raise ChannelError("the shop reports no primary location: set location_id")
                if not primary.get("isActive", True):
                    raise ChannelError(
                        f"the shop's primary location {primary['id']} is inactive: set location_id"
                    )
                self.own = str(primary["id"])
                log.info("shopify_location", location=self.own, primary=True)
        return self.own

    async def extra_locations(self, locations: Sequence[str]) -> dict[str, str]:
        """The further locations (`locations`) as Location gid -> the name given, in order;
        ChannelError for one the shop lacks or that is the channel's own."""
        if self.extras is not None:
            return self.extras
        if not locations:
            self.extras = {}
            return self.extras
        own = await self.location()
        async with self._lock:
            if self.extras is not None:
                return self.extras
            data = await self.client.call(queries.LOCATIONS, {}, cost=queries.LOCATIONS_COST)
            nodes = (data.get("locations") or {}).get("nodes") or []
            active = {
                str(n["id"]): str(n.get("name") or "")
                for n in nodes
                if isinstance(n, dict) and n.get("id") and n.get("isActive", True)
            }
            known = ", ".join(f"{gid.rsplit('/', 1)[-1]} ({name})" for gid, name in active.items())
            extras: dict[str, str] = {}
            for entry in locations:
                raw = str(entry).strip()
                location = f"gid://shopify/Location/{raw}" if raw.isdigit() else raw
                if not _LOCATION_GID.match(location):
                    raise ChannelError(
                        f"location {entry!r} is not a location number or a Location gid"
                    )
                if location == own:
                    raise ChannelError(
                        f"location {entry!r} is the channel's own location ({own}): "
                        "list only the others"
                    )
                if location not in active:
                    raise ChannelError(
                        f"the shop has no active location {entry!r} (it has: {known})"
                    )
                if location in extras:
                    raise ChannelError(
                        f"location {entry!r} is listed twice (as {extras[location]!r})"
                    )
                extras[location] = entry
            self.names = active
            self.extras = extras
            log.info("shopify_locations", location=own, extra=list(extras))
        return self.extras

    async def synced(self, locations: Sequence[str]) -> list[tuple[str, str, str]]:
        """Every synced location as (Location gid, item id suffix, name given), own first."""
        own = await self.location()
        extras = await self.extra_locations(locations)
        return [(own, "", ""), *((gid, _suffix(gid), name) for gid, name in extras.items())]

    def suffixes(self) -> dict[str, str]:
        """Each further location's gid -> what its item ids end in (none before resolving)."""
        return {gid: _suffix(gid) for gid in self.extras or {}}

    def split(self, item_id: str) -> tuple[str, str] | None:
        """(InventoryItem gid, Location gid) of one of this channel's item ids, else None."""
        match = LOCATED.match(item_id)
        if match is None or self.own is None:
            return None
        if match.group(2) is None:
            return match.group(1), self.own
        location = f"gid://shopify/Location/{match.group(2)}"
        if location not in (self.extras or {}):
            return None
        return match.group(1), location
