"""HTTP and local hygiene (issue 13 items 5 and 6): hostile bytes, big and slow bodies, log-in
guessing, sessions across restarts, /metrics, file modes, start-up errors, terminal output.

The end-to-end tests share one real agent and emulator (`Cluster`) and go through HTTP and
the CLI like a user; what needs no process (settings, the runner's timeouts, the error
middleware, the console) is tested in-process.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from rich.console import Console
from structlog.testing import capture_logs

from agent import console as cli_console
from agent import runner
from agent.channel import ConfigError
from agent.config import load_settings
from agent.demo import free_port
from agent.web import app as web_app
from agent.web.auth import LoginThrottle
from agent.web.bodies import BodyError
from tests.support.cluster import Cluster, ShopHandle

shared = pytest.mark.asyncio(loop_scope="module")  # the tests on the module's one agent

ESC = "\x1b"  # every terminal escape sequence starts with it


def shopsync(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}  # wide enough that no cell wraps
    if data_dir is not None:
        env["SHOPSYNC_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


async def raw_http(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as it is (bytes that no HTTP client would send), on a connection of its
    own that the server closes after answering; status, headers, body."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        first, _, rest = request.partition(b"\r\n")
        writer.write(first + b"\r\nConnection: close\r\n" + rest)
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ShopHandle]:
    async with Cluster(tmp_path_factory.mktemp("hygiene"), 1, skus=3) as cluster:
        yield cluster.shops[0]


# -- hostile bytes in headers and cookies -------------------------------------------------------


@shared
async def test_non_utf8_credentials_are_no_credentials_never_a_500(agent: ShopHandle) -> None:
    def get(path: str, header: bytes) -> bytes:
        return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n"

    status, _, body = await raw_http(
        agent.agent_url, get("/api/status", b"Authorization: \xff\xfe")
    )
    assert status == 401 and json.loads(body)["error"] == "unauthorized"
    status, _, body = await raw_http(
        agent.agent_url, get("/api/status", b"Authorization: Bearer \xc3\x28\xff")
    )
    assert status == 401 and json.loads(body)["error"] == "unauthorized"
    status, _, _ = await raw_http(agent.agent_url, get("/metrics", b"Authorization: Bearer \xff"))
    assert status == 401
    for cookie in (b"shopsync_session=\xff\xfe", b"shopsync_session=123.\xff\xfe.abc"):
        status, headers, _ = await raw_http(agent.agent_url, get("/", b"Cookie: " + cookie))
        assert (status, headers["location"]) == (303, "/login"), cookie
        post = (
            b"POST /pause HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nCookie: "
            + cookie
            + b"\r\n\r\n"
        )
        status, _, _ = await raw_http(agent.agent_url, post)
        assert status == 403, cookie
    for cookie in (b"shopsync_login=\xff\xfe", b"shopsync_flash=error:\xff\xfe"):
        status, _, body = await raw_http(agent.agent_url, get("/login", b"Cookie: " + cookie))
        assert status == 200 and b"Admin token" in body, cookie
    assert (await agent.get("/api/status"))["paused"] is False


# -- bodies -------------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


@shared
async def test_big_bodies_are_refused_before_they_are_read(agent: ShopHandle) -> None:
    big = b"x" * (15 * 1024**2)

    def body() -> io.BytesIO:  # shares `big`; aiohttp warns about a large bytes body
        return io.BytesIO(big)

    token = {"Authorization": f"Bearer {agent.shop.token}"}
    cases = [
        ("/webhooks/shopify", {}, 413, "body_too_large"),  # open to anyone: a 2 MiB cap
        ("/api/join", {}, 401, "unauthorized"),  # the token is checked before the body
        ("/api/join", token, 413, "body_too_large"),  # 1 MiB with the token
    ]
    for path, headers, status, error in cases:
        async with agent.http.post(agent.agent_url + path, data=body(), headers=headers) as resp:
            assert resp.status == status, path
            assert (await resp.json())["error"] == error, path
    async with agent.http.post(agent.agent_url + "/login", data=body()) as resp:
        assert resp.status == 413 and "larger than" in await resp.text()

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: refused once past 2 MiB
        for _ in range(240):
            yield b"y" * 65536

    async with agent.http.post(agent.agent_url + "/webhooks/shopify", data=chunked()) as resp:
        assert resp.status == 413

    # The attack of the issue: 40 unsigned 15 MB bodies at once cost the agent next to nothing.
    pid = agent.shop.agent.proc.pid  # type: ignore[union-attr]
    before = _rss_kib(pid)

    async def send() -> int:
        async with agent.http.post(agent.agent_url + "/webhooks/shopify", data=body()) as resp:
            return resp.status

    assert set(await asyncio.gather(*(send() for _ in range(40)))) == {413}
    assert _rss_kib(pid) - before < 64 * 1024, (before, _rss_kib(pid))


# -- the admin API ------------------------------------------------------------------------------


@shared
async def test_log_limit_must_be_1_to_1000(agent: ShopHandle) -> None:
    for limit in ("0", "-1", "1001", "100000000"):
        status, body = await agent.api("GET", f"/api/log?limit={limit}")
        assert status == 400, limit
        assert body == {"error": "bad_parameter", "message": "limit must be 1-1000"}
    for limit in ("1", "1000", ""):
        status, _ = await agent.api("GET", f"/api/log?limit={limit}")
        assert status == 200, limit
    out = shopsync("log", "--limit", "5000", data_dir=agent.data_dir)
    assert out.returncode == 1 and "limit must be 1-1000" in out.stderr
    assert "Traceback" not in out.stderr


@shared
async def test_activity_hours_must_be_1_to_24(agent: ShopHandle) -> None:
    for hours in ("0", "25", "-3", "three", "1.5", "99999999999999999999"):
        status, body = await agent.api("GET", f"/api/activity?hours={hours}")
        assert status == 400, hours
        assert body["error"] == "bad_parameter" and body["message"], (hours, body)
    for hours, want in (("1", 1), ("24", 24), ("", 3)):
        status, body = await agent.api("GET", f"/api/activity?hours={hours}")
        assert status == 200 and body["hours"] == want, hours
        assert body["since"] == (body["now"] // 60 - want * 60 + 1) * 60


@shared
async def test_accept_and_reject_send_the_domain_whole(agent: ShopHandle) -> None:
    for command, domain in (("accept", "a/b.example.com?x=1"), ("reject", "../status")):
        out = shopsync(command, domain, data_dir=agent.data_dir)
        assert out.returncode == 1, (command, domain, out.stdout)
        # the agent's own answer about that very domain, not a 404 of a mangled path
        assert f"no pending join request from {domain}" in out.stderr, out.stderr


@shared
async def test_metrics_need_a_bearer_token_and_healthz_stays_open(agent: ShopHandle) -> None:
    async with agent.http.get(agent.agent_url + "/metrics") as resp:
        assert resp.status == 401 and (await resp.json())["error"] == "unauthorized"
    headers = {"Authorization": f"Bearer {agent.shop.token}"}  # no metrics_token: admin token
    async with agent.http.get(agent.agent_url + "/metrics", headers=headers) as resp:
        assert resp.status == 200 and "shopsync_webhooks_total" in await resp.text()
    async with agent.http.get(agent.agent_url + "/healthz") as resp:
        assert resp.status == 200 and await resp.json() == {"ok": True}


# -- log-in ---------------------------------------------------------------------------------------


async def _log_in(
    agent: ShopHandle, token: str, address: str = ""
) -> tuple[int, aiohttp.ClientResponse, str]:
    """One pass through the log-in form from `address` (via X-Forwarded-For); the session."""
    async with agent.http.get(agent.agent_url + "/login") as resp:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await resp.text()).group(1)  # type: ignore[union-attr]
        login_cookie = resp.cookies["shopsync_login"].value
    headers = {"Cookie": f"shopsync_login={login_cookie}"}
    if address:
        headers["X-Forwarded-For"] = f"10.9.9.9, {address}"  # the last one is the proxy's
    async with agent.http.post(
        agent.agent_url + "/login",
        data={"csrf": csrf, "token": token, "next": "/"},
        headers=headers,
        allow_redirects=False,
    ) as resp:
        session = resp.cookies.get("shopsync_session")
        await resp.read()
        return resp.status, resp, session.value if session else ""


@shared
async def test_log_in_guesses_are_throttled_per_address(agent: ShopHandle) -> None:
    guesser, admin = "198.51.100.7", "203.0.113.9"
    for _ in range(10):
        status, _, _ = await _log_in(agent, "not-the-admin-token", guesser)
        assert status == 401
    status, resp, session = await _log_in(agent, agent.shop.token, guesser)
    assert status == 429 and not session  # blocked, even with the right token
    assert 0 < int(resp.headers["Retry-After"]) <= 300
    status, _, session = await _log_in(agent, agent.shop.token, admin)
    assert status == 303 and session  # another address is not affected


def test_the_throttle_forgives_after_the_window_and_on_success() -> None:
    class Clock:
        t = 1000.0

        def now(self) -> float:
            return self.t

    clock = Clock()
    throttle = LoginThrottle(clock, limit=3, window=60.0, max_addresses=2)  # type: ignore[arg-type]
    for _ in range(3):
        throttle.failed("a")
    assert throttle.retry_after("a") == 60.0 and throttle.retry_after("b") == 0.0
    clock.t += 59.0
    assert throttle.retry_after("a") == 1.0
    clock.t += 1.0
    assert throttle.retry_after("a") == 0.0  # the window passed
    for _ in range(3):
        throttle.failed("a")
    throttle.succeeded("a")
    assert throttle.retry_after("a") == 0.0
    for address in ("x", "y", "z"):
        throttle.failed(address)
    assert len(throttle._failures) == 2  # bounded: the oldest address went first


# -- terminal output ------------------------------------------------------------------------------


@shared
async def test_cli_prints_platform_text_literally_without_escape_sequences(
    agent: ShopHandle,
) -> None:
    hostile = [
        ("[/]\x1b[31mEVIL", "title \x1b[2J"),
        ("[bold]DUP\x1b]0;owned\x07", "one [/] \x1b[5m"),
        ("[bold]DUP\x1b]0;owned\x07", "two"),
    ]
    for sku, title in hostile:
        status, _ = await agent.emu(
            "POST", "/_emulator/products", {"sku": sku, "available": 3, "title": title}
        )
        assert status == 201
    await agent.post("/api/reconcile")

    async def seen() -> bool:
        log = await agent.get("/api/log?limit=100")
        return {e["sku"] for e in log["entries"]} >= {sku for sku, _ in hostile}

    deadline = time.monotonic() + 30
    while not await seen():
        assert time.monotonic() < deadline, "the agent never logged the new SKUs"
        await asyncio.sleep(0.2)
    log = shopsync("log", "--limit", "100", data_dir=agent.data_dir)
    duplicates = shopsync("duplicates", data_dir=agent.data_dir)
    for out in (log, duplicates):
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert ESC not in out.stdout and "\x07" not in out.stdout
    assert "[/][31mEVIL" in log.stdout  # shown as it is, only the control character gone
    assert "duplicate SKU [bold]DUP]0;owned on 2 items" in duplicates.stdout
    assert "one [/] [5m" in duplicates.stdout


def test_join_requests_and_peers_print_markup_and_escapes_literally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(cli_console, "console", Console(file=out, width=200, color_system=None))
    cli_console.print_requests(
        [
            {
                "domain": "[/]crash.example.com",
                "agent_url": "https://x.example.com/\x1b[2J",
                "fingerprint": "SHA256:[bold]abc\u202e",
                "received_at": time.time(),
            }
        ]
    )
    cli_console.print_peers(
        [
            {
                "domain": "[red]p.example.com",
                "agent_url": "https://p.example.com",
                "state": "unreachable",
                "last_contact": None,
                "events_behind": 0,
                "last_error": "refused \x1b]8;;https://evil\x07link",
            }
        ]
    )
    text = out.getvalue()
    assert "[/]crash.example.com" in text and "SHA256:[bold]abc" in text
    assert "[red]p.example.com" in text and "refused ]8;;https://evillink" in text
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text


# -- start-up errors and files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory made by `shopsync init`; the tests that change it take a copy."""
    data = tmp_path_factory.mktemp("made") / "agent"
    out = shopsync(
        "init", "--data-dir", str(data), "--domain", "dk.example.com",
        "--listen", f"127.0.0.1:{free_port()}", "--public-url", "https://sync.example.com",
        "--channel", "shopify", "--channel-option", "api_url=http://127.0.0.1:1",
        "--channel-option", "access_token=shpat_x", "--channel-option", "webhook_secret=s",
        "--no-check",  # no shop at api_url: these tests are about the files
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return data


def test_init_makes_a_private_data_directory(made: Path) -> None:
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    for name in ("shopsync.toml", "agent.key", "shopsync.db"):
        assert stat.S_IMODE((made / name).stat().st_mode) == 0o600, name
    token = load_settings(made).admin_token
    assert len(token) == 43


def _set(data: Path, name: str, value: str) -> None:
    config = data / "shopsync.toml"
    text = re.sub(rf"(?m)^{name} = .*$", f"{name} = {json.dumps(value)}", config.read_text())
    config.write_text(text)


CASES: dict[str, tuple[Any, int, list[str]]] = {
    "config others may read": (
        lambda d: (d / "shopsync.toml").chmod(0o644),
        2,
        ["shopsync.toml has mode 0644", "chmod 600"],
    ),
    "key others may read": (
        lambda d: (d / "agent.key").chmod(0o640),
        2,
        ["agent.key has mode 0640", "chmod 600"],
    ),
    "corrupt key": (
        lambda d: (d / "agent.key").write_text("garbage\n"),
        2,
        ["agent.key is not an unencrypted PEM private key", "restore it from a backup"],
    ),
    "database that is not SQLite": (
        lambda d: (d / "shopsync.db").write_bytes(b"not a database\n" * 100),
        1,
        ["shopsync.db: file is not a database", "restore it from a backup"],
    ),
    "unreachable PostgreSQL": (
        lambda d: _set(d, "database_url", "postgresql://u:hunter2@127.0.0.1:1/db"),
        1,
        ["cannot open the database postgresql+asyncpg://u:***@127.0.0.1:1/db", "server is up"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_start_up_errors_are_one_line_naming_the_fix(made: Path, tmp_path: Path, case: str) -> None:
    data = tmp_path / "agent"
    shutil.copytree(made, data)
    spoil, code, expected = CASES[case]
    spoil(data)
    out = shopsync("run", "--data-dir", str(data))
    assert out.returncode == code, (out.returncode, out.stderr)
    errors = [line for line in out.stderr.splitlines() if line.startswith("shopsync:")]
    assert len(errors) == 1, out.stderr
    for part in expected:
        assert part in errors[0], errors[0]
    assert "Traceback" not in out.stderr + out.stdout and "hunter2" not in out.stderr
    assert "ready" not in out.stdout


@pytest.mark.parametrize(("value", "message"), [("", "is empty"), ("t" * 15, "has only 15")])
def test_an_empty_or_short_admin_token_is_refused(
    made: Path, tmp_path: Path, value: str, message: str
) -> None:
    data = tmp_path / "agent"
    shutil.copytree(made, data)
    _set(data, "admin_token", value)
    with pytest.raises(ConfigError, match=f"admin_token {message}.*at least 16") as refused:
        load_settings(data)
    assert "\n" not in str(refused.value)
    _set(data, "admin_token", "t" * 16)
    assert load_settings(data).admin_token == "t" * 16


def test_metrics_token_may_be_empty_but_never_short(made: Path, tmp_path: Path) -> None:
    data = tmp_path / "agent"
    shutil.copytree(made, data)
    assert load_settings(data).metrics_token == ""  # /metrics then takes the admin token
    _set(data, "metrics_token", "m" * 16)
    assert load_settings(data).metrics_token == "m" * 16
    _set(data, "metrics_token", "short")
    with pytest.raises(ConfigError, match="metrics_token has only 5 characters"):
        load_settings(data)
    (data / "shopsync.toml").chmod(0o600 | stat.S_IWGRP)  # writable by group is refused too
    with pytest.raises(ConfigError, match="chmod 600"):
        load_settings(data)


# -- the server: timeouts, failures ------------------------------------------------------------


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closes the connection within 3 s, with nothing more sent: an
    orderly close (end of stream) or a reset (the server closed with our bytes unread)."""
    try:
        return await asyncio.wait_for(reader.read(), 3) == b""
    except ConnectionResetError:
        return True


async def test_idle_and_slow_connections_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "KEEPALIVE_TIMEOUT", 0.5)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    port = free_port()
    ready = asyncio.Event()
    serving = asyncio.create_task(
        runner.serve(app, "127.0.0.1", port, on_ready=lambda url: ready.set())
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # answered, then idle
        assert b"hi" in await reader.read(1000)
        assert await _closed_by_server(reader)
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n")  # headers that never end, a line at a time
        await asyncio.sleep(0.2)
        writer.write(b"X-Slow: 1\r\n")
        assert await _closed_by_server(reader)
        writer.close()
    finally:
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving


async def test_an_address_in_use_is_a_start_up_error() -> None:
    port = free_port()
    holder = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
    try:
        with pytest.raises(runner.StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            await runner.serve(web.Application(), "127.0.0.1", port)
    finally:
        holder.close()


async def test_an_unexpected_failure_is_a_json_500_with_a_reference(aiohttp_client: Any) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise KeyError("secret-ish detail")

    async def too_big(request: web.Request) -> web.Response:
        raise BodyError(413, "body_too_large", "the body is larger than 10 bytes")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/elsewhere")

    app = web.Application(middlewares=[web_app._errors])
    app.router.add_get("/broken", broken)
    app.router.add_get("/big", too_big)
    app.router.add_get("/moved", moved)
    client = await aiohttp_client(app)
    with capture_logs() as logs:
        resp = await client.get("/broken", headers={"Authorization": "Bearer s3cr3t-token"})
        body = await resp.json()
    assert resp.status == 500 and body["error"] == "internal"
    assert "Traceback" not in body["message"] and "secret-ish" not in body["message"]
    [entry] = [e for e in logs if e["event"] == "request_failed"]
    assert entry["reference"] in body["message"] and entry["path"] == "/broken"
    assert "s3cr3t-token" not in repr(entry)
    resp = await client.get("/big")
    assert resp.status == 413 and (await resp.json())["error"] == "body_too_large"
    resp = await client.get("/moved", allow_redirects=False)
    assert resp.status == 303


# -- sessions, /metrics and file modes across restarts (last: it restarts the agent) -------------


async def _page(agent: ShopHandle, session: str, path: str = "/") -> tuple[int, str]:
    headers = {"Cookie": f"shopsync_session={session}"}
    async with agent.http.get(agent.agent_url + path, headers=headers, allow_redirects=False) as r:
        return r.status, await r.text()


async def _restart(agent: ShopHandle) -> None:
    await agent.stop_agent()
    await agent.start_agent()


@shared
async def test_log_outs_and_ended_sessions_survive_a_restart(agent: ShopHandle) -> None:
    token = agent.shop.token
    _, _, first = await _log_in(agent, token)
    _, _, second = await _log_in(agent, token)
    _, html = await _page(agent, first)
    csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    async with agent.http.post(
        agent.agent_url + "/logout",
        data={"csrf": csrf},
        headers={"Cookie": f"shopsync_session={first}"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
    assert (await _page(agent, first))[0] == 303
    await _restart(agent)
    assert (await _page(agent, first))[0] == 303  # the log-out was kept
    status, html = await _page(agent, second)
    assert status == 200 and "End all sessions" in html
    csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    async with agent.http.post(  # the button on the overview page
        agent.agent_url + "/sessions/end",
        data={"csrf": csrf},
        headers={"Cookie": f"shopsync_session={second}"},
        allow_redirects=False,
    ) as resp:
        assert (resp.status, resp.headers["Location"]) == (303, "/login")
    assert (await _page(agent, second))[0] == 303

    # Next start: an https public_url, a metrics token, and a database others could read.
    await agent.stop_agent()
    _set(agent.data_dir, "public_url", "https://sync.example.com")
    _set(agent.data_dir, "metrics_token", "prometheus-token-0123")
    agent.data_dir.chmod(0o755)
    (agent.data_dir / "shopsync.db").chmod(0o644)
    await agent.start_agent()
    assert stat.S_IMODE(agent.data_dir.stat().st_mode) == 0o700
    for name in ("shopsync.db", "shopsync.db-wal", "shopsync.db-shm"):
        assert stat.S_IMODE((agent.data_dir / name).stat().st_mode) == 0o600, name
    assert (await _page(agent, second))[0] == 303  # ended before the restart: still ended
    status, resp, third = await _log_in(agent, token)
    assert status == 303 and third
    assert resp.cookies["shopsync_session"]["secure"]  # https public_url: a Secure cookie
    assert (await _page(agent, third))[0] == 200
    status, body = await agent.api("POST", "/api/sessions/revoke")
    assert status == 200 and body["ended_before"] > 0
    assert (await _page(agent, third))[0] == 303
    for bearer, expected in ((token, 401), ("prometheus-token-0123", 200)):
        headers = {"Authorization": f"Bearer {bearer}"}
        async with agent.http.get(agent.agent_url + "/metrics", headers=headers) as resp:
            assert resp.status == expected, bearer


# -- the CLI as an owner uses it -----------------------------------------------------------------


@shared
async def test_an_unknown_log_kind_is_refused_with_the_kinds(agent: ShopHandle) -> None:
    out = shopsync("log", "--kind", "writes", data_dir=agent.data_dir)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "unknown kind 'writes'; one of: change, introduce, write," in out.stderr
    status, body = await agent.api("GET", "/api/log?kind=writes")
    assert status == 400 and "one of: change, introduce, write," in body["message"]
    out = shopsync("log", "--kind", "introduce", "--json", data_dir=agent.data_dir)
    assert out.returncode == 0, out.stderr
    kinds = {json.loads(line)["kind"] for line in out.stdout.splitlines()}
    assert kinds == {"introduce"}  # the agent's first pass met its three SKUs


@shared
async def test_the_log_since_a_time_exports_as_csv(agent: ShopHandle) -> None:
    everything = (await agent.get("/api/log?limit=1000"))["entries"]
    out = shopsync("log", "--since", "1h", "--format", "csv", data_dir=agent.data_dir)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [int(r["id"]) for r in rows] == sorted(e["id"] for e in everything)  # all, oldest first
    first = next(e for e in everything if e["id"] == int(rows[0]["id"]))
    assert dt.datetime.fromisoformat(rows[0]["at"]).timestamp() == pytest.approx(
        first["at"], abs=1e-3
    )
    assert rows[0]["kind"] == first["kind"] and rows[0]["message"] == first["message"]
    out = shopsync(
        "log", "--since", "2001-01-01T00:00", "--until", "2001-01-02T00:00+00:00",
        "--format", "csv", data_dir=agent.data_dir,
    )  # fmt: skip
    assert (out.returncode, out.stdout) == (0, "id,at,kind,sku,peer,before,delta,after,message\n")
    out = shopsync("log", "--since", "yesterday", data_dir=agent.data_dir)
    assert out.returncode == 2 and "--since takes an age like 15m, 2h or 7d" in out.stderr


@shared
async def test_status_and_peers_say_when_sync_is_paused(agent: ShopHandle) -> None:
    assert re.search(r"^sync +running *$", shopsync("status", data_dir=agent.data_dir).stdout, re.M)
    assert shopsync("pause", data_dir=agent.data_dir).returncode == 0
    try:
        status = shopsync("status", data_dir=agent.data_dir).stdout
        assert "PAUSED: no change goes out or comes in (shopsync resume)" in status
        peers = shopsync("peers", data_dir=agent.data_dir).stdout
        assert "sync is paused at this shop" in peers
    finally:
        assert shopsync("resume", data_dir=agent.data_dir).returncode == 0
    assert "sync is paused" not in shopsync("peers", data_dir=agent.data_dir).stdout
