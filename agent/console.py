"""Rich output for the CLI: status panels, log tables, progress."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["console", "print_log", "print_peers", "print_requests", "print_status"]

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


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    seconds = max(0, int(dt.datetime.now().timestamp() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def print_requests(requests: list[dict[str, Any]]) -> None:
    """Pending join requests, for the owner who decides."""
    if not requests:
        console.print("no pending join requests")
        return
    table = Table(box=None, pad_edge=False)
    for name in ("domain", "agent URL", "key fingerprint", "received"):
        table.add_column(name)
    for r in requests:
        table.add_row(r["domain"], r["agent_url"], r["fingerprint"], _ago(r["received_at"]))
    console.print(table)
    console.print("accept with: shopsync accept DOMAIN   (or reject DOMAIN)")


def print_peers(peers: list[dict[str, Any]]) -> None:
    """The other members and how sync with each stands."""
    if not peers:
        console.print("this shop is not in a group (shopsync join DOMAIN)")
        return
    table = Table(box=None, pad_edge=False)
    for name in ("shop", "state", "last contact", "events behind", "agent URL"):
        table.add_column(name)
    for p in peers:
        state = p["state"] if not p.get("last_error") else f"{p['state']} ({p['last_error']})"
        table.add_row(
            p["domain"], state, _ago(p["last_contact"]), str(p["events_behind"]), p["agent_url"]
        )
    console.print(table)
