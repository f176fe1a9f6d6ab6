"""An in-memory channel with the platform semantics the core relies on (CAS, idempotency).

For unit tests of the counting core only; the plugins are tested against their emulators.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from agent.channel import (
    Channel,
    ChannelSettings,
    Item,
    Level,
    RateBudget,
    WebhookHint,
    WebhookRejected,
    Write,
    WriteResult,
)


@dataclasses.dataclass
class MemSettings(ChannelSettings):
    shop: str = "mem"


class MemShop:
    """The shop behind a MemChannel: counts, a write log, and injectable faults."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self.counts: dict[str, int] = {}
        self.applied_keys: dict[str, list[WriteResult]] = {}
        self.write_log: list[tuple[str, str, int, int]] = []  # (key, item, before, after)
        self.drop_after_apply = 0  # next N write calls: apply, then raise (outcome unknown)
        self.before_apply: Callable[[], None] | None = None  # e.g. a sale racing the write
        self.reads = 0
        self.lookups: list[list[str]] | None = None  # None: the channel cannot look items up
        self.clock = 0.0
        # a platform that stamps its levels (`Level.stamp`): each item's time of its last
        # change, on `tick`, the shop's clock, which the test moves; None: no stamps at all
        self.stamps: dict[str, float] | None = None
        self.tick = 100.0

    def stamp(self, item_id: str) -> float | None:
        return None if self.stamps is None else self.stamps.get(item_id, 0.0)

    def level_hint(self, item_id: str) -> WebhookHint:
        """The level webhook of the item's last change (count and stamp), as sent now."""
        return WebhookHint(
            "inventory_levels/update",
            item_ids=(item_id,),
            counts=((item_id, self.counts[item_id]),),
            stamp=self.stamp(item_id),
        )

    def _moved(self, item_id: str) -> None:
        if self.stamps is not None:
            self.stamps[item_id] = self.tick

    def add(
        self,
        item_id: str,
        sku: str | None,
        count: int,
        created: float | None = None,
        location: str = "",
    ) -> None:
        self.clock += 1
        created = self.clock if created is None else created
        self.items[item_id] = Item(
            item_id, sku, count, created, f"title {item_id}", location=location
        )
        self.counts[item_id] = count

    def sell(self, item_id: str, n: int = 1) -> None:
        self.counts[item_id] -= n
        self._moved(item_id)


class MemChannel(Channel):
    name = "mem"
    settings_class = MemSettings

    def __init__(self, shop: MemShop, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(MemSettings(), http=None, clock=None)  # type: ignore[arg-type]
        self.shop = shop
        self.budget = RateBudget(1000, 1000, max_write_batch=250, max_read_batch=250)

    async def list_items(self) -> AsyncIterator[Item]:
        for item_id, item in list(self.shop.items.items()):
            yield dataclasses.replace(
                item, available=self.shop.counts[item_id], stamp=self.shop.stamp(item_id)
            )

    async def lookup(self, item_ids: Sequence[str]) -> list[Item] | None:
        if self.shop.lookups is None:
            return None
        self.shop.lookups.append(list(item_ids))
        return [
            dataclasses.replace(self.shop.items[i], available=self.shop.counts[i])
            for i in item_ids
            if i in self.shop.items
        ]

    async def read(self, item_ids: Sequence[str]) -> dict[str, int | None]:
        self.shop.reads += 1
        return {i: self.shop.counts.get(i) for i in item_ids}

    async def read_levels(self, item_ids: Sequence[str]) -> dict[str, Level]:
        counts = await self.read(item_ids)
        return {
            i: Level(c, self.shop.stamp(i) if c is not None else None) for i, c in counts.items()
        }

    async def write(self, writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        if key in self.shop.applied_keys:
            return self.shop.applied_keys[key]
        if self.shop.before_apply is not None:
            hook, self.shop.before_apply = self.shop.before_apply, None
            hook()
        results = []
        for w in writes:
            have = self.shop.counts[w.item_id]
            if have != w.expected:
                results.append(WriteResult(w.item_id, "conflict", available=have))
                continue
            self.shop.counts[w.item_id] = w.target
            self.shop._moved(w.item_id)
            self.shop.write_log.append((key, w.item_id, have, w.target))
            stamp = self.shop.stamp(w.item_id)
            results.append(WriteResult(w.item_id, "ok", available=w.target, stamp=stamp))
        self.shop.applied_keys[key] = results
        if self.shop.drop_after_apply > 0:
            self.shop.drop_after_apply -= 1
            raise TimeoutError("connection dropped after the write was applied")
        return results

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookHint:
        if headers.get("X-Mem-Signature") != "good":
            raise WebhookRejected("bad signature")
        return WebhookHint(topic="mem", item_ids=tuple(body.decode().split(",")))

    async def subscribe(self, callback_url: str) -> None:
        return None
