"""The `shopsync` command: parse, call the core, print. Bad input: one line and exit 2."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar
from urllib.parse import quote

from agent import __version__, rules_cli
from agent.channel import Check, ConfigError

__all__ = ["main"]

EXIT_USAGE = 2
T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"shopsync: error: {message}\n")


def _data_dir(args: argparse.Namespace) -> Path:
    value = args.data_dir or os.environ.get("SHOPSYNC_DATA_DIR")
    if not value:
        raise ConfigError("say which agent with --data-dir D (or SHOPSYNC_DATA_DIR)")
    return Path(value).absolute()


def _print_json(value: Any) -> None:
    print(json.dumps(value, sort_keys=False), flush=True)


def _show(args: argparse.Namespace, answer: Any, printer: Callable[[Any], None]) -> int:
    """The agent's `answer` as JSON with `--json`, else for a person by `printer`; exit 0."""
    if args.json:
        _print_json(answer)
    else:
        printer(answer)
    return 0


# -- commands ---------------------------------------------------------------------------------


async def cmd_init(args: argparse.Namespace) -> int:
    from agent.clock import SystemClock
    from agent.config import Settings
    from agent.identity import check_new, init_agent
    from agent.plugins import Registry, make_plugin_manager
    from agent.shopcheck import ChecksFailed, check_shop

    options: dict[str, str] = {}
    for raw in args.channel_option or []:
        name, sep, value = raw.partition("=")
        if not sep or not name:
            raise ConfigError(f"--channel-option must be NAME=VALUE, got {raw!r}")
        options[name.strip()] = value
    settings = Settings(
        data_dir=_data_dir(args),
        domain=args.domain,
        listen=args.listen,
        public_url=args.public_url,
        admin_token="",
        channel=args.channel,
        channel_options=options,
        database_url=args.database_url or "",
    )
    registry = Registry(make_plugin_manager())
    if not getattr(args, "no_check", False):
        check_new(settings, registry)  # bad settings: exit 2 before reaching anything
        checks = await check_shop(settings, registry, clock=SystemClock())
        _print_checks(checks, file=sys.stderr if args.json else sys.stdout)
        failed = [c.name for c in checks if not c.ok]
        if failed:
            raise ChecksFailed(
                f"nothing was written: {len(failed)} check(s) failed ({', '.join(failed)}, "
                "above); fix them and run init again, or add --no-check to create the agent "
                "as it is (then `shopsync check` until every line is ok)"
            )
    result = await init_agent(settings, registry, SystemClock())
    if args.json:
        _print_json(dict(result))
    else:
        print(f"agent for {result['domain']} created in {settings.data_dir}")
        print(f"key fingerprint: {result['fingerprint']}")
        print(f"admin token:     {result['admin_token']}")
        print(f"config:          {result['config']}")
        print(f"start it with:   shopsync run --data-dir {settings.data_dir}")
    return 0


async def cmd_run(args: argparse.Namespace) -> int:
    from agent.config import CONFIG_NAME, load_settings, parse_listen
    from agent.identity import prepare_run
    from agent.plugins import make_plugin_manager
    from agent.runner import StartupError, serve
    from agent.standby import hold
    from agent.web.app import create_app, database_error

    settings = load_settings(_data_dir(args))
    prepare_run(settings)
    host, port = parse_listen(settings.listen)

    def waiting(why: str) -> None:
        print(f"standby: {why}", flush=True)

    try:  # one active agent per shop database: a second one waits here (agent/standby.py)
        lock = await hold(settings.db_url, settings.data_dir, waiting)
    except Exception as exc:  # unreachable, refused, a URL the driver refuses
        raise database_error(settings, exc) from exc
    watching = asyncio.create_task(lock.watch(_lock_lost))
    app = create_app(settings, pm=make_plugin_manager())
    started = False

    def ready(url: str) -> None:
        nonlocal started
        started = True
        print(f"ready {url}", flush=True)

    try:
        await serve(app, host, port, on_ready=ready)
    except StartupError:
        raise
    except Exception as exc:
        if started:
            raise
        # The database and key were checked: what is left to fail is the channel's start.
        raise StartupError(
            f"the agent could not start: {type(exc).__name__}: {exc}; check the [channel] "
            f"options in {settings.data_dir / CONFIG_NAME} and that the platform is reachable"
        ) from exc
    finally:
        watching.cancel()
        await lock.release()
    return 0


def _lock_lost(reason: str) -> None:
    """The database no longer answers on the lock's session: a standby may hold the lock by
    now. Stop at once, as a kill -9 would (every unit of work is committed before it is
    acknowledged), rather than write beside it."""
    print(
        f"error: lost the lock on this shop's database ({reason}); stopping so that a standby "
        "can take over. Start the agent again once the database answers.",
        file=sys.stderr,
        flush=True,
    )
    os._exit(75)


async def cmd_check(args: argparse.Namespace) -> int:
    from agent.clock import SystemClock
    from agent.config import load_settings
    from agent.plugins import Registry, make_plugin_manager
    from agent.shopcheck import check_shop

    settings = load_settings(_data_dir(args))
    checks = await check_shop(settings, Registry(make_plugin_manager()), clock=SystemClock())
    if args.json:
        _print_json([{"check": c.name, "ok": c.ok, "detail": c.detail} for c in checks])
    else:
        _print_checks(checks)
    return 0 if all(check.ok for check in checks) else 1


def _print_checks(checks: list[Check], file: TextIO | None = None) -> None:
    """One line per check: `ok    name: detail` or `FAIL  name: detail`."""
    from agent.console import clean

    for check in checks:
        line = f"{'ok' if check.ok else 'FAIL':<4}  {check.name}: {check.detail}"
        print(clean(line), file=file or sys.stdout)


async def cmd_status(args: argparse.Namespace) -> int:
    from agent.console import print_status

    return _show(args, await _client(args).get("/api/status"), print_status)


async def cmd_log(args: argparse.Namespace) -> int:
    from agent.console import print_log
    from agent.synclog import KINDS

    if args.kind and args.kind not in KINDS:
        raise ConfigError(f"unknown kind {args.kind!r}; one of: {', '.join(KINDS)}")
    since, until = _moment(args.since, "--since"), _moment(args.until, "--until")
    fmt = "json" if args.json else args.format
    client = _client(args)
    params = {"sku": args.sku, "kind": args.kind, "peer": args.peer, "since": since, "until": until}
    # a time range means all of it, unless --limit says otherwise
    limit = args.limit if args.limit is not None else (None if since is not None else 50)
    entries = await _log_entries(client, params, limit)
    print_log(entries, fmt=fmt)
    if not args.follow:
        return 0
    last = max((e["id"] for e in entries), default=0)
    if not entries:
        newest = (await client.get("/api/log", limit=1))["entries"]
        last = newest[0]["id"] if newest else 0
    while True:
        await asyncio.sleep(0.5)
        fresh = (await client.get("/api/log", **params | {"after_id": last, "limit": 1000}))[
            "entries"
        ]
        if fresh:
            print_log(fresh, fmt=fmt, header=False)
            last = fresh[-1]["id"]


async def _log_entries(client: Any, params: dict[str, Any], limit: int | None) -> list[Any]:
    """The newest `limit` entries that match (all of them for None), oldest first."""
    if limit is not None:  # one page, which the agent keeps to 1-1000
        return list(reversed((await client.get("/api/log", **params, limit=limit))["entries"]))
    entries: list[Any] = []
    before: int | None = None
    while True:
        got = (await client.get("/api/log", **params, before_id=before, limit=1000))["entries"]
        entries += got
        if len(got) < 1000:
            return list(reversed(entries))
        before = got[-1]["id"]


def _moment(value: str | None, flag: str) -> float | None:
    """`--since`/`--until`: an age (`90s`, `15m`, `2h`, `7d`) or a date and time (ISO 8601;
    this machine's time zone unless it names one) → Unix time."""
    import datetime as dt
    import re
    import time

    if value is None:
        return None
    age = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value)
    if age:
        seconds = float(age[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[age[2]]
        return time.time() - seconds
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            f"{flag} takes an age like 15m, 2h or 7d, or a date and time like "
            f"2026-05-01T12:00, got {value!r}"
        ) from None
    return (when if when.tzinfo else when.astimezone()).timestamp()


async def cmd_explain(args: argparse.Namespace) -> int:
    from agent.console import print_account

    return _show(args, await _client(args).get("/api/explain", sku=args.sku), print_account)


async def cmd_notify(args: argparse.Namespace) -> int:
    from agent.console import clean

    client = _client(args)
    if args.action == "test":
        results = (await client.post("/api/notify/test"))["results"]
        if args.json:
            _print_json(results)
        else:  # the same lines as `shopsync check`: one per channel
            _print_checks([Check(r["channel"], r["ok"], r["detail"]) for r in results])
        return 0 if all(r["ok"] for r in results) else 1
    view = await client.get("/api/notify")
    if args.json:
        _print_json(view)
        return 0
    if not view["channels"]:
        print("no notifications: set [notify] in shopsync.toml (see the README)")
    if view["webhook"]:
        print(clean(f"webhook  {view['webhook']['url']}  ({', '.join(view['webhook']['kinds'])})"))
    if view["email"]:
        print(
            clean(
                f"e-mail   {', '.join(view['email']['to'])}  ({', '.join(view['email']['kinds'])})"
            )
        )
    print(f"waiting  {view['pending']}")
    return 0


def _client(args: argparse.Namespace):
    from agent.client import AdminClient
    from agent.config import load_settings

    return AdminClient(load_settings(_data_dir(args)))


async def cmd_join(args: argparse.Namespace) -> int:
    from agent.console import clean

    body = {"target": args.target, "while_out": args.while_out}
    result = await _client(args).post("/api/join", body)
    if args.json:
        _print_json(result)
    else:
        print(clean(f"join request sent to {result['domain']} ({result['agent_url']})"))
        print(clean(f"its key fingerprint:         {result['fingerprint']}"))
        print(clean(f"this shop's key fingerprint: {result['own_fingerprint']}"))
        print(
            "tell its owner this shop's fingerprint: they accept the request only if "
            "`shopsync requests` shows the same one"
        )
    return 0


async def cmd_requests(args: argparse.Namespace) -> int:
    from agent.console import print_requests

    return _show(args, (await _client(args).get("/api/requests"))["requests"], print_requests)


def _decision(args: argparse.Namespace, verdict: str) -> tuple[str, dict[str, str]]:
    path = f"/api/requests/{quote(args.domain, safe='')}/{verdict}"
    return path, {"fingerprint": args.fingerprint} if args.fingerprint else {}


async def cmd_accept(args: argparse.Namespace) -> int:
    from agent.console import clean

    result = await _client(args).post(*_decision(args, "accept"))
    if args.json:
        _print_json(result)
    else:
        introduced = ", ".join(result["introduced"]) or "no other members"
        print(clean(f"{result['accepted']} joined with key {result['fingerprint']}"))
        print(clean(f"introduced to {introduced}"))
    return 0


async def cmd_reject(args: argparse.Namespace) -> int:
    from agent.console import clean

    result = await _client(args).post(*_decision(args, "reject"))
    if args.json:
        _print_json(result)
    else:
        print(clean(f"rejected the request of {result['rejected']}"))
    return 0


async def cmd_peers(args: argparse.Namespace) -> int:
    from agent.console import print_peers

    client = _client(args)
    peers = (await client.get("/api/peers"))["peers"]
    if args.json:
        _print_json(peers)
    else:
        print_peers(peers)
        if (await client.get("/api/status"))["paused"]:
            print("sync is paused at this shop: no change goes out or comes in (shopsync resume)")
    return 0


async def cmd_simple(args: argparse.Namespace) -> int:
    """leave, pause, resume: one POST, one line."""
    from agent.console import clean

    result = await _client(args).post(f"/api/{args.command}")
    if args.json:
        _print_json(result)
    else:
        told = ", ".join(result.get("told", [])) or "nobody"
        print(
            {"leave": "left the group", "pause": "sync paused", "resume": "sync resumed"}[
                args.command
            ]
            + clean(f" (told {told})")
        )
    return 0


async def cmd_duplicates(args: argparse.Namespace) -> int:
    from agent.console import print_duplicates

    return _show(args, await _client(args).get("/api/duplicates"), print_duplicates)


async def cmd_import(args: argparse.Namespace) -> int:
    from agent.client import AdminError
    from agent.console import follow_import, print_preflight

    client = _client(args)
    try:
        answer = await client.post("/api/import", {"dry_run": args.dry_run})
    except AdminError as exc:
        if exc.error != "import_running" or args.dry_run or args.no_wait:
            raise
        if not args.json:
            print("an import is already running (a join's, or an earlier one): following it")
        final = await follow_import(client, quiet=args.json)
        if args.json:
            _print_json(final)
        return 0 if final.get("state") == "done" else 1
    if args.json and (args.dry_run or args.no_wait):
        _print_json(answer)
        return 0
    if not args.json:
        print_preflight(answer["report"], dry_run=args.dry_run)
    if args.dry_run or args.no_wait:
        return 0
    final = await follow_import(client, quiet=args.json)
    if args.json:
        _print_json(final)
    return 0 if final.get("state") == "done" else 1


async def cmd_maintenance(args: argparse.Namespace) -> int:
    result = await _client(args).post("/api/maintenance", {"on": args.state == "on"})
    if args.json:
        _print_json(result)
    elif result["on"]:
        closed = (
            "storefront closed"
            if result.get("storefront_closed")
            else ("the platform cannot close the storefront")
        )
        print(f"maintenance on: outgoing sync held, local changes recorded; {closed}")
    else:
        print("maintenance off: held changes are being sent")
    return 0


async def cmd_resync(args: argparse.Namespace) -> int:
    from agent.console import clean

    if not args.all and not args.skus:
        raise ConfigError("name SKUs to resync, or --all")
    body: dict[str, Any] = {"all": True} if args.all else {"skus": args.skus}
    result = await _client(args).post("/api/resync", body)
    if args.json:
        _print_json(result)
    else:
        print(f"re-reading and re-writing {len(result['queued'])} SKUs")
        if result["unknown"]:
            print(clean(f"not synced in this shop: {', '.join(result['unknown'])}"))
    return 0 if not result["unknown"] else 1


async def cmd_emulator(args: argparse.Namespace) -> int:
    from agent.emulator import EmulatorOptions, Faults
    from agent.plugins import Registry, make_plugin_manager
    from agent.runner import serve

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1..65535, got {args.port}")
    if args.skus < 0:
        raise ConfigError("--skus must not be negative")
    if args.locations < 1:
        raise ConfigError("--locations must be at least 1")
    if args.token_lifetime is not None and args.token_lifetime <= 0:
        raise ConfigError("--token-lifetime must be a positive number of seconds")
    if args.webhook_parallel < 1:
        raise ConfigError("--webhook-parallel must be 1 (one at a time, in order) or more")
    if args.webhook_delete_after is not None and args.webhook_delete_after < 0:
        raise ConfigError("--webhook-delete-after must be 0 (never) or more")
    for name in ("webhook_duplicate", "webhook_drop"):
        if not 0 <= getattr(args, name) <= 1:
            raise ConfigError(f"--{name.replace('_', '-')} is a probability between 0 and 1")
    options = EmulatorOptions(
        shop=args.shop,
        skus=args.skus,
        token=args.token,
        webhook_secret=args.webhook_secret,
        client_id=args.client_id,
        token_lifetime=args.token_lifetime,
        locations=args.locations,
        plan=args.plan,
        initial_available=args.available,
        rate_limit=not args.no_rate_limit,
        seed=args.seed,
        faults=Faults(
            webhook_delay=args.webhook_delay,
            webhook_duplicate=args.webhook_duplicate,
            webhook_drop=args.webhook_drop,
            webhook_reorder=args.webhook_reorder,
            webhook_delete_after=args.webhook_delete_after,
            webhook_parallel=args.webhook_parallel,
        ),
    )
    factory = Registry(make_plugin_manager()).emulator(args.channel)
    app = factory(options)

    def ready(url: str) -> None:
        print(f"ready {url}", flush=True)

    await serve(app, args.host, args.port, on_ready=ready)
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return await run_demo(args)


async def cmd_plugins(args: argparse.Namespace) -> int:
    from agent.plugins import Registry, make_plugin_manager

    pm = make_plugin_manager()
    registry = Registry(pm)
    rows = []
    for name, plugin in pm.list_name_plugin():
        dist = dict(pm.list_plugin_distinfo()).get(plugin)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        rows.append(
            {
                "name": name,
                "version": getattr(dist, "version", __version__),
                "hooks": hooks,
            }
        )
    if args.json:
        _print_json({"plugins": rows, "channels": sorted(registry.channels)})
    else:
        for row in rows:
            print(f"{row['name']:32} {row['version']:10} {', '.join(row['hooks'])}")
        print(f"channels: {', '.join(sorted(registry.channels))}")
    return 0


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shopsync", description="One stock, many shops.")
    parser.add_argument("--version", action="version", version=f"shopsync {__version__}")
    parser.add_argument("--log-level", default="info", help="operator log level (default info)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, func: Callable[..., Coroutine[Any, Any, int]], help: str) -> Any:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="the agent's directory (or SHOPSYNC_DATA_DIR)")

    p = command("init", cmd_init, "create an agent for one shop")
    data_dir(p)
    p.add_argument("--domain", required=True, help="this shop's domain, e.g. dk.example.com")
    p.add_argument("--listen", required=True, help="HOST:PORT the agent serves on")
    p.add_argument("--public-url", required=True, help="URL where peers and webhooks reach it")
    p.add_argument("--channel", required=True, help="the shop's platform: shopify, shopline…")
    p.add_argument("--channel-option", action="append", metavar="NAME=VALUE")
    p.add_argument("--database-url", help="postgresql://… (default: SQLite in the data dir)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="create the agent without checking the shop and public_url first",
    )

    p = command("run", cmd_run, "run the agent in the foreground")
    data_dir(p)

    p = command("check", cmd_check, "check the shop's credentials, scopes and location")
    data_dir(p)
    p.add_argument("--json", action="store_true")

    p = command("status", cmd_status, "show the running agent's state")
    data_dir(p)
    p.add_argument("--json", action="store_true")

    p = command("log", cmd_log, "show the sync log")
    data_dir(p)
    p.add_argument("--sku")
    p.add_argument("--kind", help="only this kind (an unknown kind lists the kinds)")
    p.add_argument("--peer")
    p.add_argument("--since", help="from this time on: an age (15m, 2h, 7d) or 2026-05-01T12:00")
    p.add_argument("--until", help="up to this time (same forms as --since)")
    p.add_argument(
        "--limit", type=int, help="the newest N entries (default 50; all of a --since range)"
    )
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new entries")
    p.add_argument(
        "--format", choices=["table", "json", "csv"], default="table", help="json: JSON lines"
    )
    p.add_argument("--json", action="store_true", help="JSON lines (same as --format json)")

    p = command("notify", cmd_notify, "where alert notifications go; `test` sends one now")
    data_dir(p)
    p.add_argument("action", nargs="?", choices=["show", "test"], default="show")
    p.add_argument("--json", action="store_true")

    p = command("explain", cmd_explain, "why a SKU's count is what it is, term by term")
    data_dir(p)
    p.add_argument("sku", metavar="SKU")
    p.add_argument("--json", action="store_true")

    p = command("join", cmd_join, "ask another shop's agent to let this shop join its group")
    data_dir(p)
    p.add_argument("target", help="the other shop's domain, or its agent URL")
    p.add_argument(
        "--while-out",
        choices=("count", "discard"),
        default="count",
        help="joining the group this shop left before: count the changes it made while out "
        "(sales, edits) into the group's counts (default), or discard them",
    )
    p.add_argument("--json", action="store_true")

    p = command("requests", cmd_requests, "list pending join requests")
    data_dir(p)
    p.add_argument("--json", action="store_true")

    for name, func, text in (
        ("accept", cmd_accept, "accept the join request of a shop"),
        ("reject", cmd_reject, "reject the join request of a shop"),
    ):
        p = command(name, func, text)
        data_dir(p)
        p.add_argument("domain", help="the requesting shop's domain")
        p.add_argument(
            "--fingerprint",
            metavar="SHA256:…",
            help="the requesting key (needed when several requests claim the domain; "
            "compare it with what `shopsync status` shows at that shop)",
        )
        p.add_argument("--json", action="store_true")

    p = command("peers", cmd_peers, "list the group's other shops and how sync stands")
    data_dir(p)
    p.add_argument("--json", action="store_true")

    for name, text in (
        ("leave", "leave the group (the others are told)"),
        ("pause", "stop syncing this shop without leaving"),
        ("resume", "start syncing again after a pause"),
    ):
        p = command(name, cmd_simple, text)
        data_dir(p)
        p.add_argument("--json", action="store_true")

    p = command("duplicates", cmd_duplicates, "list items that cannot sync, and missing SKUs")
    data_dir(p)
    p.add_argument("--json", action="store_true")

    p = command("import", cmd_import, "write the group's counts into this shop, with progress")
    data_dir(p)
    p.add_argument("--dry-run", action="store_true", help="only show what would change")
    p.add_argument("--no-wait", action="store_true", help="start it and return")
    p.add_argument("--json", action="store_true")

    p = command("maintenance", cmd_maintenance, "maintenance mode on or off")
    data_dir(p)
    p.add_argument("state", choices=["on", "off"])
    p.add_argument("--json", action="store_true")

    p = command("resync", cmd_resync, "re-read and re-write SKUs an admin doubts")
    data_dir(p)
    p.add_argument("skus", nargs="*", metavar="SKU")
    p.add_argument("--all", action="store_true")
    p.add_argument("--json", action="store_true")

    rules_cli.add_parser(command, data_dir)

    p = command("emulator", cmd_emulator, "serve an emulated shop of a platform")
    p.add_argument("channel", help="shopify, shopline or pisell")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--shop", required=True, help="the shop's domain")
    p.add_argument("--skus", type=int, default=10, help="products to create (default 10)")
    p.add_argument("--available", type=int, default=100, help="initial count of each")
    p.add_argument("--token", default="emulator-token")
    p.add_argument("--webhook-secret", default="emulator-secret", help="also the app's secret")
    p.add_argument("--client-id", default="emulator-client-id", help="the app's id for grants")
    p.add_argument("--locations", type=int, default=1, help="the shop's locations (1: the primary)")
    p.add_argument(
        "--token-lifetime",
        type=float,
        metavar="SECONDS",
        help="lifetime of granted tokens (default: the platform's, 24 h Shopify, 10 h SHOPLINE)",
    )
    p.add_argument(
        "--plan", default="standard", choices=["standard", "advanced", "plus", "enterprise"]
    )
    p.add_argument("--webhook-delay", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--webhook-duplicate", type=float, default=0.0, metavar="P")
    p.add_argument("--webhook-drop", type=float, default=0.0, metavar="P")
    p.add_argument("--webhook-reorder", action="store_true")
    p.add_argument(
        "--webhook-parallel",
        type=int,
        default=8,
        metavar="N",
        help="deliveries in flight at once, as the platforms send them (default 8; 1: one at "
        "a time, in order)",
    )
    p.add_argument(
        "--webhook-delete-after",
        type=int,
        metavar="N",
        help="delete a subscription after N deliveries failed every retry (default: the "
        "platform's, 1 for Shopify and SHOPLINE; 0: never)",
    )
    p.add_argument("--no-rate-limit", action="store_true")
    p.add_argument("--seed", type=int)

    p = command("demo", cmd_demo, "run emulated shops and agents through a scenario")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of trading")
    p.add_argument("--skus", type=int, default=50)
    p.add_argument(
        "--channels",
        default="shopify,shopline,pisell",
        help="comma-separated platforms, one shop each (one name: three shops on it)",
    )
    p.add_argument("--keep-running", action="store_true", help="leave everything up")
    p.add_argument("--json", action="store_true", help="print only the final JSON line")
    p.add_argument("--workdir", help="where to put the agents' data (default: a temp dir)")

    p = command("plugins", cmd_plugins, "list installed plugins and their hooks")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `shopsync` console script.

    Every failure is one line on stderr and a non-zero exit, never a traceback: 2 for bad
    input (arguments, settings, files), 1 for everything else. An unexpected error names
    itself and is logged with its traceback at debug level (`--log-level debug`).
    """
    import structlog

    from agent.logsetup import configure_logging
    from agent.rules import RuleError

    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        return run_loop(args.func(args))
    except (ConfigError, RuleError) as exc:
        _fail(f"shopsync: error: {exc}")
        return EXIT_USAGE
    # the admin client, the checks and the server are imported by the commands that use them,
    # not here (an `except` clause is evaluated only when an exception reaches it)
    except _loaded(("agent.shopcheck", "ChecksFailed")) as exc:
        _fail(f"shopsync: error: {exc}")
        return 1
    except _loaded(("agent.client", "AdminError"), ("agent.runner", "StartupError")) as exc:
        startup = _loaded(("agent.runner", "StartupError"))
        _fail(f"shopsync: {'error: ' if isinstance(exc, startup) else ''}{exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"shopsync: error: {exc.strerror or exc}{where}")
        return 1
    except Exception as exc:
        structlog.get_logger(__name__).debug("command_failed", exc_info=exc)
        _fail(f"shopsync: error: {type(exc).__name__}: {exc}")
        return 1


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop's event loop where it is installed (Linux, macOS), else asyncio's.

    uvloop is the same asyncio API with the loop and its sockets in C: it took 11 to 15 % off the
    agents' CPU per sale (the latency bench's three Plus shops driven at 50 sales/s for 10 s,
    runs alternated: 14.4 → 12.8 ms for three agents in one pair; README "Benchmarks").
    `SHOPSYNC_EVENT_LOOP=asyncio` keeps the standard loop (to compare, or to debug).
    """
    if os.environ.get("SHOPSYNC_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:  # not built for this platform (Windows): the standard loop
            pass
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)


def _loaded(*names: tuple[str, str]) -> tuple[type[Exception], ...]:
    """The exception classes `module.name` of the modules imported so far: a command that never
    loaded a module cannot have raised its error (an empty tuple matches nothing)."""
    return tuple(
        getattr(sys.modules[module], name) for module, name in names if module in sys.modules
    )


def _fail(message: str) -> None:
    """One line on stderr, whatever the message holds (an agent's or a peer's words)."""
    from agent.console import clean

    print(clean(" ".join(message.split())), file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
