"""The Shopify channel: inventory of a shop's locations through the Admin GraphQL API."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from agent.channel import (
    Channel,
    ChannelError,
    ChannelSettings,
    Check,
    ConfigError,
    Grant,
    Item,
    Level,
    RateBudget,
    RenewingToken,
    WebhookHint,
    Write,
    WriteResult,
    client_stats,
)
from plugins.shopify import queries, webhooks
from plugins.shopify.client import (
    CostExceeded,
    ShopifyClient,
    ShopifyUnavailable,
    client_credentials_grant,
)

if TYPE_CHECKING:
    import aiohttp

    from agent.clock import Clock

__all__ = ["KEY_NAMESPACE", "ShopifyChannel", "ShopifySettings"]

log = structlog.get_logger(__name__)

# Per-call idempotency keys derive from the core's batch key in this namespace, so a retried
# batch sends the very same keys.
KEY_NAMESPACE = uuid.UUID("5d0c7d3e-2b8f-4a4e-8f67-0f3b1e9c6a12")
MAX_BATCH = 250
TOPICS = (
    "INVENTORY_LEVELS_UPDATE",
    "ORDERS_CREATE",
    "ORDERS_CANCELLED",
    "REFUNDS_CREATE",
    "PRODUCTS_CREATE",
    "PRODUCTS_UPDATE",
)
_STALE = frozenset({"CHANGE_FROM_QUANTITY_STALE", "COMPARE_QUANTITY_STALE"})
_ITEM_GID = re.compile(r"^gid://shopify/InventoryItem/\d+$")
# An item at one of the channel's further locations: the item's gid, "@" and the location's
# number (the own location's items keep the bare gid, which existing databases key on).
_LOCATED = re.compile(r"^(gid://shopify/InventoryItem/\d+)(?:@(\d+))?$")
_LOCATION_GID = re.compile(r"^gid://shopify/Location/(\d+)$")
_VARIANT_GID = re.compile(r"^gid://shopify/ProductVariant/(\d+)$")
_BULK_DONE = frozenset({"COMPLETED", "FAILED", "CANCELED", "EXPIRED"})
_BULK_MAX_WAIT = 3600.0
# What the channel calls needs (shopify.md §6); `shopsync check` names any missing.
SCOPES = ("read_inventory", "write_inventory", "read_products", "read_orders", "read_locations")


@dataclasses.dataclass
class ShopifySettings(ChannelSettings):
    """Options of the ``[channel.options]`` table for a Shopify shop.

    Credentials: ``access_token`` (a legacy custom app's static ``shpat_`` token), or
    ``client_id`` and ``client_secret`` of a Dev Dashboard app, whose 24 h tokens the channel
    gets through the client-credentials grant and renews. ``webhook_secret`` defaults to
    ``client_secret``, which is what Shopify signs a Dev Dashboard app's webhooks with.
    """

    api_url: str
    access_token: str = dataclasses.field(default="", repr=False)
    webhook_secret: str = dataclasses.field(default="", repr=False)
    client_id: str = ""
    client_secret: str = dataclasses.field(default="", repr=False)
    location_id: str = ""
    api_version: str = "2026-10"
    bulk: bool = True
    timeout: float = 10.0
    retry_base: float = 0.5
    max_retries: int = 8

    def __post_init__(self) -> None:
        self.api_url = str(self.api_url).rstrip("/")
        if not re.match(r"^https?://[^/]+", self.api_url):
            raise ConfigError("channel option api_url must be an http(s) URL")
        self.client_id = str(self.client_id).strip()
        if bool(self.client_id) != bool(str(self.client_secret).strip()):
            raise ConfigError("channel options client_id and client_secret go together")
        if not str(self.access_token).strip() and not self.client_id:
            raise ConfigError(
                "missing channel option access_token (or client_id and client_secret of a "
                "Dev Dashboard app)"
            )
        if not str(self.webhook_secret).strip():
            if not self.client_id:
                raise ConfigError("channel option webhook_secret must not be empty")
            self.webhook_secret = self.client_secret
        if not re.match(r"^(\d{4}-\d{2}|unstable)$", self.api_version):
            raise ConfigError("channel option api_version must look like 2026-10 or unstable")
        location = str(self.location_id).strip()
        if location.isdigit():
            location = f"gid://shopify/Location/{location}"
        if location and not re.match(r"^gid://shopify/Location/\d+$", location):
            raise ConfigError("channel option location_id must be a number or a Location gid")
        self.location_id = location
        if self.timeout <= 0 or self.retry_base < 0 or self.max_retries < 0:
            raise ConfigError("timeout must be > 0, retry_base and max_retries >= 0")

    @property
    def endpoint(self) -> str:
        """The GraphQL endpoint of the configured API version."""
        return f"{self.api_url}/admin/api/{self.api_version}/graphql.json"


class ShopifyChannel(Channel):
    """One Shopify shop; `item_id` is the InventoryItem gid, counts are `available`.

    With further `locations`, an item at location n is ``gid://shopify/InventoryItem/N@n``
    (the own location's items keep the bare gid). Listings, lookups and reads ask every
    location in one query (aliased levels, costed as Shopify costs them), and a batch of
    writes goes in one `inventorySetQuantities`, each row with its own `locationId`.
    """

    name: ClassVar[str] = "shopify"
    settings_class: ClassVar[type[ChannelSettings]] = ShopifySettings
    multi_location: ClassVar[bool] = True

    def __init__(
        self, settings: ChannelSettings, *, http: aiohttp.ClientSession, clock: Clock
    ) -> None:
        if not isinstance(settings, ShopifySettings):
            raise ConfigError("ShopifyChannel needs ShopifySettings")
        super().__init__(settings, http=http, clock=clock)
        self.settings: ShopifySettings = settings
        self.budget = RateBudget(
            bucket=2000,
            restore_rate=100,
            max_write_batch=MAX_BATCH,
            max_read_batch=MAX_BATCH,
            write_cost=queries.WRITE_COST,
            read_cost=queries.read_cost(MAX_BATCH),
            unit="points",
        )
        if settings.client_id:
            self.credentials = RenewingToken(
                self._client_credentials,
                clock=clock,
                kind="client_credentials",
                shop=settings.api_url,
                initial=settings.access_token,
            )
        self.client = ShopifyClient(
            http,
            clock,
            endpoint=settings.endpoint,
            credentials=self.credentials,
            timeout=settings.timeout,
            retry_base=settings.retry_base,
            max_retries=settings.max_retries,
            on_status=self._on_status,
        )
        self._location: str | None = settings.location_id or None
        self._location_lock = asyncio.Lock()
        # the further locations, resolved at start: Location gid -> the name given for it
        self._extras: dict[str, str] | None = None
        self._location_names: dict[str, str] = {}  # Location gid -> the shop's name for it
        self._variant_items: dict[int, int] = {}  # variant id -> inventory item id (listed)
        self._set_document = queries.set_quantities(settings.api_version)
        self._change_from = queries.uses_change_from(settings.api_version)
        self.bulk_poll_interval = 0.05  # first poll; doubles up to 2 s

    def _on_status(self, maximum: float, restore_rate: float) -> None:
        if (maximum, restore_rate) != (self.budget.bucket, self.budget.restore_rate):
            self.budget = dataclasses.replace(
                self.budget, bucket=maximum, restore_rate=restore_rate
            )

    async def _client_credentials(self) -> Grant:
        return await client_credentials_grant(
            self.http,
            self.clock,
            f"{self.settings.api_url}/admin/oauth/access_token",
            self.settings.client_id,
            self.settings.client_secret,
            timeout=self.settings.timeout,
        )

    async def start(self) -> None:
        """Resolve the locations once, so the first webhook can already be filtered by them."""
        await self.location()
        await self._extra_locations()

    async def _extra_locations(self) -> dict[str, str]:
        """The further locations (`locations`) as Location gid -> the name given, in order;
        ChannelError for one the shop lacks or that is the channel's own."""
        if self._extras is not None:
            return self._extras
        if not self.locations:
            self._extras = {}
            return self._extras
        own = await self.location()
        async with self._location_lock:
            if self._extras is not None:
                return self._extras
            data = await self.client.call(queries.LOCATIONS, {}, cost=queries.LOCATIONS_COST)
            nodes = (data.get("locations") or {}).get("nodes") or []
            active = {
                str(n["id"]): str(n.get("name") or "")
                for n in nodes
                if isinstance(n, dict) and n.get("id") and n.get("isActive", True)
            }
            known = ", ".join(f"{gid.rsplit('/', 1)[-1]} ({name})" for gid, name in active.items())
            extras: dict[str, str] = {}
            for entry in self.locations:
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
            self._location_names = active
            self._extras = extras
            log.info("shopify_locations", location=own, extra=list(extras))
        return self._extras

    async def _synced(self) -> list[tuple[str, str, str]]:
        """Every synced location as (Location gid, item id suffix, name given), own first."""
        own = await self.location()
        extras = await self._extra_locations()
        return [
            (own, "", ""),
            *((gid, "@" + gid.rsplit("/", 1)[-1], name) for gid, name in extras.items()),
        ]

    def _split(self, item_id: str) -> tuple[str, str] | None:
        """(InventoryItem gid, Location gid) of one of this channel's item ids, else None."""
        match = _LOCATED.match(item_id)
        if match is None or self._location is None:
            return None
        if match.group(2) is None:
            return match.group(1), self._location
        location = f"gid://shopify/Location/{match.group(2)}"
        if location not in (self._extras or {}):
            return None
        return match.group(1), location

    async def location(self) -> str:
        """The Location gid: configured, else the shop's primary location."""
        if self._location is not None:
            return self._location
        async with self._location_lock:
            if self._location is None:
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
                self._location = str(primary["id"])
                log.info("shopify_location", location=self._location, primary=True)
        return self._location

    # -- reading -------------------------------------------------------------------------------

    async def list_items(self) -> AsyncIterator[Item]:
        """Every tracked variant stocked at each synced location (one item per location that
        stocks it, read in the same query): bulk query, else pages of 200 (fewer with further
        locations, whose levels make each variant dearer)."""
        synced = await self._synced()
        if self.settings.bulk:
            url = await self._run_bulk(synced)
            if url is not None:
                if url:
                    async for node in self.client.lines(url):
                        for item in self._items(node, synced):
                            yield item
                return
        async for item in self._pages(synced):
            yield item

    def _items(self, node: dict[str, Any], synced: list[tuple[str, str, str]]) -> list[Item]:
        """The items of one variant node: at the own location, then at each further one."""
        own = _item(node)
        if len(synced) == 1:
            return [] if own is None else [own]
        inventory = node.get("inventoryItem")
        if isinstance(inventory, dict):
            self._remember(node.get("id"), inventory.get("id"))
        items = [] if own is None else [own]
        for index, (_, suffix, name) in enumerate(synced[1:]):
            item = _item(node, queries.extra_alias(index), suffix, name)
            if item is not None:
                items.append(item)
        return items

    def _remember(self, variant_gid: Any, item_gid: Any) -> None:
        """Note a variant's inventory item: an order line names only its variant."""
        variant = _VARIANT_GID.match(variant_gid) if isinstance(variant_gid, str) else None
        item = _LOCATED.match(item_gid) if isinstance(item_gid, str) else None
        if variant is not None and item is not None:
            number = int(item.group(1).rsplit("/", 1)[-1])
            self._variant_items[int(variant.group(1))] = number

    async def _run_bulk(self, synced: list[tuple[str, str, str]]) -> str | None:
        """The result URL ("" for an empty result), or None to fall back to paging."""
        query = queries.bulk_variants_query(synced[0][0], [gid for gid, _, _ in synced[1:]])
        data = await self.client.call(queries.BULK_RUN, {"query": query}, cost=queries.WRITE_COST)
        payload = data.get("bulkOperationRunQuery") or {}
        operation = payload.get("bulkOperation")
        if payload.get("userErrors") or not operation:
            log.warning("shopify_bulk_refused", errors=payload.get("userErrors"))
            return None
        interval, waited = self.bulk_poll_interval, 0.0
        while waited < _BULK_MAX_WAIT:
            await self.clock.sleep(interval)
            waited += interval
            interval = min(2.0, interval * 2)
            poll = await self.client.call(queries.BULK_POLL, {}, cost=queries.BULK_POLL_COST)
            current = poll.get("currentBulkOperation") or {}
            if current.get("id") != operation["id"]:
                log.warning("shopify_bulk_replaced", operation=operation["id"])
                return None
            status = current.get("status")
            if status == "COMPLETED":
                return current.get("url") or ""
            if status in _BULK_DONE:
                log.warning("shopify_bulk_failed", status=status, error=current.get("errorCode"))
                return None
        log.warning("shopify_bulk_timeout", operation=operation["id"])
        return None

    async def _pages(self, synced: list[tuple[str, str, str]]) -> AsyncIterator[Item]:
        count = len(synced)
        document = queries.variants_page(count - 1)
        first, after = queries.page_size(count), None
        extras = {f"loc{i}": gid for i, (gid, _, _) in enumerate(synced[1:])}
        while True:
            variables = {"first": first, "after": after, "loc": synced[0][0], **extras}
            try:
                cost = queries.page_cost(first, count)
                data = await self.client.call(document, variables, cost=cost)
            except CostExceeded:
                if first == 1:
                    raise
                first = max(1, first // 2)  # the shop prices the page higher than we do
                continue
            page = data.get("productVariants") or {}
            for node in page.get("nodes") or []:
                for item in self._items(node, synced):
                    yield item
            info = page.get("pageInfo") or {}
            if not info.get("hasNextPage") or not info.get("endCursor"):
                return
            after = info["endCursor"]

    async def read(self, item_ids: Sequence[str]) -> dict[str, int | None]:
        """Fresh `available` counts, 250 ids per call; unknown, unstocked, untracked → None."""
        levels = await self.read_levels(item_ids)
        return {item_id: level.count for item_id, level in levels.items()}

    async def read_levels(self, item_ids: Sequence[str]) -> dict[str, Level]:
        """Fresh `available` counts with their level's `updatedAt`, 250 ids per call."""
        result: dict[str, Level] = dict.fromkeys(item_ids, Level(None))
        location = await self.location()
        if await self._extra_locations():
            await self._read_located(list(result), result)
            return result
        valid = [i for i in result if _ITEM_GID.match(i)]
        for start in range(0, len(valid), MAX_BATCH):
            chunk = valid[start : start + MAX_BATCH]
            data = await self.client.call(
                queries.READ, {"ids": chunk, "loc": location}, cost=queries.read_cost(len(chunk))
            )
            for item_id, node in zip(chunk, data.get("nodes") or [], strict=False):
                if isinstance(node, dict) and node.get("tracked", True):
                    level = node.get("inventoryLevel")
                    stamp = level.get("updatedAt") if isinstance(level, dict) else None
                    result[item_id] = Level(_available(level), webhooks.parse_stamp(stamp))
        return result

    async def _located_calls(
        self, item_ids: list[str], size: int, lookup: bool
    ) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        """(item id, location name, node) of these ids at any synced location, `size` ids per
        call, each call one group of ids per location (`queries.located_items_query`)."""
        synced = {gid: (suffix, name) for gid, suffix, name in await self._synced()}
        valid = [(i, split) for i in item_ids if (split := self._split(i)) is not None]
        price = queries.lookup_cost if lookup else queries.read_cost
        for start in range(0, len(valid), size):
            groups: dict[str, list[str]] = {}
            for _, (item, location) in valid[start : start + size]:
                groups.setdefault(location, []).append(item)
            variables: dict[str, Any] = {}
            for index, (location, items) in enumerate(groups.items()):
                variables[f"ids{index}"], variables[f"loc{index}"] = items, location
            document = queries.located_items_query(len(groups), lookup)
            cost = sum(price(len(items)) for items in groups.values())
            data = await self.client.call(document, variables, cost=cost)
            for index, (location, items) in enumerate(groups.items()):
                suffix, name = synced[location]
                nodes = data.get(queries.extra_alias(index)) or []
                for item, node in zip(items, nodes, strict=False):
                    if isinstance(node, dict):
                        yield item + suffix, name, node

    async def _read_located(self, item_ids: list[str], result: dict[str, Level]) -> None:
        async for item_id, _, node in self._located_calls(item_ids, MAX_BATCH, lookup=False):
            if node.get("tracked", True):
                level = node.get("inventoryLevel")
                stamp = level.get("updatedAt") if isinstance(level, dict) else None
                result[item_id] = Level(_available(level), webhooks.parse_stamp(stamp))

    async def lookup(self, item_ids: Sequence[str]) -> list[Item] | None:
        """The items by id (what product webhooks name), 200 per call; untracked, unstocked
        and unknown ones are left out."""
        location = await self.location()
        if await self._extra_locations():
            found: list[Item] = []
            ids = list(dict.fromkeys(item_ids))
            calls = self._located_calls(ids, queries.LOOKUP_SIZE, lookup=True)
            async for item_id, name, node in calls:
                if not isinstance(node.get("variant"), dict):
                    continue
                inventory = {k: node.get(k) for k in ("id", "tracked", "inventoryLevel")}
                self._remember(node["variant"].get("id"), node.get("id"))
                item = _item({**node["variant"], "inventoryItem": inventory}, location=name)
                if item is not None:
                    found.append(dataclasses.replace(item, item_id=item_id))
            return found
        valid = [i for i in dict.fromkeys(item_ids) if _ITEM_GID.match(i)]
        found = []
        for start in range(0, len(valid), queries.LOOKUP_SIZE):
            chunk = valid[start : start + queries.LOOKUP_SIZE]
            variables = {"ids": chunk, "loc": location}
            cost = queries.lookup_cost(len(chunk))
            data = await self.client.call(queries.LOOKUP, variables, cost=cost)
            for node in data.get("nodes") or []:
                if not isinstance(node, dict) or not isinstance(node.get("variant"), dict):
                    continue
                inventory = {k: node.get(k) for k in ("id", "tracked", "inventoryLevel")}
                item = _item({**node["variant"], "inventoryItem": inventory})
                if item is not None:
                    found.append(item)
        return found

    # -- writing -------------------------------------------------------------------------------

    async def write(self, writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        """Compare-and-set writes, ≤ 250 rows per idempotent call (see `_write_call`)."""
        if not writes:
            return []
        results: list[WriteResult | None] = [None] * len(writes)
        location = await self.location()
        located = bool(await self._extra_locations())
        chunks = [
            range(s, min(s + MAX_BATCH, len(writes))) for s in range(0, len(writes), MAX_BATCH)
        ]
        for index, chunk in enumerate(chunks):
            call_key = key if len(chunks) == 1 else str(uuid.uuid5(KEY_NAMESPACE, f"{key}/{index}"))
            pending: list[int] = []
            seen: set[str] = set()
            for i in chunk:
                item_id = writes[i].item_id
                if not (self._split(item_id) if located else _ITEM_GID.match(item_id)):
                    message = (
                        "not an InventoryItem gid at a synced location"
                        if located
                        else "not an InventoryItem gid"
                    )
                    results[i] = WriteResult(item_id, "error", message=message)
                elif item_id in seen:
                    results[i] = WriteResult(item_id, "error", message="item twice in one batch")
                else:
                    seen.add(item_id)
                    pending.append(i)
            await self._write_rows(writes, pending, call_key, location, results)
        return [
            r if r is not None else WriteResult(w.item_id, "unknown")
            for r, w in zip(results, writes, strict=True)
        ]

    async def _write_rows(
        self,
        writes: Sequence[Write],
        pending: list[int],
        call_key: str,
        location: str,
        results: list[WriteResult | None],
    ) -> None:
        """Send `pending` rows; Shopify rejects a call with a stale row as a whole, so the
        rows it did not object to are re-sent under a key derived from this one."""
        busy = fresh = 0

        def unknown(message: str) -> None:
            for i in pending:
                results[i] = WriteResult(writes[i].item_id, "unknown", message=message)

        while pending:
            variables = self._set_variables([writes[i] for i in pending], location, call_key)
            try:
                document = (
                    queries.set_quantities(self.settings.api_version, len(self._extras))
                    if self._extras
                    else self._set_document
                )
                data = await self.client.call(document, variables, cost=queries.WRITE_COST)
            except ShopifyUnavailable as exc:
                return unknown(str(exc))
            payload = data.get("inventorySetQuantities")
            if not isinstance(payload, dict):
                return unknown("no payload")
            errors = [e for e in payload.get("userErrors") or [] if isinstance(e, dict)]
            group = payload.get("inventoryAdjustmentGroup")
            if any(e.get("code") == "IDEMPOTENCY_CONCURRENT_REQUEST" for e in errors):
                busy += 1  # the same key is still running at Shopify: ask again, same key
                if busy > self.settings.max_retries:
                    return unknown("idempotent request still running")
                await self.clock.sleep(self.client.backoff(busy))
                continue
            if any(e.get("code") == "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED" for e in errors):
                # An earlier attempt under this key failed without applying anything: Shopify
                # wants a new key. Derived from this one, so a retry of the batch walks the same
                # keys and still runs once.
                fresh += 1
                if fresh > self.settings.max_retries:
                    return unknown("every key's attempt failed")
                call_key = str(uuid.uuid5(KEY_NAMESPACE, f"{call_key}/new"))
                log.info("shopify_write_new_key", rows=len(pending))
                continue
            by_row: dict[int, dict[str, Any]] = {}
            general: list[dict[str, Any]] = []
            for error in errors:
                row = _row_index(error.get("field"))
                if row is not None and row < len(pending):
                    by_row[row] = error
                else:
                    general.append(error)
            if not errors and group is None:
                return unknown("no group")
            after, stamps = self._after(group)
            remaining: list[int] = []
            for row, i in enumerate(pending):
                write = writes[i]
                refusal = by_row.get(row)
                if refusal is not None:
                    stale = refusal.get("code") in _STALE
                    results[i] = WriteResult(
                        write.item_id, "conflict" if stale else "error", message=_describe(refusal)
                    )
                elif general:
                    # A call-level refusal (key mismatch, bad reason...): nothing to resend.
                    message = "; ".join(_describe(e) for e in general)
                    results[i] = WriteResult(write.item_id, "error", message=message)
                elif group is not None:
                    available = after.get(write.item_id, write.target)
                    stamp = stamps.get(write.item_id)
                    results[i] = WriteResult(write.item_id, "ok", available=available, stamp=stamp)
                else:
                    remaining.append(i)
            if remaining and by_row:
                log.info("shopify_write_resend", rows=len(remaining), refused=len(by_row))
            pending = remaining
            call_key = str(uuid.uuid5(KEY_NAMESPACE, f"{call_key}/retry"))

    def _after(self, group: Any) -> tuple[dict[str, int], dict[str, float]]:
        """`_after`, keyed by this channel's item ids where it syncs several locations."""
        if not self._extras:
            return _after(group)
        suffixes = {gid: "@" + gid.rsplit("/", 1)[-1] for gid in self._extras}
        aliases = {gid: queries.extra_alias(i) for i, gid in enumerate(self._extras)}
        counts: dict[str, int] = {}
        stamps: dict[str, float] = {}
        changes = group.get("changes") if isinstance(group, dict) else None
        for change in changes or []:
            if not isinstance(change, dict) or change.get("name") != "available":
                continue
            item, place = change.get("item"), change.get("location")
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            location = place.get("id") if isinstance(place, dict) else self._location
            if location != self._location and location not in suffixes:
                continue
            item_id = item["id"] + suffixes.get(str(location), "")
            if isinstance(change.get("quantityAfterChange"), int):
                counts[item_id] = change["quantityAfterChange"]
            level = item.get(aliases.get(str(location), "inventoryLevel"))
            if isinstance(level, dict) and (stamp := webhooks.parse_stamp(level.get("updatedAt"))):
                stamps[item_id] = stamp
        return counts, stamps

    def _set_variables(self, rows: list[Write], location: str, key: str) -> dict[str, Any]:
        if self._extras:
            return self._located_set_variables(rows, key)
        compare = "changeFromQuantity" if self._change_from else "compareQuantity"
        variables: dict[str, Any] = {
            "input": {
                "name": "available",
                "reason": "correction",
                "referenceDocumentUri": "shopsync://sync",
                "quantities": [
                    {
                        "inventoryItemId": w.item_id,
                        "locationId": location,
                        "quantity": w.target,
                        compare: w.expected,
                    }
                    for w in rows
                ],
            }
        }
        variables["loc"] = location
        if self._change_from:
            variables["key"] = key
        return variables

    def _located_set_variables(self, rows: list[Write], key: str) -> dict[str, Any]:
        """`_set_variables` of rows at any synced location (each row its own `locationId`)."""
        compare = "changeFromQuantity" if self._change_from else "compareQuantity"
        quantities = []
        for w in rows:
            split = self._split(w.item_id)
            assert split is not None  # `write` refused the others
            quantities.append(
                {
                    "inventoryItemId": split[0],
                    "locationId": split[1],
                    "quantity": w.target,
                    compare: w.expected,
                }
            )
        variables: dict[str, Any] = {
            "input": {
                "name": "available",
                "reason": "correction",
                "referenceDocumentUri": "shopsync://sync",
                "quantities": quantities,
            },
            "loc": self._location,
            **{f"loc{i}": gid for i, gid in enumerate(self._extras or {})},
        }
        if self._change_from:
            variables["key"] = key
        return variables

    # -- webhooks ------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookHint:
        """Check `X-Shopify-Hmac-Sha256` over the raw body, then map the topic to a hint."""
        if self._extras and self._location is not None:
            located = {self._location: ""}
            located.update({gid: "@" + gid.rsplit("/", 1)[-1] for gid in self._extras})
            return webhooks.verify(
                self.settings.webhook_secret,
                headers,
                body,
                located=located,
                variant_items=self._variant_items,
            )
        return webhooks.verify(
            self.settings.webhook_secret, headers, body, location_gid=self._location
        )

    async def subscribe(self, callback_url: str) -> None:
        """Create the six subscriptions the channel needs, skipping those already there."""
        data = await self.client.call(queries.WEBHOOKS, {}, cost=queries.WEBHOOKS_COST)
        nodes = (data.get("webhookSubscriptions") or {}).get("nodes") or []
        existing = {(n.get("topic"), n.get("uri")) for n in nodes if isinstance(n, dict)}
        refused: list[str] = []
        for topic in TOPICS:  # each on its own: one refusal does not stop the others
            if (topic, callback_url) in existing:
                continue
            variables = {"topic": topic, "sub": {"uri": callback_url, "format": "JSON"}}
            created = await self.client.call(
                queries.WEBHOOK_CREATE, variables, cost=queries.WRITE_COST
            )
            errors = (created.get("webhookSubscriptionCreate") or {}).get("userErrors") or []
            messages = [str(e.get("message", "")) for e in errors if isinstance(e, dict)]
            if messages and not all("already been taken" in m for m in messages):
                log.warning("shopify_webhook_refused", topic=topic, error="; ".join(messages))
                refused.append(f"{topic}: {'; '.join(messages)}")
                continue
            log.info("shopify_webhook_subscribed", topic=topic)
        if refused:
            raise ChannelError(f"cannot subscribe to {', '.join(refused)}")

    async def set_storefront_open(self, is_open: bool) -> bool:
        """Shopify's Admin API cannot close a storefront."""
        return False

    def stats(self) -> dict[str, float]:
        """The client's counters and its cost bucket, for `/metrics`."""
        c = self.client
        return client_stats(c, c.budget())

    async def check(self) -> list[Check]:
        """The common checks, then the granted scopes (asked of the API, so a static token's
        too; also when listing failed, which a missing scope explains) and the location."""
        checks = await super().check()
        if not any(c.name == "shop" and c.ok for c in checks):
            return checks
        checks.append(await self._check_scopes())
        if not all(c.ok for c in checks):
            return checks
        try:
            data = await self.client.call(queries.LOCATIONS, {}, cost=queries.LOCATIONS_COST)
            primary = await self.client.call(
                queries.PRIMARY_LOCATION, {}, cost=queries.PRIMARY_LOCATION_COST
            )
        except ChannelError as exc:
            return [*checks, Check("location", False, str(exc))]
        nodes = [n for n in (data.get("locations") or {}).get("nodes") or [] if isinstance(n, dict)]
        names = {n.get("id"): n.get("name") for n in nodes if n.get("isActive")}
        location = await self.location()
        if location not in names:
            known = ", ".join(f"{i} ({n})" for i, n in names.items())
            checks.append(
                Check(
                    "location",
                    False,
                    f"{location} is no active location here ({known}): fix location_id",
                )
            )
        else:
            is_primary = (primary.get("location") or {}).get("id") == location
            role = "the primary location" if is_primary else "not the primary location"
            checks.append(
                Check("location", True, f"{names[location]} ({location}), {role}, of {len(names)}")
            )
        extras = await self._extra_locations()
        if extras:
            synced = ", ".join(
                f"{name!r}: {names.get(gid, '?')} ({gid})" for gid, name in extras.items()
            )
            checks.append(Check("locations", True, f"also syncs {synced}"))
        return checks

    async def _check_scopes(self) -> Check:
        try:
            data = await self.client.call(queries.ACCESS_SCOPES, {}, cost=2)
        except ChannelError as exc:
            return Check("scopes", False, str(exc))
        install = data.get("currentAppInstallation") or {}
        granted: set[str] = {
            s["handle"]
            for s in install.get("accessScopes") or []
            if isinstance(s, dict) and isinstance(s.get("handle"), str)
        }
        # a write scope includes its read scope
        granted |= {"read_" + s.removeprefix("write_") for s in granted if s.startswith("write_")}
        missing = [s for s in SCOPES if s not in granted]
        if missing:
            fix = "add them to the app's version in the Dev Dashboard and install it again"
            return Check("scopes", False, f"missing {', '.join(missing)}: {fix}")
        return Check("scopes", True, "granted: " + ", ".join(s for s in SCOPES if s in granted))


def _available(level: Any) -> int | None:
    if not isinstance(level, dict):
        return None
    for quantity in level.get("quantities") or []:
        if isinstance(quantity, dict) and quantity.get("name") == "available":
            value = quantity.get("quantity")
            return value if isinstance(value, int) else None
    return None


def _item(
    node: dict[str, Any], level_key: str = "inventoryLevel", suffix: str = "", location: str = ""
) -> Item | None:
    """An Item from a variant node (page or bulk line) at the location whose level is under
    `level_key` (its item id ends in `suffix`, its `location` is the name given for it);
    None if untracked or not stocked there."""
    inventory = node.get("inventoryItem")
    if not isinstance(inventory, dict) or not inventory.get("tracked", True):
        return None
    level = inventory.get(level_key)
    available = _available(level)
    if available is None:
        return None
    stamp = webhooks.parse_stamp(level.get("updatedAt")) if isinstance(level, dict) else None
    title = str(node.get("displayName") or "")
    title = title.removesuffix(" - Default Title")  # single-variant products
    return Item(
        item_id=inventory["id"] + suffix,
        sku=(node.get("sku") or "").strip() or None,
        available=available,
        created_at=_epoch(node.get("createdAt")),
        title=title,
        stamp=stamp,
        location=location,
    )


def _epoch(value: Any) -> float:
    if not isinstance(value, str):
        return 0.0
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _row_index(field: Any) -> int | None:
    """Row i of a userError whose field is ["input", "quantities", "i", ...]."""
    if isinstance(field, list) and len(field) >= 3 and field[:2] == ["input", "quantities"]:
        try:
            return int(field[2])
        except (TypeError, ValueError):
            return None
    return None


def _after(group: Any) -> tuple[dict[str, int], dict[str, float]]:
    """Each changed item's `available` after the write, and its level's `updatedAt` then
    (the stamp older level webhooks are judged against), from one adjustment group."""
    counts: dict[str, int] = {}
    stamps: dict[str, float] = {}
    if not isinstance(group, dict):
        return counts, stamps
    for change in group.get("changes") or []:
        if not isinstance(change, dict) or change.get("name") != "available":
            continue
        item = change.get("item")
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        after = change.get("quantityAfterChange")
        if isinstance(after, int):
            counts[item["id"]] = after
        level = item.get("inventoryLevel")
        stamp = webhooks.parse_stamp(level.get("updatedAt")) if isinstance(level, dict) else None
        if stamp is not None:
            stamps[item["id"]] = stamp
    return counts, stamps


def _describe(error: dict[str, Any]) -> str:
    code = error.get("code")
    message = str(error.get("message", ""))
    return f"{code}: {message}" if code else message
