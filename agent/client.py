"""A small client of the agent's admin API, for the CLI (`status`, `log`, …)."""

from __future__ import annotations

from typing import Any

import aiohttp

from agent.config import Settings, parse_listen

__all__ = ["AdminClient", "AdminError"]


class AdminError(RuntimeError):
    """The agent could not be reached, or answered with an error (`status`, `error`)."""

    def __init__(self, message: str, *, status: int = 0, error: str = "") -> None:
        super().__init__(message)
        self.status, self.error = status, error


class AdminClient:
    """Talks to the running agent of a data directory with its admin token."""

    def __init__(self, settings: Settings, *, timeout: float = 10.0) -> None:
        host, port = parse_listen(settings.listen)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self.base = f"http://{host}:{port}"
        self.headers = {"Authorization": f"Bearer {settings.admin_token}"}
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.domain = settings.domain

    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> Any:
        """Call the API; AdminError with the agent's own message on any failure."""
        clean = {k: str(v) for k, v in (params or {}).items() if v is not None}
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout, headers=self.headers) as session,
                session.request(method, self.base + path, params=clean, json=json) as resp,
            ):
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = {"message": (await resp.text())[:200]}
                if resp.status >= 400:
                    message = body.get("message") if isinstance(body, dict) else None
                    error = body.get("error", "") if isinstance(body, dict) else ""
                    raise AdminError(
                        f"agent answered {resp.status}: {message or body}",
                        status=resp.status,
                        error=str(error),
                    )
                return body
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise AdminError(
                f"cannot reach the agent of {self.domain} at {self.base} "
                f"(is `shopsync run` running?): {exc.__class__.__name__}"
            ) from None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.request("POST", path, json=body if body is not None else {})
