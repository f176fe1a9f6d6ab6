"""Prometheus metrics, one registry per agent (several agents may share a process in tests).

Counted as things happen: webhooks by result, local events, the propagation latency of every
event received from a peer (its origin's time of the change → applied here). Read from the
agent at each scrape (`refresh` for what needs the database; the collector for what it keeps
in memory): events behind and last contact per peer, the alerts open by kind, the import's
progress, the platform calls and the written rows by the platform's answer, and what the
channel reports of its client (requests, throttles, retries, the rate budget left).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.agent import Agent

__all__ = ["Metrics"]

#: Seconds: loopback propagation is tens of milliseconds, a partition heals in minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    """The agent's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.webhooks = Counter(
            "shopsync_webhooks_total",
            "Platform webhooks received, by result (accepted, refused, rejected, malformed…)",
            ["result"],
            registry=self.registry,
        )
        self.events = Counter(
            "shopsync_local_events_total", "Local stock changes recorded", registry=self.registry
        )
        self.pending = Gauge(
            "shopsync_pending_work", "Reads and writes queued or in flight", registry=self.registry
        )
        self.propagation = Histogram(
            "shopsync_propagation_seconds",
            "A change's time from its origin's event to applied here, by origin shop",
            ["origin"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.behind = Gauge(
            "shopsync_peer_events_behind",
            "Events this agent holds that the peer has not acknowledged",
            ["peer"],
            registry=self.registry,
        )
        self.contact_age = Gauge(
            "shopsync_peer_last_contact_age_seconds",
            "Seconds since the peer last answered (absent: never)",
            ["peer"],
            registry=self.registry,
        )
        self.peer_up = Gauge(
            "shopsync_peer_up",
            "1 while the peer answers, 0 while it is unreachable",
            ["peer"],
            registry=self.registry,
        )
        self.alerts = Gauge(
            "shopsync_alerts_open", "Alerts open, by kind", ["kind"], registry=self.registry
        )
        self.import_done = Gauge(
            "shopsync_import_done",
            "Counts the current or last import wrote",
            registry=self.registry,
        )
        self.import_total = Gauge(
            "shopsync_import_total",
            "Counts the current or last import writes",
            registry=self.registry,
        )
        self.importing = Gauge(
            "shopsync_import_running", "1 while an import runs", registry=self.registry
        )
        self._agent: Agent | None = None
        self.registry.register(_FromAgent(self))

    def attach(self, agent: Agent) -> None:
        """Read the in-memory figures of `agent` at each scrape."""
        self._agent = agent

    async def refresh(self) -> None:
        """Set the gauges that need the database (call before `render`)."""
        agent = self._agent
        if agent is None:
            return
        from agent.alerts import KINDS
        from agent.ledger import vector
        from agent.replication import behind
        from agent.sql import Tx
        from agent.wire import vector_from_wire

        def read(conn: Any) -> tuple[Any, list[tuple[Any, ...]]]:
            rows = Tx(conn).rows(
                "SELECT domain, state, last_contact, last_error, acked FROM peer "
                "WHERE state <> 'left'"
            )
            return vector(conn), rows

        mine, peers = await agent.db.read(read)
        now = agent.clock.now()
        self.behind.clear()
        self.contact_age.clear()
        self.peer_up.clear()
        for domain, _state, last_contact, last_error, acked in peers:
            theirs = vector_from_wire(json.loads(acked or "[]"))
            self.behind.labels(peer=domain).set(behind(mine, theirs))
            self.peer_up.labels(peer=domain).set(0 if last_error else 1)
            if last_contact is not None:
                self.contact_age.labels(peer=domain).set(max(0.0, now - last_contact))
        open_kinds = {kind: 0 for kind in KINDS}
        for alert in await agent.alerts.open():
            open_kinds[alert.kind] = open_kinds.get(alert.kind, 0) + 1
        for kind, n in open_kinds.items():
            self.alerts.labels(kind=kind).set(n)
        progress = await agent.importer.progress(with_report=False)
        self.import_done.set(progress.get("done") or 0)
        self.import_total.set(progress.get("total") or 0)
        self.importing.set(1 if progress.get("state") == "running" else 0)
        state = agent.reconciler.status()
        self.pending.set(state.pending_reads + state.busy)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class _FromAgent(Collector):
    """Counters the agent keeps in memory, read at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        agent = self.metrics._agent
        if agent is None:
            return
        stats = agent.reconciler.status().stats
        calls = CounterMetricFamily(
            "shopsync_platform_calls",
            "Reads and writes sent to the platform, by what",
            labels=["call"],
        )
        calls.add_metric(["read"], stats.get("reads", 0))
        calls.add_metric(["write"], stats.get("writes", 0))
        yield calls
        rows = CounterMetricFamily(
            "shopsync_written_rows",
            "Rows written to the platform, by its answer (ok, conflict, error, unknown)",
            labels=["result"],
        )
        for result in ("ok", "conflict", "error", "unknown"):
            rows.add_metric([result], stats.get(f"rows_{result}", 0))
        yield rows
        channel = agent.channel.stats()
        client = CounterMetricFamily(
            "shopsync_platform_requests",
            "HTTP requests of the platform client, throttled answers and retries",
            labels=["outcome"],
        )
        for outcome in ("requests", "throttled", "retries"):
            client.add_metric([outcome], channel.get(outcome, 0))
        yield client
        if "budget" in channel:
            yield GaugeMetricFamily(
                "shopsync_rate_budget_ratio",
                "The platform's rate budget left, 0 (empty) to 1 (full)",
                value=channel["budget"],
            )

    def describe(self) -> Iterator[Any]:
        return iter(())  # collected at scrape time only
