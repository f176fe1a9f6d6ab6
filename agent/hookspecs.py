"""Every pluggy hook of shopsync, documented: the only contract plugins see besides `Channel`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from aiohttp import web

    from agent.channel import Channel
    from agent.rules import Priority, ShopRules

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
def allocate(
    sku: str, pool: int, shop: str, rules: ShopRules, priority: Priority | None
) -> int | None:
    """The count to publish in `shop` for `sku` when the group's pool holds `pool`.

    Called by the core on every pool change. `rules` are the shop's own stock rules (its
    ``[rules]``: buffer, percent, plus, max, per-SKU overrides; `ShopRules.for_sku` gives the
    one for `sku`) and `priority` the group's rule (while a pool is `priority.at_most` or less
    only `priority.shop` publishes it), or None. An implementation may take any subset of
    these arguments by name. Return an int (>= 0) to decide, or None to leave the decision to
    the next implementation; the first non-None result wins. The built-in implementation
    (`agent.default_allocation`, tried last) applies the rules (`agent.rules.decide`); with
    none set it publishes ``max(0, pool)``. Must be pure and fast: no I/O, the same answer
    for the same arguments.
    """
