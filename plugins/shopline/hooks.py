"""Entry point of the SHOPLINE plugin: registers its channel and its emulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.hookspecs import hookimpl
from plugins.shopline.channel import ShoplineChannel


@hookimpl
def register_channels(register: Callable[[type[ShoplineChannel]], None]) -> None:
    """Register `ShoplineChannel` under the name ``shopline``."""
    register(ShoplineChannel)


@hookimpl
def register_emulators(register: Callable[[str, Callable[[Any], Any]], None]) -> None:
    """Register the SHOPLINE emulator: ``factory(options)`` builds its aiohttp app."""
    register("shopline", _emulator)


def _emulator(options: Any) -> Any:
    """The emulator's app. Imported here, not at the top: an agent (`shopsync run`, `init`)
    loads every plugin and never needs an emulator."""
    from plugins.shopline.emulator import ShoplineEmulator

    return ShoplineEmulator(options).build_app()
