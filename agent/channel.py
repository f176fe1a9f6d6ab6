"""The channel contract: what a platform plugin gives the core for one shop (DESIGN §4)."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

# For plugins, which import only this contract: JSON from a webhook body, bounded in depth and
# failing with JSONError (a ValueError, answered 400) on invalid UTF-8, invalid JSON or nesting.
from agent.causes import cause_of
from agent.credentials import Credentials, Grant, RenewingToken, StaticToken
from agent.errors import ChannelError, CredentialsRefused
from agent.jsonsafe import JSONError
from agent.jsonsafe import loads as parse_json

if TYPE_CHECKING:
    import aiohttp

    from agent.clock import Clock

__all__ = [
    "Channel",
    "ChannelError",
    "ChannelSettings",
    "Check",
    "ConfigError",
    "CredentialsRefused",
    "Credentials",
    "Grant",
    "Item",
    "JSONError",
    "Journal",
    "Level",
    "MemoryJournal",
    "RateBudget",
    "RenewingToken",
    "StaticToken",
    "client_stats",
    "order_reference",
    "parse_json",
    "WebhookHint",
    "WebhookRejected",
    "Write",
    "WriteResult",
]


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and why."""


class WebhookRejected(Exception):
    """A webhook failed verification (signature, shop, topic); the message says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """One sellable variant in a shop, as the platform lists it.

    `item_id` is the id the plugin reads and writes by (for Shopify the InventoryItem gid).
    `sku` is None or "" when the item has none. `created_at` is epoch seconds (the platform's
    creation time of the variant), used for first-created-wins. `stamp`: as `Level.stamp`.

    `location` is "" for the channel's own location (the one it was configured with, or the
    shop's primary); a channel that also syncs other locations (`Channel.locations`) lists the
    variant once per location that stocks it, with that location's name exactly as given in
    `Channel.locations` and an `item_id` of its own (the own location's ids never change).
    """

    item_id: str
    sku: str | None
    available: int
    created_at: float
    title: str = ""
    stamp: float | None = None  # the platform's time of the count's last change (`Level`)
    location: str = ""  # "" for the channel's own location, else one of `Channel.locations`


@dataclasses.dataclass(frozen=True, slots=True)
class Write:
    """Set `item_id` to `target` if the shop still holds `expected` (compare-and-set).

    A platform without compare-and-set adjusts by `target - expected` and reports the count it
    returned; the core treats any difference from `target` as a local sale.
    """

    item_id: str
    expected: int
    target: int


WriteStatus = Literal["ok", "conflict", "unknown", "error"]


@dataclasses.dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of one `Write`.

    - ``ok``: applied; `available` is the count the shop holds after it (normally `target`;
      another number means a local sale happened at the same moment).
    - ``conflict``: not applied because the shop no longer held `expected`; `available` is the
      current count if the platform said it, else None (the core re-reads).
    - ``unknown``: the outcome could not be learnt (timeout, 5xx, dropped connection); the core
      retries the same batch with the same idempotency key.
    - ``error``: refused for good (unknown item, not stocked...); `message` says why.
    """

    item_id: str
    status: WriteStatus
    available: int | None = None
    message: str = ""
    # ``ok``: the platform's time of the item's last change as it answered (`Level.stamp`),
    # when the plugin can tell it; None otherwise
    stamp: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Level:
    """An item's count at the platform, and the platform's time of its last change.

    `stamp` is the platform's own clock (epoch seconds, at whatever resolution it keeps:
    Shopify's are whole seconds), the same clock as a level webhook's `WebhookHint.stamp` and
    a write's `WriteResult.stamp`; None when the platform does not say. With stamps the core
    can take a level webhook's count without reading the item (DESIGN §5, stamped levels).
    """

    count: int | None
    stamp: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RateBudget:
    """A platform's rate limit as a leaky bucket, so the core can plan bulk work.

    `bucket` and `restore_rate` are in the platform's unit (Shopify: cost points, others:
    requests); `write_cost` is the price of one write call of up to `max_write_batch` rows,
    `read_cost` of one read call of up to `max_read_batch` ids.
    """

    bucket: float
    restore_rate: float
    max_write_batch: int
    max_read_batch: int
    write_cost: float = 1.0
    read_cost: float = 1.0
    unit: str = "requests"


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookHint:
    """What a verified platform webhook says changed: a hint. Its counts are taken only with
    a stamp that proves them newer than what the core knows (`stamp`); else they are read."""

    topic: str
    item_ids: tuple[str, ...] = ()
    skus: tuple[str, ...] = ()
    delivery_id: str = ""
    # The catalogue changed (a product was created or edited): the core looks up `item_ids`
    # (`Channel.lookup`, debounced) for new items and changed SKUs, or, when the hint names
    # none, runs a full pass, at most one per `catalogue_min_interval`.
    catalogue_changed: bool = False
    # (item_id, count) pairs the webhook claims. Without a `stamp` they never become events:
    # the core only uses them to skip re-reading an item that the webhook shows unchanged (e.g.
    # the echo of its own write), which halves the platform calls a burst costs.
    counts: tuple[tuple[str, int], ...] = ()
    # The order the webhook is about, as the platform names it ("#1042", or its id for a
    # refund): the sync log says "order #1042 at shop2" rather than a topic.
    reference: str = ""
    # The platform's time of the change the hint tells of (`Level.stamp`), when the payload
    # says it. With `counts`: a count whose stamp is newer than everything the core knows of
    # the item is taken as a fresh count, without a read; an older one is dropped; one of the
    # same moment that differs is read. Without (an order): the order's time, so that an order
    # told after its level webhook was taken does not wait for it.
    stamp: float | None = None
    # The platform also sends a stamped level webhook for every count this hint tells of
    # changing (Shopify: an order's `inventory_levels/update`): the core waits for it rather
    # than reading, and reads only if it has not come within `LEVEL_GRACE` seconds.
    levels_follow: bool = False

    @property
    def cause(self) -> str:
        """The cause of the changes this webhook tells of (`agent.causes`)."""
        return cause_of(self.topic, self.reference)


def client_stats(client: Any, budget: float) -> dict[str, float]:
    """`Channel.stats()` of a client that counts `requests`, `throttled` and `retries`."""
    return {
        "requests": client.requests,
        "throttled": client.throttled,
        "retries": client.retries,
        "budget": budget,
    }


def order_reference(name: Any, order_id: Any) -> str:
    """How a webhook's order is named in the sync log: its name ("#1042") when the payload
    has one, else its id; "" when neither is usable (a plugin helper for `WebhookHint`)."""
    if isinstance(name, str) and name.strip():
        return name.strip()
    if isinstance(order_id, (int, str)) and not isinstance(order_id, bool) and str(order_id):
        return str(order_id)
    return ""


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """One line of `shopsync check`: what was checked, whether it passed, and what to fix."""

    name: str
    ok: bool
    detail: str


class ChannelSettings:
    """Base for a plugin's typed settings, built from its `[channel.options]` table.

    Subclasses are dataclasses; `from_options` checks for unknown and missing keys so that a
    typo in the config is a clear start-up error, not a silent default.
    """

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ChannelSettings:
        # every settings class is a dataclass (the contract), which the base cannot declare
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ConfigError(
                f"unknown channel option(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(fields))})"
            )
        values: dict[str, Any] = {}
        for name, field in fields.items():
            if name in options:
                raw = options[name]
                kind = field.type if isinstance(field.type, type) else None
                if field.type in ("int", int) or kind is int:
                    try:
                        raw = int(raw)
                    except (TypeError, ValueError):
                        raise ConfigError(f"channel option {name} must be an integer") from None
                elif field.type in ("float", float) or kind is float:
                    try:
                        raw = float(raw)
                    except (TypeError, ValueError):
                        raise ConfigError(f"channel option {name} must be a number") from None
                elif field.type in ("bool", bool) or kind is bool:
                    raw = str(raw).lower() in ("1", "true", "yes", "on")
                values[name] = raw
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise ConfigError(f"missing channel option {name}")
        return cls(**values)


class Journal(abc.ABC):
    """A channel's durable notes: what a plugin must still know after the agent crashes.

    The core gives every channel one, kept in the agent's database, before `start()`. A plugin
    whose platform has no idempotency key notes each write there before sending it (and its
    answer once known), under the write's batch `key`; a retry of that key after a restart
    then finds the note instead of sending the write a second time. The core drops the note of
    a batch once it has recorded every outcome of it (`Channel.settled`). Values are JSON.
    """

    @abc.abstractmethod
    async def get(self, key: str) -> Any | None:
        """The value noted under `key`, or None."""

    @abc.abstractmethod
    async def put(self, key: str, value: Any) -> None:
        """Note `value` under `key`, durably, before returning."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Forget `key` (no error if it is not there)."""


class MemoryJournal(Journal):
    """A journal that lives as long as the process: the default outside an agent (tests)."""

    def __init__(self) -> None:
        self.notes: dict[str, Any] = {}

    async def get(self, key: str) -> Any | None:
        return self.notes.get(key)

    async def put(self, key: str, value: Any) -> None:
        self.notes[key] = value

    async def delete(self, key: str) -> None:
        self.notes.pop(key, None)


class Channel(abc.ABC):
    """One shop on one platform. The core awaits these methods directly.

    A plugin subclasses this, sets `name` and `settings_class`, and registers the class through
    the `register_channels` hook. The core builds one instance per agent with the plugin's own
    typed settings, the agent's shared `aiohttp.ClientSession` and its clock (so tests and the
    simulation can inject both), then sets `journal` to one kept in the agent's database.

    `credentials` is how the channel authenticates: by default a `StaticToken` of the
    `access_token` option. A platform whose tokens expire sets a `RenewingToken` instead, asks
    it for the token before each call and, on HTTP 401, for `renewed(token)` once before
    retrying that call once; so renewal stays inside the channel and the core never sees it.
    """

    name: ClassVar[str]
    settings_class: ClassVar[type[ChannelSettings]]
    budget: RateBudget
    #: Whether the plugin can sync locations besides its own (`locations`); the core refuses a
    #: `[locations]` table naming others for a plugin that cannot.
    multi_location: ClassVar[bool] = False

    def __init__(
        self, settings: ChannelSettings, *, http: aiohttp.ClientSession, clock: Clock
    ) -> None:
        self.settings = settings
        self.http = http
        self.clock = clock
        self.journal: Journal = MemoryJournal()
        self.credentials: Credentials = StaticToken(str(getattr(settings, "access_token", "")))
        # The shop's other locations to sync besides the channel's own, as the merchant names
        # them in `[locations]` (the platform's location id); set by the core before `start()`,
        # which raises ChannelError for one the shop does not have. Every method then covers
        # them: `list_items` and `lookup` list an item per (variant, location), `read`, `write`
        # take any of those ids, and a webhook's hint names the items at the location it tells
        # of (an order whose location the payload does not say: the variant's item at every
        # synced location).
        self.locations: tuple[str, ...] = ()

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Called once before first use (look up locations, warm caches)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Called once on shutdown."""

    @abc.abstractmethod
    def list_items(self) -> AsyncIterator[Item]:
        """Every item of the shop at the configured location (and at each of `locations`),
        paginated or bulk underneath."""

    @abc.abstractmethod
    async def read(self, item_ids: Sequence[str]) -> dict[str, int | None]:
        """Fresh absolute counts for `item_ids`, batched; None for an id the shop lacks."""

    async def read_levels(self, item_ids: Sequence[str]) -> dict[str, Level]:
        """`read`, with the platform's time of each item's last change where it says it (the
        core reads through this; a plugin whose platform stamps its levels overrides it)."""
        counts = await self.read(item_ids)
        return {item_id: Level(count) for item_id, count in counts.items()}

    async def lookup(self, item_ids: Sequence[str]) -> list[Item] | None:
        """These items as `list_items` would list them (SKU, title, creation time, count),
        fresh from the platform and batched; an id the shop no longer has is left out.

        The core calls it, debounced, for the items a product webhook names and for ids it
        does not know yet, instead of a pass over the whole catalogue: a merchant who
        bulk-edits a thousand products then costs a thousand items' reads, not a thousand
        passes. Return None when the platform cannot look items up by id; the core then
        falls back to a full pass, at most one per `catalogue_min_interval`.
        """
        return None

    @abc.abstractmethod
    async def write(self, writes: Sequence[Write], *, key: str) -> list[WriteResult]:
        """Apply `writes`, batched to the platform's maximum, one result per write in order.

        `key` is the idempotency key of this batch: a retry of the same batch after an
        ``unknown`` outcome comes with the same key and must not be applied twice. Plugins
        derive per-call keys from it deterministically.
        """

    async def settled(self, key: str) -> None:
        """The core has recorded every outcome of write batch `key` and will not send it again:
        whatever the channel noted for it can go."""
        await self.journal.delete(key)

    @abc.abstractmethod
    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookHint:
        """Check the platform's signature over the raw `body` and say what changed.

        Raise `WebhookRejected` for a bad or missing signature before parsing anything;
        parse with `parse_json` (bounded depth); raise ValueError for a signed body that
        cannot be read (the core answers 400).
        """

    @abc.abstractmethod
    async def subscribe(self, callback_url: str) -> None:
        """Register the webhooks the channel needs at `callback_url` (idempotent).

        The core calls it at start and again every hour (`agent.webhook_health`), so it must
        re-create only what is missing: platforms delete subscriptions whose deliveries keep
        failing. Create each topic on its own; if the platform refuses some, create the rest
        and then raise `ChannelError` naming the refused ones."""

    async def set_storefront_open(self, is_open: bool) -> bool:
        """Open or close the storefront for maintenance; False when the platform cannot."""
        return False

    def stats(self) -> dict[str, float]:
        """What the platform client counts, for `/metrics` (optional): `requests`,
        `throttled` and `retries` since start, and `budget`, the rate budget left (0-1)."""
        return {}

    async def check(self) -> list[Check]:
        """Reach the platform and say what works, one `Check` per step, for `shopsync check`:
        the token, the shop (`start()`: auth, location) and the catalogue (one listed item).
        A refusal is reported, never raised; a step that fails ends the list, since the later
        ones depend on it. Plugins add their own (scopes, locations) after calling this."""
        steps = (
            ("token", self._check_token),
            ("shop", self._check_shop),
            ("catalogue", self._check_catalogue),
        )
        checks: list[Check] = []
        for name, step in steps:
            try:
                detail = await step()
            except Exception as exc:  # a check reports what failed; it never raises
                text = str(exc) or type(exc).__name__
                checks.append(Check(name, False, text))
                break
            checks.append(Check(name, True, detail))
        return checks

    async def _check_token(self) -> str:
        await self.credentials.token()
        if self.credentials.kind == "static":
            return "a static token is configured"
        return f"got a token ({self.credentials.kind})"

    async def _check_shop(self) -> str:
        await self.start()
        return "the shop accepts the token"

    async def _check_catalogue(self) -> str:
        items = self.list_items()
        try:
            async for _item in items:
                return "items can be listed"
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                await close()
        return "the shop lists no items at this location"
