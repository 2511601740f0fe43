"""What the daemon recorded, read from outside it: ``mailslot status`` and the MCP
``status`` tool (``edge_status``, ``metrics_text``), and the watches' runtime rows that
``mailslot watch list`` and the MCP ``watches_list`` tool show (``watch_runtime``).

Rules this module keeps: it only reads. A file the daemon has not created yet reads as
empty (zero counters, no rows) and is never created here, so asking for the status of a
fresh edge leaves no trace. It is the one module that imports ``prometheus_client``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edge.config import EdgePaths, load_config
from edge.store.inbox import Inbox
from edge.store.watchstate import WatchRow, WatchState
from shared.host.lockfile import pid_alive

#: The watch and sleep counters every status reports, zero until the daemon counts one.
COUNTERS = ("tick.fired", "sleep.entered", "sleep.interrupted", "cache_aware.snapped")


def edge_status(paths: EdgePaths) -> dict[str, Any]:
    """Identity, relay, daemon running and connected, pending per priority, last delivery,
    rejected count and the counters: what ``mailslot status --json`` prints."""
    config = load_config(paths)
    with Inbox.open(paths.inbox_file) as inbox:
        status = inbox.status()
        pending = inbox.counts()
        rejected = len(inbox.rejections(limit=1000))
    running = pid_alive(status.get("pid"))
    return {
        "identity": config.identity,
        "relay": config.relay_url,
        "daemon_running": running,
        "connected": bool(status.get("connected")) and running,
        "pending": pending,
        "relay_pending_at_connect": status.get("relay_pending"),
        "last_delivery": status.get("last_delivery"),
        "delivered_total": status.get("delivered_total", 0),
        "rejected": rejected,
        "counters": counters(paths),
    }


def counters(paths: EdgePaths) -> dict[str, int]:
    """Watch and sleep counters (``tick.fired``, ``sleep.entered``, …), zero if none yet."""
    found = dict.fromkeys(COUNTERS, 0)
    path = paths.watches_file
    if path.exists():
        state = WatchState.open(path)
        try:
            found.update(state.counters())
        finally:
            state.close()
    return found


def watch_runtime(paths: EdgePaths) -> dict[str, WatchRow]:
    """The daemon's rows by watch id (last run, next run, last result); empty if it has
    recorded nothing yet."""
    if not paths.watches_file.exists():
        return {}  # WatchState.open would create it
    state = WatchState.open(paths.watches_file)
    try:
        return {row.id: row for row in state.rows()}
    finally:
        state.close()


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
