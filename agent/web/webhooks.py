"""Platform webhooks under /webhooks/{channel}: verified on the raw body, then a hint."""

from __future__ import annotations

import structlog
from aiohttp import web

from agent.channel import WebhookRejected
from agent.shopcheck import probe_answer
from agent.web import keys
from agent.web.api import json_error
from agent.web.bodies import BodyError, read_body

__all__ = ["BODY_LIMIT", "create_webhook_app"]

log = structlog.get_logger(__name__)

#: Bytes a delivery may have. Anyone can send one (the signature is over the body, so the
#: body must be read to check it), so the cap is what bounds an unsigned sender. Stock
#: payloads — an inventory level, an order or refund, a product with its variants — are a few
#: KiB to a few hundred KiB; 2 MiB leaves room for the largest orders and products. A bigger
#: one is refused with 413 and costs nothing: a webhook is only a hint, and the next
#: reconciliation reads every count anyway.
BODY_LIMIT = 2 * 1024**2


def create_webhook_app(parent: web.Application) -> web.Application:
    """The /webhooks sub-app (platform-signed, no admin token)."""
    app = web.Application()
    app.router.add_post("/{channel}", receive)
    app.router.add_get("/{channel}", probe)
    return app


async def probe(request: web.Request) -> web.Response:
    """`shopsync check`'s question through `public_url`: is this the agent behind it?"""
    settings = request.config_dict[keys.SETTINGS]
    if request.match_info["channel"] != settings.channel:
        return json_error(404, "unknown_channel", f"this agent serves {settings.channel!r}")
    nonce = request.query.get("probe", "")
    return web.json_response(probe_answer(settings.domain, settings.channel, nonce))


async def receive(request: web.Request) -> web.Response:
    """Verify the platform's signature over the raw body, queue a re-read, answer at once.

    Whatever the body, the answer is a JSON 2xx or 4xx: too large 413, too slow 408, a bad
    signature 401, signed but unreadable (not JSON, nested too deep, a plugin that cannot
    make sense of it) 400.
    """
    cfg = request.config_dict
    settings, metrics = cfg[keys.SETTINGS], cfg[keys.METRICS]
    if request.match_info["channel"] != settings.channel:
        metrics.webhooks.labels(result="unknown_channel").inc()
        return json_error(404, "unknown_channel", f"this agent serves {settings.channel!r}")
    try:
        body = await read_body(request, BODY_LIMIT)
    except BodyError as exc:
        metrics.webhooks.labels(result="refused").inc()
        return json_error(exc.status, exc.error, exc.message)
    try:
        hint = cfg[keys.CHANNEL].verify_webhook(request.headers, body)
    except WebhookRejected as exc:
        metrics.webhooks.labels(result="rejected").inc()
        if _signed(request):  # a signature that does not match: the secret, not a stranger
            cfg[keys.AGENT].refusals.refused()
            cfg[keys.AGENT].alerts.poke()
        log.warning("webhook_rejected", shop=settings.domain, reason=str(exc))
        return json_error(401, "bad_signature", str(exc))
    except (ValueError, RecursionError) as exc:  # signed but unreadable: not a retry case
        metrics.webhooks.labels(result="malformed").inc()
        message = str(exc) if isinstance(exc, ValueError) else "the body is nested too deep"
        return json_error(400, "malformed", message)
    except Exception as exc:  # a plugin's bug on an odd body must not become a 500
        metrics.webhooks.labels(result="malformed").inc()
        log.error("webhook_unreadable", shop=settings.domain, error=repr(exc)[:300])
        return json_error(400, "malformed", "the channel could not read this delivery")
    metrics.webhooks.labels(result="accepted").inc()
    if cfg[keys.AGENT].refusals.accepted():
        cfg[keys.AGENT].alerts.poke()
    cfg[keys.AGENT].reconciler.hint(hint)
    return web.json_response({"ok": True})


def _signed(request: web.Request) -> bool:
    """Whether a delivery carries a signature header at all (every platform's is named for
    its HMAC or signature); an unsigned POST is a stranger's, which says nothing of the
    webhook secret."""
    return any("hmac" in name.lower() or "signature" in name.lower() for name in request.headers)
