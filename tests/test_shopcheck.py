"""`shopsync check`: one line per check against the platform, with what to fix."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent import cli
from agent.channel import Check
from agent.clock import SystemClock
from agent.config import Settings
from agent.emulator import EmulatorOptions
from agent.plugins import Registry, make_plugin_manager
from agent.shopcheck import check_shop
from plugins.shopify.emulator import ShopifyEmulator
from plugins.shopline.emulator import ShoplineEmulator

CLIENT = {"client_id": "emulator-client-id", "client_secret": "emulator-secret"}


def settings(tmp_path: Path, channel: str, public_url: str = "", **options: str) -> Settings:
    listen = f"127.0.0.1:{free_port()}"  # public_url reaches it, unless the test says otherwise
    return Settings(
        data_dir=tmp_path / "agent", domain="dk.example.com", listen=listen,
        public_url=public_url or f"http://{listen}", admin_token="t" * 43, channel=channel,
        channel_options=dict(options),
    )  # fmt: skip


async def check(tmp_path: Path, channel: str, **options: str) -> dict[str, Check]:
    registry = Registry(make_plugin_manager())
    checks = await check_shop(settings(tmp_path, channel, **options), registry, clock=SystemClock())
    return {c.name: c for c in checks}


async def serve(aiohttp_server: Any, emulator: Any) -> str:
    return str((await aiohttp_server(emulator.build_app())).make_url("")).rstrip("/")


async def test_a_dev_dashboard_app_passes_every_check(aiohttp_server: Any, tmp_path: Path) -> None:
    url = await serve(aiohttp_server, ShopifyEmulator(EmulatorOptions(locations=2)))
    checks = await check(tmp_path, "shopify", api_url=url, bulk="false", **CLIENT)
    assert list(checks) == [
        "settings", "token", "shop", "catalogue", "scopes", "location", "webhooks"
    ]  # fmt: skip
    assert all(c.ok for c in checks.values()), checks
    assert "read_locations" in checks["scopes"].detail
    assert "the primary location" in checks["location"].detail
    assert "(the agent is not running)" in checks["webhooks"].detail


async def test_each_problem_is_one_failed_check_naming_the_fix(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    url = await serve(aiohttp_server, ShopifyEmulator(EmulatorOptions()))
    wrong = await check(tmp_path, "shopify", api_url=url, client_id="emulator-client-id",
                        client_secret="wrong")  # fmt: skip
    assert not wrong["token"].ok
    assert "client_secret" in wrong["token"].detail
    assert "invalid_client" in wrong["token"].detail or "Client authentication" in (
        wrong["token"].detail
    )
    assert "wrong" not in wrong["token"].detail
    stranger = await check(tmp_path, "shopify", api_url=url, client_id="another-app",
                           client_secret="emulator-secret")  # fmt: skip
    assert not stranger["token"].ok
    assert "Oauth error app_not_installed: The application is not installed on this shop." in (
        stranger["token"].detail
    )
    assert "<" not in stranger["token"].detail  # the page's text, not its markup
    static = await check(tmp_path, "shopify", api_url=url, access_token="shpat_no",
                         webhook_secret="s")  # fmt: skip
    assert static["token"].ok and not static["shop"].ok
    assert "check access_token" in static["shop"].detail
    elsewhere = await check(tmp_path, "shopify", api_url=url, location_id="9", bulk="false",
                            **CLIENT)  # fmt: skip
    assert not elsewhere["location"].ok
    assert "fix location_id" in elsewhere["location"].detail
    missing = await check(tmp_path, "shopify", api_url=url)
    assert list(missing) == ["settings"]
    assert "access_token" in missing["settings"].detail


async def test_a_missing_scope_is_one_failed_line_naming_it(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    for token in ({"access_token": "emulator-token", "webhook_secret": "s"}, CLIENT):
        emulator = ShopifyEmulator(EmulatorOptions(scopes="read_inventory,read_products,"
                                                   "read_orders,read_locations"))  # fmt: skip
        url = await serve(aiohttp_server, emulator)
        checks = await check(tmp_path, "shopify", api_url=url, bulk="false", **token)
        failed = [c for c in checks.values() if not c.ok]
        assert [c.name for c in failed] == ["scopes"], checks
        assert failed[0].detail.startswith("missing write_inventory: add them to the app's")
    # without read_products the catalogue cannot be listed: both lines say why
    emulator = ShopifyEmulator(EmulatorOptions(scopes="write_inventory,read_locations"))
    url = await serve(aiohttp_server, emulator)
    checks = await check(tmp_path, "shopify", api_url=url, bulk="false", **CLIENT)
    assert "read_products" in checks["catalogue"].detail
    assert checks["scopes"].detail.startswith("missing read_products, read_orders")


async def test_a_shopline_app_missing_a_scope_is_told_which(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    emulator = ShoplineEmulator(EmulatorOptions(scopes="read_products,read_inventory,read_orders"))
    url = await serve(aiohttp_server, emulator)
    app = {"app_key": "emulator-client-id", "app_secret": "emulator-secret"}
    checks = await check(tmp_path, "shopline", api_url=url, **app)
    assert not checks["scopes"].ok
    assert checks["scopes"].detail.startswith("missing write_inventory")
    static = await check(tmp_path, "shopline", api_url=url, access_token="emulator-token",
                         webhook_secret="s")  # fmt: skip
    assert static["scopes"].ok and static["scopes"].detail.startswith("not checked:")
    refused = await check(tmp_path, "shopline", api_url=url, app_key="emulator-client-id",
                          app_secret="not-the-secret")  # fmt: skip
    assert not refused["token"].ok
    assert "HTTP 401, sign verification failed" in refused["token"].detail
    assert "not-the-secret" not in refused["token"].detail


async def test_an_unreachable_public_url_is_one_failed_line(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    url = await serve(aiohttp_server, ShopifyEmulator(EmulatorOptions()))
    nowhere = f"http://127.0.0.1:{free_port()}"  # not where the agent listens
    checks = await check(tmp_path, "shopify", public_url=nowhere, api_url=url, bulk="false",
                         **CLIENT)  # fmt: skip
    failed = [c for c in checks.values() if not c.ok]
    assert [c.name for c in failed] == ["webhooks"]
    assert failed[0].detail.startswith(f"{nowhere}/webhooks/shopify is unreachable")
    assert "platforms could not deliver webhooks" in failed[0].detail
    # another server on public_url (not this agent) is no better than none
    other = await aiohttp_server(web.Application())
    elsewhere = str(other.make_url("")).rstrip("/")
    checks = await check(tmp_path, "shopify", public_url=elsewhere, api_url=url, bulk="false",
                         **CLIENT)  # fmt: skip
    assert not checks["webhooks"].ok and "HTTP 404" in checks["webhooks"].detail


async def test_a_shopline_app_passes_the_common_checks(aiohttp_server: Any, tmp_path: Path) -> None:
    url = await serve(aiohttp_server, ShoplineEmulator(EmulatorOptions()))
    checks = await check(tmp_path, "shopline", api_url=url, app_key="emulator-client-id",
                         app_secret="emulator-secret")  # fmt: skip
    assert [(c.name, c.ok) for c in checks.values()] == [
        ("settings", True), ("token", True), ("shop", True), ("catalogue", True),
        ("scopes", True), ("webhooks", True),
    ]  # fmt: skip
    assert checks["scopes"].detail.startswith("granted: read_products")


async def test_the_command_prints_one_line_per_check_and_fails_on_any(
    aiohttp_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = await serve(aiohttp_server, ShopifyEmulator(EmulatorOptions()))
    data = tmp_path / "agent"
    await init(data, f"api_url={url}", "client_id=emulator-client-id",
               "client_secret=emulator-secret", "bulk=false")  # fmt: skip
    capsys.readouterr()
    assert await cli.cmd_check(argparse.Namespace(data_dir=str(data), json=False)) == 0
    out = capsys.readouterr().out  # structlog prints to stdout here (the CLI sends it aside)
    lines = [line for line in out.splitlines() if line.startswith(("ok ", "FAIL"))]
    assert len(lines) == 7
    assert all(line.startswith("ok    ") for line in lines), lines
    assert "emulator-secret" not in out
    assert await cli.cmd_check(argparse.Namespace(data_dir=str(data), json=True)) == 0
    out = capsys.readouterr().out.splitlines()[-1]
    assert [c["check"] for c in json.loads(out)][:2] == ["settings", "token"]
    refused = tmp_path / "refused"
    await init(refused, f"api_url={url}", "client_id=emulator-client-id", "client_secret=no",
               check=False)  # fmt: skip
    assert await cli.cmd_check(argparse.Namespace(data_dir=str(refused), json=False)) == 1
    assert "FAIL  token: Shopify refused the client credentials" in capsys.readouterr().out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def init(data: Path, *options: str, check: bool = True) -> None:
    listen = f"127.0.0.1:{free_port()}"
    args = argparse.Namespace(
        data_dir=str(data), domain="dk.example.com", listen=listen,
        public_url=f"http://{listen}", channel="shopify", database_url="", json=True,
        channel_option=list(options), no_check=not check,
    )  # fmt: skip
    assert await cli.cmd_init(args) == 0


async def test_run_with_a_refused_token_is_one_line_naming_the_fix(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    url = await serve(aiohttp_server, ShopifyEmulator(EmulatorOptions()))
    data = tmp_path / "agent"
    await init(data, f"api_url={url}", "access_token=shpat_wrong", "webhook_secret=s",
               check=False)  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "run", "--data-dir", str(data),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    errors = [line for line in err.decode().splitlines() if line.startswith("shopsync:")]
    assert proc.returncode == 1, err
    assert len(errors) == 1, err
    assert "check access_token" in errors[0]
    assert "Traceback" not in err.decode() + out.decode()
    assert "shpat_wrong" not in err.decode()


async def shopsync(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def init_args(data: Path, url: str, *options: str) -> list[str]:
    listen = f"127.0.0.1:{free_port()}"
    args = ["init", "--data-dir", str(data), "--domain", "dk.example.com", "--listen", listen,
            "--public-url", f"http://{listen}", "--channel", "shopify",
            "--channel-option", f"api_url={url}"]  # fmt: skip
    for option in options:
        args += ["--channel-option", option]
    return args


async def test_init_checks_the_shop_before_it_writes_the_agent(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    url = await serve(aiohttp_server, ShopifyEmulator(EmulatorOptions()))
    good = ("client_id=emulator-client-id", "client_secret=emulator-secret", "bulk=false")
    code, out, err = await shopsync(*init_args(tmp_path / "a", url, *good))
    assert code == 0, err
    checks = [line for line in out.splitlines() if line.startswith(("ok ", "FAIL"))]
    assert [line.split()[1] for line in checks] == [
        "settings:", "token:", "shop:", "catalogue:", "scopes:", "location:", "webhooks:"
    ]  # fmt: skip
    assert all(line.startswith("ok ") for line in checks)
    assert "agent for dk.example.com created" in out
    # --json keeps stdout one JSON object; the checks go to stderr
    code, out, err = await shopsync(*init_args(tmp_path / "b", url, *good), "--json")
    assert code == 0, err
    assert set(json.loads(out)) == {"domain", "admin_token", "fingerprint", "config"}
    assert "ok    token:" in err

    wrong = ("client_id=emulator-client-id", "client_secret=not-the-secret")
    code, out, err = await shopsync(*init_args(tmp_path / "c", url, *wrong))
    assert code == 1
    assert "FAIL  token: Shopify refused the client credentials" in out
    assert "nothing was written: 1 check(s) failed (token, above)" in err
    assert "--no-check" in err and "Traceback" not in err
    assert "not-the-secret" not in out + err
    assert not (tmp_path / "c" / "shopsync.toml").exists()
    code, out, err = await shopsync(*init_args(tmp_path / "c", url, *wrong), "--no-check")
    assert code == 0, err
    assert (tmp_path / "c" / "shopsync.toml").exists()
    assert "FAIL" not in out
