"""`shopsync check`: reach the platform with the configured channel and say what works."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp

from agent.channel import Check, ConfigError

if TYPE_CHECKING:
    from agent.clock import Clock
    from agent.config import Settings
    from agent.plugins import Registry

__all__ = ["check_shop"]


async def check_shop(settings: Settings, registry: Registry, *, clock: Clock) -> list[Check]:
    """The agent's channel, built from its settings as `shopsync run` builds it, checked
    against the platform: one `Check` per step, settings first. Nothing is written."""
    cls = registry.channel(settings.channel)
    try:
        options = cls.settings_class.from_options(settings.channel_options)
    except ConfigError as exc:
        return [Check("settings", False, str(exc))]
    timeout = aiohttp.ClientTimeout(total=60, connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        channel = cls(options, http=http, clock=clock)
        try:
            checks = await channel.check()
        finally:
            await channel.close()
    return [Check("settings", True, f"the [channel] options of {cls.name} are complete"), *checks]
