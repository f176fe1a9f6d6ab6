"""A simulated shop platform and its channel, with the semantics and faults the core relies on.

The platform is the ground truth of the simulation: it holds the counts, accepts storefront
purchases (never below zero), restocks, admin edits and new products, and answers the agent's
channel calls the way the real platforms do — compare-and-set writes with idempotency keys,
fresh reads, a full listing. Each call travels for a while on virtual time and takes effect at
the platform when it arrives, whether or not the caller is still there to hear the answer.
Faults come from the run's plan: 429 and 5xx answers, and writes applied and then timed out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from agent.channel import (
    Channel,
    ChannelSettings,
    Item,
    Level,
    RateBudget,
    WebhookHint,
    Write,
    WriteResult,
)
from agent.warehouses import listing_key
from tests.sim.runtime import EPOCH

__all__ = ["PlatformError", "ShopItem", "SimChannel", "SimShop", "Told"]


class PlatformError(Exception):
    """A 429 or 5xx answer: nothing was applied, the caller may retry."""


@dataclasses.dataclass(slots=True)
class ShopItem:
    """One item at the platform, with the checker's view of whether its changes count yet.

    `window_open`: changes made now may count or not (the shop's old stock before its first
    write of the group's count); `closable`: an applied write now closes the window (False for
    a joining shop until its snapshot is installed).
    """

    item_id: str
    sku: str
    count: int
    created_at: float
    window_open: bool = False
    closable: bool = True
    stamp: float | None = None  # the platform's time of the last change (its clock's ticks)
    location: str = ""  # "" the shop's primary location, else another it syncs (`Item`)

    @property
    def key(self) -> str:
        """Its SKU at its location, as the shop's storefront picks it (`listing_key`)."""
        return listing_key(self.sku, self.location)


@dataclasses.dataclass(frozen=True, slots=True)
class Told:
    """What a webhook of a shop that stamps its levels says beyond its topic: a level's count
    and stamp, or (an order) the stamp of its change and that its level follows."""

    stamp: float
    count: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Faults:
    """Per-call fault probabilities at one platform (0 once the faults stop)."""

    error: float = 0.0  # 429 / 5xx before anything is applied
    timeout_after_apply: float = 0.0  # the write is applied, the answer never arrives


@dataclasses.dataclass(slots=True)
class Change:
    """One change at the platform that the group's count must reflect (or may, if ambiguous)."""

    at: float
    shop: str
    sku: str
    delta: int
    kind: str
    ambiguous: bool
    location: str = ""


class SimShop:
    """The platform behind one agent; it outlives every crash of that agent."""

    def __init__(
        self,
        domain: str,
        rng: random.Random,
        *,
        trace: Callable[..., None],
        on_change: Callable[[SimShop, str, str, Told | None], None],
    ) -> None:
        self.domain = domain
        self.rng = rng
        self.trace = trace
        self.on_change = on_change  # (shop, item_id, topic, told): the platform's webhook
        self.items: dict[str, ShopItem] = {}
        self.by_sku: dict[str, str] = {}  # listing key (its SKU at its location) -> item id
        self.applied: dict[str, list[WriteResult]] = {}  # idempotency key -> results
        self.changes: list[Change] = []
        self.faults = Faults()
        self.counters: dict[str, int] = {}
        self.latency: tuple[float, float] = (0.002, 0.05)
        # the tick of the platform's clock for level stamps (Shopify: 1 s); None: a platform
        # that stamps nothing and sends one webhook per change (the agent reads each)
        self.stamp_step: float | None = None

    def _stamp(self, now: float) -> float | None:
        step = self.stamp_step
        return None if step is None else math.floor(round(now / step, 9)) * step

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # -- the storefront and the shop's admin ----------------------------------------------------

    def add_item(
        self,
        sku: str,
        count: int,
        now: float,
        *,
        window: bool,
        closable: bool,
        location: str = "",
    ) -> str:
        """A new product (variant) with `sku` (at `location`: stocked there); returns its
        item id."""
        item_id = f"{self.domain}/{len(self.items) + 1}"
        stamp = self._stamp(now)
        item = ShopItem(item_id, sku, count, now, window, closable, stamp, location)
        self.items[item_id] = item
        self.by_sku[item.key] = item_id
        if location:
            self.trace("product", shop=self.domain, sku=sku, count=count, at=location)
        else:
            self.trace("product", shop=self.domain, sku=sku, count=count)
        self.on_change(self, item_id, "products/create", None)
        return item_id

    def _change(self, item: ShopItem, delta: int, kind: str, now: float) -> None:
        item.count += delta
        item.stamp = self._stamp(now)
        self.changes.append(
            Change(now, self.domain, item.sku, delta, kind, item.window_open, item.location)
        )
        self.trace(kind, shop=self.domain, sku=item.key, delta=delta, count=item.count)
        if item.stamp is None:
            self.on_change(self, item.item_id, f"orders/{kind}", None)
            return
        if kind != "edit":  # an order (or its refund) is told, and so is its level
            self.on_change(self, item.item_id, f"orders/{kind}", Told(item.stamp))
        self._level_changed(item)

    def _level_changed(self, item: ShopItem) -> None:
        """The level webhook: the count and its stamp (a stamping platform), else the topic."""
        told = None if item.stamp is None else Told(item.stamp, item.count)
        self.on_change(self, item.item_id, "inventory_levels/update", told)

    def purchase(self, sku: str, n: int, now: float) -> bool:
        """A storefront purchase of `n` of `sku` (a listing key: at a location, ``SKU##L``);
        refused (and not counted) when the shop shows fewer."""
        item = self.items[self.by_sku[sku]]
        if item.count < n:
            self.trace("refused", shop=self.domain, sku=sku, n=n, count=item.count)
            return False
        self._change(item, -n, "sale", now)
        return True

    def restock(self, sku: str, n: int, now: float) -> None:
        """A cancellation or refund that puts `n` back on the shelf."""
        self._change(self.items[self.by_sku[sku]], n, "restock", now)

    def edit(self, sku: str, count: int, now: float) -> None:
        """The shop's admin sets the count by hand (a change of count - current)."""
        item = self.items[self.by_sku[sku]]
        if count != item.count:
            self._change(item, count - item.count, "edit", now)

    # -- the platform API ----------------------------------------------------------------------

    def _apply(self, writes: Sequence[Write], key: str) -> list[WriteResult]:
        if key in self.applied:
            self.count("write_replayed")
            return self.applied[key]
        results = []
        for w in writes:
            item = self.items.get(w.item_id)
            if item is None:
                results.append(WriteResult(w.item_id, "error", message="no such item"))
            elif item.count != w.expected:
                results.append(WriteResult(w.item_id, "conflict", available=item.count))
            else:
                item.count = w.target
                item.stamp = self._stamp(EPOCH + asyncio.get_running_loop().time())
                if item.closable:
                    item.window_open = False
                self.trace("write", shop=self.domain, sku=item.key, count=item.count)
                self._level_changed(item)
                results.append(WriteResult(w.item_id, "ok", available=w.target, stamp=item.stamp))
        self.applied[key] = results
        return results

    async def call(self, action: Callable[[], Any], *, may_time_out: bool = False) -> Any:
        """One API call: it takes effect on arrival, and its answer may never come back."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        low, high = self.latency

        def settle(outcome: Any, error: BaseException | None) -> None:
            if answer.done():
                return
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(outcome)

        def arrive() -> None:
            if self.rng.random() < self.faults.error:
                status = self.rng.choice((429, 500, 502, 503))
                self.count(f"platform_{status}")
                self.trace("platform_error", shop=self.domain, status=status)
                loop.call_later(
                    self.rng.uniform(low, high), settle, None, PlatformError(f"HTTP {status}")
                )
                return
            outcome = action()
            if may_time_out and self.rng.random() < self.faults.timeout_after_apply:
                self.count("write_timeout_after_apply")
                self.trace("write_timeout", shop=self.domain)
                loop.call_later(
                    self.rng.uniform(1.0, 5.0), settle, None, TimeoutError("read timed out")
                )
                return
            loop.call_later(self.rng.uniform(low, high), settle, outcome, None)

        loop.call_later(self.rng.uniform(low, high), arrive)
        return await answer


@dataclasses.dataclass
class SimSettings(ChannelSettings):
    """The simulated channel has no options."""


class SimChannel(Channel):
    """The channel of one agent to its `SimShop`."""

    name = "sim"
    settings_class = SimSettings

    def __init__(self, shop: SimShop, **_: Any) -> None:
        super().__init__(SimSettings(), http=None, clock=None)  # type: ignore[arg-type]
        self.shop = shop
        self.budget = RateBudget(40, 2, max_write_batch=5, max_read_batch=5)

    async def list_items(self) -> AsyncIterator[Item]:
        def listing() -> list[Item]:
            return [
                Item(i.item_id, i.sku, i.count, i.created_at, i.item_id, i.stamp, i.location)
                for i in self.shop.items.values()
            ]

        for item in await self.shop.call(listing):
            yield item

    async def lookup(self, item_ids: Sequence[str]) -> list[Item] | None:
        def found() -> list[Item]:
            items = self.shop.items
            return [
                Item(i.item_id, i.sku, i.count, i.created_at, i.item_id, i.stamp, i.location)
                for i in (items[item_id] for item_id in item_ids if item_id in items)
            ]

        return await self.shop.call(found)

    async def read(self, item_ids: Sequence[str]) -> dict[str, int | None]:
        def counts() -> dict[str, int | None]:
            items = self.shop.items
            return {i: (items[i].count if i in items else None) for i in item_ids}

        return await self.shop.call(counts)

    async def read_levels(self, item_ids: Sequence[str]) -> dict[str, Level]:
        def levels() -> dict[str, Level]:
            items = self.shop.items
            return {
                i: (Level(items[i].count, items[i].stamp) if i in items else Level(None))
                for i in item_ids
            }

        return await self.shop.call(levels)

    async def write(self, writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        batch = list(writes)
        return await self.shop.call(lambda: self.shop._apply(batch, key), may_time_out=True)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookHint:
        raise NotImplementedError("the simulation delivers hints directly")

    async def subscribe(self, callback_url: str) -> None:
        return None
