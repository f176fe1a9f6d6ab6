"""Scale benchmark: a join's snapshot at 100,000 and 1,000,000 SKUs, and one agent at 1,000,000.

For each size, two SQLite databases made by the agent's migrations: a master holding N pools
(and a vector) and a joiner holding its own solo ledger of the same N SKUs (pools and items,
as after its first reconciliation). Then the joiner takes the master's snapshot, as a join
does, in a child process of its own (`--child`) so that its peak RSS is the snapshot's alone:

- **paged** (what agents do now): the master spools the snapshot in one read transaction
  (`agent.snapshots.Spool`), each page goes through its JSON wire form into the joiner's
  `incoming_pool` in its own unit of work, then the pre-flight's read of the staged counts
  and the install (`ledger.install`), in one transaction;
- **whole** (what releases before paging did, and what a master of an earlier release still
  answers): the snapshot read and sent as one JSON document, parsed whole, then installed.

Master and joiner run in the one child process, without the HTTP hop (one signed request per
page, about 1 ms of each side's CPU on this machine, is left out). Figures per size and mode:
seconds to spool, to transfer, to install, in all; the child's peak RSS over its baseline.
Then one real agent and its emulated Shopify shop (processes, SQLite, `--agent-sizes`, default
1,000,000; quick 20,000): start and first full pass, a second full pass (time, platform
API requests, and the CPU the agent and the emulator spent on it: most of a pass's time is the
emulator running the bulk query through graphql-core, which on Shopify is the platform's own
time), and the agent's peak RSS (`rss_mb_1m`). And history (`--sales`, default
1,000,000; quick 100,000): one agent's database of 10,000 SKUs takes that many sales as its
events, a member acknowledging them, with history kept (as before compaction) or compacted
every 20,000 sales: size on disk and snapshot time before and after (`db_mb_after_compaction`).
On PostgreSQL the bench runs VACUUM every 20,000 sales in both modes, as autovacuum would (it
is off on this machine's server): deleted rows are reused, not returned to the system.
Joins of emulated shops of these sizes are not here yet.

    .venv/bin/python bench/scale.py [--quick] [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from argparse import SUPPRESS
from pathlib import Path
from typing import Any

from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the root

from bench._harness import (
    PG_ADMIN,
    PG_CREATE,
    PG_DROP,
    emit_json,
    out,
    pg_each,
    pg_reachable,
    pg_url,
)

MODES = ("paged", "whole")
HISTORY_MODES = ("kept", "compacted")
MASTER_JOINER = ("master", "joiner")
ENGINES = ("sqlite", "postgresql")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="20,000 and 100,000 SKUs")
    p.add_argument("--sizes", help="catalogue sizes (default 100000,1000000)")
    p.add_argument(
        "--engines",
        default="sqlite,postgresql",
        help="databases to run on (default both; PostgreSQL from $SHOPSYNC_BENCH_PG, "
        "skipped when it cannot be reached)",
    )
    p.add_argument(
        "--agent-sizes",
        help="catalogues one real agent and emulator run through (default 1000000; quick "
        "20000; 0: none)",
    )
    p.add_argument(
        "--sales",
        type=int,
        help="sales over 10,000 SKUs for the history part (default 1000000; quick 100000; 0: none)",
    )
    p.add_argument(
        "--join-sizes",
        help="catalogues of the joins of emulated shops: bench/import.py and bench/latency.py's "
        "sizes part at each (default 100000; quick 20000; 0: none)",
    )
    p.add_argument("--child", nargs=4, metavar=("STEP", "SKUS", "DIR", "ENGINE"), help=SUPPRESS)
    args = p.parse_args(argv)
    default = "20000,100000" if args.quick else "100000,1000000"
    args.sizes = [int(s) for s in (args.sizes or default).split(",") if int(s) > 0]
    agents = args.agent_sizes or ("20000" if args.quick else "1000000")
    args.agent_sizes = [int(s) for s in agents.split(",") if int(s) > 0]
    joins = args.join_sizes or ("20000" if args.quick else "100000")
    args.join_sizes = [int(s) for s in joins.split(",") if int(s) > 0]
    if args.sales is None:
        args.sales = 100_000 if args.quick else 1_000_000
    args.engines = [e.strip() for e in args.engines.split(",")]
    if not set(args.engines) <= set(ENGINES):
        p.error(f"--engines: choose from {', '.join(ENGINES)}")
    return args


# -- the child: one size, one mode ---------------------------------------------------------------


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pg_name(workdir: Path, role: str) -> str:
    return f"shopsync_scale_{workdir.name.replace('-', '_')}_{role}".lower()


def _urls(workdir: Path, engine: str) -> list[str]:
    if engine == "sqlite":
        return [f"sqlite+aiosqlite:///{workdir / role}.db" for role in MASTER_JOINER]
    return [pg_url(_pg_name(workdir, role), driver="asyncpg") for role in MASTER_JOINER]


def _open(workdir: Path, engine: str) -> tuple[Any, Any]:
    from agent.db import Database

    master, joiner = (Database(url) for url in _urls(workdir, engine))
    return master, joiner


async def _pg(workdir: Path, statement: str) -> None:
    """CREATE or DROP the run's two PostgreSQL databases."""
    await pg_each([_pg_name(workdir, role) for role in MASTER_JOINER], statement)


async def _fill(skus: int, workdir: Path, engine: str) -> None:
    """The master's and the joiner's databases, migrated and filled (in a child of its own:
    what filling them costs is not the snapshot's)."""
    from agent.sql import Tx

    names = [f"SKU-{i:07d}" for i in range(skus)]
    for role, db in zip(MASTER_JOINER, _open(workdir, engine), strict=True):
        await db.upgrade()

        def fill(conn: Any, role: str = role) -> None:
            tx = Tx(conn)
            tx.run(
                "INSERT INTO identity (id, domain, epoch, public_key, created_at) "
                "VALUES (1, ?, 'e1', 'k', 0)",
                (f"{role}.example.com",),
            )
            count = 100 if role == "master" else 80
            tx.many(
                "INSERT INTO pool (sku, base, base_created, base_origin, deltas, updated_at) "
                "VALUES (?, ?, 1.0, ?, ?, 1.0)",
                ((sku, count, f"{role}.example.com", -(i % 7)) for i, sku in enumerate(names)),
            )
            tx.run(
                "INSERT INTO vector (origin, epoch, seq) VALUES (?, 'e1', ?)",
                (f"{role}.example.com", skus),
            )
            if role == "joiner":
                tx.many(
                    "INSERT INTO item (item_id, sku, title, published, created_at, "
                    "cutover_pending, updated_at) VALUES (?, ?, '', 80, 1.0, FALSE, 1.0)",
                    ((f"gid://shopify/InventoryItem/{i}", sku) for i, sku in enumerate(names)),
                )

        await db.run(fill)
        await db.dispose()


async def _child(mode: str, skus: int, workdir: Path, engine: str) -> dict[str, Any]:
    from agent import ledger
    from agent.clock import SystemClock
    from agent.models import Identity
    from agent.snapshots import Spool
    from agent.wire import (
        MAX_PAGE,
        pools_from_wire,
        snapshot_from_wire,
        snapshot_head_from_wire,
        snapshot_to_wire,
    )

    master, joiner = _open(workdir, engine)
    me = Identity(id=1, domain="joiner.example.com", epoch="e1", public_key="k", created_at=0)
    base = _rss_mb()
    started = time.perf_counter()
    if mode == "paged":
        spool = Spool(workdir / "spool", SystemClock())
        answer = json.loads(json.dumps(await spool.make(master)))
        spooled = time.perf_counter()
        head, snapshot_id, pages, _count = snapshot_head_from_wire(answer)
        for number in range(pages):
            wire = json.dumps({"pools": spool.page(snapshot_id, number)})
            page = pools_from_wire(json.loads(wire)["pools"], MAX_PAGE)
            await joiner.run(lambda conn, page=page: ledger.stage(conn, page))
        spool.close()
    else:
        wire = json.dumps(snapshot_to_wire(await master.read(ledger.snapshot)))
        spooled = time.perf_counter()
        snap = snapshot_from_wire(json.loads(wire))
        del wire
        head = ledger.SnapshotHead(vector=snap.vector, extra=snap.extra)
        await joiner.run(lambda conn: ledger.stage(conn, snap.pools))
        del snap
    transferred = time.perf_counter()
    counted = len(await joiner.read(ledger.staged_counts))  # what the pre-flight reads
    installed, _epoch = await joiner.run(
        lambda conn: ledger.install(conn, head, me, 2.0, lambda _e: "")
    )
    done = time.perf_counter()
    assert counted == installed == skus, (counted, installed)
    await master.dispose()
    await joiner.dispose()
    return {
        "spool_s": round(spooled - started, 2),
        "transfer_s": round(transferred - spooled, 2),
        "install_s": round(done - transferred, 2),
        "total_s": round(done - started, 2),
        "rss_mb": round(_rss_mb() - base, 1),
    }


# -- history: a million sales over ten thousand SKUs, kept or compacted --------------------------

HISTORY_SKUS = 10_000
SALES_BATCH = 1_000  # sales per transaction (a busy shop's events arrive in such batches)
COMPACT_EVERY = 20_000  # sales between two compaction passes (a minute of a very busy group)


async def _history(mode: str, sales: int, workdir: Path, engine: str) -> dict[str, Any]:
    """One agent's database: 10,000 SKUs introduced, then `sales` sales appended as its
    events, a member acknowledging them as it goes. `kept`: nothing is compacted (what
    agents did before); `compacted`: a compaction pass every 20,000 sales. Sizes on disk
    before and after, the snapshot's time before and after, the compaction passes' time."""
    import random

    from agent import ledger
    from agent.clock import SystemClock
    from agent.compaction import Compactor
    from agent.ledger import NewEvent
    from agent.models import Identity
    from agent.snapshots import Spool
    from agent.sql import Tx
    from agent.syncmode import SyncMode

    db = _open(workdir, engine)[0]
    await db.upgrade()
    me = Identity(id=1, domain="a.example.com", epoch="e1", public_key="k", created_at=0)
    own = ("a.example.com", "e1")
    names = [f"SKU-{i:07d}" for i in range(HISTORY_SKUS)]

    def setup(conn: Any) -> None:
        tx = Tx(conn)
        tx.run(
            "INSERT INTO identity (id, domain, epoch, public_key, created_at) "
            "VALUES (1, 'a.example.com', 'e1', 'k', 0)"
        )
        tx.run(
            "INSERT INTO peer (domain, agent_url, public_key, fingerprint, state, changed_at, "
            "joined_at, last_contact, last_error, acked, proof, admission) VALUES "
            "('b.example.com', 'http://b', 'k', 'SHA256:b', 'active', 1, ?, ?, '', '[]', '', '')",
            (time.time(), time.time()),
        )
        intro = [NewEvent(n, "introduce", count=10**6, item_created=1.0) for n in names]
        ledger.append(conn, me, intro, 1.0, lambda _e: "")

    def acked(conn: Any) -> None:  # the member acknowledges all it was sent
        seq = ledger.vector(conn)[own]
        Tx(conn).run("UPDATE peer SET acked = ?, last_contact = ?", (
            json.dumps([[*own, seq]]), time.time()))  # fmt: skip

    await db.run(setup)
    await db.run(acked)
    compactor = Compactor(db=db, identity=me, clock=SystemClock(), mode=SyncMode(db))
    if mode == "compacted":
        await compactor.compact()
    size_before = await _db_mb(db, engine, workdir)
    snap_before = await _snapshot_s(db, workdir, Spool)
    rng = random.Random(1)
    compact_s = 0.0
    started = time.perf_counter()
    for done in range(0, sales, SALES_BATCH):
        batch = [NewEvent(rng.choice(names), "change", delta=-1) for _ in range(SALES_BATCH)]
        await db.run(lambda conn, b=batch: ledger.append(conn, me, b, 2.0, lambda _e: ""))
        if (done + SALES_BATCH) % COMPACT_EVERY == 0:
            if mode == "compacted":
                await db.run(acked)
                t = time.perf_counter()
                await compactor.compact()
                compact_s += time.perf_counter() - t
            if engine == "postgresql":  # what autovacuum does (it is off on some servers)
                await _vacuum(workdir)
    appended = time.perf_counter() - started
    held = await db.read(lambda conn: Tx(conn).one("SELECT COUNT(*) FROM event")[0])
    size_after = await _db_mb(db, engine, workdir)
    snap_after = await _snapshot_s(db, workdir, Spool)
    await db.dispose()
    return {
        "db_mb_before": size_before,
        "db_mb_after": size_after,
        "events_held": held,
        "snapshot_s_before": snap_before,
        "snapshot_s_after": snap_after,
        "sales_per_s": round(sales / appended),
        "compact_s": round(compact_s, 2),
    }


async def _vacuum(workdir: Path) -> None:
    """VACUUM the bench's PostgreSQL database (dead rows made reusable, as autovacuum would;
    it cannot run in a transaction, so on a connection of its own)."""
    import asyncpg

    conn = await asyncpg.connect(pg_url(_pg_name(workdir, "master")))
    try:
        await conn.execute("VACUUM")
    finally:
        await conn.close()


async def _db_mb(db: Any, engine: str, workdir: Path) -> float:
    """The database's size on disk (SQLite: its file after a WAL checkpoint)."""
    from agent.sql import Tx

    if engine == "sqlite":
        import sqlite3

        with contextlib.closing(sqlite3.connect(workdir / "master.db")) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        files = [workdir / "master.db", workdir / "master.db-wal"]
        return round(sum(f.stat().st_size for f in files if f.exists()) / 2**20, 1)
    size = await db.read(lambda conn: Tx(conn).one("SELECT pg_database_size(current_database())"))
    return round(size[0] / 2**20, 1)


async def _snapshot_s(db: Any, workdir: Path, spool_class: Any) -> float:
    """Seconds to spool a joiner's snapshot of the database."""
    from agent.clock import SystemClock

    spool = spool_class(workdir / "spool", SystemClock())
    started = time.perf_counter()
    await spool.make(db)
    took = time.perf_counter() - started
    spool.close()
    return round(took, 2)


# -- the parent: a child per size and mode --------------------------------------------------------


def _short(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


def _bench(name: str, *argv: str) -> dict[str, Any]:
    """Run `bench/NAME.py ARGV` as a user would; its JSON line ({} if it failed)."""
    bench = Path(__file__).resolve().parent / f"{name}.py"
    child = subprocess.run(
        [sys.executable, str(bench), *argv], capture_output=True, text=True, check=False
    )
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        out.print(f"[red]bench/{name}.py {' '.join(argv)} failed[/]: {child.stderr[-2000:]}")
        return {}
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def _join_part(skus: int) -> dict[str, Any]:
    """A join of emulated shops of `skus` SKUs, twice: a shop taking over the master's counts
    on the Standard plan (`bench/import.py`: time against the rate limit's minimum), then a
    group of three formed by two joins and 50 sales/s through it (`bench/latency.py --parts
    sizes`: snapshot install, cut-over, latency)."""
    tag = _short(skus)
    imported = _bench("import", "--skus", str(skus))
    latency = _bench("latency", "--parts", "sizes", "--sizes", str(skus))
    return {
        "import_s": imported.get("import_s"),
        "minimum_s": imported.get("minimum_s"),
        "import_ratio": imported.get("ratio"),
        "import_agent_cpu_s": imported.get("agent_import_cpu_s"),
        "join_snapshot_s": latency.get(f"snapshot_s_{tag}"),
        "cutover_s": latency.get(f"cutover_s_{tag}"),
        "p50_ms": latency.get(f"p50_ms_{tag}"),
        "p99_ms": latency.get(f"p99_ms_{tag}"),
        "wrong_after_join": latency.get(f"wrong_after_join_{tag}"),
    }


def _run(engine: str, skus: int, mode: str) -> dict[str, Any]:
    """Fill two fresh databases, then take the snapshot, each in a child process (or, for
    a history mode, build and measure one database in one child)."""
    with tempfile.TemporaryDirectory(prefix="shopsync-scale-") as tmp:
        workdir = Path(tmp)
        if engine == "postgresql":
            asyncio.run(_pg(workdir, PG_CREATE))
        try:
            for step in ("fill", mode) if mode in MODES else (mode,):
                child = subprocess.run(
                    [sys.executable, __file__, "--child", step, str(skus), tmp, engine],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if child.returncode != 0:
                    out.print(f"[red]{engine} {mode} at {skus:,} failed[/]: {child.stderr[-2000:]}")
                    return {}
        finally:
            if engine == "postgresql":
                asyncio.run(_pg(workdir, PG_DROP))
    figures: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return figures


async def _agent_part(skus: int) -> dict[str, Any]:
    """One emulated Shopify shop of `skus` items and its agent (real processes, SQLite): the
    agent's start and first full pass, its peak RSS, then one more full pass: its time and the
    platform API requests it made."""
    import aiohttp

    from bench._harness import Node, post_json, proc_usage, wait_idle

    with tempfile.TemporaryDirectory(prefix="shopsync-scale-agent-") as tmp:
        # only the bench asks for passes: at 1,000,000 SKUs a pass outlasts the default
        # interval (300 s), and the next one would follow at once, never idle in between
        settings = {"reconcile_interval": 86_400.0}
        node = Node(Path(tmp), 0, skus=skus, available=100, plan="plus", agent_settings=settings)
        timeout = aiohttp.ClientTimeout(total=900)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            try:
                # `/api/status` counts whole tables (about 0.5 s of the agent's database time at
                # 1,000,000 SKUs): polled at 5 Hz it would be most of what the agent does
                poll = max(0.2, skus / 200_000)
                started = time.monotonic()
                await node.start(timeout=300)
                if await wait_idle(http, [node], 600 + skus * 0.005, interval=poll) is None:
                    raise RuntimeError("the first full pass did not end")
                first = time.monotonic() - started
                before = (await node.status(http))["last_reconcile"]
                stats0 = await node.emu_stats(http)
                cpu0 = proc_usage(node.agent_pid).cpu_s, proc_usage(node.emulator_pid).cpu_s
                passed = time.monotonic()
                await post_json(http, f"{node.agent_url}/api/reconcile", token=node.token)
                for _ in range(int((600 + skus * 0.005) / poll)):
                    if (await node.status(http))["last_reconcile"] != before:
                        break
                    await asyncio.sleep(poll)
                else:
                    raise RuntimeError("the second full pass did not end")
                again = time.monotonic() - passed
                stats1 = await node.emu_stats(http)
                usage = proc_usage(node.agent_pid)
                emulator_cpu = proc_usage(node.emulator_pid).cpu_s - cpu0[1]
            finally:
                await node.stop()
    return {
        "first_pass_s": round(first, 1),
        "reconcile_s": round(again, 1),
        "reconcile_requests": stats1["requests"] - stats0["requests"],
        "reconcile_agent_cpu_s": round(usage.cpu_s - cpu0[0], 1),
        "reconcile_emulator_cpu_s": round(emulator_cpu, 1),
        "rss_mb": round(usage.peak_rss_mb, 1),
    }


def main() -> None:
    args = parse()
    if args.child:
        step, skus, directory, engine = args.child
        if step == "fill":
            asyncio.run(_fill(int(skus), Path(directory), engine))
        elif step in HISTORY_MODES:
            print(json.dumps(asyncio.run(_history(step, int(skus), Path(directory), engine))))
        else:
            print(json.dumps(asyncio.run(_child(step, int(skus), Path(directory), engine))))
        return
    engines = list(args.engines)
    if "postgresql" in engines and not asyncio.run(pg_reachable()):
        out.print(f"[yellow]PostgreSQL at {PG_ADMIN} cannot be reached: its rows are skipped[/]")
        engines.remove("postgresql")
    rows: list[tuple[str, int, str, dict[str, Any]]] = []
    for engine in engines:
        for skus in args.sizes:
            for mode in MODES:
                out.print(f"{engine}: {mode} snapshot of {skus:,} SKUs …")
                rows.append((engine, skus, mode, _run(engine, skus, mode)))
    table = Table(title="A join's snapshot (master and joiner in one child process, no HTTP)")
    columns = ("database", "SKUs", "mode", "spool s", "transfer s", "install s", "total s")
    for col in (*columns, "peak RSS MB"):
        table.add_column(col, justify="right")
    for engine, skus, mode, f in rows:
        keys = ("spool_s", "transfer_s", "install_s", "total_s", "rss_mb")
        table.add_row(engine, f"{skus:,}", mode, *(str(f.get(k, "failed")) for k in keys))
    if rows:
        out.print(table)
    figures: dict[str, Any] = {"sizes": args.sizes, "engines": engines}
    for engine, skus, mode, f in rows:
        tag = _short(skus) + ("" if engine == "sqlite" else "_pg")
        prefix = "snapshot" if mode == "paged" else "whole_snapshot"
        figures[f"{prefix}_s_{tag}"] = f.get("total_s")
        figures[f"{prefix}_rss_mb_{tag}"] = f.get("rss_mb")
        if mode == "paged":
            figures[f"snapshot_install_s_{tag}"] = f.get("install_s")
    if args.sales:
        history = Table(
            title=f"{args.sales:,} sales over {HISTORY_SKUS:,} SKUs: history kept or compacted "
            f"(a pass every {COMPACT_EVERY:,} sales)"
        )
        columns = ("database", "history", "MB before", "MB after", "events held")
        columns += ("snapshot s before", "snapshot s after", "sales/s", "compaction s")
        for col in columns:
            history.add_column(col, justify="right")
        keys = ("db_mb_before", "db_mb_after", "events_held", "snapshot_s_before")
        keys += ("snapshot_s_after", "sales_per_s", "compact_s")
        for engine in engines:
            for mode in HISTORY_MODES:
                out.print(f"{engine}: {args.sales:,} sales, history {mode} …")
                f = _run(engine, args.sales, mode)
                history.add_row(engine, mode, *(str(f.get(k, "failed")) for k in keys))
                tag = "" if engine == "sqlite" else "_pg"
                if mode == "compacted":
                    figures[f"db_mb_after_compaction{tag}"] = f.get("db_mb_after")
                    figures[f"db_mb_before_sales{tag}"] = f.get("db_mb_before")
                    figures[f"snapshot_s_after_compaction{tag}"] = f.get("snapshot_s_after")
                    figures[f"compaction_s{tag}"] = f.get("compact_s")
                else:
                    figures[f"db_mb_history_kept{tag}"] = f.get("db_mb_after")
                    figures[f"snapshot_s_history_kept{tag}"] = f.get("snapshot_s_after")
        figures["sales"] = args.sales
        out.print(history)
    if args.agent_sizes:
        agents = Table(title="One agent and its emulated shop (real processes, SQLite, Plus plan)")
        columns = ("SKUs", "start + first pass s", "full pass s", "API requests")
        columns += ("agent CPU s", "emulator CPU s", "peak RSS MB")
        for col in columns:
            agents.add_column(col, justify="right")
        for skus in args.agent_sizes:
            out.print(f"one agent with {skus:,} SKUs …")
            f = asyncio.run(_agent_part(skus))
            tag = _short(skus)
            figures |= {
                f"first_pass_s_{tag}": f["first_pass_s"],
                f"reconcile_s_{tag}": f["reconcile_s"],
                f"reconcile_requests_{tag}": f["reconcile_requests"],
                f"reconcile_agent_cpu_s_{tag}": f["reconcile_agent_cpu_s"],
                f"reconcile_emulator_cpu_s_{tag}": f["reconcile_emulator_cpu_s"],
                f"rss_mb_{tag}": f["rss_mb"],
            }
            agents.add_row(f"{skus:,}", *(str(f[k]) for k in f))
        out.print(agents)
    if args.join_sizes:
        joins = Table(title="Joins of emulated shops (real processes, SQLite, loopback HTTP)")
        columns = ("SKUs", "import s", "rate-limit minimum s", "ratio", "agent CPU s")
        columns += ("snapshot s", "cut-over s", "50 sales/s p50 ms", "p99 ms", "wrong counts")
        for col in columns:
            joins.add_column(col, justify="right")
        pg_imports = Table(title="The same import with both agents on PostgreSQL")
        for col in ("SKUs", "import s", "ratio", "agent CPU s"):
            pg_imports.add_column(col, justify="right")
        for skus in args.join_sizes:
            out.print(f"joins at {skus:,} SKUs (bench/import.py, bench/latency.py) …")
            f = _join_part(skus)
            joins.add_row(f"{skus:,}", *(str(v) for v in f.values()))
            tag = _short(skus)
            figures |= {f"{k}_{tag}": v for k, v in f.items()}
            if "postgresql" in engines:
                out.print(f"import at {skus:,} SKUs on PostgreSQL (bench/import.py) …")
                g = _bench("import", "--skus", str(skus), "--engine", "postgresql")
                pg = {
                    f"import_s_{tag}_pg": g.get("import_s"),
                    f"import_ratio_{tag}_pg": g.get("ratio"),
                    f"import_agent_cpu_s_{tag}_pg": g.get("agent_import_cpu_s"),
                }
                pg_imports.add_row(f"{skus:,}", *(str(v) for v in pg.values()))
                figures |= pg
        out.print(joins)
        if "postgresql" in engines:
            out.print(pg_imports)
    emit_json("scale", figures)


if __name__ == "__main__":
    main()
