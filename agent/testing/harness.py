"""The conformance harness: one channel plugin, its emulator in-process, and the control API.

A `ChannelHarness` names a channel and says what the suite needs to know about it (extra
options, page size, whether the platform can hold duplicates or SKU-less items, how it names
the emulator's locations). `open()` finds the channel class and the emulator factory through
the real plugin manager, serves the emulator on a loopback port, builds and starts the channel
from its options, and yields a `ShopUnderTest`: the channel plus the emulator's `/_emulator`
control API, which is all the suite uses, so a third-party emulator qualifies by speaking
that API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.channel import Channel, ConfigError, Item
from agent.clock import SystemClock
from agent.emulator import EmulatorOptions
from agent.plugins import Registry, make_plugin_manager

__all__ = [
    "CLIENT_ID",
    "SECRET",
    "ChannelHarness",
    "Scenario",
    "ShopUnderTest",
    "WebhookReceiver",
    "run",
]

TOKEN = "conformance-access-token"
SECRET = "conformance-webhook-secret"  # also the emulated app's client secret
CLIENT_ID = "conformance-client-id"
SHOP = "conformance.example.com"

Scenario = Callable[["ChannelHarness"], Coroutine[Any, Any, None]]


def run(scenario: Scenario, harness: ChannelHarness) -> None:
    """Run one async scenario of the suite on a fresh event loop."""
    asyncio.run(scenario(harness))


@dataclasses.dataclass(frozen=True)
class ChannelHarness:
    """How the conformance suite runs the channel called `name` against its emulator.

    - `options`: channel options besides ``api_url``, ``access_token`` and ``webhook_secret``
      (for fast tests, e.g. a short ``retry_base``).
    - `credentials`: channel options that authenticate *instead of* the static
      ``access_token``, for a channel that gets and renews its own tokens (e.g. Shopify's
      ``{"client_id": CLIENT_ID, "client_secret": SECRET}``): the emulator's app id is
      `CLIENT_ID` and its app secret `SECRET`, the webhook secret.
    - `emulator_options`: extra `EmulatorOptions` fields (``plan``, ``seed``...).
    - `page_size`: items per listing page, so the suite can list more than one page.
    - `can_have_duplicates`, `can_have_skuless`: whether the platform can hold two items with
      one SKU, or an item without a SKU (Pisell keys stock items by SKU: neither).
    - `max_refusals`: rate-limit refusals (429s) tolerated in a burst larger than the bucket.
    - `location_id`: for a channel that sets `Channel.multi_location`, the platform location
      id it takes in `Channel.locations` for the emulator's location n (Shopify ``str(n)``);
      None when the suite cannot name locations, so it cannot check them.
    - `plugins`: extra pluggy plugins to register (a channel under development, a test double);
      entry points are loaded as well unless `load_entry_points` is false.
    """

    name: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    credentials: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    emulator_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    page_size: int = 100
    can_have_duplicates: bool = True
    can_have_skuless: bool = True
    max_refusals: int = 3
    location_id: Callable[[int], str] | None = None
    plugins: Sequence[object] = ()
    load_entry_points: bool = True

    def registry(self) -> Registry:
        """The channels and emulators the plugin manager finds, plus `plugins`."""
        pm = make_plugin_manager(load_entry_points=self.load_entry_points)
        for plugin in self.plugins:
            pm.register(plugin)
        return Registry(pm)

    def channel_class(self) -> type[Channel]:
        """The registered channel class called `name`."""
        return self.registry().channel(self.name)

    @contextlib.asynccontextmanager
    async def open(
        self, *, skus: int = 5, rate_limit: bool = False, locations: int | None = None
    ) -> AsyncIterator[ShopUnderTest]:
        """An emulated shop of `skus` items (and `locations` locations, if given, else as
        `emulator_options` say) and a started channel on it; closed on exit."""
        registry = self.registry()
        channel_class = registry.channel(self.name)
        factory = registry.emulator(self.name)
        emulator_options = dict(self.emulator_options)
        if locations is not None:
            emulator_options["locations"] = locations
        options = dataclasses.replace(
            EmulatorOptions(**emulator_options),
            shop=SHOP,
            skus=skus,
            token=TOKEN,
            webhook_secret=SECRET,
            client_id=CLIENT_ID,
            rate_limit=rate_limit,
        )
        app = factory(options)
        if not isinstance(app, web.Application):
            raise ConfigError(f"the {self.name} emulator factory did not return an aiohttp app")
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        timeout = aiohttp.ClientTimeout(total=30, connect=5)
        control = aiohttp.ClientSession(timeout=timeout)
        shop = ShopUnderTest(self, channel_class, str(server.make_url("")).rstrip("/"), control)
        try:
            shop.channel = await shop.make_channel()
            yield shop
        finally:
            await shop.aclose()
            await control.close()
            await server.close()


class ShopUnderTest:
    """A running emulator, the channel on it, and the emulator's control API."""

    def __init__(
        self,
        harness: ChannelHarness,
        channel_class: type[Channel],
        api_url: str,
        control: aiohttp.ClientSession,
    ) -> None:
        self.harness = harness
        self.channel_class = channel_class
        self.api_url = api_url
        self.control = control
        self.channel: Channel = None  # type: ignore[assignment]  # set by ChannelHarness.open
        self.sales_on_lost_answers: list[dict[str, Any]] = []
        self._sale_armed: tuple[str, int] | None = None
        self._channels: list[tuple[Channel, aiohttp.ClientSession]] = []

    # -- channels ----------------------------------------------------------------------------

    async def make_channel(self, *, locations: Sequence[str] = (), **overrides: Any) -> Channel:
        """A started channel on this shop; `overrides` replace options (a wrong secret...),
        `locations` are the other locations it syncs (`Channel.locations`, set before start)."""
        credentials = dict(self.harness.credentials) or {"access_token": TOKEN}
        options = {
            "api_url": self.api_url,
            **credentials,
            "webhook_secret": SECRET,
            **self.harness.options,
            **overrides,
        }
        settings = self.channel_class.settings_class.from_options(options)
        trace = aiohttp.TraceConfig()
        trace.on_request_exception.append(self._on_request_exception)
        http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30, connect=5), trace_configs=[trace]
        )
        channel = self.channel_class(settings, http=http, clock=SystemClock())
        channel.locations = tuple(locations)
        self._channels.append((channel, http))
        await channel.start()
        return channel

    async def aclose(self) -> None:
        """Close every channel made here and its HTTP session."""
        for channel, http in reversed(self._channels):
            try:
                await channel.close()
            finally:
                await http.close()
        self._channels.clear()

    async def list_by_sku(self) -> dict[str, Item]:
        """The channel's listing by SKU (the suite's catalogues have unique SKUs)."""
        return {item.sku: item async for item in self.channel.list_items() if item.sku}

    # -- the sale that lands while a write's answer is lost ----------------------------------

    def sell_when_an_answer_is_lost(self, sku: str, quantity: int) -> None:
        """Sell `quantity` of `sku` the moment the channel's next API call fails in transit.

        With the fault ``timeout_after_apply`` armed, the emulator applies a write and drops
        the connection; the sale then happens after the write was applied and before the
        channel learns anything, which is the race the core must count exactly.
        """
        self._sale_armed = (sku, quantity)

    async def _on_request_exception(
        self, session: aiohttp.ClientSession, context: Any, params: Any
    ) -> None:
        if self._sale_armed is None or params.url.path.startswith("/_emulator"):
            return
        sku, quantity = self._sale_armed
        self._sale_armed = None
        order = await self.order(sku, quantity)
        self.sales_on_lost_answers.append(order)

    # -- the control API ---------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: Any = None, *, ok: int = 200) -> Any:
        async with self.control.request(method, self.api_url + path, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status != ok:
                raise AssertionError(f"{method} {path} answered {resp.status}: {data}")
            return data

    async def order(
        self, sku: str, quantity: int, *, location: int | None = None
    ) -> dict[str, Any]:
        """A storefront purchase of `quantity` units of `sku` (fulfilled from `location`, by
        default the primary one)."""
        body: dict[str, Any] = {"line_items": [{"sku": sku, "quantity": quantity}]}
        if location is not None:
            body["location"] = location
        return (await self._call("POST", "/_emulator/orders", body, ok=201))["order"]

    async def edit(self, sku: str, available: int, *, location: int | None = None) -> None:
        """An admin's manual edit of the count of `sku` (at `location`, which then stocks it;
        by default the primary one)."""
        body: dict[str, Any] = {"sku": sku, "available": available}
        if location is not None:
            body["location"] = location
        await self._call("POST", "/_emulator/inventory", body)

    async def add_product(self, sku: str, available: int) -> dict[str, Any]:
        """A new product variant (an existing SKU makes a duplicate, "" a SKU-less item)."""
        body = {"sku": sku, "available": available}
        return await self._call("POST", "/_emulator/products", body, ok=201)

    async def location(self, number: int) -> str:
        """The platform's id of the emulator's location `number`, as a merchant writes it in
        `[locations]`: the harness's `location_id`, else what the emulator says."""
        if self.harness.location_id is not None:
            return self.harness.location_id(number)
        return str((await self._call("GET", f"/_emulator/locations/{number}"))["id"])

    async def inventory(self, location: int | None = None) -> dict[str, int]:
        """Every SKU's count as the emulator holds it (at `location`: the SKUs stocked there;
        by default the primary location, which stocks every SKU)."""
        query = "" if location is None else f"?location={location}"
        return await self._call("GET", "/_emulator/inventory" + query)

    async def writes(self) -> list[dict[str, Any]]:
        """The emulator's log of API writes, applied or not."""
        return await self._call("GET", "/_emulator/writes")

    async def stats(self) -> dict[str, Any]:
        """Request, read, write and rate-limit counters."""
        return await self._call("GET", "/_emulator/stats")

    async def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock `seconds` forward (tokens expire on it)."""
        await self._call("POST", "/_emulator/clock/advance", {"seconds": seconds})

    async def revoke(self, revoked: bool = True) -> None:
        """Refuse every token and grant (the app uninstalled), or accept them again."""
        await self._call("POST", "/_emulator/credentials", {"revoked": revoked})

    async def subscriptions(self) -> list[dict[str, Any]]:
        """The shop's webhook subscriptions: id, topic, url."""
        return (await self._call("GET", "/_emulator/webhooks"))["subscriptions"]

    async def delete_subscriptions(self) -> int:
        """Delete every subscription, as a platform does after failed deliveries."""
        return (await self._call("POST", "/_emulator/webhooks/delete", {}))["deleted"]

    async def faults(self, **values: Any) -> dict[str, Any]:
        """Arm faults (``timeout_after_apply=1``...) or switch ``rate_limit``."""
        return await self._call("POST", "/_emulator/faults", values)

    @contextlib.asynccontextmanager
    async def webhook_receiver(self) -> AsyncIterator[WebhookReceiver]:
        """A loopback endpoint that records every delivery (raw headers and body)."""
        receiver = WebhookReceiver()
        app = web.Application()
        app.router.add_post("/webhooks", receiver.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        receiver.url = str(server.make_url("/webhooks"))
        try:
            yield receiver
        finally:
            await server.close()


class WebhookReceiver:
    """Deliveries as they arrived: (headers, raw body)."""

    def __init__(self) -> None:
        self.url = ""
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self._arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        """Record one delivery and acknowledge it."""
        self.deliveries.append((dict(request.headers), await request.read()))
        self._arrived.set()
        return web.Response(text="ok")

    async def wait_for(
        self, found: Callable[[dict[str, str], bytes], bool], timeout: float = 10.0
    ) -> tuple[dict[str, str], bytes]:
        """The first delivery for which `found` is true, waiting up to `timeout` seconds."""
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                for headers, body in self.deliveries[seen:]:
                    if found(headers, body):
                        return headers, body
                seen = len(self.deliveries)
                self._arrived.clear()
                await self._arrived.wait()
