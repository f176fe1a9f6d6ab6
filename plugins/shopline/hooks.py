"""Entry point of the SHOPLINE plugin: registers its channel and its emulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.hookspecs import hookimpl
from plugins.shopline.channel import ShoplineChannel
from plugins.shopline.emulator import ShoplineEmulator


@hookimpl
def register_channels(register: Callable[[type[ShoplineChannel]], None]) -> None:
    """Register `ShoplineChannel` under the name ``shopline``."""
    register(ShoplineChannel)


@hookimpl
def register_emulators(register: Callable[[str, Callable[[Any], Any]], None]) -> None:
    """Register the SHOPLINE emulator: ``factory(options)`` builds its aiohttp app."""
    register("shopline", lambda options: ShoplineEmulator(options).build_app())
