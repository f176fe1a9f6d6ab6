"""One active agent per shop database; a second `shopsync run` on it waits as a standby.

Two agents writing one shop's ledger would each take the next seq of the shop's stream, and
the group would hold two different events under one id. So `shopsync run` first takes the
database's lock, before it migrates or reads anything:

- on PostgreSQL, a session-level advisory lock (`pg_advisory_lock`) on a connection of its
  own. PostgreSQL drops it the moment that session ends, a `kill -9` of the process or a lost
  host included, and the waiting standby's `pg_advisory_lock` returns at once: two agent
  processes (on two hosts, say, behind one address) give a shop a hot standby;
- on SQLite, an exclusive `flock` on `agent.lock` in the data directory: the kernel drops it
  when the process ends, however it ends.

An active agent checks its lock's connection every `WATCH` seconds; if PostgreSQL no longer
answers on it, the lock may be gone (and a standby may take it): the agent stops at once
(fail-stop), as after a `kill -9`, which loses nothing (every unit of work is committed before
it is acknowledged). The standby then goes on from the database, exactly as a restart does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

__all__ = ["LOCK_KEY", "ShopLock", "hold"]

#: The advisory lock's key: "shopsync" as a signed 64-bit integer. One agent per database.
LOCK_KEY = int.from_bytes(b"shopsync", "big", signed=True)
WATCH = 1.0  # seconds between the active agent's checks that it still holds its lock
ANSWER = 5.0  # seconds PostgreSQL has to answer a check


class ShopLock:
    """The lock an active agent holds on its shop's database, until the process ends."""

    def __init__(self, *, conn: Any = None, fd: int | None = None) -> None:
        self._conn = conn  # asyncpg connection holding the advisory lock (PostgreSQL)
        self._fd = fd  # the locked file (SQLite)

    async def watch(self, lost: Callable[[str], None]) -> None:
        """Until cancelled: check the lock's session every `WATCH` seconds; call `lost` with
        the reason once it fails (PostgreSQL; on SQLite the kernel holds the lock)."""
        if self._conn is None:
            return
        while True:
            await asyncio.sleep(WATCH)
            try:
                await asyncio.wait_for(self._conn.fetchval("SELECT 1"), ANSWER)
            except Exception as exc:  # any failure: the session, and so the lock, may be gone
                lost(f"{type(exc).__name__}: {exc}")
                return

    async def release(self) -> None:
        """Let the lock go (a graceful stop: a standby takes over at once)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def hold(db_url: str, data_dir: Path, waiting: Callable[[str], None]) -> ShopLock:
    """Take the shop database's lock, waiting while another agent process holds it (`waiting`
    is told once, with what the agent waits for)."""
    url = make_url(db_url)
    if url.get_backend_name() == "postgresql":
        import asyncpg

        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            waiting(
                f"another agent process holds this shop's database ({url.database} on "
                f"{url.host}): this one is its standby and takes over when it stops"
            )
            await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        return ShopLock(conn=conn)
    path = data_dir / "agent.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        waiting(
            f"another agent process runs on {data_dir}: this one waits and takes over when it stops"
        )
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
    return ShopLock(fd=fd)
