"""Finding a shop's agent by its domain: `/.well-known/shopsync`, then DNS TXT `_shopsync.`."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import aiohttp

__all__ = ["DiscoveryError", "agent_url_from_txt", "describe_agent", "resolve_target"]

DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", re.I)


class DiscoveryError(Exception):
    """No agent could be found for the target; the message says what was tried."""


def agent_url_from_txt(records: list[str]) -> str | None:
    """The agent URL in TXT records like `v=shopsync1 agent_url=https://…` or a bare URL."""
    for record in records:
        for token in record.split():
            value = token.split("=", 1)[1] if token.startswith("agent_url=") else token
            parts = urlsplit(value)
            if parts.scheme in ("http", "https") and parts.netloc:
                return value.rstrip("/")
    return None


async def _txt_records(name: str) -> list[str]:
    import dns.asyncresolver
    import dns.exception

    try:
        answer = await dns.asyncresolver.resolve(name, "TXT", lifetime=5.0)
    except dns.exception.DNSException:
        return []
    return [b"".join(r.strings).decode(errors="replace") for r in answer]


async def describe_agent(http: aiohttp.ClientSession, agent_url: str) -> dict[str, Any]:
    """An agent's own description (domain, agent_url, public_key, fingerprint)."""
    url = f"{agent_url.rstrip('/')}/.well-known/shopsync"
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            if resp.status != 200:
                raise DiscoveryError(f"{url} answered {resp.status}")
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise DiscoveryError(f"cannot read {url}: {type(exc).__name__} {exc}") from None
    if not isinstance(body, dict) or not all(
        isinstance(body.get(k), str) and body.get(k) for k in ("domain", "public_key")
    ):
        raise DiscoveryError(f"{url} does not describe a shopsync agent")
    body.setdefault("agent_url", agent_url.rstrip("/"))
    return body


async def resolve_target(http: aiohttp.ClientSession, target: str) -> dict[str, Any]:
    """Resolve an agent URL or a shop domain to the agent's description."""
    target = target.strip()
    if target.startswith(("http://", "https://")):
        return await describe_agent(http, target)
    if not DOMAIN_RE.match(target):
        raise DiscoveryError(f"{target!r} is neither an agent URL nor a shop domain")
    tried = []
    try:
        return await describe_agent(http, f"https://{target}")
    except DiscoveryError as exc:
        tried.append(str(exc))
    url = agent_url_from_txt(await _txt_records(f"_shopsync.{target}"))
    if url:
        return await describe_agent(http, url)
    tried.append(f"no TXT record _shopsync.{target} with an agent URL")
    raise DiscoveryError(f"no shopsync agent found for {target}: " + "; ".join(tried))
