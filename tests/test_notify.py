"""Notifications: a signed webhook and an e-mail when alerts open and clear, delivered from an
outbox that survives a restart, retried while a failure may pass — against a real HTTP
receiver and a real SMTP server (aiosmtpd) on loopback, and from a real agent process."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import ClientSession

from agent.alerts import Alert
from agent.db import Database
from agent.notify import MAX_ATTEMPTS, Notifier, NotifySettings
from tests.support.clock import StillClock
from tests.support.cluster import Cluster
from tests.support.notify_sinks import (
    SECRET,
    Receiver,
    Sink,
    notify_table,
    receiving,
    smtp_sink,
)

OVERSOLD = Alert("oversold", "SKU-1", "SKU-1: the group's count is -1", "/explain?sku=SKU-1")
LOW = Alert("low_stock", "SKU-2", "SKU-2: 2 left (low-stock threshold 3)", "/explain?sku=SKU-2")


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as found:
        yield found


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    with smtp_sink() as found:
        yield found


def _settings(receiver: Receiver, port: int, **changes: Any) -> NotifySettings:
    settings = {
        "webhook_url": receiver.url,
        "webhook_secret": SECRET,
        "email_to": ("owner@example.com",),
        "email_from": "shopsync@example.com",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
    }
    return NotifySettings(**(settings | changes))


async def _notifier(db: Database, settings: NotifySettings, http: ClientSession) -> Notifier:
    return Notifier(db=db, clock=StillClock(), shop="a.example.com", settings=settings, http=http)


async def _log(db: Database) -> list[str]:
    rows = await db.read(
        lambda conn: conn.exec_driver_sql(
            "SELECT message FROM sync_log WHERE kind = 'notification' ORDER BY id"
        ).all()
    )
    return [r[0] for r in rows]


async def test_an_opened_and_a_cleared_alert_reach_the_webhook_and_the_mailbox(
    sqlite_db: Database, receiver: Receiver, smtp: tuple[Sink, int]
) -> None:
    sink, port = smtp
    async with ClientSession() as http:
        notifier = await _notifier(sqlite_db, _settings(receiver, port), http)
        await notifier.alerts_changed([OVERSOLD], [])
        await notifier.alerts_changed([], [OVERSOLD])
        assert len(await notifier.pending()) == 4  # in the outbox before anything is sent
        await notifier.deliver_due()
    assert receiver.refused == 0 and [m["event"] for m in receiver.messages] == ["alerts"] * 2
    first, second = receiver.messages
    assert first["shop"] == "a.example.com" and first["cleared"] == []
    assert [a["message"] for a in first["opened"]] == [OVERSOLD.message]
    assert [a["kind"] for a in second["cleared"]] == ["oversold"]
    subjects = [m["Subject"] for m in sink.messages]
    assert subjects == [
        "[shopsync] a.example.com: 1 oversold opened",
        "[shopsync] a.example.com: 1 oversold cleared",
    ]
    assert OVERSOLD.message in sink.messages[0].get_payload()
    assert await notifier.pending() == []
    assert await _log(sqlite_db) == [
        "webhook (1 oversold opened): delivered",
        "email (1 oversold opened): delivered",
        "webhook (1 oversold cleared): delivered",
        "email (1 oversold cleared): delivered",
    ]


async def test_each_channel_gets_only_the_kinds_it_wants(
    sqlite_db: Database, receiver: Receiver, smtp: tuple[Sink, int]
) -> None:
    sink, port = smtp
    settings = _settings(receiver, port, email_kinds=("oversold",))
    async with ClientSession() as http:
        notifier = await _notifier(sqlite_db, settings, http)
        await notifier.alerts_changed([LOW], [])
        await notifier.deliver_due()
    assert [m["opened"][0]["kind"] for m in receiver.messages] == ["low_stock"]
    assert sink.messages == []


async def test_a_failure_that_may_pass_is_retried_with_backoff_and_a_refusal_is_not(
    sqlite_db: Database, receiver: Receiver
) -> None:
    receiver.answers = [503, 502]
    settings = NotifySettings(webhook_url=receiver.url, webhook_secret=SECRET)
    async with ClientSession() as http:
        notifier = await _notifier(sqlite_db, settings, http)
        clock = notifier.clock
        assert isinstance(clock, StillClock)
        await notifier.alerts_changed([OVERSOLD], [])
        assert await notifier.deliver_due() == pytest.approx(5.0)  # the first retry: 5 s on
        assert await notifier.deliver_due() == pytest.approx(5.0)  # not due yet: not sent
        clock.t += 5
        assert await notifier.deliver_due() == pytest.approx(10.0)  # then 10 s
        clock.t += 10
        await notifier.deliver_due()
        assert len(receiver.messages) == 1 and await notifier.pending() == []
        receiver.answers = [404]
        await notifier.alerts_changed([], [OVERSOLD])
        await notifier.deliver_due()
        assert await notifier.pending() == []  # given up at once
    assert await _log(sqlite_db) == [
        "webhook (1 oversold opened): attempt 1 failed, retried later: HTTP 503",
        "webhook (1 oversold opened): attempt 2 failed, retried later: HTTP 502",
        "webhook (1 oversold opened): delivered",
        "webhook (1 oversold cleared): given up: HTTP 404",
    ]


async def test_the_outbox_survives_a_restart_and_gives_up_after_the_last_attempt(
    sqlite_db: Database, receiver: Receiver
) -> None:
    settings = NotifySettings(webhook_url="http://127.0.0.1:9/down", webhook_secret=SECRET)
    async with ClientSession() as http:
        notifier = await _notifier(sqlite_db, settings, http)
        await notifier.alerts_changed([OVERSOLD], [])
        await notifier.deliver_due()  # refused: nothing listens there
        [waiting] = await notifier.pending()
        assert waiting["attempts"] == 1
        # the agent restarts with the receiver's right address: the message still goes
        moved = NotifySettings(webhook_url=receiver.url, webhook_secret=SECRET)
        again = await _notifier(sqlite_db, moved, http)
        again.clock.t = waiting["due"]  # type: ignore[attr-defined]
        await again.deliver_due()
        assert [m["opened"][0]["subject"] for m in receiver.messages] == ["SKU-1"]
        # a receiver that never answers well: given up after the last attempt, not kept forever
        receiver.answers = [500] * MAX_ATTEMPTS
        await again.alerts_changed([], [OVERSOLD])
        for _ in range(MAX_ATTEMPTS):
            again.clock.t += 700  # type: ignore[attr-defined]
            await again.deliver_due()
        assert await again.pending() == []
    assert (await _log(sqlite_db))[-1].startswith("webhook (1 oversold cleared): given up")


async def test_a_test_notification_says_how_each_channel_did(
    sqlite_db: Database, receiver: Receiver, smtp: tuple[Sink, int]
) -> None:
    sink, port = smtp
    settings = _settings(receiver, port, webhook_secret="a-wrong-secret-0123456789")
    async with ClientSession() as http:
        results = await (await _notifier(sqlite_db, settings, http)).test()
    assert results == [
        {"channel": "webhook", "ok": False, "detail": "HTTP 401"},  # the receiver refused it
        {"channel": "email", "ok": True, "detail": "delivered"},
    ]
    assert sink.messages[0]["Subject"] == "[shopsync] test notification from a.example.com"


async def _shopsync(data_dir: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.cli",
        *args,
        env={**os.environ, "SHOPSYNC_DATA_DIR": str(data_dir), "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_an_agent_notifies_a_low_stock_alert_as_it_opens_and_clears(
    tmp_path: Path, receiver: Receiver, smtp: tuple[Sink, int]
) -> None:
    sink, port = smtp
    async with Cluster(tmp_path, 1, skus=3) as solo:
        shop = solo.shops[0]
        await shop.stop_agent()
        config = shop.data_dir / "shopsync.toml"
        config.write_text(
            config.read_text() + "\n[alerts]\nlow_stock = 3\n" + notify_table(receiver, port)
        )
        await shop.start_agent()
        code, out, err = await _shopsync(shop.data_dir, "notify", "test")
        assert code == 0, err
        assert "ok    webhook: delivered" in out and "ok    email: delivered" in out
        await shop.edit("SKU-00002", 2)

        async def told(event: str) -> bool:
            return any(m[event] for m in receiver.messages) and any(
                event in (m["Subject"] or "") for m in sink.messages
            )

        await solo.until(lambda: told("opened"), timeout=30, what="the opened alert to be told")
        opened = next(m for m in receiver.messages if m["opened"])
        assert [(a["kind"], a["subject"]) for a in opened["opened"]] == [("low_stock", "SKU-00002")]
        await shop.edit("SKU-00002", 10)
        await solo.until(lambda: told("cleared"), timeout=30, what="the cleared alert to be told")
        assert receiver.refused == 0
        code, out, _ = await _shopsync(shop.data_dir, "notify")
        assert code == 0 and f"webhook  {receiver.url}" in out and "waiting  0" in out


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('webhook_url = "https://h.example.com/x"\nwebhook_secret = "short"', "at least 16"),
        ('webhook_url = "ftp://h"\nwebhook_secret = "' + SECRET + '"', "must be an http(s) URL"),
        ('email_to = "owner@example.com"', "email_to needs smtp_host"),
        ('email_to = "not an address"', "email_to must be an address"),
        ('webhook_kinds = ["oversell"]', "unknown kind 'oversell'; one of: oversold,"),
        ("smtp_port = 70000", "smtp_port must be a port number"),
        ('smtp_security = "ssl"', "smtp_security must be starttls, tls or none"),
        ('webhook_ulr = "https://h.example.com"', "(did you mean webhook_url?)"),
    ],
)
def test_bad_notify_settings_are_refused_with_one_line(
    tmp_path: Path, table: str, message: str
) -> None:
    from agent.config import ConfigError, load_settings, write_settings
    from tests.test_config import _settings as settings

    path = write_settings(settings(tmp_path))
    path.write_text(path.read_text() + f"\n[notify]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert message in str(caught.value)
