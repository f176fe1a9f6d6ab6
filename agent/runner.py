"""Serving an aiohttp app in the foreground until SIGTERM/SIGINT (agents and emulators)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import structlog
from aiohttp import web

__all__ = ["serve"]

log = structlog.get_logger(__name__)


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
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
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
