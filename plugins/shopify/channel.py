"""The Shopify channel: inventory of one location through the Admin GraphQL API."""

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
    """One Shopify shop; `item_id` is the InventoryItem gid, counts are `available`."""

    name: ClassVar[str] = "shopify"
    settings_class: ClassVar[type[ChannelSettings]] = ShopifySettings

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
        """Resolve the location once, so the first webhook can already be filtered by it."""
        await self.location()

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
        """Every tracked variant stocked at the location: bulk query, else pages of 200."""
        location = await self.location()
        if self.settings.bulk:
            url = await self._run_bulk(location)
            if url is not None:
                if url:
                    async for node in self.client.lines(url):
                        item = _item(node)
                        if item is not None:
                            yield item
                return
        async for item in self._pages(location):
            yield item

    async def _run_bulk(self, location: str) -> str | None:
        """The result URL ("" for an empty result), or None to fall back to paging."""
        query = queries.bulk_variants_query(location)
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

    async def _pages(self, location: str) -> AsyncIterator[Item]:
        document = queries.variants_page()
        first, after = queries.PAGE_SIZE, None
        while True:
            variables = {"first": first, "after": after, "loc": location}
            try:
                data = await self.client.call(document, variables, cost=queries.page_cost(first))
            except CostExceeded:
                if first == 1:
                    raise
                first = max(1, first // 2)  # the shop prices the page higher than we do
                continue
            page = data.get("productVariants") or {}
            for node in page.get("nodes") or []:
                item = _item(node)
                if item is not None:
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
        valid = [i for i in result if _ITEM_GID.match(i)]
        location = await self.location()
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

    async def lookup(self, item_ids: Sequence[str]) -> list[Item] | None:
        """The items by id (what product webhooks name), 200 per call; untracked, unstocked
        and unknown ones are left out."""
        valid = [i for i in dict.fromkeys(item_ids) if _ITEM_GID.match(i)]
        location = await self.location()
        found: list[Item] = []
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
        chunks = [
            range(s, min(s + MAX_BATCH, len(writes))) for s in range(0, len(writes), MAX_BATCH)
        ]
        for index, chunk in enumerate(chunks):
            call_key = key if len(chunks) == 1 else str(uuid.uuid5(KEY_NAMESPACE, f"{key}/{index}"))
            pending: list[int] = []
            seen: set[str] = set()
            for i in chunk:
                item_id = writes[i].item_id
                if not _ITEM_GID.match(item_id):
                    results[i] = WriteResult(item_id, "error", message="not an InventoryItem gid")
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
                data = await self.client.call(
                    self._set_document, variables, cost=queries.WRITE_COST
                )
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
            after, stamps = _after(group)
            remaining = []
            for row, i in enumerate(pending):
                write = writes[i]
                error = by_row.get(row)
                if error is not None:
                    status = "conflict" if error.get("code") in _STALE else "error"
                    results[i] = WriteResult(write.item_id, status, message=_describe(error))
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

    def _set_variables(self, rows: list[Write], location: str, key: str) -> dict[str, Any]:
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

    # -- webhooks ------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookHint:
        """Check `X-Shopify-Hmac-Sha256` over the raw body, then map the topic to a hint."""
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
        return checks

    async def _check_scopes(self) -> Check:
        try:
            data = await self.client.call(queries.ACCESS_SCOPES, {}, cost=2)
        except ChannelError as exc:
            return Check("scopes", False, str(exc))
        install = data.get("currentAppInstallation") or {}
        granted = {
            s.get("handle")
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


def _item(node: dict[str, Any]) -> Item | None:
    """An Item from a variant node (page or bulk line); None if untracked or not stocked."""
    inventory = node.get("inventoryItem")
    if not isinstance(inventory, dict) or not inventory.get("tracked", True):
        return None
    level = inventory.get("inventoryLevel")
    available = _available(level)
    if available is None:
        return None
    stamp = webhooks.parse_stamp(level.get("updatedAt")) if isinstance(level, dict) else None
    title = str(node.get("displayName") or "")
    title = title.removesuffix(" - Default Title")  # single-variant products
    return Item(
        item_id=inventory["id"],
        sku=(node.get("sku") or "").strip() or None,
        available=available,
        created_at=_epoch(node.get("createdAt")),
        title=title,
        stamp=stamp,
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
