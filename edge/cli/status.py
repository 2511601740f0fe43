"""``mailslot status [--metrics]``: link, inbox, watch counters and daemon status, as
text, ``--json`` or Prometheus text (``edge.status`` gathers the figures)."""

from __future__ import annotations

import argparse
from typing import Any

from edge.cli.output import Command, emit
from edge.config import EdgePaths
from edge.status import edge_status


def add_status_command(sub: Any, command: Command) -> None:
    """Register ``mailslot status`` on the top-level subparsers ``sub``."""
    p = command("status", cmd_status, "link, inbox, watch counters and daemon status")
    p.add_argument("--metrics", action="store_true", help="Prometheus text format")


def cmd_status(args: argparse.Namespace, paths: EdgePaths) -> int:
    s = edge_status(paths)
    if args.metrics:
        from edge.metrics import metrics_text  # lazy: see LAZY_IMPORTS

        print(metrics_text(s), end="")
        return 0
    link = (
        "connected"
        if s["connected"]
        else ("daemon running, not connected" if s["daemon_running"] else "daemon not running")
    )
    p = s["pending"]
    text = "\n".join(
        [
            f"identity       {s['identity']}",
            f"relay          {s['relay']} ({link})",
            f"pending        now={p['now']} next={p['next']} later={p['later']}",
            f"last delivery  {s['last_delivery'] or 'never'}",
            f"rejected       {s['rejected']}",
            "counters       " + " ".join(f"{k}={v}" for k, v in s["counters"].items()),
        ]
    )
    emit(args, s, text)
    return 0
