"""The simulation's runtime: an event loop on virtual time, a clock on it, inline SQLite.

Determinism needs every ordering decision to be made by the event loop alone, on virtual time:

- `VirtualLoop` is asyncio's selector loop whose `time()` is virtual. When nothing is ready it
  jumps straight to the next timer instead of waiting, so `asyncio.sleep`, `wait_for` timeouts
  and every `call_later` of the real core run on virtual time, in a reproducible order.
- `InlineDatabase` is the core's `Database` whose aiosqlite connections run each statement
  in the calling task instead of a worker thread, and whose units of work (`Database.run`)
  run inline instead of in the database thread: real SQLite files, real transactions, but
  a database call never yields to the loop, so thread timing cannot reorder tasks. A unit of
  work therefore commits or rolls back as a whole between two scheduler steps, which is
  exactly the crash model (uncommitted work is lost, committed work survives).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import selectors
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from agent.db import (
    Database,
    T,
    Work,
    _Connections,
    _in_transaction,
    _sqlite_pragmas,
    sqlite_work_engine,
)

__all__ = [
    "EPOCH",
    "Crashed",
    "Deadlock",
    "InlineDatabase",
    "VirtualClock",
    "VirtualLoop",
    "migrated_template",
    "scratch_dir",
]

EPOCH = 1_800_000_000.0  # wall-clock time at virtual t = 0


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is set: the simulation cannot make progress."""


class Crashed(BaseException):
    """Raised in an agent's task the moment its agent is killed: nothing after it runs.

    A BaseException, so that the core's `except Exception` handlers cannot survive it.
    """


class _VirtualSelector(selectors.DefaultSelector):
    """Polls real file descriptors without blocking; a wait becomes a jump in virtual time."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready:
            return ready
        assert self.loop is not None
        if timeout is None:
            raise Deadlock("no task is ready and no timer is set")
        if timeout > 0:
            self.loop.advance(timeout)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock is virtual and advances only when every task waits."""

    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual = 0.0

    def time(self) -> float:
        return self._virtual

    def advance(self, seconds: float) -> None:
        """Move virtual time forward (only the selector does, when all tasks wait)."""
        self._virtual += seconds


class VirtualClock:
    """The core's `Clock` on the running virtual loop."""

    def now(self) -> float:
        return EPOCH + asyncio.get_running_loop().time()

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class _InlineQueue:
    """Stands in for aiosqlite's queue to its worker thread: runs each call at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(result)


class _InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection without its thread: every statement runs in the caller."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _InlineQueue()  # type: ignore[assignment]

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._connect().__await__()


class InlineDatabase(Database):
    """The core's `Database` on one SQLite file, with inline (thread-free) connections."""

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite+aiosqlite:///{path}"
        self.is_sqlite = True
        self.path = path

        async def connect() -> aiosqlite.Connection:
            connector = functools.partial(sqlite3.connect, str(path), check_same_thread=False)
            return await _InlineConnection(connector)

        self.engine = create_async_engine(self.url, async_creator=connect)
        event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.write_lock = asyncio.Lock()
        self.sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        self._work_engine = sqlite_work_engine(self.url)
        self._worker = None
        self._local = _Connections()  # the one (inline) thread's connection, kept as the core's
        self._opened: list[Connection] = []
        self._quick_engine, self._quick, self._commits, self._checkpoint = None, None, 0, None
        self.dead = False  # the agent was killed: it commits nothing more
        self.after_commit: Callable[[], None] | None = None  # may kill the agent (raise Crashed)

    async def _unit(self, work: Work[T], *, write: bool, quick: bool = False) -> T:
        """A unit of work runs inline, at once, quick or not: it never yields to the loop, so
        it commits whole between two scheduler steps (or not at all)."""
        assert self._work_engine is not None
        return _in_transaction(self._work_engine, work, write, self._local, self._opened)

    async def run(self, work: Work[T], *, quick: bool = False) -> T:
        """The core's unit of work; a killed agent's never starts, and a kill may land right
        after one commits."""
        if self.dead:
            raise Crashed("the agent was killed")
        result = await super().run(work, quick=quick)
        if self.after_commit is not None:
            self.after_commit()
        return result

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """The core's writing transaction; a killed agent's never starts, and a kill may land
        right after one commits (before the code that follows it runs)."""
        if self.dead:
            raise Crashed("the agent was killed")
        async with super().transaction() as session:
            yield session
        if self.after_commit is not None:
            self.after_commit()


def scratch_dir() -> Path:
    """A fresh directory for one run's databases, in memory-backed storage where there is."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() else None
    return Path(tempfile.mkdtemp(prefix="shopsync-sim-", dir=base))


_TEMPLATE: dict[str, Path] = {}


async def migrated_template(directory: Path) -> Path:
    """A database file with every migration applied, made once per process and copied."""
    cached = _TEMPLATE.get("path")
    if cached is not None and cached.exists():
        return cached
    path = directory / "template.db"
    db = InlineDatabase(path)
    await db.upgrade()
    await db.dispose()
    keep = Path(tempfile.mkdtemp(prefix="shopsync-sim-template-", dir=directory.parent))
    atexit.register(shutil.rmtree, keep, True)
    target = keep / "template.db"
    shutil.copy(path, target)
    path.unlink()
    _TEMPLATE["path"] = target
    return target
