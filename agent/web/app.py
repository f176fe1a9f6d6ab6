"""The agent's aiohttp application: resources in cleanup contexts, sub-apps per audience."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pluggy
import structlog
from aiohttp import web
from sqlalchemy.engine import make_url
from sqlmodel import select

from agent import jsonsafe, synclog
from agent.agent import Agent, Tuning
from agent.catalogue import SkuRule
from agent.clock import Clock, SystemClock
from agent.config import CONFIG_NAME, Settings
from agent.db import Database
from agent.journal import StateJournal
from agent.metrics import Metrics
from agent.models import Identity
from agent.plugins import Registry
from agent.runner import StartupError
from agent.signing import fingerprint, load_private_key, public_key_b64
from agent.transport import HttpTransport
from agent.web import api, keys, pages, peer, webhooks
from agent.web.api import json_error
from agent.web.auth import bearer_ok
from agent.web.bodies import BodyError
from agent.webhook_health import keep_subscribed

ALERT_INTERVAL = 5.0  # seconds between looks at the alerts (they open and clear this fast)

__all__ = ["create_app"]

log = structlog.get_logger(__name__)


def create_app(
    settings: Settings,
    *,
    pm: pluggy.PluginManager,
    clock: Clock | None = None,
    http: aiohttp.ClientSession | None = None,
) -> web.Application:
    """The whole agent as an aiohttp app; nothing starts until the app starts.

    `client_max_size` is aiohttp's ceiling for every path (it is read from this top-level
    app); the paths that read bodies set their own, smaller limits (`agent.web.bodies`).
    """
    app = web.Application(client_max_size=16 * 1024**2, middlewares=[_errors])
    app[keys.SETTINGS] = settings
    app[keys.PM] = pm
    app[keys.REGISTRY] = Registry(pm)
    app[keys.CLOCK] = clock or SystemClock()
    app[keys.METRICS] = Metrics()
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_http_session(http))
    app.cleanup_ctx.append(_channel)
    app.cleanup_ctx.append(_background)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/.well-known/shopsync", peer.well_known)
    app.add_subapp("/api/", api.create_api_app(app))
    app.add_subapp("/peer/", peer.create_peer_app(app))
    app.add_subapp("/webhooks/", webhooks.create_webhook_app(app))
    pages.setup_pages(app)
    return app


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: whatever a handler raises, the client gets JSON, never a traceback.

    A body refused by `read_body` is its 413/408, JSON refused by `jsonsafe` a 400; anything
    else is logged (with a reference, never the request's headers or body) and answered 500.
    """
    try:
        return await handler(request)
    except web.HTTPException:
        raise  # aiohttp's own answers: redirects, 404, 405, the 400s handlers raise
    except BodyError as exc:
        return json_error(exc.status, exc.error, exc.message)
    except jsonsafe.JSONError as exc:
        return json_error(400, "bad_json", str(exc))
    except RecursionError:
        return json_error(400, "too_deep", "the request is nested too deep to be read")
    except Exception as exc:
        reference = secrets.token_hex(4)
        log.error(
            "request_failed",
            method=request.method,
            path=request.path,
            reference=reference,
            error=type(exc).__name__,
            exc_info=exc,
        )
        return json_error(
            500, "internal", f"the agent failed to answer; its log has the details ({reference})"
        )


async def _database(app: web.Application) -> AsyncIterator[None]:
    """The database, migrated, with this agent's identity; StartupError in one line if not."""
    settings = app[keys.SETTINGS]
    config = settings.data_dir / CONFIG_NAME
    db: Database | None = None
    try:
        db = Database(settings.db_url)
        await db.upgrade()
        async with db.sessions() as session:
            identity = (await session.exec(select(Identity))).first()
    except Exception as exc:  # unreachable, refused, not a database, a URL the driver refuses
        if db is not None:
            await db.dispose()
        raise database_error(settings, exc) from exc
    if identity is None:
        await db.dispose()
        raise StartupError(
            f"the database {_database_name(settings)} has no agent identity: it is not this "
            f"agent's database; point database_url in {config} at it, or run `shopsync init` "
            "for a new agent"
        )
    app[keys.DB] = db
    app[keys.IDENTITY] = identity
    yield
    await db.dispose()


def database_error(settings: Settings, exc: BaseException) -> StartupError:
    """The one-line start-up error of a database that cannot be opened (nor locked)."""
    return StartupError(
        f"cannot open the database {_database_name(settings)}: {_reason(exc)}; "
        + _database_fix(settings)
    )


def _database_name(settings: Settings) -> str:
    """The database for a person: the SQLite file, or the URL without its password."""
    try:
        url = make_url(settings.db_url)
    except Exception:  # not even a URL: never echo it, it may hold a password
        return "named by database_url"
    if url.get_backend_name() == "sqlite":
        return str(url.database)
    return url.render_as_string(hide_password=True)


def _database_fix(settings: Settings) -> str:
    config = settings.data_dir / CONFIG_NAME
    if settings.db_url.startswith("sqlite"):
        return (
            "check that the file is this agent's SQLite database and that this user may read "
            f"and write it and its directory (restore it from a backup if it is damaged, or "
            f"set database_url in {config})"
        )
    return f"check that the server is up and database_url in {config} is right"


def _reason(exc: BaseException) -> str:
    """The innermost cause of a database error, in one line (no SQL, no traceback)."""
    inner: BaseException = exc
    while True:
        nxt = getattr(inner, "orig", None) or inner.__cause__
        if not isinstance(nxt, BaseException) or nxt is inner:
            break
        inner = nxt
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return text[:300]


def _http_session(given: aiohttp.ClientSession | None):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[keys.HTTP] = given
            yield
            return
        timeout = aiohttp.ClientTimeout(total=60, connect=10, sock_read=30)
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            app[keys.HTTP] = session
            yield

    return ctx


async def _channel(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    cls = app[keys.REGISTRY].channel(settings.channel)
    options = cls.settings_class.from_options(settings.channel_options)
    channel = cls(options, http=app[keys.HTTP], clock=app[keys.CLOCK])
    channel.locations = settings.location_map().others()
    if channel.locations and not cls.multi_location:
        raise StartupError(
            f"[locations] names {', '.join(channel.locations)}, but the {cls.name} channel "
            "syncs only its own location: remove them from [locations]"
        )
    journal = StateJournal(app[keys.DB], cls.name)
    await journal.drop_orphans()
    channel.journal = journal
    await channel.start()
    app[keys.CHANNEL] = channel
    yield
    await channel.close()


async def _background(app: web.Application) -> AsyncIterator[None]:
    """The agent itself (`agent.agent.Agent`), started, with the app's own chores."""
    settings, identity = app[keys.SETTINGS], app[keys.IDENTITY]
    private_key = load_private_key(settings.key_path)
    if public_key_b64(private_key) != identity.public_key:
        raise StartupError(
            f"{settings.key_path} is not the key of this agent's identity "
            f"({fingerprint(identity.public_key)}): restore the agent's own key file"
        )
    agent = Agent(
        db=app[keys.DB],
        identity=identity,
        private_key=private_key,
        channel=app[keys.CHANNEL],
        clock=app[keys.CLOCK],
        transport=HttpTransport(app[keys.HTTP], private_key=private_key, clock=app[keys.CLOCK]),
        allocate=app[keys.REGISTRY].allocate(identity.domain),
        tuning=Tuning(
            public_url=settings.public_url,
            coalesce=settings.coalesce_ms / 1000,
            reconcile_interval=settings.reconcile_interval,
            catalogue_min_interval=settings.catalogue_min_interval,
            sku_rule=SkuRule(trim=settings.sku_trim, fold_case=settings.sku_case_fold),
            alert_interval=ALERT_INTERVAL,
            spool_dir=settings.data_dir / "spool",
            snapshot_page_size=settings.snapshot_page_size,
            compaction_interval=settings.compaction_interval,
            history_horizon=settings.history_horizon_days * 86400,
        ),
        shop_rules=settings.rules,
        locations=settings.location_map(),
        alert_settings=settings.alerts,
        notify_settings=settings.notify,
        http=app[keys.HTTP],
        metrics=app[keys.METRICS],
    )
    app[keys.AGENT] = agent
    app[keys.STARTED] = app[keys.CLOCK].now()
    chores = [asyncio.create_task(_subscribe(app), name="subscribe")]
    if settings.log_retention_days > 0:
        chores.append(asyncio.create_task(_prune_log(app), name="prune-log"))
    await agent.start()
    yield
    for task in chores:
        task.cancel()
    for task in chores:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await agent.stop()


async def _prune_log(app: web.Application) -> None:
    """Keep `log_retention_days` of sync log: prune at start, then hourly."""
    settings, clock = app[keys.SETTINGS], app[keys.CLOCK]
    while True:
        try:
            before = clock.now() - settings.log_retention_days * 86400
            removed = await synclog.prune(app[keys.DB], before)
            if removed:
                log.info("sync_log_pruned", entries=removed, days=settings.log_retention_days)
        except Exception as exc:  # a failed prune is retried next hour; sync goes on
            log.warning("sync_log_prune_failed", error=repr(exc))
        await clock.sleep(3600.0)


async def _subscribe(app: web.Application) -> None:
    """Register webhooks at our public URL and keep them registered."""
    settings = app[keys.SETTINGS]
    url = f"{settings.public_url}/webhooks/{settings.channel}"
    await keep_subscribed(
        app[keys.CHANNEL],
        url,
        clock=app[keys.CLOCK],
        shop=settings.domain,
        interval=settings.webhook_check_interval,
    )


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _metrics(request: web.Request) -> web.Response:
    """Prometheus text, for `Authorization: Bearer <metrics_token>` (default: the admin token)."""
    settings = request.app[keys.SETTINGS]
    if not bearer_ok(request, settings.metrics_token or settings.admin_token):
        return json_error(
            401, "unauthorized", "send the metrics token as 'Authorization: Bearer …'"
        )
    metrics = request.app[keys.METRICS]
    await metrics.refresh()
    return web.Response(body=metrics.render(), content_type="text/plain")
