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


@pytest.mark.parametrize("value", ["-1", "nan", '"forever"'])
def test_a_bad_log_retention_is_refused_with_its_name(tmp_path: Path, value: str) -> None:
    path = write_settings(_settings(tmp_path))
    path.write_text(
        path.read_text().replace("log_retention_days = 90.0", f"log_retention_days = {value}")
    )
    with pytest.raises(ConfigError, match=r"log_retention_days|malformed"):
        load_settings(tmp_path)
