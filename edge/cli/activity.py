"""``mailslot activity`` (the user is here) and ``mailslot outcome`` (a runtime reports what
it did with a wake, and the tokens it spent): both recorded by ``edge.engine.activity``."""

from __future__ import annotations

import argparse
from typing import Any

from edge.cli.output import Command, emit
from edge.config import EdgePaths
from edge.engine.activity import report_activity, report_outcome
from edge.store.deliveries import OUTCOMES


def add_activity_commands(sub: Any, command: Command) -> None:
    """Register ``mailslot activity`` and ``mailslot outcome`` on ``sub``."""
    p = command("activity", cmd_activity, "report that the user is active (suppresses wakes)")
    p.add_argument("--session", help="only this agent session (default: everywhere)")
    p = command("outcome", cmd_outcome, "report what a woken runtime did (and tokens used)")
    p.add_argument("id", help="interrupt id")
    p.add_argument("--status", required=True, choices=OUTCOMES)
    p.add_argument("--tokens", type=_count, default=0, help="model tokens spent (daily budget)")
    p.add_argument("--intent", help="the intent that woke it")


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number >= 0")
    return number


def cmd_activity(args: argparse.Namespace, paths: EdgePaths) -> int:
    data = report_activity(paths, args.session)
    where = f"session {data['session']}" if data["session"] else "everywhere"
    emit(args, data, f"active ({where})")
    return 0


def cmd_outcome(args: argparse.Namespace, paths: EdgePaths) -> int:
    data = report_outcome(paths, args.id, args.status, args.tokens, args.intent)
    emit(args, data, f"{data['id']}: {args.status}"
         + (f", {args.tokens} tokens" if args.tokens else ""))
    return 0
