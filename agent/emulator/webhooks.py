"""Webhook delivery for emulators: signed, at least once, with injectable faults."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import random
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from agent.emulator.options import Faults

__all__ = ["Delivery", "Subscription", "WebhookSender"]

# sign(topic, body, delivery_id) -> headers for the POST (platform-specific names and scheme)
Signer = Callable[[str, bytes, str], dict[str, str]]


@dataclasses.dataclass(slots=True)
class Subscription:
    """One webhook subscription: a topic delivered to a URL."""

    id: int
    topic: str
    url: str
    created_at: float = 0.0
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class Delivery:
    """One message to one subscriber; its id stays the same on every retry."""

    delivery_id: str
    topic: str
    url: str
    body: bytes
    attempts: int = 0
    sub_id: int = 0


class WebhookSender:
    """Delivers webhooks like the platforms do: at least once, maybe late, maybe twice.

    A delivery that gets no 2xx within `timeout` seconds is retried with exponential backoff
    (`retry_base` * 2^n seconds) up to `max_attempts` times. Faults come from the shared
    `Faults` object, so they can change while the emulator runs.
    """

    def __init__(
        self,
        sign: Signer,
        faults: Faults,
        *,
        rng: random.Random,
        timeout: float = 5.0,
        retry_base: float = 0.5,
        max_attempts: int = 8,
    ) -> None:
        self.sign = sign
        self.faults = faults
        self.rng = rng
        self.timeout = timeout
        self.retry_base = retry_base
        self.max_attempts = max_attempts
        self.subscriptions: dict[int, Subscription] = {}
        self._sub_ids = itertools.count(1)
        self._queue: asyncio.Queue[Delivery] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.stats = {"sent": 0, "delivered": 0, "failed": 0, "dropped": 0, "duplicated": 0}
        self._failures: dict[int, int] = {}  # subscription -> deliveries failed in a row
        self._in_flight = 0  # first tries under way (`Faults.webhook_parallel` at most)
        self._slot_freed = asyncio.Event()
        self.deleted = 0  # subscriptions deleted after failed deliveries

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(self, topic: str, url: str, *, now: float = 0.0, **extra: Any) -> Subscription:
        """Add a subscription; the same topic and URL twice returns the existing one."""
        for sub in self.subscriptions.values():
            if sub.topic == topic and sub.url == url:
                return sub
        sub = Subscription(next(self._sub_ids), topic, url, now, dict(extra))
        self.subscriptions[sub.id] = sub
        return sub

    def unsubscribe(self, sub_id: int) -> bool:
        """Remove a subscription; False if there was none with that id."""
        return self.subscriptions.pop(sub_id, None) is not None

    # -- sending -----------------------------------------------------------------------------

    def emit(self, topic: str, payload: dict[str, Any]) -> int:
        """Queue `payload` for every subscriber of `topic`; returns how many were queued."""
        if self._queue is None:
            return 0
        body = json.dumps(payload, separators=(",", ":")).encode()
        queued = 0
        for sub in list(self.subscriptions.values()):
            if sub.topic != topic:
                continue
            delivery = Delivery(uuid.uuid4().hex, topic, sub.url, body, sub_id=sub.id)
            if self.rng.random() < self.faults.webhook_drop:
                self.stats["dropped"] += 1
                continue
            self._queue.put_nowait(delivery)
            queued += 1
            if self.rng.random() < self.faults.webhook_duplicate:
                self.stats["duplicated"] += 1
                self._queue.put_nowait(dataclasses.replace(delivery))
        return queued

    async def start(self) -> None:
        """Start the delivery worker (called from the emulator app's cleanup context)."""
        self._queue = asyncio.Queue()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=1.0)
        )
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop delivering; undelivered messages are lost, as when a platform gives up."""
        tasks = [t for t in (self._worker, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._queue = None

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if self.faults.webhook_reorder:
                self.rng.shuffle(batch)
            for delivery in batch:
                delay = self.rng.uniform(0, self.faults.webhook_delay)
                if delay > 0 or self.faults.webhook_reorder:
                    self._spawn(self._deliver(delivery, delay))
                elif self.faults.webhook_parallel <= 1:
                    await self._deliver(delivery, 0.0)
                else:  # several in flight, as the platforms send them: they may land out of order
                    while self._in_flight >= self.faults.webhook_parallel:
                        await self._slot_freed.wait()
                        self._slot_freed.clear()
                    self._in_flight += 1
                    self._spawn(self._deliver_in_slot(delivery))

    async def _deliver_in_slot(self, delivery: Delivery) -> None:
        try:
            await self._deliver(delivery, 0.0)
        finally:
            self._in_flight -= 1
            self._slot_freed.set()

    def _count_failure(self, sub_id: int) -> None:
        """A delivery failed every retry: delete its subscription after enough of them."""
        limit = self.faults.webhook_delete_after
        failures = self._failures[sub_id] = self._failures.get(sub_id, 0) + 1
        if limit and failures >= limit and self.unsubscribe(sub_id):
            self._failures.pop(sub_id, None)
            self.deleted += 1

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, delivery: Delivery, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        assert self._session is not None
        delivery.attempts += 1
        headers = {"Content-Type": "application/json"}
        headers.update(self.sign(delivery.topic, delivery.body, delivery.delivery_id))
        self.stats["sent"] += 1
        try:
            async with self._session.post(delivery.url, data=delivery.body, headers=headers) as r:
                await r.read()
                ok = 200 <= r.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        if ok:
            self.stats["delivered"] += 1
            self._failures.pop(delivery.sub_id, None)
            return
        if delivery.attempts >= self.max_attempts:
            self.stats["failed"] += 1
            self._count_failure(delivery.sub_id)
            return
        backoff = self.retry_base * 2 ** (delivery.attempts - 1)
        self._spawn(self._deliver(delivery, backoff))
