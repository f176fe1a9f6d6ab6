"""Every pluggy hook of shopsync, documented: the only contract plugins see besides `Channel`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from aiohttp import web

    from agent.channel import Channel

__all__ = [
    "PROJECT",
    "allocate",
    "hookimpl",
    "hookspec",
    "register_channels",
    "register_emulators",
]

PROJECT = "shopsync"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration: called once at start-up --------------------------------------------------


@hookspec
def register_channels(register: Callable[[type[Channel]], None]) -> None:
    """Register channel classes.

    Called once when the plugin manager is built. Call ``register(cls)`` for every `Channel`
    subclass the plugin provides; ``cls.name`` is the name used in ``shopsync init --channel``.
    Two channels with one name is a start-up error.
    """


@hookspec
def register_emulators(register: Callable[[str, Callable[[Any], web.Application]], None]) -> None:
    """Register platform emulators for tests, benchmarks and ``shopsync demo``.

    Call ``register(name, factory)``; ``factory(options)`` receives an
    `agent.emulator.EmulatorOptions` and returns the aiohttp application that serves the
    platform's API subset plus the common ``/_emulator/*`` control routes. ``name`` must match
    the channel's name. Two emulators with one name is a start-up error.
    """


# -- decisions: pure functions, called often ----------------------------------------------------


@hookspec(firstresult=True)
def allocate(sku: str, pool: int, shop: str) -> int | None:
    """The count to publish in `shop` for `sku` when the group's pool holds `pool`.

    Called by the core on every pool change. Return an int (>= 0) to decide, or None to leave
    the decision to the next implementation; the first non-None result wins. The built-in
    default (`agent.default_allocation`) publishes ``max(0, pool)``. Must be pure and fast: no
    I/O, the same answer for the same arguments.
    """
