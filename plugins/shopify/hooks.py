"""Entry point of the Shopify plugin: registers its channel and its emulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.hookspecs import hookimpl
from plugins.shopify.channel import ShopifyChannel
from plugins.shopify.emulator import ShopifyEmulator


@hookimpl
def register_channels(register: Callable[[type[ShopifyChannel]], None]) -> None:
    """Register `ShopifyChannel` under the name ``shopify``."""
    register(ShopifyChannel)


@hookimpl
def register_emulators(register: Callable[[str, Callable[[Any], web.Application]], None]) -> None:
    """Register the Shopify Admin API emulator under the name ``shopify``."""
    register("shopify", lambda options: ShopifyEmulator(options).build_app())
