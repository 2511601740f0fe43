"""What the daemon recorded, read from outside it: ``mailslot status`` and the MCP
``status`` tool (``edge_status``), and the watches' runtime rows that
``mailslot watch list`` and the MCP ``watches_list`` tool show (``watch_runtime``).

Rules this module keeps: it only reads. A file the daemon has not created yet reads as
empty (zero counters, no rows) and is never created here, so asking for the status of a
fresh edge leaves no trace.
``mailslot status --metrics`` formats the same figures in ``edge.metrics``.
"""

from __future__ import annotations

from typing import Any

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
