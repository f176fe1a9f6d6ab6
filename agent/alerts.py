"""Alerts as state: raised while a condition holds, cleared when it stops, the same everywhere.

Each alert is a (kind, subject) with a first-seen time, a message and a link to what explains
it. `Alerts.evaluate` computes the conditions from what the agent holds — the pools, the
items and their last writes, the peers, the import — compares them with the alerts open
before (state key "alerts"), opens the new ones and clears the gone ones, each transition a
sync-log row (`alert`, `alert_cleared`) and a call to every `on_change` listener
(notifications). Oversold is a function of the group's pool, so every member that holds the
same events shows the same oversold alerts; the others are about this shop and its links.

Kinds: `oversold` (a pool below zero), `low_stock` (a pool at or below the threshold set for
its SKU, `[alerts] low_stock`; off by default), `write_failing` (the platform refused the
latest write of a SKU and the shop still shows another count than the rules say),
`peer_unreachable` (a member unanswered for longer than `peer_grace`), `import_stuck` (an
import with no progress for `import_stall`), `webhooks_refused` (a run of the platform's
webhooks refused for their signature, `agent.webhook_health.Refusals`), `credentials_failing`
(the platform refused the channel's credentials and renewing did not help; it clears on the
next call the platform accepts, `agent.credentials.Credentials.failing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import structlog

from agent import synclog
from agent.clock import Clock
from agent.db import Database
from agent.rules import Decision, most_specific
from agent.sql import Tx

__all__ = ["KINDS", "Alert", "AlertSettings", "Alerts"]

log = structlog.get_logger(__name__)

#: Every kind of alert, and what it means in a sentence (for pages and docs).
KINDS: dict[str, str] = {
    "oversold": "the group's count of a product is below zero: more was sold than there was",
    "low_stock": "the group's count of a product is at or below its low-stock threshold",
    "write_failing": "the platform refused the latest write of a product's count",
    "peer_unreachable": "a member of the group has not answered for a while",
    "import_stuck": "an import has made no progress for a while",
    "webhooks_refused": "the platform's webhooks are refused for their signature (the secret)",
    "credentials_failing": "the platform refuses the shop's credentials (token or app secrets)",
}
FAILED_WRITES_WINDOW = 24 * 3600.0  # refused writes older than this are no longer looked at


@dataclasses.dataclass(frozen=True, slots=True)
class AlertSettings:
    """`[alerts]` of the config: thresholds and grace periods."""

    low_stock: int | None = None  # every SKU's threshold; None: no low-stock alerts
    low_stock_skus: Mapping[str, int] = dataclasses.field(default_factory=dict)  # SKU or glob
    peer_grace: float = 300.0  # seconds a member may stay unanswered before it is an alert
    import_stall: float = 600.0  # seconds an import may go without progress

    def threshold(self, sku: str) -> int | None:
        """The low-stock threshold of `sku` (the most specific pattern's), or None."""
        best = most_specific(sku, self.low_stock_skus)
        return self.low_stock if best is None else self.low_stock_skus[best]

    def highest(self) -> int:
        """The highest pool any alert looks at (below zero when low stock is off)."""
        levels = [] if self.low_stock is None else [self.low_stock]
        return max([-1, *levels, *self.low_stock_skus.values()])

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peer_grace": self.peer_grace, "import_stall": self.import_stall}
        if self.low_stock is not None:
            out["low_stock"] = self.low_stock
        if self.low_stock_skus:
            out["low_stock_skus"] = dict(sorted(self.low_stock_skus.items()))
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """One open (or just cleared) alert."""

    kind: str
    subject: str  # the SKU, the peer's domain, or "" for the shop as a whole
    message: str
    link: str  # a page that explains it
    first_seen: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject}"

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Listener = Callable[[list[Alert], list[Alert]], Any]  # (opened, cleared)


class Alerts:
    """The open alerts of this agent, kept up to date by `run` (or one `evaluate`)."""

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        decide: Callable[[str, int], Decision],
        import_progress: Callable[[], Any],
        webhook_refusals: Callable[[], dict[str, Any] | None] | None = None,
        credentials_failing: Callable[[], str | None] | None = None,
        settings: AlertSettings | None = None,
    ) -> None:
        self.db, self.clock, self.decide = db, clock, decide
        self.import_progress = import_progress
        self.webhook_refusals = webhook_refusals
        self.credentials_failing = credentials_failing
        self._poked = asyncio.Event()
        self.settings = settings or AlertSettings()
        self.listeners: list[Listener] = []
        self._import_seen: tuple[int, float] | None = None  # (done, since) while running
        self._lock = asyncio.Lock()

    def on_change(self, listener: Listener) -> None:
        """Call `listener(opened, cleared)` after each evaluation that changed something."""
        self.listeners.append(listener)

    async def open(self) -> list[Alert]:
        """The alerts open at the last evaluation, oldest first."""
        held = await self.db.get_state("alerts", {})
        return sorted((Alert(**a) for a in held.values()), key=lambda a: (a.first_seen, a.key))

    def poke(self) -> None:
        """Look again soon (something that raises or clears an alert just happened)."""
        self._poked.set()

    async def run(self, interval: float) -> None:
        """Evaluate every `interval` seconds, or at once when poked, until cancelled (a
        failure is logged, not fatal)."""
        while True:
            self._poked.clear()
            try:
                await self.evaluate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("alerts_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), timeout=interval)

    async def evaluate(self) -> list[Alert]:
        """Open the alerts whose condition holds now, clear the rest; the open ones."""
        async with self._lock:
            now = self.clock.now()
            found = {a.key: a for a in await self._conditions(now)}
            held = {k: Alert(**a) for k, a in (await self.db.get_state("alerts", {})).items()}
            # an alert still open keeps the time it was first seen; a new one is seen now
            current = {
                k: dataclasses.replace(a, first_seen=held[k].first_seen if k in held else now)
                for k, a in found.items()
            }
            opened = [a for k, a in current.items() if k not in held]
            cleared = [a for k, a in held.items() if k not in current]
            if current != held:
                await self._save(current, opened, cleared, now)
        if opened or cleared:
            for listener in self.listeners:
                try:
                    result = listener(opened, cleared)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception as exc:  # a listener's failure never stops the alerts
                    log.warning("alert_listener_failed", error=repr(exc))
        return sorted(current.values(), key=lambda a: (a.first_seen, a.key))

    async def _save(
        self, current: dict[str, Alert], opened: list[Alert], cleared: list[Alert], now: float
    ) -> None:
        entries = [_entry("alert", a, now, a.message) for a in opened]
        entries += [_entry("alert_cleared", a, now, f"cleared: {a.message}") for a in cleared]

        def work(conn: Any) -> None:
            synclog.insert(conn, entries)

        await self.db.set_state("alerts", {k: a.to_wire() for k, a in current.items()})
        if entries:
            await self.db.run(work)

    # -- the conditions --------------------------------------------------------------------

    async def _conditions(self, now: float) -> list[Alert]:
        highest = self.settings.highest()
        pools, failing, unreachable = await self.db.read(lambda conn: _read(conn, now, highest))
        alerts = []
        for sku, value in pools:
            if value < 0:
                alerts.append(
                    Alert(
                        "oversold",
                        sku,
                        f"{sku}: the group's count is {value} ({-value} sold more than there was)",
                        _link("/explain", sku=sku),
                    )
                )
                continue
            threshold = self.settings.threshold(sku)
            if threshold is not None and value <= threshold:
                alerts.append(
                    Alert(
                        "low_stock",
                        sku,
                        f"{sku}: {value} left (low-stock threshold {threshold})",
                        _link("/explain", sku=sku),
                    )
                )
        for sku, published, pool, message in failing:
            if pool is not None and published == self.decide(sku, pool).count:
                continue  # the shop shows the right count again (a later write, or by hand)
            alerts.append(
                Alert(
                    "write_failing",
                    sku,
                    f"{sku}: the shop refused the count ({message or 'no reason given'}); "
                    "it is retried at the next pass",
                    _link("/log", sku=sku),
                )
            )
        for domain, since, error in unreachable:
            if since is not None and now - since >= self.settings.peer_grace:
                alerts.append(
                    Alert(
                        "peer_unreachable",
                        domain,
                        f"{domain} has not answered for {_duration(now - since)}: {error}",
                        _link("/log", peer=domain),
                    )
                )
        refused = self.webhook_refusals() if self.webhook_refusals else None
        if refused:
            alerts.append(Alert("webhooks_refused", "", refused["message"], "/log?kind=alert"))
        refusal = self.credentials_failing() if self.credentials_failing else None
        if refusal:
            alerts.append(Alert("credentials_failing", "", refusal, "/log?kind=alert"))
        stuck = await self._import_stuck(now)
        if stuck:
            alerts.append(Alert("import_stuck", "", stuck, "/import"))
        return alerts

    async def _import_stuck(self, now: float) -> str:
        state = await self.import_progress()
        if state.get("state") != "running":
            self._import_seen = None
            return ""
        done = int(state.get("done") or 0)
        if self._import_seen is None or self._import_seen[0] != done:
            self._import_seen = (done, now)
            return ""
        idle = now - self._import_seen[1]
        if idle < self.settings.import_stall:
            return ""
        return (
            f"the import has written nothing for {_duration(idle)} "
            f"({done} of {state.get('total') or '?'} done)"
        )


#: The pools at or below a count (read through the index `ix_pool_count`, migration 0006).
LOW_POOLS = "SELECT sku, base + deltas FROM pool WHERE base IS NOT NULL AND base + deltas <= ?"


def _read(
    conn: Any, now: float, highest: int
) -> tuple[
    list[tuple[str, int]],
    list[tuple[str, int | None, int | None, str]],
    list[tuple[str, float | None, str]],
]:
    """Pools worth a look, SKUs whose latest write was refused, and peers in error."""
    tx = Tx(conn)
    # every pool below zero, and the low ones (no threshold is higher than `highest`)
    pools = [(sku, int(value)) for sku, value in tx.rows(LOW_POOLS, (highest,))]
    failing = tx.rows(
        "SELECT f.sku, i.published, p.base + p.deltas, f.message FROM sync_log f "
        "LEFT JOIN item i ON i.sku = f.sku AND i.excluded IS NULL "
        "LEFT JOIN pool p ON p.sku = f.sku "
        "WHERE f.kind = 'write_failed' AND f.at >= ? AND f.id = (SELECT MAX(l.id) FROM sync_log "
        "l WHERE l.sku = f.sku AND l.kind IN ('write', 'write_failed'))",
        (now - FAILED_WRITES_WINDOW,),
    )
    unreachable = tx.rows(
        "SELECT p.domain, (SELECT MAX(l.at) FROM sync_log l WHERE l.peer = p.domain "
        "AND l.kind = 'peer_unreachable'), p.last_error FROM peer p "
        "WHERE p.state <> 'left' AND p.last_error <> ''"
    )
    return pools, failing, unreachable


def _entry(kind: str, alert: Alert, now: float, message: str) -> dict[str, Any]:
    sku = alert.subject if alert.kind in ("oversold", "low_stock", "write_failing") else None
    peer = alert.subject if alert.kind == "peer_unreachable" else None
    return synclog.entry(kind, now, sku=sku, peer=peer, message=f"{alert.kind}: {message}")


def _link(path: str, **query: str) -> str:
    return f"{path}?{urlencode(query)}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
