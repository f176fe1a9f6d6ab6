"""The core's counting rules for one item (DESIGN §5), small enough to read inside a test.

The conformance suite drives a channel the way `agent.reconcile.Reconciler` does and keeps
the books the way it does, so that "no sale lost" and "counted exactly" are checked on what
the core would conclude from the channel's answers, not on what the channel says about itself:

- a pool change publishes ``target = max(0, pool)`` with ``Write(item, published, target)``;
- ``ok`` with `available` ≠ target: the difference is a local sale during the write;
- ``conflict``: the shop moved; its count (given, else re-read) minus `published` is a local
  change, and the write is tried again from there;
- ``unknown`` (or an exception): the same batch again with the same idempotency key;
- an observation (a read) minus `published` is a local change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

from agent.channel import Channel, Write, WriteResult

__all__ = ["CountingModel", "WriteRefused"]


class WriteRefused(AssertionError):
    """The channel answered ``error`` to a write the platform should have taken."""


@dataclasses.dataclass
class CountingModel:
    """The books one agent keeps for one item of its shop.

    `pool` is the group's count, `published` what the agent last saw or wrote in the shop,
    `local` every local change it recorded (a sale is negative), `results` every write answer.
    """

    channel: Channel
    item_id: str
    published: int
    pool: int
    local: list[int] = dataclasses.field(default_factory=list)
    results: list[WriteResult] = dataclasses.field(default_factory=list)
    keys: list[str] = dataclasses.field(default_factory=list)
    max_writes: int = 6
    max_unknown: int = 12

    @classmethod
    async def start(cls, channel: Channel, item_id: str) -> CountingModel:
        """Books that begin in step with the shop: pool = published = the count read now."""
        count = (await channel.read([item_id]))[item_id]
        assert count is not None, f"read() gave no count for listed item {item_id}"
        return cls(channel, item_id, published=count, pool=count)

    @property
    def counted(self) -> int:
        """The sum of local changes recorded (-3 for three units sold)."""
        return sum(self.local)

    def remote(self, delta: int) -> None:
        """An event from another shop changes the pool."""
        self.pool += delta

    def _local(self, delta: int) -> None:
        if delta:
            self.local.append(delta)
            self.pool += delta

    async def observe(self) -> int:
        """Read the item and record any difference from `published` as a local change."""
        count = (await self.channel.read([self.item_id]))[self.item_id]
        assert count is not None, f"read() lost item {self.item_id}"
        self._local(count - self.published)
        self.published = count
        return count

    async def publish(self) -> None:
        """Write the pool's target until the shop holds it, as the core does."""
        for _ in range(self.max_writes):
            target = max(0, self.pool)
            if target == self.published:
                return
            result = await self._write(Write(self.item_id, self.published, target))
            if result.status == "ok":
                after = target if result.available is None else result.available
                self.published = target
                self._local(after - target)
                self.published = after
            elif result.status == "conflict":
                if result.available is None:
                    await self.observe()
                else:
                    self._local(result.available - self.published)
                    self.published = result.available
            else:
                raise WriteRefused(f"write {self.item_id} refused: {result.message}")
        raise AssertionError(f"the shop never took the target after {self.max_writes} writes")

    async def resend(self, write: Write, key: str) -> WriteResult:
        """Send a batch again under a key already used (what a restarted core does)."""
        return await self._send(write, key)

    async def _write(self, write: Write) -> WriteResult:
        key = str(uuid.uuid4())
        self.keys.append(key)
        for attempt in range(self.max_unknown):
            result = await self._send(write, key)
            if result.status != "unknown":
                return result
            await asyncio.sleep(min(0.5, 0.02 * 2**attempt))
        raise AssertionError(f"write {self.item_id} still unknown after {self.max_unknown} tries")

    async def _send(self, write: Write, key: str) -> WriteResult:
        try:
            results = await self.channel.write([write], key=key)
        except Exception as exc:  # the core treats any failed call as an unknown outcome
            result = WriteResult(write.item_id, "unknown", message=repr(exc))
        else:
            assert len(results) == 1, f"write() gave {len(results)} results for one write"
            result = results[0]
            assert result.item_id == write.item_id, "write() answered for another item"
        self.results.append(result)
        return result
