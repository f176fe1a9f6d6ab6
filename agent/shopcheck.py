"""`shopsync check`: reach the platform with the configured channel and say what works.

Besides the channel's own checks (token, shop, catalogue, scopes, location), one check no
platform can do for us: whether `public_url` reaches this agent, where the platform delivers
its webhooks. A running agent answers `GET /webhooks/{channel}` with its domain; before the
agent runs (at `shopsync init`), the check serves that answer itself on `listen` for a moment.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from agent.channel import Check, ConfigError
from agent.config import parse_listen

if TYPE_CHECKING:
    from agent.clock import Clock
    from agent.config import Settings
    from agent.plugins import Registry

__all__ = ["PROBE_TIMEOUT", "ChecksFailed", "check_delivery", "check_shop", "probe_answer"]

#: Seconds a request to `public_url` may take (a platform gives up on a webhook after 5).
PROBE_TIMEOUT = 5.0


class ChecksFailed(Exception):
    """Some checks failed (they were printed); the message says what to do."""


async def check_shop(settings: Settings, registry: Registry, *, clock: Clock) -> list[Check]:
    """The agent's channel, built from its settings as `shopsync run` builds it, checked
    against the platform: one `Check` per step, settings first, then whether webhooks can
    reach the agent. Nothing is written."""
    cls = registry.channel(settings.channel)
    try:
        options = cls.settings_class.from_options(settings.channel_options)
    except ConfigError as exc:
        return [Check("settings", False, str(exc))]
    others = settings.location_map().others()
    if others and not cls.multi_location:
        why = f"[locations] names {', '.join(others)}; the {cls.name} channel syncs one location"
        return [Check("settings", False, why)]
    timeout = aiohttp.ClientTimeout(total=60, connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        channel = cls(options, http=http, clock=clock)
        channel.locations = others
        try:
            checks = await channel.check()
        finally:
            await channel.close()
        delivery = await check_delivery(settings, http)
    settings_ok = Check("settings", True, f"the [channel] options of {cls.name} are complete")
    return [settings_ok, *checks, delivery]


def probe_answer(domain: str, channel: str, nonce: str) -> dict[str, Any]:
    """What `GET /webhooks/{channel}?probe=NONCE` answers: who serves webhooks there."""
    return {"shopsync": domain, "channel": channel, "probe": nonce[:64]}


async def check_delivery(settings: Settings, http: aiohttp.ClientSession) -> Check:
    """Whether `public_url` reaches this agent's webhook door (one `webhooks` check)."""
    url = f"{settings.public_url}/webhooks/{settings.channel}"
    nonce = secrets.token_hex(8)
    reached, why = await _probe(http, url, settings, nonce)
    if reached:
        return Check("webhooks", True, f"{url} reaches this agent")
    host, port = parse_listen(settings.listen)
    stand_in = await _serve_probe(host, port, settings)
    if stand_in is None:  # something else holds `listen`, and it is not this agent
        return Check(
            "webhooks",
            False,
            f"{url} does not reach this agent ({why}) and listen {settings.listen} is taken: "
            "platforms could not deliver webhooks; free the port or fix public_url",
        )
    try:
        reached, why = await _probe(http, url, settings, nonce)
    finally:
        await stand_in.cleanup()
    if reached:
        return Check(
            "webhooks", True, f"{url} reaches listen {settings.listen} (the agent is not running)"
        )
    return Check(
        "webhooks",
        False,
        f"{url} is unreachable ({why}): platforms could not deliver webhooks; make public_url "
        f"reach listen {settings.listen} (a reverse proxy or port forward, HTTPS for Shopify)",
    )


async def _probe(
    http: aiohttp.ClientSession, url: str, settings: Settings, nonce: str
) -> tuple[bool, str]:
    """(True, "") if `url` answers as this agent does; else (False, what happened)."""
    try:
        async with http.get(
            url,
            params={"probe": nonce},
            timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT),
            allow_redirects=False,
        ) as resp:
            if resp.status != 200:
                return False, f"HTTP {resp.status}"
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                return False, "an answer that is not this agent's"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return False, type(exc).__name__
    expected = probe_answer(settings.domain, settings.channel, nonce)
    if isinstance(body, dict) and all(body.get(k) == v for k, v in expected.items()):
        return True, ""
    return False, "another server answered"


async def _serve_probe(host: str, port: int, settings: Settings) -> web.AppRunner | None:
    """Answer the probe on `listen` until cleaned up; None if the port is taken."""

    async def answer(request: web.Request) -> web.Response:
        nonce = request.query.get("probe", "")
        return web.json_response(probe_answer(settings.domain, settings.channel, nonce))

    app = web.Application()
    app.router.add_get(f"/webhooks/{settings.channel}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError:
        await runner.cleanup()
        return None
    return runner
