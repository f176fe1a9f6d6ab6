"""Entry point of the Pisell plugin: registers its channel and its emulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.hookspecs import hookimpl
from plugins.pisell.channel import PisellChannel


@hookimpl
def register_channels(register: Callable[[type[PisellChannel]], None]) -> None:
    """Register `PisellChannel` as channel `pisell`."""
    register(PisellChannel)


@hookimpl
def register_emulators(register: Callable[[str, Callable[[Any], Any]], None]) -> None:
    """Register the Pisell emulator: `factory(options)` builds its aiohttp app."""
    register("pisell", _emulator)


def _emulator(options: Any) -> Any:
    """The emulator's app. Imported here, not at the top: an agent (`shopsync run`, `init`)
    loads every plugin and never needs an emulator."""
    from plugins.pisell.emulator import PisellEmulator

    return PisellEmulator(options).build_app()
