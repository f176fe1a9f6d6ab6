"""The Shopify channel: inventory of a shop's locations through the Admin GraphQL API."""

from __future__ import annotations

import dataclasses
import re
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
from plugins.shopify import queries, variants, webhooks
from plugins.shopify.client import (
    CostExceeded,
    ShopifyClient,
    client_credentials_grant,
)
from plugins.shopify.locations import ITEM_GID, LOCATED, Sites
from plugins.shopify.queries import MAX_BATCH
from plugins.shopify.settings import ShopifySettings
from plugins.shopify.writes import KEY_NAMESPACE, Writer

if TYPE_CHECKING:
    import aiohttp

    from agent.clock import Clock

__all__ = ["KEY_NAMESPACE", "ShopifyChannel", "ShopifySettings"]

log = structlog.get_logger(__name__)

TOPICS = (
    "INVENTORY_LEVELS_UPDATE",
    "ORDERS_CREATE",
    "ORDERS_CANCELLED",
    "REFUNDS_CREATE",
    "PRODUCTS_CREATE",
    "PRODUCTS_UPDATE",
)
_VARIANT_GID = re.compile(r"^gid://shopify/ProductVariant/(\d+)$")
_BULK_DONE = frozenset({"COMPLETED", "FAILED", "CANCELED", "EXPIRED"})
_BULK_MAX_WAIT = 3600.0
# What the channel calls needs (shopify.md §6); `shopsync check` names any missing.
SCOPES = ("read_inventory", "write_inventory", "read_products", "read_orders", "read_locations")


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
        self.sites = Sites(self.client, settings.location_id)
        self.writer = Writer(self.client, clock, settings, self.sites)
        self._variant_items: dict[int, int] = {}  # variant id -> inventory item id (listed)
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
        return await self.sites.extra_locations(self.locations)

    async def _synced(self) -> list[tuple[str, str, str]]:
        """Every synced location as (Location gid, item id suffix, name given), own first."""
        return await self.sites.synced(self.locations)

    async def location(self) -> str:
        """The Location gid: configured, else the shop's primary location."""
        return await self.sites.location()

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
        own = variants.item(node)
        if len(synced) == 1:
            return [] if own is None else [own]
        inventory = node.get("inventoryItem")
        if isinstance(inventory, dict):
            self._remember(node.get("id"), inventory.get("id"))
        items = [] if own is None else [own]
        for index, (_, suffix, name) in enumerate(synced[1:]):
            item = variants.item(node, queries.extra_alias(index), suffix, name)
            if item is not None:
                items.append(item)
        return items

    def _remember(self, variant_gid: Any, item_gid: Any) -> None:
        """Note a variant's inventory item: an order line names only its variant."""
        variant = _VARIANT_GID.match(variant_gid) if isinstance(variant_gid, str) else None
        item = LOCATED.match(item_gid) if isinstance(item_gid, str) else None
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
        valid = [i for i in result if ITEM_GID.match(i)]
        for start in range(0, len(valid), MAX_BATCH):
            chunk = valid[start : start + MAX_BATCH]
            data = await self.client.call(
                queries.READ, {"ids": chunk, "loc": location}, cost=queries.read_cost(len(chunk))
            )
            for item_id, node in zip(chunk, data.get("nodes") or [], strict=False):
                if isinstance(node, dict) and node.get("tracked", True):
                    level = node.get("inventoryLevel")
                    stamp = level.get("updatedAt") if isinstance(level, dict) else None
                    result[item_id] = Level(variants.available(level), webhooks.parse_stamp(stamp))
        return result

    async def _located_calls(
        self, item_ids: list[str], size: int, lookup: bool
    ) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        """(item id, location name, node) of these ids at any synced location, `size` ids per
        call, each call one group of ids per location (`queries.located_items_query`)."""
        synced = {gid: (suffix, name) for gid, suffix, name in await self._synced()}
        valid = [(i, split) for i in item_ids if (split := self.sites.split(i)) is not None]
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
                result[item_id] = Level(variants.available(level), webhooks.parse_stamp(stamp))

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
                item = variants.item({**node["variant"], "inventoryItem": inventory}, location=name)
                if item is not None:
                    found.append(dataclasses.replace(item, item_id=item_id))
            return found
        valid = [i for i in dict.fromkeys(item_ids) if ITEM_GID.match(i)]
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
                item = variants.item({**node["variant"], "inventoryItem": inventory})
                if item is not None:
                    found.append(item)
        return found

    # -- writing -------------------------------------------------------------------------------

    async def write(self, writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        """Compare-and-set writes, ≤ 250 rows per idempotent call (see `Writer`)."""
        if not writes:
            return []
        location = await self.location()
        located = bool(await self._extra_locations())
        return await self.writer.write(writes, key=key, location=location, located=located)

    # -- webhooks ------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookHint:
        """Check `X-Shopify-Hmac-Sha256` over the raw body, then map the topic to a hint."""
        if self.sites.extras and self.sites.own is not None:
            located = {self.sites.own: "", **self.sites.suffixes()}
            return webhooks.verify(
                self.settings.webhook_secret,
                headers,
                body,
                located=located,
                variant_items=self._variant_items,
            )
        return webhooks.verify(
            self.settings.webhook_secret, headers, body, location_gid=self.sites.own
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
