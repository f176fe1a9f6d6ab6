"""The agent's settings file: what is written is what is read, and bad values are refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.channel import ConfigError
from agent.config import Settings, load_settings, write_settings


def _settings(tmp_path: Path, **changes: object) -> Settings:
    base = Settings(
        data_dir=tmp_path,
        domain="dk.example.com",
        listen="127.0.0.1:8700",
        public_url="https://sync.dk.example.com",
        admin_token="t" * 32,
        channel="shopify",
        channel_options={"api_url": "https://dk.example.com"},
    )
    return dataclasses.replace(base, **changes)


def test_settings_round_trip_with_a_private_file(tmp_path: Path) -> None:
    path = write_settings(_settings(tmp_path, log_retention_days=30.0))
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_settings(tmp_path)
    assert loaded.log_retention_days == 30.0
    assert loaded == _settings(tmp_path, log_retention_days=30.0)


def test_an_older_file_without_the_setting_keeps_90_days(tmp_path: Path) -> None:
    path = write_settings(_settings(tmp_path))
    path.write_text(path.read_text().replace("log_retention_days = 90.0\n", ""))
    assert "log_retention_days" not in path.read_text()
    assert load_settings(tmp_path).log_retention_days == 90.0


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("log_retention_days", "-1"),
        ("log_retention_days", "nan"),
        ("log_retention_days", '"forever"'),
        ("reconcile_interval", "0"),
        ("reconcile_interval", '"5 minutes"'),
        ("coalesce_ms", "-5"),
        ("coalesce_ms", "true"),
        ("sku_trim", '"no"'),
        ("sku_case_fold", "1"),
        ("compaction_interval", "-1"),
        ("compaction_interval", '"hourly"'),
        ("history_horizon_days", "0"),
        ("history_horizon_days", "nan"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(tmp_path: Path, setting: str, value: str) -> None:
    path = write_settings(_settings(tmp_path))
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{setting} = "))
    lines[at] = f"{setting} = {value}"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=setting):
        load_settings(tmp_path)


def test_whole_numbers_are_read_as_numbers(tmp_path: Path) -> None:
    path = write_settings(_settings(tmp_path))
    text = path.read_text().replace("reconcile_interval = 300.0", "reconcile_interval = 60")
    path.write_text(text)
    assert load_settings(tmp_path).reconcile_interval == 60.0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("reconcile_interval = 300.0", "reconcile_intervall = 60"),
            "unknown setting reconcile_intervall in [agent] (did you mean reconcile_interval?)",
        ),
        (("[channel]", "[chanel]"), "unknown table [chanel] (did you mean [channel]?)"),
        (("[agent]", "[agent]\nverbose = true"), "unknown setting verbose in [agent]; known:"),
    ],
)
def test_a_setting_nothing_reads_is_refused_with_the_closest_name(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    path = write_settings(_settings(tmp_path))
    path.write_text(path.read_text().replace(*edit, 1))
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert message in str(caught.value)


def test_locations_round_trip_and_keep_the_owners_comments(tmp_path: Path) -> None:
    from agent.config import save_locations

    links = {"": ["main"], "2": ["north", "main"]}
    write_settings(_settings(tmp_path, locations=links))
    text = (tmp_path / "shopsync.toml").read_text()
    assert "[locations]" in text and "primary = [" in text
    loaded = load_settings(tmp_path)
    assert loaded.locations == links
    assert loaded.location_map().others() == ("2",)
    assert loaded.location_map().warehouses("2") == ("north", "main")
    path = tmp_path / "shopsync.toml"
    path.write_text("# the owner's note\n" + path.read_text())
    save_locations(loaded, {"": ["main"], "2": ["north"], "7": ["south"]})
    assert path.read_text().startswith("# the owner's note\n")
    assert load_settings(tmp_path).locations == {"": ["main"], "2": ["north"], "7": ["south"]}
    save_locations(loaded, {})  # back to the default: the table goes
    assert "[locations]" not in path.read_text() and load_settings(tmp_path).locations == {}


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('"2" = "north"', "list of warehouse names"),
        ('"2" = []', "at least"),
        ('"2" = ["north", "north"]', "twice"),
        ('"2" = ["north wing"]', "no warehouse name"),
        ('"2##3" = ["north"]', "no location id"),
    ],
)
def test_a_bad_locations_table_is_refused_saying_what_is_wrong(
    tmp_path: Path, table: str, says: str
) -> None:
    path = write_settings(_settings(tmp_path))
    path.write_text(path.read_text() + f"\n[locations]\n{table}\n")
    with pytest.raises(ConfigError, match=says):
        load_settings(tmp_path)
