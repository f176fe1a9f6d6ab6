"""Import of the group's counts into this shop, maintenance mode, progress (DESIGN §8).

An import writes the group's count of every SKU into the shop. Per SKU the successful write is
the cut-over: until then the shop's count is its old stock (changes to it are not events),
from then on every change is an event. The cut-over flags live in the item table and write
batches carry persisted idempotency keys, so an import killed at any point resumes where it
stopped and writes nothing twice. Maintenance mode closes the storefront where the platform
can and holds outgoing sync; local changes are still recorded and are sent when it ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from sqlalchemy import func
from sqlmodel import col, select

from agent import synclog
from agent.catalogue import SkuRule, classify
from agent.channel import Channel, Item
from agent.clock import Clock
from agent.db import Database
from agent.ledger import NewEvent
from agent.models import ItemRow, PoolRow
from agent.reconcile import Reconciler
from agent.syncmode import SyncMode
from agent.warehouses import parse_listing

__all__ = [
    "IMPORT_MODES",
    "JOIN_OPTIONS",
    "LEFT_GROUP",
    "SNAPSHOT_DOWNLOAD",
    "WHILE_OUT_CHOICES",
    "Importer",
    "ImportError_",
]

log = structlog.get_logger(__name__)

#: agent_state key of a join's snapshot download: which snapshot, how many pages, the next.
SNAPSHOT_DOWNLOAD = "snapshot_download"
#: agent_state key of the group this agent left (its members) and the stream of its own it had
#: then: joining that group again, the changes of that stream the group lacks are counted.
LEFT_GROUP = "left_group"
#: agent_state key of a member's re-import after history it lacked was folded everywhere.
REBASE = "rebase"
#: agent_state key of the owner's choices for the join requested last (`while_out`).
JOIN_OPTIONS = "join_options"
#: What a shop joining its group again does with the changes it made while out of it.
WHILE_OUT_CHOICES = ("count", "discard")
EXAMPLES = 1000  # rows of each kind shown in a report; totals are always complete

#: What each kind of import does with the shop's own counts, in the words the CLI and page use.
IMPORT_MODES = {
    "join": "this shop takes the group's counts: its own counts are replaced",
    "rejoin": "this shop was in this group before: the changes it made while out of it "
    "(sales, edits) are counted first, as sales are, and move the group's count in every "
    "shop; then this shop takes the group's counts",
    "reimport": "this shop's changes are counted first: a count that moved since the agent "
    "last saw it is this shop's own change (as a sale is) and moves the group's count in "
    "every shop; then this shop is set to the group's counts",
}


class ImportError_(Exception):
    """An import cannot start; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


class Importer:
    """Runs imports and maintenance mode for one agent."""

    def __init__(
        self,
        *,
        db: Database,
        channel: Channel,
        clock: Clock,
        reconciler: Reconciler,
        mode: SyncMode,
        sku_rule: SkuRule,
    ) -> None:
        self.db = db
        self.channel = channel
        self.clock = clock
        self.reconciler = reconciler
        self.mode = mode  # maintenance is a sync mode: this shop's own changes are held back
        self.sku_rule = sku_rule
        self.task: asyncio.Task[None] | None = None
        self.resyncing = False

    # -- maintenance ---------------------------------------------------------------------------

    async def maintenance(self) -> dict[str, Any]:
        return dict(self.mode.maintenance)

    async def set_maintenance(self, on: bool, *, auto: bool = False) -> dict[str, Any]:
        """Close (or open) the storefront where possible and hold (or release) outgoing sync."""
        current = await self.maintenance()
        if current.get("on") == on:
            return current
        storefront = await self.channel.set_storefront_open(not on)
        state = {
            "on": on,
            "auto": auto,
            "since": self.clock.now(),
            "storefront_closed": on and storefront,
        }
        await self.mode.set_maintenance(state)
        async with self.db.transaction() as session:
            message = (
                (
                    "storefront closed, "
                    if storefront
                    else "storefront stays open (platform cannot close it), "
                )
                + "outgoing sync held; local changes are recorded"
                if on
                else "outgoing sync released: held changes are being sent"
            )
            synclog.record(
                session,
                "maintenance_on" if on else "maintenance_off",
                self.clock.now(),
                message=message,
            )
        return state

    async def restore(self) -> None:
        """On start: re-apply maintenance and resume an import that a crash interrupted.

        Maintenance an import turned on (`auto`) ends with that import: if the agent stopped
        after the import was recorded done but before maintenance was turned off, it is turned
        off now, or the shop's own changes would be held back for good.
        """
        maintenance = await self.maintenance()
        state = await self.db.get_state("import", {})
        if state.get("state") == "running" and state.get("phase") == "writing":
            log.info("import_resumed", total=state.get("total"))
            self.task = asyncio.create_task(self._write_phase())
        elif maintenance.get("on") and maintenance.get("auto") and state.get("state") != "running":
            log.info("import_maintenance_released", import_state=state.get("state"))
            await self.set_maintenance(False)

    # -- the pre-flight report -------------------------------------------------------------------

    async def preflight(
        self,
        pools: dict[str, int] | None = None,
        *,
        while_out: dict[str, int] | None = None,
        count_while_out: bool = True,
    ) -> dict[str, Any]:
        """What an import would do, SKU by SKU; changes nothing.

        With `pools` (a join: the master's counts), this shop takes the group's counts: its
        own are replaced (`mode` "join"). Without (an admin's re-import on a member, `mode`
        "reimport"), the run re-reads every item it syncs and counts a count that moved since
        the agent last saw it as this shop's own change, as it would count a sale, so the
        group's count moves with it in every shop (`counted`); then it writes the group's
        count where the shop shows another (`to_change`: the count after that).

        `while_out` (a join into the group this shop left before: its changes since, by SKU)
        are counted the same way (`mode` "rejoin"), or with `count_while_out` False listed as
        what the join discards (`discarded`).
        """
        joining = pools is not None
        known = await self._known_items() if joining else None
        listed = known if known is not None else [it async for it in self.channel.list_items()]
        keyed = [(it.item_id, self.sku_rule.key(it)) for it in listed]
        verdict = classify(keyed)
        rows: dict[str, ItemRow] = {}
        async with self.db.sessions() as session:
            if pools is None:
                held = await session.exec(select(PoolRow))
                pools = {p.sku: value for p in held if (value := p.value) is not None}
                rows = {r.item_id: r for r in await session.exec(select(ItemRow))}
        bundles = self.reconciler.bundles()
        to_change: list[dict[str, Any]] = []
        counted: list[dict[str, Any]] = []
        discarded: list[dict[str, Any]] = []
        not_yet: list[str] = []
        dupes: dict[str, list[dict[str, str]]] = {}
        no_sku: list[dict[str, str]] = []
        here: set[str] = set()
        groups: dict[str, int] = {}  # the group's count of each SKU after the changes counted
        shown: list[tuple[str, str, int]] = []  # (sku, item_id, count the shop shows)

        listings = self.reconciler.listings()  # the group's bundles, the shop's locations

        def group_of(key: str) -> int | None:
            return groups.get(key, pools.get(key))

        def count(sku: str, item_id: str, shop: int, last_seen: int, into: list[Any]) -> None:
            """A change of the shop's (`shop` against `last_seen`) counted into the group's
            count as the run counts it (`Listings.expand`): a bundle's into its components',
            a location's into its warehouses'."""
            event = NewEvent(sku, "change", delta=shop - last_seen, cause="reimport")
            parts = [(e.sku, e.delta) for e in listings.expand([event], group_of)[0]]
            for part, change in parts:
                group = group_of(part)
                if not change or group is None:
                    continue
                into.append(
                    {
                        "sku": part,
                        "item_id": item_id,
                        "shop": shop,
                        "last_seen": last_seen,
                        "change": change,
                        "group_before": group,
                        "group_after": group + change,
                    }
                )
                if into is counted:
                    groups[part] = group + change

        def new_to_group(sku: str) -> str | None:
            """The key a listing the group has no count of introduces (None: it has one, or
            is a bundle, or sells from no warehouse)."""
            bare, location = parse_listing(sku)
            keys = listings.locations.keys(location, bare)
            if bundles.is_bundle(bare) or not keys or any(k in pools for k in keys):
                return None
            return keys[0]

        for item, (item_id, sku) in zip(listed, keyed, strict=True):
            why = verdict[item_id]
            if why == "no_sku":
                no_sku.append({"item_id": item_id, "title": item.title})
                continue
            assert sku is not None
            if why == "duplicate":
                dupes.setdefault(sku, []).append({"item_id": item_id, "title": item.title})
                continue
            here.add(sku)
            if not joining:
                row = rows.get(item_id)
                if row is None or row.excluded is not None or row.sku != sku:
                    not_yet.append(sku)  # the next catalogue pass takes it up, not the import
                    continue
                if row.published is not None and not row.cutover_pending:
                    count(sku, item_id, item.available, row.published, counted)
                elif (new := new_to_group(sku)) is not None:
                    groups[new] = item.available  # new to the group: this shop introduces it
            elif while_out and sku in while_out:
                change = while_out[sku]
                into = counted if count_while_out else discarded
                count(sku, item_id, item.available, item.available - change, into)
            shown.append((sku, item_id, item.available))

        for sku, item_id, available in shown:  # what it shows after the changes counted
            decided = listings.target(sku, group_of, self.reconciler.writes.decide)
            target = None if decided is None else decided[0]
            if target is not None and target != available:
                to_change.append(
                    {"sku": sku, "item_id": item_id, "shop": available, "target": target}
                )
        made = {sku for sku in here if bundles.is_bundle(parse_listing(sku)[0])}
        if not listings.plain:  # by the pools' keys each listing sells from
            covered = listings.keys(here | set(dupes))
            missing = sorted(set(pools) - covered)
            only_here = sorted(s for s in here - made if not listings.keys([s]) & set(pools))
        else:
            missing = sorted(set(pools) - here - set(dupes))
            only_here = sorted(here - set(pools) - made)
        choice = None if while_out is None else "count" if count_while_out else "discard"
        mode = "reimport" if not joining else "rejoin" if choice == "count" else "join"
        return {
            "mode": mode,
            "while_out": choice,
            "discarded": sorted(discarded, key=lambda r: str(r["sku"]))[:EXAMPLES],
            "discarded_count": len(discarded),
            "items": len(listed),
            "skus_to_write": len(to_change),
            "to_change": sorted(to_change, key=lambda r: str(r["sku"]))[:EXAMPLES],
            "changes_to_count": len(counted),
            "counted": sorted(counted, key=lambda r: str(r["sku"]))[:EXAMPLES],
            "not_synced_yet": sorted(not_yet)[:EXAMPLES],
            "not_synced_yet_count": len(not_yet),
            "duplicates": [{"sku": s, "items": v} for s, v in sorted(dupes.items())][:EXAMPLES],
            "duplicate_skus": len(dupes),
            "no_sku": no_sku[:EXAMPLES],
            "no_sku_items": len(no_sku),
            "missing_here": missing[:EXAMPLES],
            "missing_here_count": len(missing),
            "only_here": only_here[:EXAMPLES],
            "only_here_count": len(only_here),
            "bundles": sorted(made)[:EXAMPLES],
            "bundles_count": len(made),
        }

    async def _known_items(self) -> list[Item] | None:
        """The shop's items as this agent knows them, if it knows every one: a full catalogue
        pass has ended since it started, and every synced item's count has been read (webhooks
        and passes keep them current since). None otherwise: the shop is listed.

        A join's pre-flight takes these instead of listing the shop again. At 100,000 items a
        listing took 20 s of the join's 70 (a bulk operation on Shopify takes longer), while
        the cut-over writes need no listing to be exact: each is compare-and-set against the
        count the agent last saw, and one that meets another count is read again.
        """
        if self.reconciler.last_reconcile is None:
            return None
        async with self.db.sessions() as session:
            rows = list(await session.exec(select(ItemRow)))
        if any(r.published is None and r.excluded is None for r in rows):
            return None
        return [Item(r.item_id, r.sku, r.published or 0, r.created_at, title=r.title) for r in rows]

    # -- running ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def start(
        self,
        *,
        reason: str,
        master: str | None = None,
        report: dict[str, Any] | None = None,
        mark: bool = True,
    ) -> dict[str, Any]:
        """Start an import of the pools into the shop; returns the pre-flight report.

        A join's import (`mark=False`) writes the items whose cut-over flags the snapshot
        install set, atomically with the ledger. An admin's re-import on a member that is
        already syncing does not discard anything: every item is re-read first (a change found
        is the shop's own and is counted), then the group's count is written where it differs.
        """
        if self.running:
            raise ImportError_(409, "import_running", "an import is already running")
        await self.hold_for_import()
        if report is None:
            report = await self.preflight()
        self.resyncing = mark
        skus = set(self.reconciler.resync()) if mark else await self._pending_skus()
        now = self.clock.now()
        state = {
            "state": "running",
            "phase": "writing",
            "reason": reason,
            "master": master,
            "started_at": now,
            "writing_started": now,
            "total": len(skus),
            "skus_to_write": report.get("skus_to_write", 0),
        }
        await self.db.set_state("import_report", report)  # large: kept apart from the state
        await self.db.set_state("import", state)
        self.task = asyncio.create_task(self._write_phase())
        return report

    async def hold_for_import(self) -> None:
        """Maintenance on for the import's length (unless an admin had it on already)."""
        if not (await self.maintenance()).get("on"):
            await self.set_maintenance(True, auto=True)

    async def _write_phase(self) -> None:
        self.reconciler.pool_changed(await self._pending_skus())
        while True:
            remaining = await self.remaining()
            # a re-import is done once every item was looked at again (the queue drained); a
            # join's once every cut-over write landed, whatever the shop keeps selling
            if remaining == 0 and (not self.resyncing or self.reconciler.status().idle):
                break
            await self.clock.sleep(0.2)
            queues = self.reconciler.status()
            if not queues.pending_skus and not queues.busy:
                self.reconciler.pool_changed(await self._pending_skus())  # e.g. after a conflict
        state = await self.db.get_state("import", {})
        finished = self.clock.now()
        state.update(state="done", phase="done", finished_at=finished)
        await self.db.set_state("import", state)
        elapsed = max(1e-6, finished - state.get("writing_started", finished))
        written = state.get("skus_to_write", 0)
        async with self.db.transaction() as session:
            synclog.record(
                session,
                "import_done",
                finished,
                peer=state.get("master"),
                message=f"{state.get('total', 0)} SKUs checked, {written} to write, "
                f"done in {elapsed:.1f} s",
            )
        if (await self.maintenance()).get("auto"):
            await self.set_maintenance(False)
        if state.get("reason") == "join":
            # a full pass introduces the shop's items the group lacks as new SKUs, and any
            # item created since the last one; after the cut-over writes, not beside them,
            # where it would compete for the agent and the platform (at 100,000 SKUs, a
            # listing and its bulk query against 400 write calls)
            self.reconciler.request_reconcile()

    async def _pending_skus(self) -> set[str]:
        async with self.db.sessions() as session:
            rows = await session.exec(
                select(ItemRow.sku).where(col(ItemRow.cutover_pending).is_(True))
            )
            return {sku for sku in rows if sku}

    async def remaining(self) -> int:
        """Items still waiting for their cut-over write (or, in a re-import, for a look)."""
        async with self.db.sessions() as session:
            query = (
                select(func.count())
                .select_from(ItemRow)
                .where(col(ItemRow.cutover_pending).is_(True))
            )
            waiting = int(await session.scalar(query) or 0)
        if self.resyncing and self.running:
            queues = self.reconciler.status()
            waiting += queues.pending_reads + queues.pending_skus + queues.busy
        return waiting

    async def progress(self, *, with_report: bool = True) -> dict[str, Any]:
        """done / total, rate and ETA of the current (or last) import."""
        state = await self.db.get_state("import", {"state": "none"})
        total = int(state.get("total") or 0)
        remaining = await self.remaining() if state.get("state") == "running" else 0
        done = max(0, total - remaining)
        started = state.get("writing_started")
        end = state.get("finished_at") or self.clock.now()
        rate = done / (end - started) if started and end > started and done else 0.0
        eta = remaining / rate if rate and remaining else (0.0 if not remaining else None)
        download = await self.db.get_state(SNAPSHOT_DOWNLOAD, None)
        if download is not None and state.get("phase") == "snapshot":
            state["snapshot"] = {
                "pages_done": download["next"],
                "pages": download["pages"],
                "pools": download["pool_count"],
            }
        return {
            **state,
            "done": done,
            "total": total,
            "rate": round(rate, 2),
            "eta_seconds": None if eta is None else round(eta, 1),
            "dry_run_report": await self.db.get_state("import_report") if with_report else None,
            "maintenance": (await self.maintenance()).get("on", False),
        }
