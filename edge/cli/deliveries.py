"""``mailslot deliveries list|show|retry|drop``: wakes on their way to a runtime, from the
shell (the work is ``edge.delivery.manage``'s, shared with the MCP tools).

A delivery is named by its key (``msg_…``) or its number. Errors: ``unknown_delivery``,
``not_retryable``, ``not_droppable``, ``route_disabled`` (all exit 1).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from edge.cli.output import Command, emit
from edge.config import EdgePaths
from edge.delivery.manage import drop_delivery, list_deliveries, retry_delivery, show_delivery


def add_delivery_commands(sub: Any, command: Command) -> None:
    """Register ``mailslot deliveries ...`` on the top-level subparsers ``sub``."""
    group = sub.add_parser(
        "deliveries", help="wakes on their way to a runtime: see, retry, drop them"
    ).add_subparsers(metavar="COMMAND")
    p = command("list", cmd_list, "deliveries, newest first", group)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--failed", action="store_const", const="failed", dest="which",
                       help="only those that gave up or ended in error (retry or drop them)")
    which.add_argument("--pending", action="store_const", const="pending", dest="which",
                       help="only those on their way (queued, retrying, running)")
    p.add_argument("--limit", type=int, default=50, help="at most N (default 50; 0: all)")
    for name, handler, help in (
        ("show", cmd_show, "one delivery: route, last attempt, the wake it carries"),
        ("retry", cmd_retry, "send a delivery that gave up (or ended in error) again"),
        ("drop", cmd_drop, "remove a delivery that is not running and was not delivered"),
    ):
        p = command(name, handler, help, group)
        p.add_argument("id", metavar="ID", help="its key (msg_…) or number")


def _line(row: dict[str, Any]) -> str:
    state = row["status"] if row["outcome"] is None else f"{row['status']}/{row['outcome']}"
    attempts = f"{row['attempts']}" + (f"/{row['max_attempts']}" if row["max_attempts"] else "")
    when = row["finished"] or row["next_attempt"] or row["created"] or ""
    line = (f"{row['key']}  {row['seq']:>5}  {state:<14}  {row['kind']:<7}  {row['intent']}"
            f"  attempts {attempts}  {when[:19]}")
    if row["error"]:
        line += f"  {str(row['error'])[:100]}"
    return line


def cmd_list(args: argparse.Namespace, paths: EdgePaths) -> int:
    rows = list_deliveries(paths, args.which, args.limit)
    emit(args, rows, "\n".join(_line(r) for r in rows) or "(no deliveries)")
    return 0


def cmd_show(args: argparse.Namespace, paths: EdgePaths) -> int:
    doc = show_delivery(paths, args.id)
    lines = [_line(doc)]
    for label, key in (("route", "route"), ("session", "session"),
                       ("interrupts", "interrupts"), ("created", "created"),
                       ("finished", "finished"), ("next attempt", "next_attempt"),
                       ("last attempt", "detail"), ("wake", "wake_doc"),
                       ("permissions", "permissions")):
        if doc.get(key):
            value = doc[key] if isinstance(doc[key], str) else json.dumps(doc[key])
            lines.append(f"  {label}: {value}")
    lines.append(f"  retryable: {'yes' if doc['retryable'] else 'no'}")
    emit(args, doc, "\n".join(lines))
    return 0


def cmd_retry(args: argparse.Namespace, paths: EdgePaths) -> int:
    row = retry_delivery(paths, args.id)
    emit(args, row, f"delivery {row['key']} queued again ({row['kind']}, intent"
                    f" {row['intent']}); the daemon sends it now (or as soon as it runs)")
    return 0


def cmd_drop(args: argparse.Namespace, paths: EdgePaths) -> int:
    row = drop_delivery(paths, args.id)
    emit(args, row, f"dropped delivery {row['key']} (intent {row['intent']})")
    return 0
