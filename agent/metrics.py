"""Prometheus metrics, one registry per agent (several agents may share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """The agent's counters and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.webhooks = Counter(
            "shopsync_webhooks_total",
            "Platform webhooks received",
            ["result"],
            registry=self.registry,
        )
        self.events = Counter(
            "shopsync_local_events_total", "Local stock changes recorded", registry=self.registry
        )
        self.pending = Gauge(
            "shopsync_pending_work", "Reads and writes queued or in flight", registry=self.registry
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
