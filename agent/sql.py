"""Plain SQL for the hot paths, on the connection of a unit of work (`Database.run`).

A sale passes through a dozen statements in each agent. Built with SQLAlchemy's expression
language, each costs far more Python than SQLite spends running it (clause objects, cache
keys, compilation, result wrapping: the profile in the Core v2 issue's note); written once as
text in the syntax SQLite and PostgreSQL share, and sent to the driver's cursor, each costs a
few microseconds. The tables stay SQLModel's (`agent/models.py`), and Alembic owns the
schema; only these statements bypass the expression language. Placeholders are ``?``, turned
into ``$1, $2…`` for asyncpg.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection

__all__ = ["Tx", "marks"]

_MARK = re.compile(r"\?")


@functools.lru_cache(maxsize=512)
def _dollar(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _MARK.sub(lambda _m: f"${next(counter)}", sql)


@functools.lru_cache(maxsize=64)
def marks(n: int) -> str:
    """``?, ?, …`` for an IN list of `n` values."""
    return ", ".join("?" * n)


class Tx:
    """The driver's cursor on a unit of work's connection (inside its transaction)."""

    __slots__ = ("_cursor", "_pg")

    def __init__(self, conn: Connection) -> None:
        self._pg = conn.dialect.name == "postgresql"
        # a unit of work's connection is checked out: its DBAPI connection is there
        self._cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]

    def _sql(self, sql: str) -> str:
        return _dollar(sql) if self._pg else sql

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row `sql` selects."""
        self._cursor.execute(self._sql(sql), tuple(params))
        return list(self._cursor.fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row `sql` selects, or None."""
        self._cursor.execute(self._sql(sql), tuple(params))
        return self._cursor.fetchone()

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement."""
        self._cursor.execute(self._sql(sql), tuple(params))

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each row of parameters (the driver's executemany)."""
        batch = [tuple(r) for r in rows]
        if batch:
            self._cursor.executemany(self._sql(sql), batch)
