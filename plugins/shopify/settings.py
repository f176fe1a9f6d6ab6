"""The options of a Shopify channel: its ``[channel.options]`` table, validated."""

from __future__ import annotations

import dataclasses
import re

from agent.channel import ChannelSettings, ConfigError

__all__ = ["ShopifySettings"]


@dataclasses.dataclass
class ShopifySettings(ChannelSettings):
    """Options of the ``[channel.options]`` table for a Shopify shop.

    Credentials: ``access_token`` (a legacy custom app's static ``shpat_`` token), or
    ``client_id`` and ``client_secret`` of a Dev Dashboard app, whose 24 h tokens the channel
    gets through the client-credentials grant and renews. ``webhook_secret`` defaults to
    ``client_secret``, which is what Shopify signs a Dev Dashboard app's webhooks with.
    """

    api_url: str
    access_token: str = dataclasses.field(default="", repr=False)
    webhook_secret: str = dataclasses.field(default="", repr=False)
    client_id: str = ""
    client_secret: str = dataclasses.field(default="", repr=False)
    location_id: str = ""
    api_version: str = "2026-10"
    bulk: bool = True
    timeout: float = 10.0
    retry_base: float = 0.5
    max_retries: int = 8

    def __post_init__(self) -> None:
        self.api_url = str(self.api_url).rstrip("/")
        if not re.match(r"^https?://[^/]+", self.api_url):
            raise ConfigError("channel option api_url must be an http(s) URL")
        self.client_id = str(self.client_id).strip()
        if bool(self.client_id) != bool(str(self.client_secret).strip()):
            raise ConfigError("channel options client_id and client_secret go together")
        if not str(self.access_token).strip() and not self.client_id:
            raise ConfigError(
                "missing channel option access_token (or client_id and client_secret of a "
                "Dev Dashboard app)"
            )
        if not str(self.webhook_secret).strip():
            if not self.client_id:
                raise ConfigError("channel option webhook_secret must not be empty")
            self.webhook_secret = self.client_secret
        if not re.match(r"^(\d{4}-\d{2}|unstable)$", self.api_version):
            raise ConfigError("channel option api_version must look like 2026-10 or unstable")
        location = str(self.location_id).strip()
        if location.isdigit():
            location = f"gid://shopify/Location/{location}"
        if location and not re.match(r"^gid://shopify/Location/\d+$", location):
            raise ConfigError("channel option location_id must be a number or a Location gid")
        self.location_id = location
        if self.timeout <= 0 or self.retry_base < 0 or self.max_retries < 0:
            raise ConfigError("timeout must be > 0, retry_base and max_retries >= 0")

    @property
    def endpoint(self) -> str:
        """The GraphQL endpoint of the configured API version."""
        return f"{self.api_url}/admin/api/{self.api_version}/graphql.json"
