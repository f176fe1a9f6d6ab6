"""Real agent processes driven from synchronous tests: an event loop in a background thread.

schemathesis and `requests` call the agents synchronously, while the cluster helpers are
async; `Live.run` runs a coroutine on the background loop and waits for it. The `live`
fixture (tests/conftest.py) gives each test module one such loop, so that module-scoped
clusters can live on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import requests

__all__ = ["Live"]

T = TypeVar("T")


class Live:
    """A cluster of real processes on an event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.http = requests.Session()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.http.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()
