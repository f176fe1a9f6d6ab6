"""The agent: one shop's parts, built and wired in one place (the composition root).

Both the aiohttp app (`agent.web.app`) and the deterministic simulation (`tests/sim`) build an
`Agent` and only route to it; they differ in what they inject: the database, the channel to
the platform, the clock, and the `Transport` that carries signed calls to other agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import ledger, peer_service, synclog
from agent.activity import LatencyRing
from agent.alerts import Alerts, AlertSettings
from agent.catalogue import SkuRule
from agent.channel import Channel
from agent.clock import Clock
from agent.compaction import DEFAULT_HORIZON, DEFAULT_INTERVAL, Compactor
from agent.db import Database
from agent.group_rules import RuleBook
from agent.importer import Importer
from agent.join_import import JoinImport
from agent.joins import JoinDesk
from agent.metrics import Metrics
from agent.models import EventRow, Identity
from agent.notify import Notifier, NotifySettings
from agent.peering import Peering
from agent.reconcile import Reconciler
from agent.replication import Replicator
from agent.roster import Roster
from agent.rules import Allocate, ShopRules
from agent.snapshots import PAGE_SIZE, Spool
from agent.syncmode import SyncMode
from agent.transport import Transport
from agent.warehouses import LocationMap
from agent.webhook_health import Refusals

__all__ = ["Agent", "Tuning"]

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Tuning:
    """How an agent presents and paces itself (from its config; the simulation sets its own)."""

    public_url: str
    coalesce: float = 0.005  # seconds a webhook waits for others to share its read
    reconcile_interval: float = 300.0  # seconds between full passes over the shop
    catalogue_min_interval: float = 300.0  # seconds between passes that webhooks ask for
    pull_interval: float = 2.0  # seconds between pulls from each peer while they bring news
    sku_rule: SkuRule = dataclasses.field(default_factory=SkuRule)
    alert_interval: float | None = None  # seconds between looks at the alerts; None: on demand
    spool_dir: Path | None = None  # where snapshots for joiners are spooled; None: a temp dir
    snapshot_page_size: int = PAGE_SIZE  # pools per page of a snapshot sent to a joiner
    compaction_interval: float = DEFAULT_INTERVAL  # seconds between compactions; 0: none
    history_horizon: float = DEFAULT_HORIZON  # seconds out of touch before a member is left
    # out of compaction's floor (it re-imports when it returns)


class Agent:
    """One shop's agent. A sale's whole path through it:

    1. The platform's webhook is a hint (`reconciler.hint`, from `agent.web.webhooks`): the
       reconciler reads the item's count, batched with other hints. The difference from the
       count it last published is a local change: in one unit of work `ledger.append` makes
       it an event of this shop's stream, signed with this agent's key, and folds it into the
       SKU's pool and the vector.
    2. `_local_events` wakes the replicator: its link to every peer pushes the new events
       (`/peer/events`), each call signed for that peer alone (`transport`).
    3. At the peer, the call comes through the door (signature, audience, freshness,
       membership) to `serve_peer`, and `replicator.receive` takes each event only with its
       origin's proof (the roster's keys), once, with its pool and vector.
    4. The pool change reaches that agent's `reconciler.pool_changed`, which writes what the
       rules publish of the pool (`rules.decide`: the allocate hook, built in as the shop's
       stock rules and the group's) to its shop, compare-and-set against what it last
       published, with an idempotency key stored before the call.
    Pulls (anti-entropy) bring whatever a push lost; the periodic pass re-reads the shop.
    """

    def __init__(
        self,
        *,
        db: Database,
        identity: Identity,
        private_key: Ed25519PrivateKey,
        channel: Channel,
        clock: Clock,
        transport: Transport,
        allocate: Allocate,
        tuning: Tuning,
        shop_rules: ShopRules | None = None,
        locations: LocationMap | None = None,
        alert_settings: AlertSettings | None = None,
        notify_settings: NotifySettings | None = None,
        http: aiohttp.ClientSession | None = None,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.db, self.identity, self.channel, self.clock = db, identity, channel, clock
        self.tuning = tuning
        self.metrics = metrics or Metrics()
        self.latency = LatencyRing(started=clock.now())  # per minute, for the overview
        self.refusals = Refusals(clock)  # webhooks refused for their signature
        call = transport.call
        self.mode = SyncMode(db)
        self.spool = Spool(tuning.spool_dir, clock, page_size=tuning.snapshot_page_size, rng=rng)
        self.roster = Roster(
            db=db,
            identity=identity,
            private_key=private_key,
            public_url=tuning.public_url,
            clock=clock,
        )
        self.rules = RuleBook(
            db=db,
            roster=self.roster,
            clock=clock,
            call=call,
            allocate=allocate,
            shop_rules=shop_rules or ShopRules(),
        )
        self.reconciler = Reconciler(
            db=db,
            channel=channel,
            clock=clock,
            identity=identity,
            allocate=self.rules.decide,
            coalesce=tuning.coalesce,
            reconcile_interval=tuning.reconcile_interval,
            catalogue_min_interval=tuning.catalogue_min_interval,
            on_local_events=self._local_events,
            rng=rng,
            sku_rule=tuning.sku_rule,
            sign_event=self.roster.sign_event,
            bundles=lambda: self.rules.bundles,
            locations=locations,
        )
        self.replicator = Replicator(
            db=db,
            identity=identity,
            clock=clock,
            call=call,
            on_pool_change=self.reconciler.pool_changed,
            on_applied=self._applied,
            roster=self.roster,
            rules=self.rules,
            mode=self.mode,
            pull_interval=tuning.pull_interval,
            rng=rng,
            on_history_folded=lambda peer, url: self.join_import.rebase(peer, url),
        )
        self.importer = Importer(
            db=db,
            channel=channel,
            clock=clock,
            reconciler=self.reconciler,
            mode=self.mode,
            sku_rule=tuning.sku_rule,
        )
        self.join_import = JoinImport(
            db=db,
            identity=identity,
            clock=clock,
            call=call,
            roster=self.roster,
            mode=self.mode,
            importer=self.importer,
            replicator=self.replicator,
            reconciler=self.reconciler,
            on_rules=self.rules.heard,
        )
        self.compactor = Compactor(
            db=db,
            identity=identity,
            clock=clock,
            mode=self.mode,
            interval=tuning.compaction_interval,
            horizon=tuning.history_horizon,
            snapshots=self.spool.held,
        )
        self.joins = JoinDesk(db=db, identity=identity, clock=clock, call=call, roster=self.roster)
        self.peering = Peering(
            db=db,
            identity=identity,
            clock=clock,
            call=call,
            roster=self.roster,
            mode=self.mode,
            replicator=self.replicator,
            join_import=self.join_import,
            http=http,
        )
        self.alerts = Alerts(
            db=db,
            clock=clock,
            decide=self.rules.decide,
            import_progress=lambda: self.importer.progress(with_report=False),
            webhook_refusals=self.refusals.alert,
            credentials_failing=lambda: channel.credentials.failing,
            settings=alert_settings,
        )
        self.notifier = Notifier(
            db=db, clock=clock, shop=identity.domain, settings=notify_settings, http=http
        )
        self.alerts.on_change(self.notifier.alerts_changed)
        self.rules.on_change(self._rules_changed)
        self.metrics.attach(self)
        self._main: asyncio.Task[None] | None = None
        self._compaction: asyncio.Task[None] | None = None
        self._watch: list[asyncio.Task[None]] = []
        self._notes: set[asyncio.Task[None]] = set()  # sync-log rows being written
        channel.credentials.on_renew = self._token_renewed

    # -- the path of a change ------------------------------------------------------------------

    def _local_events(self, rows: list[EventRow]) -> None:
        self.metrics.events.inc(len(rows))
        self.reconciler.writes.carry(rows)
        self.replicator.notify_local(rows)

    def _applied(self, events: list[EventRow], now: float) -> None:
        """Peers' events just applied: the writes they cause will name them, and how long each
        took from its origin to here is measured."""
        self.reconciler.writes.carry(events)
        seconds = [max(0.0, now - event.at) for event in events]
        for event, took in zip(events, seconds, strict=True):
            self.metrics.propagation.labels(origin=event.origin).observe(took)
        self.latency.observe(now, seconds)

    async def remove_bundle(self, sku: str) -> dict[str, Any]:
        """Stop selling `sku` as a bundle, in every member (`RuleBook.remove_bundle`; RuleError
        if it is none). Its pool first takes the count its components allowed
        (`Reconciler.unbundle`), so every shop syncs it as a SKU of its own from that count,
        not from none or from a count it had before it was a bundle. In that order: a crash
        between the two leaves a bundle that a second removal removes."""
        bundle = self.rules.bundles.bundles.get(sku)
        if bundle is not None:
            await self.reconciler.unbundle(bundle)
        return await self.rules.remove_bundle(sku)

    def _rules_changed(self) -> None:
        """What a shop publishes may have changed: plan every SKU again (only those whose
        count changes are written, batched like any write)."""
        self.reconciler.replan()
        if self.rules.unbundled:  # no longer bundles: their items' counts are read anew
            self.reconciler.resync(sorted(self.rules.unbundled))
            self.rules.unbundled.clear()

    async def serve_peer(self, sender: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Answer another agent's call `name` from the holder of key `sender`, let in by the
        door (`agent.transport.admit`)."""
        return await peer_service.serve(self, sender, name, body)

    def _token_renewed(self, reason: str, expires_in: float | None) -> None:
        """A channel token was granted: one sync-log row, so an owner sees renewals happen."""
        kind = self.channel.credentials.kind
        valid = "" if expires_in is None else f", valid {expires_in / 3600:.1f} h"
        why = {"first": "first token", "expiring": "renewed ahead of expiry"}.get(
            reason, "renewed after the platform refused the old one"
        )
        message = f"{kind}: {why}{valid}"

        async def note() -> None:
            async with self.db.transaction() as session:
                synclog.record(session, "token_renewed", self.clock.now(), message=message)

        task = asyncio.get_running_loop().create_task(note())
        self._notes.add(task)
        task.add_done_callback(self._notes.discard)

    # -- life ----------------------------------------------------------------------------------

    @property
    def importing(self) -> bool:
        """Between a join's welcome and the master's snapshot installed as this agent's base."""
        return self.join_import.importing

    async def start(self) -> None:
        """Start from the database: the mode and own record it had, the shop's loop, an
        interrupted import or join resumed, and the links to the peers (unless importing)."""
        await self.mode.load()
        self.spool.clear()  # a joiner resuming a download from a previous run asks anew
        await self.spool.restore(self.db)  # …but the snapshots' holds on compaction stay
        await self.roster.load(paused=self.mode.paused)
        await self.rules.load()
        await self._sign_own_backlog()
        self._main = asyncio.create_task(self.reconciler.run(), name="reconciler")
        await self.importer.restore()
        await self.join_import.resume()
        if not self.join_import.importing:
            await self.replicator.start()
        if self.tuning.compaction_interval > 0:
            self._compaction = asyncio.create_task(self.compactor.run(), name="compaction")
        if self.tuning.alert_interval:
            self._watch = [
                asyncio.create_task(self.alerts.run(self.tuning.alert_interval), name="alerts"),
                asyncio.create_task(self.notifier.run(), name="notifications"),
            ]

    def tasks(self) -> list[asyncio.Task[Any]]:
        """Every task the agent runs, in the order a crash stops them."""
        tasks: list[asyncio.Task[Any]] = [] if self._main is None else [self._main]
        tasks += [link.task for _, link in sorted(self.replicator.links.items()) if link.task]
        tasks += self.reconciler.tasks()
        return tasks + self._jobs() + self._watch

    def _jobs(self) -> list[asyncio.Task[Any]]:
        """The tasks of the agent's long jobs that are running or ran: a join's import, a
        re-import, an import, the compaction."""
        jobs = (
            self.join_import.task,
            self.join_import.rebasing,
            self.importer.task,
            self._compaction,
        )
        return [t for t in jobs if t is not None]

    async def stop(self) -> None:
        """Stop every task and wait for each (a cancelled write is resent on the next start,
        with its key)."""
        await asyncio.gather(*self._notes, return_exceptions=True)
        await self.replicator.stop()
        tasks = [t for t in (self._main,) if t] + self._jobs() + self._watch
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.reconciler.close()
        self.spool.close()

    async def _sign_own_backlog(self) -> None:
        """Events made before events were signed get their proof now (the agent's own only:
        a peer's unsigned events are never forwarded)."""
        async with self.db.sessions() as session:
            rows = await ledger.unsigned_own(session, self.identity)
        if not rows:
            return
        async with self.db.transaction() as session:
            for row in rows:
                stored = await session.get(EventRow, (row.origin, row.epoch, row.seq))
                if stored is not None and not stored.proof:
                    stored.proof = self.roster.sign_event(stored)
        log.info("own_events_signed", events=len(rows))
