"""`PisellChannel`: one Pisell merchant's IS stock in its warehouses, as a shopsync channel."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from agent.channel import (
    Channel,
    ChannelError,
    ChannelSettings,
    Check,
    ConfigError,
    Item,
    RateBudget,
    WebhookHint,
    Write,
    WriteResult,
    client_stats,
)
from plugins.pisell import webhooks, wire
from plugins.pisell.client import ClientConfig, PisellClient, PisellRefused, PisellUnavailable

if TYPE_CHECKING:
    import aiohttp

    from agent.clock import Clock

__all__ = ["IDEMPOTENCY_NAMESPACE", "PisellChannel", "PisellSettings"]

log = structlog.get_logger(__name__)

# Per-call keys of a multi-call batch derive from the batch key in this namespace, so a retry
# of the same batch sends the same key with every call.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6d1f7a52-3c0e-5b8e-9f41-2a7c1d0e9b35")
SUBSCRIBED_TOPICS = (
    wire.TOPIC_INVENTORY_LEVEL_UPDATED,
    wire.TOPIC_STOCK_MOVEMENT_CREATED,
    wire.TOPIC_ORDER_IMPORTED,
)


@dataclasses.dataclass
class PisellSettings(ChannelSettings):
    """`[channel.options]` of a Pisell shop.

    `client_secret` defaults to the access token; `warehouse_id` to the first warehouse that
    `/warehouses` lists; the other warehouses to sync are the core's `[locations]` (by id).
    `timeout` is per HTTP call; unknown outcomes are retried up to `max_retries` times,
    backing off from `retry_base` seconds.
    """

    api_url: str
    access_token: str = dataclasses.field(repr=False)
    webhook_secret: str = dataclasses.field(repr=False)
    client_id: str = "shopsync"
    client_secret: str = dataclasses.field(default="", repr=False)
    warehouse_id: str = ""
    timeout: float = 10.0
    retry_base: float = 0.5
    max_retries: int = 8

    def __post_init__(self) -> None:
        self.api_url = str(self.api_url).strip().rstrip("/")
        if not self.api_url.startswith(("http://", "https://")):
            raise ConfigError("channel option api_url must be an http(s) URL")
        for name in ("access_token", "webhook_secret", "client_id"):
            if not str(getattr(self, name)).strip():
                raise ConfigError(f"channel option {name} must not be empty")
        self.warehouse_id = str(self.warehouse_id).strip()  # TOML may give an integer
        if self.timeout <= 0 or self.retry_base < 0 or self.max_retries < 0:
            raise ConfigError("timeout must be > 0, retry_base and max_retries >= 0")


T = TypeVar("T")


def _chunks(values: Sequence[T], size: int) -> list[Sequence[T]]:
    return [values[n : n + size] for n in range(0, len(values), size)]


class PisellChannel(Channel):
    """Stock items of IS warehouses: `item_id` is `sku@warehouse_id`.

    The channel's own warehouse is `warehouse_id` (default: the first listed); `locations`
    adds others, by warehouse id. A stock item is an item in each synced warehouse that has a
    level of it (stocks it), with the same SKU, title and creation time and a count of its own.

    Writes are batched compare-and-set calls (`expected_available`), idempotent by key.
    Combos (组合货品) are not items of the shop: IS derives their count from their components
    and takes the components when one is sold, so the agent syncs the components only. Were
    a combo synced too, its sale would be counted twice (by IS on the components, and as the
    combo's own change) and every write to it refused. To have other shops sell the same set,
    define it as the group's bundle (`shopsync bundles add`).
    """

    name = "pisell"
    settings_class = PisellSettings
    multi_location = True
    budget = RateBudget(
        bucket=20, restore_rate=5, max_write_batch=50, max_read_batch=50, unit="requests"
    )

    def __init__(
        self, settings: ChannelSettings, *, http: aiohttp.ClientSession, clock: Clock
    ) -> None:
        super().__init__(settings, http=http, clock=clock)
        assert isinstance(settings, PisellSettings)
        self.options = settings
        config = ClientConfig(
            api_url=settings.api_url, client_id=settings.client_id,
            access_token=settings.access_token,
            client_secret=settings.client_secret or settings.access_token,
            timeout=settings.timeout, retry_base=settings.retry_base,
            max_retries=settings.max_retries, bucket=self.budget.bucket,
            restore_rate=self.budget.restore_rate,
        )  # fmt: skip
        self.client = PisellClient(http, config, clock, credentials=self.credentials)
        self.warehouse_id: str | None = settings.warehouse_id or None
        # the synced warehouses, the own one first: warehouse id -> `Item.location`
        self.synced: dict[str, str] = {}
        self.warehouse_names: dict[str, str] = {}
        self.tz: dt.tzinfo | None = None
        self._ready = asyncio.Lock()
        # combos seen while listing: an order's combo line names no item in another warehouse
        self._combos: set[str] = set()

    # -- start-up ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the warehouse (configured or first), check `locations` against the merchant's
        warehouses (ChannelError naming any unknown, or the own one) and find the timezone."""
        await self._ensure_ready()

    async def _ensure_ready(self) -> None:
        async with self._ready:
            if self.tz is not None:
                return
            warehouses = [
                wire.Warehouse.from_wire(row)
                async for rows in self.client.pages(wire.PATHS["warehouses"])
                for row in rows
            ]
            ids = [w.id for w in warehouses]
            if self.warehouse_id is None:
                if not ids:
                    raise ChannelError("Pisell lists no warehouse")
                self.warehouse_id = ids[0]
            elif self.warehouse_id not in ids:
                raise ChannelError(f"Pisell has no warehouse {self.warehouse_id} (has {ids})")
            self.synced = self._check_locations(self.warehouse_id, ids)
            self.warehouse_names = {w.id: w.name for w in warehouses}
            shops = [
                wire.Shop.from_wire(row)
                async for rows in self.client.pages(wire.PATHS["shops"])
                for row in rows
            ]
            own = next((s for s in shops if s.platform == "pisell"), shops[0] if shops else None)
            self.tz = wire.zone(own.timezone if own else None)
            log.info(
                "pisell_ready", warehouse=self.warehouse_id, locations=list(self.synced)[1:],
                timezone=str(self.tz),
            )  # fmt: skip

    def _check_locations(self, own: str, ids: list[str]) -> dict[str, str]:
        """The synced warehouses (id -> location name, the own one first); ChannelError names
        every entry of `locations` the merchant has no warehouse for, or that repeats one."""
        synced = {own: ""}
        unknown: list[str] = []
        for entry in self.locations:
            warehouse_id = str(entry).strip()
            if warehouse_id not in ids:
                unknown.append(repr(entry))
            elif warehouse_id == own:
                raise ChannelError(
                    f"location {entry!r} is the channel's own Pisell warehouse (warehouse_id):"
                    " list only other warehouses under [locations]"
                )
            elif warehouse_id in synced:
                raise ChannelError(f"location {entry!r} names warehouse {warehouse_id} twice")
            else:
                synced[warehouse_id] = entry
        if unknown:
            raise ChannelError(
                f"Pisell has no warehouse {', '.join(unknown)} for [locations] (the merchant"
                f" has {', '.join(ids)})"
            )
        return synced

    # -- reading -----------------------------------------------------------------------------

    async def _levels(self, skus: Sequence[str], warehouse_id: str) -> dict[str, wire.Level]:
        params = {wire.Q_WAREHOUSE: warehouse_id, wire.Q_SKU: wire.csv(skus)}
        levels = {}
        async for rows in self.client.pages(wire.PATHS["levels"], params):
            for row in rows:
                try:
                    level = wire.Level.from_wire(row)
                except ValueError as exc:  # one bad row must not hide the others
                    log.warning("pisell_bad_level", error=str(exc))
                    continue
                levels[level.sku] = level
        return levels

    def _created_at(self, item: wire.StockItem) -> float:
        assert self.tz is not None
        try:
            return wire.parse_local(item.created_at, self.tz)
        except ValueError:
            # Unknown creation time: count it as new, so it never wins first-created.
            log.warning("pisell_bad_created_at", sku=item.sku)
            return self.clock.now()

    async def list_items(self) -> AsyncIterator[Item]:
        """Every stock item with its level in each synced warehouse that stocks it: 100 items
        and 2 level calls per warehouse a page."""
        await self._ensure_ready()
        async for rows in self.client.pages(wire.PATHS["stock_items"]):
            for item in await self._stocked(rows):
                yield item

    async def lookup(self, item_ids: Sequence[str]) -> list[Item] | None:
        """These items (`sku@warehouse` of a synced warehouse) by SKU: their stock items and
        their levels in the warehouses asked, 50 SKUs a call."""
        await self._ensure_ready()
        wanted: dict[str, set[str]] = {}
        for item_id in dict.fromkeys(item_ids):
            try:
                sku, warehouse_id = wire.parse_item_id(item_id)
            except ValueError:
                continue
            if warehouse_id in self.synced:
                wanted.setdefault(warehouse_id, set()).add(sku)
        skus = list(dict.fromkeys(sku for group in wanted.values() for sku in sorted(group)))
        found: list[Item] = []
        for chunk in _chunks(skus, wire.MAX_LEVEL_SKUS):
            params = {wire.Q_SKU: wire.csv(chunk)}
            async for rows in self.client.pages(wire.PATHS["stock_items"], params):
                found += await self._stocked(rows, wanted)
        return found

    async def _stocked(
        self, rows: list[dict[str, Any]], wanted: Mapping[str, set[str]] | None = None
    ) -> list[Item]:
        """The stock items of `rows` in each synced warehouse that stocks them (of `wanted`,
        warehouse id -> SKUs, if given), with their levels; combos left out: their counts
        follow their components."""
        stock_items = []
        for row in rows:
            try:
                stock_item = wire.StockItem.from_wire(row)
            except ValueError as exc:
                log.warning("pisell_bad_stock_item", error=str(exc))
                continue
            if stock_item.is_combo:
                self._combos.add(stock_item.sku)
            else:
                self._combos.discard(stock_item.sku)
                stock_items.append(stock_item)
        found = []
        for chunk in _chunks(stock_items, wire.MAX_LEVEL_SKUS):
            levels: dict[str, dict[str, wire.Level]] = {}
            for warehouse_id in self.synced:
                skus = [
                    i.sku for i in chunk if wanted is None or i.sku in wanted.get(warehouse_id, ())
                ]
                if skus:
                    levels[warehouse_id] = await self._levels(skus, warehouse_id)
            for item in chunk:
                for warehouse_id, location in self.synced.items():
                    level = levels.get(warehouse_id, {}).get(item.sku)
                    if level is None:
                        continue  # not stocked in this warehouse: not an item there
                    found.append(
                        Item(
                            item_id=wire.format_item_id(item.sku, warehouse_id),
                            sku=item.sku,
                            available=level.available,
                            created_at=self._created_at(item),
                            title=item.title,
                            location=location,
                        )
                    )
        return found

    async def read(self, item_ids: Sequence[str]) -> dict[str, int | None]:
        """Fresh counts, 50 SKUs a call; None for an id IS does not hold."""
        out: dict[str, int | None] = dict.fromkeys(item_ids)
        by_warehouse: dict[str, list[tuple[str, str]]] = {}
        for item_id in out:
            try:
                sku, warehouse_id = wire.parse_item_id(item_id)
            except ValueError:
                continue
            by_warehouse.setdefault(warehouse_id, []).append((item_id, sku))
        for warehouse_id, pairs in by_warehouse.items():
            for chunk in _chunks(pairs, wire.MAX_LEVEL_SKUS):
                try:
                    levels = await self._levels([sku for _, sku in chunk], warehouse_id)
                except PisellRefused as exc:
                    if exc.error_code == wire.WAREHOUSE_NOT_FOUND:
                        break
                    raise
                for item_id, sku in chunk:
                    level = levels.get(sku)
                    out[item_id] = None if level is None else level.available
        return out

    # -- writing -----------------------------------------------------------------------------

    async def write(self, writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        """Compare-and-set, 50 rows a call; a call's outcome unknown after retries → unknown.

        One call uses `key` itself; several use `uuid5(IDEMPOTENCY_NAMESPACE, f"{key}/{n}")`,
        so a retried batch sends every call with the key (and body) it had the first time.
        """
        results: list[WriteResult | None] = [None] * len(writes)
        rows: list[tuple[int, wire.SetItem]] = []
        for n, change in enumerate(writes):
            try:
                sku, warehouse_id = wire.parse_item_id(change.item_id)
            except ValueError:
                results[n] = WriteResult(change.item_id, "error", message="not a Pisell item id")
                continue
            rows.append((n, wire.SetItem(sku, warehouse_id, change.target, change.expected)))
        calls = _chunks(rows, wire.MAX_WRITE_ITEMS)
        for number, call in enumerate(calls):
            call_key = key
            if len(calls) > 1:
                call_key = str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{key}/{number}"))
            answers = await self._write_call(writes, call, call_key)
            for (n, _), result in zip(call, answers, strict=True):
                results[n] = result
        return [r for r in results if r is not None]

    async def _write_call(
        self, writes: Sequence[Write], call: Sequence[tuple[int, wire.SetItem]], key: str
    ) -> list[WriteResult]:
        ids = [writes[n].item_id for n, _ in call]
        body = wire.write_request(item for _, item in call)
        try:
            envelope = await self.client.call("POST", wire.PATHS["levels_set"], body=body, key=key)
            answers = wire.parse_write_response(envelope.data)
        except PisellUnavailable as exc:
            return [WriteResult(i, "unknown", message=str(exc)) for i in ids]
        except PisellRefused as exc:
            if exc.error_code == wire.KEY_REUSED:
                # The core sent another body under a used key: a bug, never a stock change.
                log.error("pisell_idempotency_key_reused", key=key)
            return [WriteResult(i, "error", message=str(exc)) for i in ids]
        except ValueError as exc:  # a malformed answer: the key makes a retry safe
            return [WriteResult(i, "unknown", message=f"malformed answer: {exc}") for i in ids]
        if len(answers) != len(call):
            return [WriteResult(i, "unknown", message="answer has another row count") for i in ids]
        return [
            self._result(item_id, item, answer)
            for item_id, (_, item), answer in zip(ids, call, answers, strict=True)
        ]

    @staticmethod
    def _result(item_id: str, item: wire.SetItem, answer: wire.ItemResult) -> WriteResult:
        if answer.sku != item.sku or answer.warehouse_id != item.warehouse_id:
            return WriteResult(item_id, "unknown", message="answer rows out of order")
        if answer.ok:
            available = item.available if answer.available is None else answer.available
            return WriteResult(item_id, "ok", available=available)
        if answer.error_code == wire.STOCK_CONFLICT:
            return WriteResult(item_id, "conflict", available=answer.available)
        return WriteResult(item_id, "error", message=f"{answer.error_code}: {answer.message}")

    # -- webhooks ----------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookHint:
        """Check `X-Pisell-Signature` (HMAC-SHA256, ±5 min) and name what changed, in the
        synced warehouses (`webhooks.verify` says how)."""
        return webhooks.verify(
            headers, body, secret=self.options.webhook_secret, now=self.clock.now(),
            warehouse_id=self.warehouse_id, others=list(self.synced)[1:], combos=self._combos,
        )  # fmt: skip

    async def check(self) -> list[Check]:
        """The common checks, then the warehouses synced (own first, with their names)."""
        checks = await super().check()
        if not checks or not all(c.ok for c in checks):
            return checks
        names = [f"{w} ({self.warehouse_names.get(w) or 'unnamed'})" for w in self.synced]
        detail = f"syncs warehouse {names[0]}"
        if len(names) > 1:
            detail += f", and as locations {', '.join(names[1:])}"
        return [*checks, Check("warehouses", True, detail)]

    def stats(self) -> dict[str, float]:
        """The client's counters and its copy of the rate bucket, for `/metrics`."""
        c = self.client
        return client_stats(c, c.pacer.left())

    async def subscribe(self, callback_url: str) -> None:
        """Make sure one webhook at `callback_url` carries every topic the channel needs."""
        hooks = [
            wire.Webhook.from_wire(row)
            async for rows in self.client.pages(wire.PATHS["webhooks"])
            for row in rows
        ]
        mine = [h for h in hooks if h.url == callback_url]
        if any(set(SUBSCRIBED_TOPICS) <= set(h.topics) for h in mine):
            return
        for hook in mine:  # one with too few topics: replace it
            await self.client.call("DELETE", wire.PATHS["webhook"].format(webhook_id=hook.id))
        body = wire.webhook_request(callback_url, SUBSCRIBED_TOPICS)
        created = wire.Webhook.from_wire(
            (await self.client.call("POST", wire.PATHS["webhooks"], body=body)).data
        )
        log.info("pisell_webhook_created", webhook=created.id, topics=list(created.topics))
