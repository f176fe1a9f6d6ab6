"""Alerts as state: each opens while its condition holds and clears when it stops, on SQLite and
PostgreSQL, with a sync-log row and a call to the listeners for each transition."""

from __future__ import annotations

from typing import Any

import pytest

from agent import synclog
from agent.alerts import Alert, Alerts, AlertSettings
from agent.config import ConfigError, load_settings, write_settings
from agent.db import Database
from agent.ledger import Pool, save_pools
from agent.models import ItemRow, PeerRow
from agent.rules import Decision
from tests.support.clock import StillClock


class Fixture:
    def __init__(self, db: Database, settings: AlertSettings | None = None) -> None:
        self.db, self.clock = db, StillClock()
        self.progress: dict[str, Any] = {"state": "none"}
        self.seen: list[tuple[list[str], list[str]]] = []

        async def progress() -> dict[str, Any]:
            return self.progress

        self.alerts = Alerts(
            db=db,
            clock=self.clock,  # type: ignore[arg-type]
            decide=lambda sku, pool: Decision(max(0, pool)),
            import_progress=progress,
            settings=settings,
        )
        self.alerts.on_change(
            lambda opened, cleared: self.seen.append(
                ([a.key for a in opened], [a.key for a in cleared])
            )
        )

    async def pool(self, sku: str, value: int) -> None:
        pool = Pool(sku, base=value, base_created=1.0, base_origin="a.example.com")
        await self.db.run(lambda conn: save_pools(conn, [pool]))

    async def log(self, kind: str, **fields: Any) -> None:
        entry = synclog.entry(kind, self.clock.now(), **fields)
        await self.db.run(lambda conn: synclog.insert(conn, [entry]))

    async def keys(self) -> list[str]:
        return [a.key for a in await self.alerts.evaluate()]


async def test_oversold_opens_once_and_clears_when_the_pool_is_back(database: Database) -> None:
    f = Fixture(database)
    await f.pool("SKU-1", 3)
    assert await f.keys() == []
    await f.pool("SKU-1", -2)
    [alert] = await f.alerts.evaluate()
    assert alert.message == "SKU-1: the group's count is -2 (2 sold more than there was)"
    assert (alert.link, alert.first_seen) == ("/explain?sku=SKU-1", f.clock.now())
    opened_at = f.clock.now()
    f.clock.t += 60
    assert [a.first_seen for a in await f.alerts.evaluate()] == [opened_at]  # still the same
    assert [a.key for a in await f.alerts.open()] == ["oversold:SKU-1"]
    await f.pool("SKU-1", 0)
    assert await f.keys() == []
    assert f.seen == [(["oversold:SKU-1"], []), ([], ["oversold:SKU-1"])]
    rows = await database.read(
        lambda conn: conn.exec_driver_sql(
            "SELECT kind, sku, message FROM sync_log ORDER BY id"
        ).all()
    )
    assert [tuple(r) for r in rows] == [
        ("alert", "SKU-1", "oversold: " + alert.message),
        ("alert_cleared", "SKU-1", "oversold: cleared: " + alert.message),
    ]


async def test_low_stock_follows_the_most_specific_threshold(database: Database) -> None:
    f = Fixture(database, AlertSettings(low_stock=5, low_stock_skus={"CASE-*": 1, "CASE-9": 0}))
    for sku, value in (("SKU-1", 5), ("SKU-2", 6), ("CASE-1", 2), ("CASE-2", 1), ("CASE-9", 0)):
        await f.pool(sku, value)
    assert sorted(await f.keys()) == ["low_stock:CASE-2", "low_stock:CASE-9", "low_stock:SKU-1"]
    await f.pool("SKU-1", 50)  # restocked
    assert sorted(await f.keys()) == ["low_stock:CASE-2", "low_stock:CASE-9"]
    assert await Fixture(database).keys() == []  # off by default


async def test_a_refused_write_is_an_alert_until_the_shop_shows_the_count(
    database: Database,
) -> None:
    f = Fixture(database)
    await f.pool("SKU-1", 7)
    async with database.transaction() as session:
        session.add(ItemRow(item_id="i1", sku="SKU-1", published=4))
    await f.log("write", sku="SKU-1", before=5, delta=-1, after=4)
    assert await f.keys() == []
    await f.log("write_failed", sku="SKU-1", before=4, after=7, message="422 invalid quantity")
    [alert] = await f.alerts.evaluate()
    assert alert.key == "write_failing:SKU-1" and "422 invalid quantity" in alert.message
    # the owner sets the right count by hand: the shop shows what the rules say, cleared
    async with database.transaction() as session:
        item = await session.get(ItemRow, "i1")
        assert item is not None
        item.published = 7
    assert await f.keys() == []
    async with database.transaction() as session:
        item = await session.get(ItemRow, "i1")
        assert item is not None
        item.published = 4
    assert await f.keys() == ["write_failing:SKU-1"]
    await f.log("write", sku="SKU-1", before=4, delta=3, after=7)  # a later write went through
    assert await f.keys() == []


async def test_a_peer_is_an_alert_only_after_the_grace_period(database: Database) -> None:
    f = Fixture(database, AlertSettings(peer_grace=120))
    async with database.transaction() as session:
        session.add(
            PeerRow(
                domain="b.example.com",
                agent_url="http://127.0.0.1:9",
                public_key="k",
                fingerprint="f",
                last_error="connection refused",
            )
        )
    await f.log("peer_unreachable", peer="b.example.com", message="connection refused")
    f.clock.t += 119
    assert await f.keys() == []
    f.clock.t += 2
    [alert] = await f.alerts.evaluate()
    assert alert.key == "peer_unreachable:b.example.com"
    assert alert.message == "b.example.com has not answered for 2 min: connection refused"
    async with database.transaction() as session:
        peer = await session.get(PeerRow, "b.example.com")
        assert peer is not None
        peer.last_error = ""  # it answers again
    assert await f.keys() == []


async def test_an_import_without_progress_is_stuck(database: Database) -> None:
    f = Fixture(database, AlertSettings(import_stall=600))
    f.progress = {"state": "running", "done": 10, "total": 100}
    assert await f.keys() == []
    f.clock.t += 599
    assert await f.keys() == []
    f.clock.t += 2
    [alert] = await f.alerts.evaluate()
    assert alert.message == "the import has written nothing for 10 min (10 of 100 done)"
    f.progress = {"state": "running", "done": 11, "total": 100}
    assert await f.keys() == []
    f.progress = {"state": "done", "done": 100, "total": 100}
    assert await f.keys() == []


async def test_a_listener_that_fails_stops_nothing(sqlite_db: Database) -> None:
    f = Fixture(sqlite_db)

    def broken(opened: list[Alert], cleared: list[Alert]) -> None:
        raise RuntimeError("smtp down")

    f.alerts.listeners.insert(0, broken)
    await f.pool("SKU-1", -1)
    assert await f.keys() == ["oversold:SKU-1"]
    assert f.seen == [(["oversold:SKU-1"], [])]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("low_stock = -1", "[alerts] low_stock must be a whole number of 0 or more"),
        ("low_stock = 2.5", "[alerts] low_stock must be a whole number of 0 or more"),
        ("peer_grace = 0", "[alerts] peer_grace must be a positive number of seconds"),
        ("low_stok = 3", "unknown setting low_stok in [alerts] (did you mean low_stock?)"),
        ("low_stock_skus = 3", "[alerts] low_stock_skus must be a table of SKU = number"),
    ],
)
def test_bad_alert_settings_are_refused(tmp_path: Any, table: str, message: str) -> None:
    from tests.test_config import _settings

    path = write_settings(_settings(tmp_path))
    path.write_text(path.read_text() + f"\n[alerts]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert message in str(caught.value)


def test_alert_settings_round_trip(tmp_path: Any) -> None:
    from tests.test_config import _settings

    path = write_settings(_settings(tmp_path))
    path.write_text(
        path.read_text() + "\n[alerts]\nlow_stock = 3\npeer_grace = 60\n"
        '[alerts.low_stock_skus]\n"CASE-*" = 1\n'
    )
    settings = load_settings(tmp_path)
    assert settings.alerts == AlertSettings(
        low_stock=3, low_stock_skus={"CASE-*": 1}, peer_grace=60
    )
    write_settings(settings)
    assert load_settings(tmp_path).alerts == settings.alerts
