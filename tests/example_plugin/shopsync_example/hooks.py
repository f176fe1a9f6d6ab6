"""Entry point of the Acme plugin (``[project.entry-points.shopsync]``): channel and emulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.hookspecs import hookimpl
from shopsync_example.channel import AcmeChannel
from shopsync_example.emulator import AcmeEmulator


@hookimpl
def register_channels(register: Callable[[type[AcmeChannel]], None]) -> None:
    """Register `AcmeChannel` under the name ``acme``."""
    register(AcmeChannel)


@hookimpl
def register_emulators(register: Callable[[str, Callable[[Any], Any]], None]) -> None:
    """Register the Acme emulator: ``factory(options)`` builds its aiohttp app."""
    register("acme", lambda options: AcmeEmulator(options).build_app())
