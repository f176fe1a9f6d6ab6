"""The `[channel.options]` of a SHOPLINE shop, validated as they are read."""

from __future__ import annotations

import dataclasses
import re

from agent.channel import ChannelSettings, ConfigError

__all__ = ["ShoplineSettings"]

_VERSION = re.compile(r"^v\d{8}$")


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
