"""The plugin manager: built-in defaults plus everything in the `shopsync` entry-point group."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

from agent import default_allocation, hookspecs
from agent.channel import Channel, ConfigError
from agent.rules import Allocate, Decision, Priority, ShopRules
from agent.rules import decide as rules_decide

__all__ = ["Registry", "make_plugin_manager"]


class Registry:
    """What the plugins registered: channel classes and emulator factories, by name."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.channels: dict[str, type[Channel]] = {}
        self.emulators: dict[str, Callable[[Any], Any]] = {}
        pm.hook.register_channels(register=self._add_channel)
        pm.hook.register_emulators(register=self._add_emulator)

    def _add_channel(self, cls: type[Channel]) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"channel class {cls!r} has no name")
        if not (isinstance(cls, type) and issubclass(cls, Channel)):
            raise ConfigError(f"channel {name!r} is not a subclass of agent.channel.Channel")
        if name in self.channels:
            raise ConfigError(f"two plugins register a channel named {name!r}")
        self.channels[name] = cls

    def _add_emulator(self, name: str, factory: Callable[[Any], Any]) -> None:
        if name in self.emulators:
            raise ConfigError(f"two plugins register an emulator named {name!r}")
        self.emulators[name] = factory

    def channel(self, name: str) -> type[Channel]:
        """The channel class called `name`, or a ConfigError listing the known ones."""
        try:
            return self.channels[name]
        except KeyError:
            known = ", ".join(sorted(self.channels)) or "none"
            raise ConfigError(f"unknown channel {name!r} (installed: {known})") from None

    def emulator(self, name: str) -> Callable[[Any], Any]:
        """The emulator factory called `name`, or a ConfigError listing the known ones."""
        try:
            return self.emulators[name]
        except KeyError:
            known = ", ".join(sorted(self.emulators)) or "none"
            raise ConfigError(f"no emulator for {name!r} (installed: {known})") from None

    def allocate(self, shop: str) -> Allocate:
        """The allocate decision for `shop`, bound to the plugin manager's hook, with why: the
        rules' reason when the count is theirs, else that a plugin decided."""

        def decide(sku: str, pool: int, rules: ShopRules, priority: Priority | None) -> Decision:
            count = max(
                0,
                int(
                    self.pm.hook.allocate(
                        sku=sku, pool=pool, shop=shop, rules=rules, priority=priority
                    )
                ),
            )
            by_rules = rules_decide(sku, pool, shop, rules, priority)
            if count == by_rules.count:
                return by_rules
            return Decision(count, f"a plugin's allocate: publishing {count} of {pool}")

        return decide


def make_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh plugin manager (one per agent, never a module global)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(default_allocation, name="shopsync.default_allocation")
    if load_entry_points:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    pm.check_pending()
    return pm
