"""The SHOPLINE channel: lists, reads and writes stock at its locations through the Open API.

Locations. The channel works at its own location (``location_id``, else the store's default)
and at each of `Channel.locations` (SHOPLINE location ids, as the merchant wrote them). An item
is an inventory item at one of them: at the own location its id is the inventory item id, as
always; at another, ``<inventory item id>@<location id>`` (`plugins.shopline.locations`). One
``inventory_levels.json`` call reads 50 inventory items at up to 10 locations, so syncing a few
more locations costs no more calls for listing and reading than one.

Write path. SHOPLINE has no compare-and-set, no version or ETag and no idempotency key, and
writes one item at one location per call. So every `Write` becomes one relative
``POST inventory_levels/adjust.json`` by ``target - expected`` rather than an absolute ``set``:
a sale that lands between our read and our write survives an adjust (a ``set`` would erase
it), and the adjust answers with the count after it, so any difference from ``target`` is that
sale, which the core records as a local change. The result is ``ok`` with that count.

Unknown outcomes. An adjust that times out, gets a 5xx or loses its connection may or may not
have been applied, and a retry would apply it twice, so it is never retried blindly and never
guessed. It is resolved from facts. The channel keeps, per item, the last count it observed
and when (every list, read and write answer; the request's send and receive times bound the
moment the platform took it). That count ``B`` is what the adjust started from. The channel
re-reads the level ``L`` and fetches the orders updated since then (``status=any``), summing
the net effect ``N`` on this item of orders placed, cancelled and refunds restocked in that
window. Then:

- ``L == B + (target - expected) + N``: it was applied. Result ``ok``, available ``L``.
- ``L == B + N``: it was not applied. The adjust is sent again at once: a fresh decision from
  a fresh read, not a blind retry, and cheaper than a ``conflict`` round trip through the core.
  Its answer minus ``target`` is still exactly the local change, because the adjust is
  relative. If that second send is unknown too and also proves not applied, the result is
  ``conflict`` with available ``L`` (true: not applied, and the shop holds ``L``).
- otherwise (a manual edit in the window, or events too close to a reading to place): result
  ``unknown``, and the write is remembered under its key, so that when the core retries the
  same key the channel resolves again instead of sending again.

Platform timestamps have whole-second resolution and the platform's clock may differ from ours
by up to ``clock_skew`` seconds, so an event that close to a reading is counted as "maybe":
the channel tries both and decides only when exactly one of "applied" and "not applied" fits.

Since the platform keeps no idempotency key, the channel keeps one, in its journal (the core
keeps it in the agent's database): before an adjust leaves, its facts (base count and when it
was seen, the write, the item's variant and SKU) are noted under the batch key; a definite
answer replaces them. A retry of that key, in this process or after a crash, gets the noted
answer, or resolves the noted facts as above; it never sends a second adjust blindly. The core
drops the note once it has recorded the outcome.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
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
    RateBudget,
    RenewingToken,
    WebhookHint,
    Write,
    WriteResult,
    client_stats,
)
from plugins.shopline import webhooks
from plugins.shopline.client import (
    OutcomeUnknown,
    RequestRefused,
    ShoplineClient,
    ShoplineUnavailable,
    format_time,
    parse_time,
    refresh_grant,
)
from plugins.shopline.locations import Sites, resolve_sites
from plugins.shopline.resolve import (
    Observation,
    PendingWrite,
    StockEvent,
    judge,
    order_events,
    possible_sums,
)

if TYPE_CHECKING:
    import aiohttp

    from agent.clock import Clock

__all__ = ["ShoplineChannel", "ShoplineSettings"]

log = structlog.get_logger(__name__)

_VERSION = re.compile(r"^v\d{8}$")
_TIMESTAMP_RESOLUTION = 1.0  # SHOPLINE prints whole seconds
# Each list endpoint's own page maximum: products 250, orders 100 (shopline.md §2).
_PRODUCTS_PAGE = 250
# What the channel calls need: products and levels read, levels written, orders read (to
# resolve an adjust whose outcome is unknown).
SCOPES = ("read_products", "read_inventory", "write_inventory", "read_orders")
_ORDERS_PAGE = 100


@dataclasses.dataclass
class ShoplineSettings(ChannelSettings):
    """The `[channel.options]` of a SHOPLINE shop.

    `api_url` is the store's base URL (``https://{handle}.myshopline.com``, or an emulator's);
    credentials are ``access_token`` (a private app's static token) and/or ``app_key`` and
    ``app_secret`` of a custom or public app, whose 10 h tokens the channel refreshes itself
    (starting from ``access_token`` when given); `webhook_secret` defaults to ``app_secret``,
    which SHOPLINE signs an app's webhooks with;
    `location_id` defaults to the store's default location; `rate` and `burst` pace our own
    requests (SHOPLINE drains 4 per second and queues up to 40, so a call sent into a deep
    queue waits there: a burst of 10 keeps that wait under 2.5 s of the `timeout`);
    `clock_skew` bounds how far SHOPLINE's clock
    may be from ours when an unknown write outcome is resolved from order timestamps.
    """

    api_url: str
    access_token: str = dataclasses.field(default="", repr=False)
    webhook_secret: str = dataclasses.field(default="", repr=False)
    app_key: str = ""
    app_secret: str = dataclasses.field(default="", repr=False)
    location_id: str | None = None
    api_version: str = "v20260601"
    timeout: float = 10.0
    retry_base: float = 0.5
    max_retries: int = 8
    rate: float = 4.0
    burst: int = 10
    clock_skew: float = 1.0

    def __post_init__(self) -> None:
        self.api_url = str(self.api_url).rstrip("/")
        if not self.api_url.startswith(("http://", "https://")):
            raise ConfigError("channel option api_url must start with http:// or https://")
        self.app_key = str(self.app_key).strip()
        if bool(self.app_key) != bool(self.app_secret):
            raise ConfigError("channel options app_key and app_secret go together")
        if not self.access_token and not self.app_key:
            raise ConfigError(
                "channel option access_token must not be empty (or give app_key and app_secret)"
            )
        if not self.webhook_secret:
            if not self.app_key:
                raise ConfigError("channel option webhook_secret must not be empty")
            self.webhook_secret = self.app_secret
        if self.location_id is not None:
            self.location_id = str(self.location_id).strip() or None
        if not _VERSION.match(self.api_version):
            raise ConfigError("channel option api_version must look like v20260601")
        if self.timeout <= 0 or self.rate <= 0 or self.burst < 1:
            raise ConfigError("channel options timeout and rate must be > 0, burst >= 1")
        if self.retry_base < 0 or self.max_retries < 0 or self.clock_skew < 0:
            raise ConfigError("channel options retry_base, max_retries, clock_skew must be >= 0")


@dataclasses.dataclass(frozen=True, slots=True)
class _Listed:
    item_id: str  # the inventory item id
    variant_id: str | None
    sku: str | None
    created_at: float
    title: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Call:
    """One adjust of a write batch: its notes live under the batch `key`, as `part`."""

    key: str
    part: str


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _title(product: Mapping[str, Any], variant: Mapping[str, Any]) -> str:
    title = str(product.get("title") or "")
    own = variant.get("title")
    if own and own != "Default Title":
        return f"{title} - {own}" if title else str(own)
    return title


class ShoplineChannel(Channel):
    """One SHOPLINE store at its own location and `locations`; `item_id` is the inventory item
    id (digits) at the own location, ``<inventory item id>@<location id>`` at the others."""

    name: ClassVar[str] = "shopline"
    multi_location: ClassVar[bool] = True
    settings_class: ClassVar[type[ChannelSettings]] = ShoplineSettings
    budget = RateBudget(
        bucket=40, restore_rate=4.0, max_write_batch=1, max_read_batch=50, unit="requests"
    )

    def __init__(
        self, settings: ChannelSettings, *, http: aiohttp.ClientSession, clock: Clock
    ) -> None:
        if not isinstance(settings, ShoplineSettings):
            raise ConfigError("the shopline channel needs ShoplineSettings")
        super().__init__(settings, http=http, clock=clock)
        self.options = settings
        self.budget = RateBudget(
            bucket=float(settings.burst),
            restore_rate=settings.rate,
            max_write_batch=1,
            max_read_batch=50,
            unit="requests",
        )
        if settings.app_key:
            self.credentials = RenewingToken(
                self._refresh,
                clock=clock,
                kind="refresh",
                shop=settings.api_url,
                initial=settings.access_token,
            )
        self.client = ShoplineClient(
            http=http,
            clock=clock,
            api_url=settings.api_url,
            api_version=settings.api_version,
            credentials=self.credentials,
            timeout=settings.timeout,
            retry_base=settings.retry_base,
            max_retries=settings.max_retries,
            rate=settings.rate,
            burst=settings.burst,
        )
        self.location_id: str | None = None  # the own location, once `start()` found it
        self._sites: Sites | None = None
        self._observed: dict[str, Observation] = {}  # by the channel's item id
        # inventory item id -> (variant id, SKU), and variant id -> inventory item id
        self._catalogue: dict[str, tuple[str | None, str | None]] = {}
        self._variant_items: dict[str, str] = {}

    # -- set-up ------------------------------------------------------------------------------

    async def _refresh(self) -> Grant:
        return await refresh_grant(
            self.http,
            self.clock,
            f"{self.options.api_url}/admin/oauth/token/refresh",
            self.options.app_key,
            self.options.app_secret,
            timeout=self.options.timeout,
        )

    async def start(self) -> None:
        """Find the locations to work at: the configured one (else the store's default) and
        each of `locations`, which must be other locations of the store (`ChannelError`)."""
        await self._where()

    async def _where(self) -> Sites:
        """The synced locations, from `locations/list.json` on first use."""
        if self._sites is not None:
            return self._sites
        resp = await self.client.get("locations/list")
        body = resp.body if isinstance(resp.body, dict) else {}
        wanted = self.options.location_id
        sites = resolve_sites(body.get("locations") or [], wanted, self.locations)
        self._sites, self.location_id = sites, sites.own
        log.info(
            "shopline_location",
            location_id=sites.own,
            configured=wanted is not None,
            others=list(sites.others),
        )
        return sites

    def _known_sites(self) -> Sites:
        """The synced locations as far as known without a call (webhooks before `start()`)."""
        if self._sites is not None:
            return self._sites
        others = {str(entry).strip(): entry for entry in self.locations}
        return Sites(self.options.location_id or "", others)

    def _remember(self, inventory_item_id: str, variant_id: str | None, sku: str | None) -> None:
        self._catalogue[inventory_item_id] = (variant_id, sku)
        if variant_id:
            self._variant_items[variant_id] = inventory_item_id

    # -- reading -----------------------------------------------------------------------------

    async def _levels(self, item_ids: Sequence[str]) -> dict[str, Observation]:
        """The counts of these items (the channel's ids) stocked where they say; one call per
        50 inventory items and 10 locations (a single call for up to 50 own-location ids)."""
        sites = await self._where()
        wanted: dict[tuple[str, str], str] = {}
        for item_id in item_ids:
            parts = sites.split(item_id)
            if parts is not None:
                wanted[parts] = item_id
        inventory = list(dict.fromkeys(inventory_id for inventory_id, _ in wanted))
        locations = list(dict.fromkeys(location_id for _, location_id in wanted))
        found: dict[str, Observation] = {}
        for chunk in _chunks(inventory, 50):
            for where in _chunks(locations, 10):
                for pair, observation in (await self._fetch(chunk, where)).items():
                    if pair in wanted:
                        found[wanted[pair]] = observation
        return found

    async def _fetch(
        self, inventory_ids: Sequence[str], locations: Sequence[str]
    ) -> dict[tuple[str, str], Observation]:
        """One `inventory_levels.json` call (<= 50 items, <= 10 synced locations): each
        (inventory item, location) level it returns; records every count it returns."""
        sites = await self._where()
        params = {
            "inventory_item_ids": ",".join(inventory_ids),
            "location_ids": ",".join(locations),
        }
        resp = await self.client.get("inventory_levels", params)
        body = resp.body if isinstance(resp.body, dict) else {}
        wanted = set(inventory_ids)
        found: dict[tuple[str, str], Observation] = {}
        for level in body.get("inventory_levels") or []:
            if not isinstance(level, dict):
                continue
            inventory_id = str(level.get("inventory_item_id"))
            raw_location = level.get("location_id")
            if raw_location is None and len(locations) == 1:
                raw_location = locations[0]  # a level without its location: the one asked for
            location_id = str(raw_location)
            item_id = sites.item_id(inventory_id, location_id)
            if inventory_id not in wanted or location_id not in locations or item_id is None:
                continue
            available = level.get("available")
            if not isinstance(available, int) or isinstance(available, bool):
                continue
            observation = Observation(available, resp.sent, resp.received)
            self._observed[item_id] = found[inventory_id, location_id] = observation
            if level.get("variant_id"):
                sku = self._catalogue.get(inventory_id, (None, None))[1]
                self._remember(inventory_id, str(level["variant_id"]), sku)
        return found

    async def list_items(self) -> AsyncIterator[Item]:
        """Every variant's inventory item at each synced location that stocks it, page by
        page."""
        params = {"limit": _PRODUCTS_PAGE}
        async for products, _resp in self.client.pages("products/products", params, "products"):
            listed: list[_Listed] = []
            for product in products:
                for variant in product.get("variants") or []:
                    item_id = variant.get("inventory_item_id")
                    if not item_id:
                        continue
                    created = variant.get("created_at") or product.get("created_at")
                    created_at = parse_time(created)[0] if created else 0.0
                    sku = variant.get("sku") or None
                    variant_id = str(variant["id"]) if variant.get("id") else None
                    listed.append(
                        _Listed(str(item_id), variant_id, sku, created_at, _title(product, variant))
                    )
            async for item in self._stocked(listed):
                yield item

    async def _stocked(self, listed: list[_Listed]) -> AsyncIterator[Item]:
        """The listed inventory items at each synced location that stocks them, with their
        counts (50 items and 10 locations per levels call); the own location's first."""
        sites = await self._where()
        for chunk in _chunks(listed, 50):
            for entry in chunk:
                self._remember(entry.item_id, entry.variant_id, entry.sku)
            inventory = [entry.item_id for entry in chunk]
            levels: dict[tuple[str, str], Observation] = {}
            for where in _chunks(sites.all, 10):
                levels.update(await self._fetch(inventory, where))
            for entry in chunk:
                for location_id in sites.all:
                    observation = levels.get((entry.item_id, location_id))
                    item_id = sites.item_id(entry.item_id, location_id)
                    if observation is None or item_id is None:
                        if location_id == sites.own:
                            log.info(
                                "shopline_item_not_stocked", item_id=entry.item_id, sku=entry.sku
                            )
                        continue
                    yield Item(
                        item_id=item_id,
                        sku=entry.sku,
                        available=observation.count,
                        created_at=entry.created_at,
                        title=entry.title,
                        location=sites.label(location_id),
                    )

    async def lookup(self, item_ids: Sequence[str]) -> list[Item] | None:
        """The items by id (what product webhooks name): `inventory_items.json` (250 ids a
        call) for SKU and creation time, then their levels (50 a call). The titles stay as the
        last full pass listed them (inventory items carry none). As `list_items` would list
        them: an inventory item named at one location comes at every synced location that
        stocks it."""
        sites = await self._where()
        parts = (sites.split(str(item_id)) for item_id in item_ids)
        ids = list(dict.fromkeys(part[0] for part in parts if part is not None))
        listed: list[_Listed] = []
        for chunk in _chunks(ids, _PRODUCTS_PAGE):
            resp = await self.client.get("inventory_items", {"ids": ",".join(chunk)})
            body = resp.body if isinstance(resp.body, dict) else {}
            for row in body.get("inventory_items") or []:
                if not isinstance(row, dict) or not row.get("id"):
                    continue
                created = row.get("created_at")
                variant_id = str(row["variant_id"]) if row.get("variant_id") else None
                listed.append(
                    _Listed(
                        str(row["id"]),
                        variant_id,
                        row.get("sku") or None,
                        parse_time(created)[0] if created else 0.0,
                        "",
                    )
                )
        return [item async for item in self._stocked(listed)]

    async def read(self, item_ids: Sequence[str]) -> dict[str, int | None]:
        """Counts at the items' locations, 50 ids per call; None for ids the shop lacks."""
        sites = await self._where()
        ids = list(dict.fromkeys(str(item_id) for item_id in item_ids))
        counts: dict[str, int | None] = dict.fromkeys(ids)
        valid = [item_id for item_id in ids if sites.split(item_id) is not None]
        for chunk in _chunks(valid, 50):
            for item_id, observation in (await self._levels(chunk)).items():
                counts[item_id] = observation.count
        return counts

    # -- writing -----------------------------------------------------------------------------

    async def write(self, writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        """One adjust per write (see the module docstring); `key` guards unknown outcomes."""
        results = []
        for index, one in enumerate(writes):
            call = _Call(key, f"{index}:{one.item_id}")
            note = await self._noted(call)
            if "result" in note:
                # The platform has no idempotency key, so we are it: a repeat gets the answer.
                results.append(WriteResult(**note["result"]))
                continue
            if "pending" in note:
                # Sent before, outcome unknown: find out, never send blindly.
                pending = PendingWrite.from_json(note["pending"])
                result = await self._resolve(call, pending, may_resend=True)
            else:
                result = await self._write_one(one, call)
            if result.status != "unknown":
                await self._note(call, {"result": dataclasses.asdict(result)})
            results.append(result)
        return results

    async def _noted(self, call: _Call) -> dict[str, Any]:
        notes = await self.journal.get(call.key)
        entry = notes.get(call.part) if isinstance(notes, dict) else None
        return entry if isinstance(entry, dict) else {}

    async def _note(self, call: _Call, entry: dict[str, Any] | None) -> None:
        """Note (or with None, forget) what is known of one call of batch `call.key`."""
        notes = await self.journal.get(call.key)
        notes = dict(notes) if isinstance(notes, dict) else {}
        if entry is None:
            notes.pop(call.part, None)
        else:
            notes[call.part] = entry
        if notes:
            await self.journal.put(call.key, notes)
        else:
            await self.journal.delete(call.key)

    async def _write_one(self, write: Write, call: _Call) -> WriteResult:
        try:
            parts = (await self._where()).split(write.item_id)
        except ShoplineUnavailable as exc:
            return WriteResult(write.item_id, "unknown", message=f"not sent: {exc}")
        except RequestRefused as exc:
            return WriteResult(write.item_id, "error", message=str(exc))
        if parts is None:
            return WriteResult(
                write.item_id, "error", message="not a SHOPLINE inventory item id of this channel"
            )
        try:
            if write.item_id not in self._observed:
                # An unknown outcome can only be resolved from a count we saw and when.
                await self._levels([write.item_id])
        except ShoplineUnavailable as exc:
            return WriteResult(write.item_id, "unknown", message=f"not sent: {exc}")
        except RequestRefused as exc:
            return WriteResult(write.item_id, "error", message=str(exc))
        base = self._observed.get(write.item_id)
        if base is None:
            return WriteResult(
                write.item_id, "error", message="item is not stocked at the location"
            )
        return await self._adjust(call, write, base, may_resend=True)

    async def _adjust(
        self, call: _Call, write: Write, base: Observation, *, may_resend: bool
    ) -> WriteResult:
        parts = (await self._where()).split(write.item_id)
        if parts is None:  # a noted write at a location no longer synced
            return WriteResult(write.item_id, "error", message="its location is not synced")
        inventory_id, location = parts
        body = {
            "inventory_item_id": inventory_id,
            "location_id": location,
            "available_adjustment": write.target - write.expected,
        }
        variant_id, sku = self._catalogue.get(inventory_id, (None, None))
        pending = PendingWrite(write, base, self.clock.now(), variant_id, sku)
        # On disk before the adjust leaves: after a crash, a retry resolves it from these facts.
        await self._note(call, {"pending": pending.to_json()})
        try:
            resp = await self.client.post("inventory_levels/adjust", body)
        except OutcomeUnknown as exc:
            log.warning("shopline_write_unknown", item_id=write.item_id, sku=sku, reason=str(exc))
            return await self._resolve(call, pending, may_resend=may_resend)
        except ShoplineUnavailable as exc:
            await self._note(call, None)  # surely not applied: a retry sends afresh
            return WriteResult(write.item_id, "unknown", message=f"not applied: {exc}")
        except RequestRefused as exc:
            return WriteResult(write.item_id, "error", message=str(exc))
        level = resp.body.get("inventory_level") if isinstance(resp.body, dict) else None
        available = level.get("available") if isinstance(level, dict) else None
        if not isinstance(available, int) or isinstance(available, bool):
            # Applied (2xx) but the count is missing: the core re-reads, as for a conflict.
            return WriteResult(write.item_id, "ok", None, message="adjust answer had no count")
        self._observed[write.item_id] = Observation(available, resp.sent, resp.received)
        return WriteResult(write.item_id, "ok", available)

    async def _resolve(
        self, call: _Call, pending: PendingWrite, *, may_resend: bool
    ) -> WriteResult:
        write = pending.write
        adjustment = write.target - write.expected
        try:
            # Wait out a timestamp's resolution and the clocks' disagreement, so that every
            # event up to now will be placed certainly before the re-read, not "maybe".
            await self.clock.sleep(self.options.clock_skew + _TIMESTAMP_RESOLUTION)
            now = (await self._levels([write.item_id])).get(write.item_id)
            if now is None:
                return WriteResult(write.item_id, "error", message="item left the location")
            sums: set[int] | None = {0}
            if adjustment != 0:
                events = await self._events_since(pending)
                sums = possible_sums(events, pending.base, now, self.options.clock_skew)
        except (ShoplineUnavailable, RequestRefused) as exc:
            log.warning("shopline_resolve_failed", item_id=write.item_id, reason=str(exc))
            return WriteResult(write.item_id, "unknown", message=f"could not resolve: {exc}")
        # An adjust by 0 changes nothing, so whether it landed does not matter.
        verdict = "applied"
        if adjustment:
            verdict = judge(pending.base.count, adjustment, now.count, sums)
        log.info(
            "shopline_write_resolved",
            item_id=write.item_id,
            sku=pending.sku,
            verdict=verdict,
            before=pending.base.count,
            delta=adjustment,
            level=now.count,
        )
        if verdict == "applied":
            return WriteResult(write.item_id, "ok", now.count)
        if verdict == "not_applied":
            if may_resend:
                return await self._adjust(call, write, now, may_resend=False)
            return WriteResult(
                write.item_id, "conflict", now.count, message="the adjust was not applied"
            )
        return WriteResult(
            write.item_id,
            "unknown",
            message="cannot tell whether the adjust was applied; a retry with the same key "
            "resolves again",
        )

    async def _events_since(self, pending: PendingWrite) -> list[StockEvent]:
        """Stock events on the item from orders updated since the base count was taken."""
        # An order's updated_at is at or after each of its events, so this window misses none.
        since = pending.base.sent - self.options.clock_skew - 1.0
        params = {"status": "any", "updated_at_min": format_time(since), "limit": _ORDERS_PAGE}
        parts = (await self._where()).split(pending.write.item_id)
        location = None if parts is None else parts[1]
        events: list[StockEvent] = []
        async for orders, _resp in self.client.pages("orders", params, "orders"):
            for order in orders:
                if isinstance(order, dict):
                    events.extend(
                        order_events(
                            order, variant_id=pending.variant_id, sku=pending.sku, location=location
                        )
                    )
        return events

    # -- webhooks ----------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookHint:
        """Check `X-Shopline-Hmac-Sha256` (hex or base64) and say what the delivery names."""

        def known(item_id: str) -> int | None:
            observation = self._observed.get(item_id)
            return None if observation is None else observation.count

        return webhooks.verify(
            self.options.webhook_secret,
            headers,
            body,
            sites=self._known_sites(),
            known_count=known,
            item_of_variant=self._variant_items.get,
        )

    def stats(self) -> dict[str, float]:
        """The client's counters and its pacing bucket, for `/metrics`."""
        c = self.client
        return client_stats(c, c.pacer.left())

    async def check(self) -> list[Check]:
        """The common checks, then the scopes an app token was granted with. SHOPLINE has no
        call that reports a static (private app) token's scopes: that line says so, and a
        call missing its scope is refused with HTTP 403, which the error names."""
        checks = await super().check()
        if not any(c.name == "shop" and c.ok for c in checks):
            return checks
        granted = {s.strip() for s in self.credentials.scope.split(",") if s.strip()}
        granted |= {"read_" + s[6:] for s in granted if s.startswith("write_")}
        missing = [s for s in SCOPES if s not in granted]
        if self.credentials.kind == "static":
            detail = (
                "not checked: SHOPLINE reports scopes only with app tokens; needs "
                + ", ".join(SCOPES)
            )
            checks.append(Check("scopes", True, detail))
        elif missing:
            fix = "grant them to the app in the SHOPLINE Developer Center and install it again"
            checks.append(Check("scopes", False, f"missing {', '.join(missing)}: {fix}"))
        else:
            checks.append(Check("scopes", True, "granted: " + ", ".join(SCOPES)))
        if self.locations and self._sites is not None:
            checks.append(Check("locations", True, self._sites.describe()))
        return checks

    async def subscribe(self, callback_url: str) -> None:
        """Create the webhooks of `webhooks.TOPICS` at `callback_url` that do not exist yet.

        Each topic on its own: one that SHOPLINE refuses is reported (a `ChannelError` naming
        it, once the others exist) and does not stop the rest."""
        refused: dict[str, str] = {}
        for _round in range(self.options.max_retries + 1):
            resp = await self.client.get("webhooks")
            body = resp.body if isinstance(resp.body, dict) else {}
            have = {(hook.get("topic"), hook.get("address")) for hook in body.get("webhooks") or []}
            missing = [
                topic
                for topic in webhooks.TOPICS
                if (topic, callback_url) not in have and topic not in refused
            ]
            if not missing:
                if refused:
                    reasons = "; ".join(f"{t}: {why}" for t, why in refused.items())
                    raise ChannelError(f"SHOPLINE refused webhook topic(s) {reasons}")
                return
            for topic in missing:
                hook = {"address": callback_url, "topic": topic}
                try:
                    await self.client.post(
                        "webhooks", {"webhook": {**hook, "api_version": self.options.api_version}}
                    )
                except OutcomeUnknown:
                    break  # list again: it may exist now, and a second one would double deliveries
                except RequestRefused as exc:
                    log.warning("shopline_webhook_refused", topic=topic, error=str(exc))
                    refused[topic] = str(exc)
                    continue
                log.info("shopline_webhook_created", topic=topic)
        raise ShoplineUnavailable("could not create the SHOPLINE webhooks")
