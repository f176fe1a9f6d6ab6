"""The persisted sync log (data for admins) and the structlog set-up (output for operators)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from agent.db import Database
from agent.models import LogEntry

__all__ = ["configure_logging", "entry_json", "prune", "query_log", "record"]

MAX_PAGE = 1000


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """structlog: pretty on a terminal, JSON lines otherwise. Called once, by the CLI."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


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
                await session.exec(delete(LogEntry).where(col(LogEntry.id).in_(ids)))  # type: ignore[call-overload]
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
    entry = LogEntry(
        at=now,
        kind=kind,
        sku=sku,
        peer=peer,
        before=before,
        delta=delta,
        after=after,
        message=message,
    )
    session.add(entry)
    return entry


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
