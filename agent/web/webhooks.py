"""Platform webhooks under /webhooks/{channel}: verified on the raw body, then a hint."""

from __future__ import annotations

import structlog
from aiohttp import web

from agent.channel import WebhookRejected
from agent.web import keys
from agent.web.api import json_error

__all__ = ["create_webhook_app"]

log = structlog.get_logger(__name__)


def create_webhook_app(parent: web.Application) -> web.Application:
    """The /webhooks sub-app (platform-signed, no admin token)."""
    app = web.Application()
    app.router.add_post("/{channel}", receive)
    return app


async def receive(request: web.Request) -> web.Response:
    """Verify the platform's signature over the raw body, queue a re-read, answer at once."""
    cfg = request.config_dict
    settings, metrics = cfg[keys.SETTINGS], cfg[keys.METRICS]
    if request.match_info["channel"] != settings.channel:
        metrics.webhooks.labels(result="unknown_channel").inc()
        return json_error(404, "unknown_channel", f"this agent serves {settings.channel!r}")
    body = await request.read()
    try:
        hint = cfg[keys.CHANNEL].verify_webhook(request.headers, body)
    except WebhookRejected as exc:
        metrics.webhooks.labels(result="rejected").inc()
        log.warning("webhook_rejected", shop=settings.domain, reason=str(exc))
        return json_error(401, "bad_signature", str(exc))
    except ValueError as exc:  # signed but unreadable: the platform's fault, not a retry case
        metrics.webhooks.labels(result="malformed").inc()
        return json_error(400, "malformed", str(exc))
    metrics.webhooks.labels(result="accepted").inc()
    cfg[keys.RECONCILER].hint(hint)
    return web.json_response({"ok": True})
