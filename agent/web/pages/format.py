"""Jinja filters and small parsers for the admin pages: times in UTC, ages, signed deltas."""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["FILTERS", "age", "parse_utc", "signed", "ts", "ts_iso"]


def ts(value: float | None) -> str:
    """An epoch time as `YYYY-MM-DD HH:MM:SS` UTC; "—" for none."""
    if value is None:
        return "—"
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def ts_iso(value: float | None) -> str:
    """An epoch time for `<time datetime=…>`."""
    if value is None:
        return ""
    return dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds")


def age(value: float | None, now: float) -> str:
    """How long ago `value` was, in words a person reads at a glance."""
    if value is None:
        return "never"
    seconds = max(0.0, now - value)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def signed(value: int | None) -> str:
    """A delta with its sign (+3, -2, 0); blank for none."""
    if value is None:
        return ""
    return f"+{value}" if value > 0 else str(value)


def duration(seconds: float | None) -> str:
    """A duration like `1 h 05 min` or `42 s`; "—" when unknown."""
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def parse_utc(value: str | None) -> float | None:
    """A `datetime-local` form value (read as UTC) or epoch seconds → epoch; None if blank.

    Raises ValueError for anything else, so the page can say which filter is wrong.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


FILTERS: dict[str, Any] = {
    "ts": ts,
    "ts_iso": ts_iso,
    "age": age,
    "signed": signed,
    "duration": duration,
}
