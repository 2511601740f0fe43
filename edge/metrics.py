"""``mailslot status --metrics``: an ``edge.status.edge_status`` result in Prometheus text
format. The edge's one module that imports ``prometheus_client``; kept apart from
``edge.status`` so that a plain ``mailslot status`` (and every other command) does not pay
for loading it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class _StatusCollector:
    """One ``edge_status`` result as Prometheus metric families."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status
        for name, value in sorted(status["counters"].items()):
            metric = "mailslot_" + name.replace(".", "_")
            yield CounterMetricFamily(metric, f"mailslot {name}", value=value)
        pending = GaugeMetricFamily(
            "mailslot_inbox_pending", "pending interrupts in the inbox", labels=["priority"]
        )
        for priority, count in status["pending"].items():
            pending.add_metric([priority], count)
        yield pending
        yield GaugeMetricFamily("mailslot_link_connected", "1 if the edge is connected",
                                value=1 if status["connected"] else 0)
        yield CounterMetricFamily("mailslot_delivered", "interrupts received from the relay",
                                  value=status["delivered_total"] or 0)
        yield CounterMetricFamily("mailslot_rejected", "envelopes refused by verification",
                                  value=status["rejected"])


def metrics_text(status: dict[str, Any]) -> str:
    """``mailslot status --metrics``: an ``edge_status`` result in Prometheus text format."""
    registry = CollectorRegistry()
    registry.register(_StatusCollector(status))
    return generate_latest(registry).decode()
