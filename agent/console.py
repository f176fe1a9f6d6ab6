"""Rich output for the CLI: status panels, log tables, progress."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["console", "print_log", "print_status"]

console = Console(highlight=False)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def print_status(status: dict[str, Any]) -> None:
    """The agent's state, for a person."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    pending = status["pending"]
    rows = [
        ("shop", f"{status['domain']} ({status['channel']})"),
        ("agent", f"{status['public_url']}  v{status['version']}"),
        ("key", status["fingerprint"]),
        ("items", f"{status['items']} synced, {status['excluded']} excluded"),
        ("skus", str(status["skus"])),
        ("events", str(status["events"])),
        (
            "work",
            "idle"
            if status["idle"]
            else f"{pending['reads']} reads, {pending['skus']} writes queued, "
            f"{pending['busy']} in flight, {pending['writes']} unresolved",
        ),
        ("reconciled", _when(status.get("last_reconcile"))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def print_log(entries: Iterable[dict[str, Any]], *, as_json: bool, header: bool = True) -> None:
    """Log entries oldest first: JSON lines, or a table."""
    entries = list(entries)
    if as_json:
        for entry in entries:
            print(json.dumps(entry), flush=True)
        return
    table = Table(show_header=header, box=None, pad_edge=False)
    for name in ("time", "kind", "sku", "peer", "before", "delta", "after", "message"):
        table.add_column(name, overflow="fold")

    def num(v: int | None, sign: bool = False) -> str:
        return "" if v is None else (f"{v:+d}" if sign else str(v))

    for e in entries:
        table.add_row(
            _when(e["at"]),
            e["kind"],
            e["sku"] or "",
            e["peer"] or "",
            num(e["before"]),
            num(e["delta"], sign=True),
            num(e["after"]),
            e["message"] or "",
        )
    console.print(table)
