"""The pages' way to the admin JSON API: in-process HTTP calls to /api with the admin token.

The pages use nothing but the API the CLI uses, so the two cannot drift apart. The calls go
to the very socket the browser's request came in on, through the agent's shared session.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from agent.config import parse_listen
from agent.web import keys

__all__ = ["Api", "ApiError"]

TIMEOUT = aiohttp.ClientTimeout(total=30)


class ApiError(Exception):
    """The API answered with an error (or could not be reached)."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def _base_url(request: web.Request) -> str:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = str(sockname[0]), int(sockname[1])
    else:  # not a TCP socket: fall back to the configured address
        host, port = parse_listen(request.config_dict[keys.SETTINGS].listen)
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class Api:
    """A client of this agent's own /api, bound to one page request."""

    def __init__(self, request: web.Request) -> None:
        cfg = request.config_dict
        self.http = cfg[keys.HTTP]
        self.base = _base_url(request) + "/api"
        self.headers = {"Authorization": f"Bearer {cfg[keys.SETTINGS].admin_token}"}

    async def call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        """The decoded JSON answer; ApiError with the API's own message on 4xx/5xx."""
        clean = {k: str(v) for k, v in (params or {}).items() if v not in (None, "")}
        try:
            async with self.http.request(
                method,
                self.base + path,
                params=clean,
                json=body,
                headers=self.headers,
                timeout=TIMEOUT,
            ) as resp:
                text = await resp.text()
                try:
                    answer = await resp.json(content_type=None)
                except ValueError:
                    answer = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(503, "unreachable", f"the admin API did not answer: {exc}") from None
        if resp.status >= 400:
            if isinstance(answer, dict):
                raise ApiError(
                    resp.status,
                    str(answer.get("error", "error")),
                    str(answer.get("message", "")),
                )
            # A plain-text 404 is aiohttp's own: this agent has no such route (yet).
            error = "no_route" if resp.status == 404 else "error"
            raise ApiError(resp.status, error, text[:200])
        return answer

    async def get(self, path: str, **params: Any) -> Any:
        """GET path with query parameters (None and "" are left out)."""
        return await self.call("GET", path, params=params)

    async def post(self, path: str, body: Any = None) -> Any:
        """POST a JSON body ({} when none)."""
        return await self.call("POST", path, body=body if body is not None else {})
