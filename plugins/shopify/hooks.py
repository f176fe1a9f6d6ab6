"""Entry point of the Shopify plugin: registers its channel and its emulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.hookspecs import hookimpl
from plugins.shopify.channel import ShopifyChannel


@hookimpl
def register_channels(register: Callable[[type[ShopifyChannel]], None]) -> None:
    """Register `ShopifyChannel` under the name ``shopify``."""
    register(ShopifyChannel)


@hookimpl
def register_emulators(register: Callable[[str, Callable[[Any], web.Application]], None]) -> None:
    """Register the Shopify Admin API emulator under the name ``shopify``."""
    register("shopify", _emulator)


def _emulator(options: Any) -> Any:
    """The emulator's app. Imported here, not at the top: an agent (`shopsync run`, `init`)
    loads every plugin and never needs an emulator."""
    from plugins.shopify.emulator import ShopifyEmulator

    return ShopifyEmulator(options).build_app()
