"""Serving an aiohttp app in the foreground until SIGTERM/SIGINT (agents and emulators)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from aiohttp import web

__all__ = ["KEEPALIVE_TIMEOUT", "StartupError", "serve"]

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


class StartupError(Exception):
    """The app could not start; the message names what and how to fix it, in one line."""


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve `app` on host:port; on SIGTERM or SIGINT stop gracefully (cleanup contexts run).

    A SIGKILL loses nothing either: every unit of work is committed before it is acknowledged.
    A failed start (a cleanup context raising, the address taken) cleans up what had started
    and raises; an address that cannot be bound is a StartupError. A signal during the start
    stops it there.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT
    )
    try:
        if not await _unless_stopped(runner.setup(), stop):
            log.info("stopped_while_starting")
            return
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                "choose another address or port, or stop what uses it"
            ) from None
        if on_ready is not None:
            on_ready(f"http://{host}:{port}")
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _unless_stopped(start: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run `start` unless `stop` is set first (a SIGTERM while a platform is still being
    reached); False if it was stopped. What had started is cleaned up by the caller."""
    task = asyncio.ensure_future(start)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the caller is cancelled: the start never runs on alone
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return False
    task.result()  # raises what the start raised
    return True
