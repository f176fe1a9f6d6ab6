"""Shared fixtures: databases (SQLite and the real PostgreSQL), a counting core on a memory shop,
and the slow commands a test module starts as soon as the tests are collected."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from agent.db import Database
from agent.models import Identity
from tests.support.clock import FastClock
from tests.support.cluster import CALL_REPORT
from tests.support.head_start import HeadStart, stop_all
from tests.support.live import Live
from tests.support.memchannel import MemChannel, MemShop

PG_ADMIN = os.environ.get("SHOPSYNC_TEST_PG", "postgresql://127.0.0.1:5432/test")
HEAD_STARTS = pytest.StashKey[dict[str, HeadStart]]()
#: Where this run's head starts keep their traces, shared by the xdist workers.
RUN_DIR = pytest.StashKey[Path]()
RUN_DIR_OPTION = "shopsync_head_starts"


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:  # the xdist controller, or a run without workers
        config.stash[RUN_DIR] = Path(tempfile.mkdtemp(prefix="shopsync-head-starts-"))
    else:
        config.stash[RUN_DIR] = Path(workerinput[RUN_DIR_OPTION])


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # type: ignore[no-untyped-def]
    """xdist, in the controller: every worker gets the run's head-start directory."""
    node.workerinput[RUN_DIR_OPTION] = str(node.config.stash[RUN_DIR])


def pytest_unconfigure(config: pytest.Config) -> None:
    """The controller (or the only process) stops what still runs, once every test is done."""
    if getattr(config, "workerinput", None) is None and RUN_DIR in config.stash:
        stop_all(config.stash[RUN_DIR])


def _has_head_starts(item: pytest.Item) -> bool:
    return hasattr(getattr(item, "module", None), "head_starts")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that wait on a head start go last: in one process the started work then gets the
    whole suite's time (xdist's `loadfile` hands modules out largest first instead).
    Two tests with one node id are refused: xdist hands tests out by node id, so it would run
    one of them and report the rest as never collected."""
    counts = Counter(item.nodeid for item in items)
    twice = sorted(nodeid for nodeid, n in counts.items() if n > 1)
    if twice:
        raise pytest.UsageError(f"tests with the same node id (xdist would run one): {twice}")
    items.sort(key=_has_head_starts)  # stable: the order within each part is kept


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start what each module's `head_starts(names)` asks for, given its collected tests;
    under xdist, the first worker to claim a command starts it and the others share it."""
    if session.config.option.collectonly:
        return
    names: dict[object, set[str]] = {}
    for item in filter(_has_head_starts, session.items):
        names.setdefault(item.module, set()).add(item.originalname)  # type: ignore[attr-defined]
    run_dir = session.config.stash[RUN_DIR]
    started: dict[str, HeadStart] = {}
    for module, tests in names.items():
        for name, command in module.head_starts(tests).items():  # type: ignore[attr-defined]
            started[name] = HeadStart.claim(run_dir, name, command)
    session.config.stash[HEAD_STARTS] = started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each test's outcome on it, for the fixtures that hand a shared group on
    (`tests.support.cluster.SharedCluster`)."""
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report


@pytest.fixture(scope="session")
def head_started(request: pytest.FixtureRequest) -> dict[str, HeadStart]:
    """The commands started at collection (tests/support/head_start.py), by name."""
    return request.config.stash.get(HEAD_STARTS, {})


async def _pg_create() -> str:
    name = f"shopsync_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _pg_drop(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _pg_url(name: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


@pytest_asyncio.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request, tmp_path) -> AsyncIterator[str]:
    """A fresh, empty database URL: SQLite file, or a new database on the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    name = await _pg_create()
    try:
        yield _pg_url(name)
    finally:
        await _pg_drop(name)


@pytest_asyncio.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    """A migrated database with this agent's identity row (domain a.example.com)."""
    db = Database(db_url)
    await db.upgrade()
    async with db.sessions.begin() as session:
        session.add(
            Identity(id=1, domain="a.example.com", epoch="e1", public_key="k", created_at=0)
        )
    yield db
    await db.dispose()


@pytest_asyncio.fixture
async def sqlite_db(tmp_path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'core.db'}")
    await db.upgrade()
    async with db.sessions.begin() as session:
        session.add(
            Identity(id=1, domain="a.example.com", epoch="e1", public_key="k", created_at=0)
        )
    yield db
    await db.dispose()


@pytest.fixture
def memshop() -> MemShop:
    return MemShop()


@pytest.fixture
def clock() -> FastClock:
    return FastClock()


async def settle(reconciler, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Let a reconciler run until it has nothing queued or in flight."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    calm = 0
    while loop.time() < deadline:
        await asyncio.sleep(0.005)
        state = reconciler.status()
        calm = calm + 1 if state.ready and state.idle else 0
        if calm >= 3:  # idle on three looks in a row: no follow-up work was queued
            return
    raise AssertionError(f"reconciler did not settle: {reconciler.status()}")


__all__ = ["MemChannel", "settle"]


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    """An event loop in a background thread, for real processes driven from sync tests."""
    box = Live()
    try:
        yield box
    finally:
        box.close()
