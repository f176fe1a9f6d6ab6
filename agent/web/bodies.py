"""Request bodies read with a size cap and a deadline, so a hostile client costs little."""

from __future__ import annotations

import asyncio

from aiohttp import web

__all__ = ["BODY_TIMEOUT", "BodyError", "read_body"]

#: Seconds a client gets to send its whole body; a slower one is answered 408.
BODY_TIMEOUT = 30.0
_CHUNK = 64 * 1024


class BodyError(Exception):
    """A body refused before it was read in full: 413 (too large) or 408 (too slow)."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.status, self.error, self.message = status, error, message


async def read_body(request: web.Request, limit: int, *, timeout: float = BODY_TIMEOUT) -> bytes:
    """The request's body, at most `limit` bytes (after any decompression), within `timeout`.

    A declared Content-Length over the limit is refused before a byte is read. The bytes are
    kept on the request, so `request.read()` and `request.json()` give them again afterwards.
    """
    cached = request._read_bytes  # set by aiohttp's own read(), or by an earlier call here
    if cached is not None:
        if len(cached) > limit:
            raise _too_large(limit)
        return cached
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(_CHUNK):
                body.extend(chunk)
                if len(body) > limit:
                    raise _too_large(limit)
    except TimeoutError:
        raise BodyError(
            408, "body_timeout", f"the body did not arrive within {timeout:.0f} s"
        ) from None
    data = bytes(body)
    # aiohttp keeps a read body here; setting it lets handlers call request.read() as usual.
    request._read_bytes = data
    return data


def _too_large(limit: int) -> BodyError:
    return BodyError(413, "body_too_large", f"the body is larger than {limit} bytes")
