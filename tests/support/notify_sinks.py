"""Where notifications go in tests: an HTTP receiver that checks each message's signature, and
an SMTP server (aiosmtpd) that keeps every e-mail, both on loopback."""

from __future__ import annotations

import contextlib
import email
import json
from collections.abc import AsyncIterator, Iterator
from email.message import Message
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller

from agent.demo import free_port
from agent.notify import verify

__all__ = ["SECRET", "Receiver", "Sink", "notify_table", "receiving", "smtp_sink"]

SECRET = "receiver-secret-0123456789"


class Receiver:
    """An HTTP endpoint that checks each message's signature and answers from a script."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.answers: list[int] = []  # statuses to answer first; then 200
        self.refused = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get("X-Shopsync-Timestamp", "")
        signature = request.headers.get("X-Shopsync-Signature", "")
        if not verify(SECRET, stamp, body, signature, now=float(stamp or 0)):
            self.refused += 1
            return web.json_response({"error": "bad signature"}, status=401)
        status = self.answers.pop(0) if self.answers else 200
        if status == 200:
            self.messages.append(json.loads(body))
        return web.json_response({}, status=status)


class Sink:
    """An SMTP server's handler that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """A `Receiver` listening on loopback for as long as the block runs."""
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    found.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield found
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[Sink, int]]:
    """A `Sink` behind an SMTP server on loopback, and its port, for as long as the block runs."""
    sink, port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def notify_table(receiver: Receiver, port: int) -> str:
    """The `[notify]` table of a shopsync.toml that sends to `receiver` and the SMTP `port`."""
    return (
        f'\n[notify]\nwebhook_url = "{receiver.url}"\nwebhook_secret = "{SECRET}"\n'
        f'email_to = "owner@example.com"\nsmtp_host = "127.0.0.1"\nsmtp_port = {port}\n'
        'smtp_security = "none"\n'
    )
