"""The persisted sync log (data for admins); the structlog set-up (output for operators) is
`agent.logsetup`."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from agent.db import Database
from agent.models import LogEntry
from agent.sql import Tx

__all__ = [
    "KINDS",
    "entry",
    "entry_json",
    "insert",
    "prune",
    "query_log",
    "received_count",
    "received_message",
    "record",
]

MAX_PAGE = 1000

#: Every kind of sync-log entry the agent writes, and what it means (for `shopsync log --kind`,
#: the log page and the API, which refuse any other kind with this list).
KINDS: dict[str, str] = {
    "change": "this shop's count changed (a sale, refund or edit seen at the platform)",
    "introduce": "a SKU seen for the first time, or a member introduced to the group",
    "write": "a count written to this shop",
    "write_conflict": "a write found the shop's count changed under it, and was planned again",
    "write_failed": "the platform refused a write",
    "oversold": "the group's pool went below zero",
    "excluded": "an item not synced (a duplicate SKU or none)",
    "batch_sent": "events sent to a peer",
    "batch_received": "events received from a peer",
    "events_refused": "events from a peer refused (bad signature, not its own, malformed)",
    "peer_unreachable": "a peer stopped answering",
    "peer_reconnected": "a peer answers again",
    "restored": "a peer holds more of this shop's changes than its database (a backup?)",
    "member_away": "a member out of touch longer than the history horizon: history is folded "
    "without it, and it re-imports when it returns",
    "history_folded": "the group folded history this shop lacks: it re-imports the counts",
    "fold_disputed": "a peer says it folded history this shop lacks, but no other member backs "
    "it: no re-import on its word",
    "join_request": "a shop asked to join",
    "join_request_sent": "this shop asked to join a group",
    "join_request_expired": "a join request was not answered in time",
    "accept": "a join request accepted",
    "reject": "a join request rejected",
    "joined": "this shop joined a group",
    "member_active": "a member became active",
    "member_paused": "a member paused its sync",
    "member_left": "a member left the group",
    "leave": "this shop left the group",
    "pause": "this shop's sync paused",
    "resume": "this shop's sync resumed",
    "import": "the join's import of the group's counts",
    "import_done": "an import finished",
    "maintenance_on": "maintenance mode on (changes held)",
    "maintenance_off": "maintenance mode off",
    "rules": "stock rules changed",
    "token_renewed": "the platform granted the agent a new access token",
    "alert": "an alert opened (oversold, low stock, write failing, peer unreachable…)",
    "alert_cleared": "an alert cleared: its condition no longer holds",
    "notification": "a notification (webhook, e-mail) delivered, retried or given up",
    "change_refused": "stock added by hand at a location that sells from several warehouses, "
    "not counted (the entry says why and what to do instead)",
}


_RECEIVED = re.compile(r"(\d+) new of \d+ events")


def received_message(new: int, total: int, skus: int) -> str:
    """The message of a `batch_received` entry: how many of the batch's events were new."""
    return f"{new} new of {total} events, {skus} SKUs"


def received_count(message: str) -> int:
    """The new events a `batch_received` entry's message counts (0 for any other text)."""
    found = _RECEIVED.match(message)
    return int(found.group(1)) if found else 0


async def prune(db: Database, before: float, *, batch: int = 5000) -> int:
    """Delete sync-log entries older than `before`, `batch` rows per transaction (so that
    a large first prune never holds the write lock long); returns how many went."""
    removed = 0
    while True:
        async with db.transaction() as session:
            ids = list(
                await session.exec(
                    select(LogEntry.id).where(col(LogEntry.at) < before).limit(batch)
                )
            )
            if ids:
                await session.exec(delete(LogEntry).where(col(LogEntry.id).in_(ids)))
        removed += len(ids)
        if len(ids) < batch:
            return removed


def record(
    session: AsyncSession,
    kind: str,
    now: float,
    *,
    sku: str | None = None,
    peer: str | None = None,
    before: int | None = None,
    delta: int | None = None,
    after: int | None = None,
    message: str = "",
) -> LogEntry:
    """Add one sync-log entry to the caller's transaction."""
    row = LogEntry(
        **entry(
            kind, now, sku=sku, peer=peer, before=before, delta=delta, after=after, message=message
        )
    )
    session.add(row)
    return row


def entry(
    kind: str,
    now: float,
    *,
    sku: str | None = None,
    peer: str | None = None,
    before: int | None = None,
    delta: int | None = None,
    after: int | None = None,
    message: str = "",
) -> dict[str, Any]:
    """One sync-log entry as the row `insert` writes (the hot paths' form of `record`)."""
    return {
        "at": now,
        "kind": kind,
        "sku": sku,
        "peer": peer,
        "before": before,
        "delta": delta,
        "after": after,
        "message": message,
    }


_INSERT = (
    'INSERT INTO sync_log ("at", kind, sku, peer, "before", delta, "after", message) '
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert(conn: Connection, entries: list[dict[str, Any]]) -> None:
    """Add `entries` (made by `entry`) to the caller's unit of work, in one statement."""
    Tx(conn).many(
        _INSERT,
        (
            (
                float(e["at"]),
                e["kind"],
                e["sku"],
                e["peer"],
                e["before"],
                e["delta"],
                e["after"],
                e["message"],
            )
            for e in entries
        ),
    )


def entry_json(entry: LogEntry) -> dict[str, Any]:
    """The API form of a log entry."""
    return {
        "id": entry.id,
        "at": entry.at,
        "kind": entry.kind,
        "sku": entry.sku,
        "peer": entry.peer,
        "before": entry.before,
        "delta": entry.delta,
        "after": entry.after,
        "message": entry.message,
    }


async def query_log(
    session: AsyncSession,
    *,
    sku: str | None = None,
    kind: str | None = None,
    peer: str | None = None,
    since: float | None = None,
    until: float | None = None,
    after_id: int | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[LogEntry]:
    """Entries matching the filters. Keyset paging by id keeps it fast with millions of rows:
    `before_id` pages back from newest (default), `after_id` reads forward (for tailing)."""
    query = select(LogEntry)
    if sku is not None:
        query = query.where(LogEntry.sku == sku)
    if kind is not None:
        query = query.where(LogEntry.kind == kind)
    if peer is not None:
        query = query.where(LogEntry.peer == peer)
    if since is not None:
        query = query.where(LogEntry.at >= since)
    if until is not None:
        query = query.where(LogEntry.at <= until)
    limit = max(1, min(limit, MAX_PAGE))
    if after_id is not None:
        query = query.where(col(LogEntry.id) > after_id).order_by(col(LogEntry.id).asc())
    else:
        if before_id is not None:
            query = query.where(col(LogEntry.id) < before_id)
        query = query.order_by(col(LogEntry.id).desc())
    rows = await session.exec(query.limit(limit))
    return list(rows)
