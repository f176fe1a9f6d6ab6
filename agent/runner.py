"""Serving an aiohttp app in the foreground until SIGTERM/SIGINT (agents and emulators)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import structlog
from aiohttp import web

__all__ = ["KEEPALIVE_TIMEOUT", "serve"]

log = structlog.get_logger(__name__)

#: Seconds a connection may sit without a complete request before the server closes it. In
#: aiohttp 3.14 this one timer runs from the moment a connection opens and again after every
#: answer, and it closes a connection whose request headers are still incomplete when it
#: fires, so it bounds both idle keep-alive connections and clients that send their headers
#: slowly (aiohttp's default is 3630 s). Longer than the 15 s for which aiohttp's client —
#: peers and the admin pages' own API calls — keeps an idle connection, so that a reused
#: connection is never closed under a request. Bodies have their own deadline
#: (`agent.web.bodies.BODY_TIMEOUT`).
KEEPALIVE_TIMEOUT = 30.0


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve `app` on host:port; on SIGTERM or SIGINT stop gracefully (cleanup contexts run).

    A SIGKILL loses nothing either: every unit of work is committed before it is acknowledged.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        if on_ready is not None:
            on_ready(f"http://{host}:{port}")
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
