"""Testing tools for channel plugin authors: the conformance suite and its harness.

`ChannelConformance` is the suite (subclass it in a test module), `ChannelHarness` tells it
how to run a channel against its emulator, `CountingModel` keeps the core's books for one
item. See docs/plugins.md.
"""

from __future__ import annotations

import pytest

# The suite's asserts live here, not in the author's test module: rewrite them too, so that a
# failure shows the values. Registered before the modules are imported.
pytest.register_assert_rewrite(
    "agent.testing.conformance", "agent.testing.counting", "agent.testing.locations"
)

from agent.testing.conformance import ChannelConformance  # noqa: E402
from agent.testing.counting import CountingModel  # noqa: E402
from agent.testing.harness import ChannelHarness, ShopUnderTest, WebhookReceiver  # noqa: E402

__all__ = [
    "ChannelConformance",
    "ChannelHarness",
    "CountingModel",
    "ShopUnderTest",
    "WebhookReceiver",
]
