"""The async database: SQLite (WAL) by default, PostgreSQL by URL; Alembic upgrades on start."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from agent.models import StateEntry

__all__ = ["Database", "alembic_config", "read_state", "write_state"]

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    # WAL lets readers go on while one writer commits; NORMAL sync is durable in WAL mode
    # across process crashes (only an OS crash can lose the last transactions).
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


async def read_state(session: AsyncSession, key: str, default: Any = None) -> Any:
    """A piece of agent state (JSON) read in `session`, or `default`."""
    row = await session.get(StateEntry, key)
    return default if row is None else json.loads(row.value)


async def write_state(session: AsyncSession, key: str, value: Any) -> None:
    """Store a piece of agent state (JSON) as part of the transaction of `session`."""
    row = await session.get(StateEntry, key)
    if row is None:
        session.add(StateEntry(key=key, value=json.dumps(value)))
    else:
        row.value = json.dumps(value)


class Database:
    """One async engine per agent and its session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, object] = {}
        if not self.is_sqlite:
            kwargs.update(pool_size=10, max_overflow=5, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        # One writing transaction at a time per agent: SQLite has one writer anyway, and two
        # deferred transactions that both read then write would deadlock (SQLITE_BUSY).
        self.write_lock = asyncio.Lock()
        self.sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a writing transaction, committed on exit, rolled back on error."""
        async with self.write_lock, self.sessions.begin() as session:
            yield session

    async def get_state(self, key: str, default: Any = None) -> Any:
        """A small piece of agent state that survives restarts (JSON), or `default`."""
        async with self.sessions() as session:
            return await read_state(session, key, default)

    async def set_state(self, key: str, value: Any) -> None:
        """Store a piece of agent state (JSON) in its own transaction."""
        async with self.transaction() as session:
            await write_state(session, key, value)

    async def delete_state(self, key: str) -> None:
        """Forget a piece of agent state (no error if it is not there)."""
        async with self.transaction() as session:
            row = await session.get(StateEntry, key)
            if row is not None:
                await session.delete(row)

    async def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""

        def run(sync_conn) -> None:  # type: ignore[no-untyped-def]
            cfg = alembic_config()
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, "head")

        async with self.engine.begin() as conn:
            await conn.run_sync(run)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
