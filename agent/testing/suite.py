"""The conformance suite as a test module, to check an installed channel without writing one.

    pytest --pyargs agent.testing.suite --shopsync-channel NAME

``--shopsync-channel`` comes with the pytest plugin (`agent.testing.conformance`, loaded by
the ``pytest11`` entry point, or with ``-p agent.testing.conformance``); it builds a default
`ChannelHarness` (page size 100, duplicates and SKU-less items allowed; a location named as
its emulator says, `GET /_emulator/locations/{n}`). A plugin whose platform differs writes
the few lines in docs/plugins.md instead.
"""

from __future__ import annotations

from agent.testing.conformance import ChannelConformance

__all__ = ["TestChannelConformance"]


class TestChannelConformance(ChannelConformance):
    """The whole suite, for the channel named by ``--shopsync-channel``."""
