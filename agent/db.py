"""The async database: SQLite (WAL) by default, PostgreSQL by URL; Alembic upgrades on start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from agent.models import StateEntry
from agent.sql import Tx

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "QUICK_ROWS",
    "Database",
    "Work",
    "alembic_config",
    "drop_state",
    "put_state",
    "read_state",
    "write_state",
]

MIGRATIONS = Path(__file__).with_name("migrations")
#: The newest migration's revision. A database already there is not handed to Alembic at
#: start: loading Alembic only to find nothing to do was most of the database's share of an
#: agent's start-up. A new migration changes it (tests/test_storage.py holds it to Alembic's).
SCHEMA_HEAD = "0006"
T = TypeVar("T")
#: A unit of work: plain (synchronous) SQLAlchemy Core statements on one connection, inside
#: one transaction. `Database.run` runs it whole, without a trip to the event loop between
#: its statements.
Work = Callable[[Connection], T]


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers go on while one writer commits; NORMAL sync is durable in WAL mode
    # across process crashes (only an OS crash can lose the last transactions).
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin_immediate(conn: Connection) -> None:
    # the unit-of-work engine's writing transactions take SQLite's write lock at BEGIN: a
    # unit that reads then writes never finds the database changed under it, nor waits
    # half-way; a reading one (`Database.read`) takes a snapshot and no lock. Straight to the
    # driver: through SQLAlchemy's statement machinery it cost more than the BEGIN itself.
    begin = "BEGIN" if conn.info.pop("read_only", False) else "BEGIN IMMEDIATE"
    driver = conn.connection.driver_connection
    assert driver is not None  # a checked-out connection always has its driver's
    driver.execute(begin)


def _sqlite_no_implicit_begin(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # BEGIN is ours (above), not the sqlite3 module's


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


def put_state(conn: Connection, key: str, value: Any) -> None:
    """`write_state` in a unit of work (`Database.run`)."""
    Tx(conn).run(
        'INSERT INTO agent_state ("key", "value") VALUES (?, ?) '
        'ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value"',
        (key, json.dumps(value)),
    )


def drop_state(conn: Connection, key: str) -> None:
    """Forget a piece of agent state in a unit of work (no error if it is not there)."""
    Tx(conn).run('DELETE FROM agent_state WHERE "key" = ?', (key,))


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
        self._work_engine: Engine | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._local = _Connections()
        self._opened: list[Connection] = []  # the database threads' connections, to close
        self._quick_engine: Engine | None = None
        self._quick: Connection | None = None  # the event loop's own connection (SQLite)
        self._commits = 0  # quick writing units committed since the last checkpoint
        self._checkpoint: asyncio.Future[None] | None = None
        if self.is_sqlite:
            self._work_engine = sqlite_work_engine(url)
            self._quick_engine = sqlite_work_engine(url, quick=True)
            # two threads: a read (a pull, a peer's key) never waits behind a write's unit;
            # writes still go one at a time (`write_lock`)
            self._worker = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shopsync-db")

    async def run(self, work: Work[T], *, quick: bool = False) -> T:
        """Run `work` in one writing transaction, committed when it returns, rolled back if it
        raises. The hot paths use this instead of an ORM session: for SQLite the whole unit
        runs in the database thread (one hop to it, not one per statement), or with `quick`
        on the event loop's thread; for PostgreSQL its statements run on the async driver's
        connection.

        `quick` is for the units of a sale's path, which touch a batch of rows at most: the
        hop to the database thread and back cost about ten times what SQLite spends on such
        a unit (~190 µs against ~20 µs of CPU, measured), and a sale passes through ten of
        them. A quick unit never waits on the loop for SQLite's lock: if another process holds
        it, the unit goes to the database thread, which waits there."""
        async with self.write_lock:
            return await self._unit(work, write=True, quick=quick)

    async def read(self, work: Work[T], *, quick: bool = False) -> T:
        """Run `work` (reads only) in one transaction that sees one snapshot of the database
        (SQLite: a deferred BEGIN in WAL mode; PostgreSQL: REPEATABLE READ). Not the ORM
        sessions: the sqlite3 module begins no transaction for SELECTs, so two SELECTs in one
        session may see a commit between them. `quick` as for `run`; a quick read that finds
        the database busy runs again in the database thread, so it must have no other effect
        than its answer."""
        return await self._unit(work, write=False, quick=quick)

    async def _unit(self, work: Work[T], *, write: bool, quick: bool = False) -> T:
        if self._work_engine is None:
            async with self.engine.connect() as conn:
                if not write:  # one snapshot for every statement of the unit
                    await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    return await conn.run_sync(work)
        if quick:
            done, result = self._at_once(work, write)
            if done:
                return result  # type: ignore[return-value]  # done: `work` returned it
        engine, worker = self._work_engine, self._worker
        return await asyncio.get_running_loop().run_in_executor(
            worker, _in_transaction, engine, work, write, self._local, self._opened
        )

    def _at_once(self, work: Work[T], write: bool) -> tuple[bool, T | None]:
        """Run a quick unit on this thread: (True, its answer), or (False, None) when SQLite
        was busy before anything of it ran (another process writing)."""
        engine = self._quick_engine
        assert engine is not None and self._work_engine is not None  # SQLite's
        conn = self._quick
        if conn is None or conn.closed or conn.invalidated:
            conn = self._quick = engine.connect()
        conn.info["read_only"] = not write
        began = False
        try:
            with conn.begin():
                began = True
                result = work(conn)
        except (sqlite3.OperationalError, OperationalError) as exc:  # the BEGIN, or a read
            if (began and write) or not _busy(exc):
                raise
            conn.invalidate()  # its transaction never began: start the next one afresh
            self._quick = None
            return False, None
        if write:
            self._commits += 1
            if self._commits >= CHECKPOINT_EVERY and self._checkpoint is None:
                self._commits = 0
                self._checkpoint = asyncio.get_running_loop().run_in_executor(
                    self._worker, _checkpoint, self._work_engine, self._local, self._opened
                )
                self._checkpoint.add_done_callback(self._checkpointed)
        return True, result

    def _checkpointed(self, future: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not future.cancelled() and future.exception() is not None:
            # the next one tries again; SQLite also checkpoints when the last connection closes
            self._commits = CHECKPOINT_EVERY

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a writing transaction, committed on exit, rolled back on error."""
        async with self.write_lock, self.sessions.begin() as session:
            yield session

    async def get_state(self, key: str, default: Any = None) -> Any:
        """A small piece of agent state that survives restarts (JSON), or `default`."""
        query = 'SELECT "value" FROM agent_state WHERE "key" = ?'
        row = await self.read(lambda conn: Tx(conn).one(query, (key,)), quick=True)
        return default if row is None else json.loads(row[0])

    async def set_state(self, key: str, value: Any) -> None:
        """Store a piece of agent state (JSON) in its own transaction."""
        await self.run(lambda conn: put_state(conn, key, value), quick=True)

    async def delete_state(self, key: str) -> None:
        """Forget a piece of agent state (no error if it is not there)."""
        await self.run(lambda conn: drop_state(conn, key), quick=True)

    async def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""

        def run(sync_conn: Connection) -> None:
            if _schema_version(sync_conn) == SCHEMA_HEAD:
                return
            from alembic import command

            cfg = alembic_config()
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, "head")

        async with self.engine.begin() as conn:
            await conn.run_sync(run)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint
        if self._quick is not None:
            self._quick.close()
            self._quick = None
        if self._quick_engine is not None:
            self._quick_engine.dispose()
        if self._worker is not None:
            self._worker.shutdown(wait=True)
        for conn in self._opened:
            conn.close()
        self._opened.clear()
        if self._work_engine is not None:
            self._work_engine.dispose()


def _schema_version(conn: Connection) -> str | None:
    """The revision Alembic recorded in this database (None: none, or not exactly one)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return versions[0] if len(versions) == 1 else None


def sqlite_work_engine(url: str, *, quick: bool = False) -> Engine:
    """A synchronous engine on the same SQLite file as the async engine at `url`, for units
    of work: WAL, explicit BEGIN IMMEDIATE. `quick`: for the event loop's own connection,
    which never waits for SQLite's lock (another process's write sends its unit to the
    database thread) nor checkpoints (`_checkpoint` does, in the database thread: a
    checkpoint syncs the file to disk, which must not stall the loop)."""
    sync_url = make_url(url).set(drivername="sqlite")
    engine = create_engine(sync_url)
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "connect", _sqlite_no_implicit_begin)
    if quick:
        event.listen(engine, "connect", _sqlite_quick)
    event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def _sqlite_quick(dbapi_conn, _record) -> None:
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


#: The most rows a unit of a sale's path may touch and still run quick (`Database.run`): a
#: batch of them costs SQLite a few milliseconds at most.
QUICK_ROWS = 500

#: Quick units committed between two checkpoints of the write-ahead log: at a few pages each,
#: about the 1,000 pages at which SQLite itself would checkpoint.
CHECKPOINT_EVERY = 250


def _busy(exc: Exception) -> bool:
    """SQLite's lock is held elsewhere (the driver's error, or SQLAlchemy's around it)."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in str(orig)


def _checkpoint(engine: Engine, local: _Connections, opened: list[Connection]) -> None:
    """Copy the write-ahead log's committed pages into the database (PASSIVE: no waiting on
    readers or writers), on a database thread's connection."""
    driver = _thread_connection(engine, local, opened).connection.driver_connection
    assert driver is not None
    driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class _Connections(threading.local):
    """Each database thread's own connection, kept open between units (checking one out of
    the pool and back for every unit was a third of a small unit's cost)."""

    conn: Connection | None = None


def _thread_connection(engine: Engine, local: _Connections, opened: list[Connection]) -> Connection:
    """This database thread's own connection, opened on first use (or after it broke)."""
    conn = local.conn
    if conn is None or conn.closed or conn.invalidated:
        conn = local.conn = engine.connect()
        opened.append(conn)
    return conn


def _in_transaction(
    engine: Engine, work: Work[T], write: bool, local: _Connections, opened: list[Connection]
) -> T:
    conn = _thread_connection(engine, local, opened)
    conn.info["read_only"] = not write
    with conn.begin():
        return work(conn)
