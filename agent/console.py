"""Rich output for the CLI: status panels, log tables, progress.

Much of what is shown came from a peer or a platform (domains, URLs, SKUs, titles, messages),
so no such text is ever read as rich markup — cells are `Text`, markup gets `escape` — and
control characters are dropped (`clean`), so that no escape sequence reaches the terminal.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

__all__ = [
    "clean",
    "console",
    "print_account",
    "follow_import",
    "print_duplicates",
    "print_log",
    "print_peers",
    "print_preflight",
    "print_requests",
    "print_status",
]

# A ":name:" in a SKU stays as it is. Piped into a file or another program, lines are not
# wrapped at 80 columns (a URL or token cut in two is no use), unless COLUMNS says otherwise.
console = Console(
    highlight=False,
    emoji=False,
    width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 10_000,
)

# C0 and C1 control characters and DEL (ESC starts every terminal escape sequence), and the
# bidirectional overrides and isolates, which can make a terminal show text out of order.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean(value: Any) -> str:
    """`value` as text fit for a terminal: control characters removed."""
    return _CONTROL.sub("", str(value))


def _text(value: Any) -> Text:
    """A table cell: plain text, never markup."""
    return Text(clean(value))


def _safe(value: Any) -> str:
    """Text to put inside a markup string: cleaned, and its brackets escaped."""
    return escape(clean(value))


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _mode(status: dict[str, Any]) -> str:
    """The sync mode in words, with the way out of it."""
    mode = status.get("sync_mode", "running")
    if status.get("paused") or mode == "paused":
        return "PAUSED: no change goes out or comes in (shopsync resume)"
    if status.get("maintenance") or mode == "maintenance":
        return "maintenance: changes are held until it ends (shopsync maintenance off)"
    return {"importing": "importing the group's counts"}.get(mode, mode)


def _alerts(alerts: list[dict[str, Any]]) -> str:
    """Open alerts in one line: how many of each kind, and the first subjects."""
    if not alerts:
        return "none"
    kinds: dict[str, list[str]] = {}
    for alert in alerts:
        kinds.setdefault(alert["kind"], []).append(alert["subject"])
    parts = []
    for kind, subjects in kinds.items():
        named = [s for s in subjects if s][:3]
        more = " …" if len(subjects) > len(named) and named else ""
        parts.append(
            f"{len(subjects)} {kind.replace('_', ' ')}"
            + (f" ({', '.join(named)}{more})" if named else "")
        )
    return "; ".join(parts) + " (shopsync status --json lists them)"


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
        (
            "events",
            f"{status['events']} held"
            + (f", {status['compacted']} folded since start" if status.get("compacted") else ""),
        ),
        (
            "work",
            "idle"
            if status["idle"]
            else f"{pending['reads']} reads, {pending['skus']} writes queued, "
            f"{pending['busy']} in flight, {pending['writes']} unresolved",
        ),
        ("reconciled", _when(status.get("last_reconcile"))),
        ("sync", _mode(status)),
        ("alerts", _alerts(status.get("alerts", []))),
    ]
    rows += [("ALERT", str(alert.get("message", ""))) for alert in status.get("alerts") or []][:5]
    for name, value in rows:
        table.add_row(name, _text(value))
    console.print(table)


#: The columns of a CSV export of the log (`shopsync log --format csv`, the log page's export).
LOG_COLUMNS = ("id", "at", "kind", "sku", "peer", "before", "delta", "after", "message")


def print_log(
    entries: Iterable[dict[str, Any]], *, fmt: str = "table", header: bool = True
) -> None:
    """Log entries oldest first: a table, JSON lines, or CSV (times in UTC, ISO 8601)."""
    entries = list(entries)
    if fmt == "json":
        for entry in entries:
            print(json.dumps(entry), flush=True)
        return
    if fmt == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        if header:
            out.writerow(LOG_COLUMNS)
        for e in entries:
            at = dt.datetime.fromtimestamp(e["at"], dt.UTC).isoformat(timespec="milliseconds")
            out.writerow([at if c == "at" else e[c] for c in LOG_COLUMNS])
        sys.stdout.flush()
        return
    table = Table(show_header=header, box=None, pad_edge=False)
    for name in ("time", "kind", "sku", "peer", "before", "delta", "after", "message"):
        table.add_column(name, overflow="fold")

    def num(v: int | None, sign: bool = False) -> str:
        return "" if v is None else (f"{v:+d}" if sign else str(v))

    for e in entries:
        table.add_row(
            _when(e["at"]),
            _text(e["kind"]),
            _text(e["sku"] or ""),
            _text(e["peer"] or ""),
            num(e["before"]),
            num(e["delta"], sign=True),
            num(e["after"]),
            _text(e["message"] or ""),
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
        table.add_row(
            _text(r["domain"]),
            _text(r["agent_url"]),
            _text(r["fingerprint"]),
            _ago(r["received_at"]),
        )
    console.print(table)
    console.print(
        "accept only a fingerprint the shop's owner read out to you (their `shopsync status`):"
    )
    console.print("  shopsync accept DOMAIN --fingerprint SHA256:…   (or reject DOMAIN …)")
    shared = sorted({r["domain"] for r in requests if r.get("claims", 1) > 1})
    for domain in shared:
        console.print(
            _text(
                f"warning: several requests claim {domain}: somebody may pose as it; accept "
                "only the fingerprint its owner confirms, and reject the others"
            )
        )


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
            _text(p["domain"]),
            _text(state),
            _ago(p["last_contact"]),
            str(p["events_behind"]),
            _text(p["agent_url"]),
        )
    console.print(table)


def print_duplicates(report: dict[str, Any]) -> None:
    """What cannot sync and why, with what to do about it."""
    if not (report["duplicates"] or report["no_sku"] or report["missing_here"]):
        console.print("no duplicates, no items without SKU, nothing missing")
    for dup in report["duplicates"]:
        console.print(
            f"[bold]duplicate SKU {_safe(dup['sku'])}[/] on {len(dup['items'])} items (not synced):"
        )
        for item in dup["items"]:
            console.print(f"  {_safe(item['item_id'])}  {_safe(item['title'])}")
    if report["duplicates"]:
        console.print(f"  → {_safe(report['duplicates'][0]['advice'])}")
    if report["no_sku"]:
        console.print(f"[bold]{len(report['no_sku'])} items without SKU[/] (not synced):")
        for item in report["no_sku"]:
            console.print(f"  {_safe(item['item_id'])}  {_safe(item['title'])}")
        console.print(f"  → {_safe(report['no_sku'][0]['advice'])}")
    if report["missing_here"]:
        console.print(
            f"[bold]{len(report['missing_here'])} SKUs the group has that this shop "
            f"lacks[/]: {_safe(', '.join(report['missing_here'][:20]))}"
            + (" …" if len(report["missing_here"]) > 20 else "")
        )
    if report.get("only_here"):
        console.print(
            f"[bold]{len(report['only_here'])} SKUs only in this shop[/] at the last "
            f"import: {_safe(', '.join(report['only_here'][:20]))}"
        )


def _first_rows(lines: list[str], total: int, shown: int = 15) -> None:
    """The first `shown` of a report's rows, then how many more there are of `total`."""
    for line in lines[:shown]:
        console.print(line)
    if total > shown:
        console.print(f"  … and {total - shown} more")


def print_preflight(report: dict[str, Any], *, dry_run: bool) -> None:
    """The import's pre-flight report: what the run does, SKU by SKU."""
    from agent.importer import IMPORT_MODES  # local: the other commands need none of it

    mode = report.get("mode", "join")
    console.print(
        f"[bold]{'Re-import' if mode == 'reimport' else 'Import'}[/]: {IMPORT_MODES[mode]}"
    )
    counted = report.get("counted", [])
    if counted:
        console.print(
            f"[bold]{report['changes_to_count']} changes in this shop to count[/] "
            "(the group's count follows in every shop):"
        )
    _first_rows(
        [
            f"  {_safe(row['sku'])}: shop shows {_safe(row['shop'])}, last seen "
            f"{_safe(row['last_seen'])} ({row['change']:+d}): group {_safe(row['group_before'])}"
            f" → {_safe(row['group_after'])}"
            for row in counted
        ],
        report.get("changes_to_count", 0),
    )
    discarded = report.get("discarded", [])
    if discarded:
        console.print(
            f"[bold]{report['discarded_count']} changes made while out of the group are "
            "discarded[/] (joined with --while-out discard: the group's count wins):"
        )
    _first_rows(
        [
            f"  {_safe(row['sku'])}: {row['change']:+d} since it left, not counted; "
            f"the group's {_safe(row['group_before'])} is written"
            for row in discarded
        ],
        report.get("discarded_count", 0),
    )
    console.print(
        f"{report['items']} items in the shop; [bold]{report['skus_to_write']} counts to write "
        "here[/]"
    )
    _first_rows(
        [
            f"  {_safe(row['sku'])}: {_safe(row['shop'])} → {_safe(row['target'])}"
            for row in report["to_change"]
        ],
        report["skus_to_write"],
    )
    if report.get("not_synced_yet_count"):
        console.print(
            f"{report['not_synced_yet_count']} items the agent has not taken up yet (the next "
            "catalogue pass does; the import leaves them): "
            + _safe(", ".join(report["not_synced_yet"][:20]))
        )
    console.print(
        f"{report['duplicate_skus']} duplicate SKUs, {report['no_sku_items']} items "
        f"without SKU (not synced: see shopsync duplicates)"
    )
    console.print(
        f"{report['missing_here_count']} SKUs missing in this shop, "
        f"{report['only_here_count']} only in this shop"
    )
    if report.get("bundles_count"):
        console.print(
            f"{report['bundles_count']} bundles (no count of their own: whole sets of their "
            "components, written with them): " + _safe(", ".join(report["bundles"][:20]))
        )
    if dry_run:
        console.print("dry run: nothing was changed")


async def follow_import(client: Any, *, quiet: bool) -> dict[str, Any]:
    """A progress bar (done/total, rate, ETA) until the import ends; returns the last state."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}/s"),
        TimeRemainingColumn(),
    )
    import asyncio

    with Progress(*columns, console=console, disable=quiet) as bar:
        task = bar.add_task("import", total=None, rate="0")
        while True:
            state = await client.get("/api/import")
            snapshot = state.get("snapshot")
            if snapshot:  # a join still downloading the master's snapshot: its pages
                bar.update(
                    task,
                    description="snapshot pages",
                    total=snapshot["pages"] or None,
                    completed=snapshot["pages_done"],
                    rate="-",
                )
            else:
                bar.update(
                    task,
                    description="import",
                    total=state["total"] or None,
                    completed=state["done"],
                    rate=f"{state['rate']:.0f}",
                )
            if state.get("state") != "running":
                return state
            await asyncio.sleep(0.5)


def print_rules(view: dict[str, Any]) -> None:
    """Every shop's stock rules as this agent knows them, and the group's rule."""
    from agent.rules import rules_from_wire

    priority = view.get("priority")
    if priority:
        console.print(
            f"group: priority {_safe(priority['shop'])} while a pool is "
            f"{priority['at_most']} or less (the others publish 0)"
        )
    else:
        console.print("group: no priority shop")
    for shop, wire in view["shops"].items():
        rules = rules_from_wire(wire)
        own = " (this shop)" if shop == view["shop"] else ""
        console.print(f"[bold]{_safe(shop)}[/]{own}: {_safe(rules.default.describe())}")
        for pattern, rule in sorted(rules.overrides.items()):
            console.print(f"  {_safe(pattern)}: {_safe(rule.describe())}")
    if view.get("told") is not None:
        console.print(f"told {_safe(', '.join(view['told']) or 'nobody')}")


def print_bundles(view: dict[str, Any]) -> None:
    """The group's bundles: each SKU and the components one takes."""
    bundles = view.get("bundles", [])
    if not bundles:
        console.print("no bundles (add one: shopsync bundles add PACK-6 SAUSAGE:6)")
    else:
        table = Table(box=None, pad_edge=False)
        for name in ("bundle", "takes", "set by", "in use"):
            table.add_column(name)
        for row in bundles:
            takes = " + ".join(f"{c['quantity']} x {c['sku']}" for c in row["components"])
            used = "yes" if row["in_use"] else f"no: {row['why_not']}"
            table.add_row(_text(row["sku"]), _text(takes), _text(row["set_by"]), _text(used))
        console.print(table)
    if view.get("told") is not None:
        console.print(f"told {_safe(', '.join(view['told']) or 'nobody')}")


def print_locations(view: dict[str, Any]) -> None:
    """This shop's locations and their warehouses; a change's preview and whether it holds."""
    table = Table(box=None, pad_edge=False)
    for name in ("location", "sells from (in order)"):
        table.add_column(name)
    for row in view.get("locations", []):
        table.add_row(_text(row["location"]), _text(", ".join(row["warehouses"])))
    console.print(table)
    preview = view.get("preview")
    if preview is not None:
        verb = "would change" if view.get("dry_run") else "change"
        console.print(f"{preview['changes']} of {preview['listings']} listings there {verb}:")
        for row in preview["rows"]:
            if row["would_show"] is not None and row["would_show"] != row["shows"]:
                console.print(f"  {_safe(row['sku'])}: {row['shows']} → {row['would_show']}")
    if view.get("dry_run"):
        console.print("dry run: nothing changed")
    elif view.get("restart_required"):
        console.print("saved; restart the agent (shopsync run) to sync the locations added")
    elif view.get("applied"):
        console.print("saved and applied")


def print_rules_test(answer: dict[str, Any]) -> None:
    """What each shop would publish of a SKU at a pool, and which rule decided."""
    console.print(f"{_safe(answer['sku'])} at a pool of {answer['pool']}:")
    table = Table(box=None, pad_edge=False)
    for name in ("shop", "publishes", "why", "its rules"):
        table.add_column(name)
    for row in answer["shops"]:
        rules = row["rules"] + (f" (from {row['override']})" if row["override"] else "")
        table.add_row(_text(row["shop"]), str(row["publishes"]), _text(row["why"]), _text(rules))
    console.print(table)


def print_account(account: dict[str, Any]) -> None:
    """A SKU's pool, term by term, its latest events, and what each shop shows."""
    pool = account["pool"]
    console.print(f"[bold]{_safe(account['sku'])}[/]: pool {pool if pool is not None else '-'}")
    terms = Table(show_header=False, box=None, pad_edge=False)
    for justify in ("left", "right", "left"):
        terms.add_column(justify=justify)
    base = account["base"]
    if base is None:
        terms.add_row("base", "-", "no shop has told its count yet")
    else:
        terms.add_row(
            "base",
            str(base["count"]),
            _text(f"where it was created first: {base['shop']}, {_when(base['created'])}"),
        )
    for change in account["changes"]:
        n = change["events"]
        terms.add_row(
            _text(change["shop"]), f"{change['sum']:+d}", f"{n} change{'s' if n != 1 else ''}"
        )
    if account["earlier"]:
        terms.add_row(
            "earlier",
            f"{account['earlier']:+d}",
            "folded in: history every member held (compacted), or the counts this shop took "
            "over when it joined",
        )
    total = "= pool" if account["adds_up"] else "≠ pool: the ledger does not add up, report it"
    terms.add_row("", str(pool), total)
    console.print(terms)
    if account["recent"]:
        console.print("latest changes:")
        table = Table(box=None, pad_edge=False)
        for name in ("time", "shop", "change", "what happened"):
            table.add_column(name)
        for e in account["recent"]:
            table.add_row(_when(e["at"]), _text(e["shop"]), _text(e["what"]), _text(e["in_words"]))
        console.print(table)
    if account["shops"]:
        console.print("what each shop shows:")
        table = Table(box=None, pad_edge=False)
        for name in ("shop", "shows", "why"):
            table.add_column(name)
        for row in account["shops"]:
            table.add_row(_text(row["shop"]), str(row["publishes"]), _text(row["why"]))
        console.print(table)
