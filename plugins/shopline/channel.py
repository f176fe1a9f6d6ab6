"""The SHOPLINE channel: lists, reads and writes stock at its locations through the Open API.

Locations. The channel works at its own location (``location_id``, else the store's default)
and at each of `Channel.locations` (SHOPLINE location ids, as the merchant wrote them). An item
is an inventory item at one of them: at the own location its id is the inventory item id, as
always; at another, ``<inventory item id>@<location id>`` (`plugins.shopline.locations`). One
``inventory_levels.json`` call reads 50 inventory items at up to 10 locations, so syncing a few
more locations costs no more calls for listing and reading than one.

Write path. One relative adjust per `Write`, noted in the journal before it leaves; an adjust
whose outcome is unknown is resolved from facts, never retried blindly: `plugins.shopline.writes`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from agent.channel import (
    ChannelError,
    ChannelSettings,
    Check,
    ConfigError,
    Grant,
    Item,
    RateBudget,
    RenewingToken,
    WebhookHint,
    client_stats,
)
from plugins.shopline import webhooks
from plugins.shopline.client import (
    OutcomeUnknown,
    RequestRefused,
    ShoplineClient,
    ShoplineUnavailable,
    parse_time,
    refresh_grant,
)
from plugins.shopline.locations import Sites, resolve_sites
from plugins.shopline.resolve import Observation
from plugins.shopline.settings import ShoplineSettings
from plugins.shopline.writes import ShoplineWrites

if TYPE_CHECKING:
    import aiohttp

    from agent.clock import Clock

__all__ = ["ShoplineChannel", "ShoplineSettings"]

log = structlog.get_logger(__name__)

# Each list endpoint's own page maximum: products 250, orders 100 (shopline.md §2).
_PRODUCTS_PAGE = 250
# What the channel calls need: products and levels read, levels written, orders read (to
# resolve an adjust whose outcome is unknown).
SCOPES = ("read_products", "read_inventory", "write_inventory", "read_orders")


@dataclasses.dataclass(frozen=True, slots=True)
class _Listed:
    item_id: str  # the inventory item id
    variant_id: str | None
    sku: str | None
    created_at: float
    title: str


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _title(product: Mapping[str, Any], variant: Mapping[str, Any]) -> str:
    title = str(product.get("title") or "")
    own = variant.get("title")
    if own and own != "Default Title":
        return f"{title} - {own}" if title else str(own)
    return title


class ShoplineChannel(ShoplineWrites):
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
