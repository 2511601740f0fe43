"""``mailslot replay --since T [--intents FILE]``: backtest intents — run the interrupts
stored since ``T`` through the live (or a candidate) intents file and print what would
have woken, waking nothing (``edge.engine.replay``)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.cli.inbox import open_inbox
from edge.cli.log import since_time
from edge.cli.output import Command, emit
from edge.config import EdgePaths
from edge.engine.replay import replay
from edge.intents.file import load_intents
from edge.store.activity import ActivityLog


def add_replay_command(sub: Any, command: Command) -> None:
    """Register ``mailslot replay`` on the top-level subparsers ``sub``."""
    p = command("replay", cmd_replay, "run stored interrupts through intents, waking nothing")
    p.add_argument("--since", required=True, type=since_time, metavar="T",
                   help="ISO 8601 time or a duration back from now (2h, 1d)")
    p.add_argument("--intents", type=Path, metavar="FILE",
                   help="candidate intents file (default: the live intents.toml)")


def cmd_replay(args: argparse.Namespace, paths: EdgePaths) -> int:
    with open_inbox(paths) as inbox:
        intents = load_intents(args.intents or paths.intents_file)
        items = inbox.received_since(args.since)
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
        entries = list(log.entries(since=args.since))
    result = asyncio.run(replay(intents, items, entries, datetime.now(UTC)))
    final = result.final()
    rows = [
        {"interrupt": interrupt, "intent": intent, "outcome": d.outcome, "reason": d.reason}
        for (interrupt, intent), d in final.items()
    ]
    summary = result.summary()
    lines = [f"{r['interrupt']}  {r['intent'] or '-':<20}  {r['outcome']:<10}  {r['reason']}"
             for r in rows]
    lines.append(
        f"\n{len(items)} interrupts: "
        + ", ".join(f"{n} {outcome}" for outcome, n in sorted(summary.items()))
        + (f" ({result.unjudged} not judged live: on_failure applied)" if result.unjudged else "")
    )
    emit(args, {"decisions": rows, "summary": summary, "unjudged": result.unjudged},
         "\n".join(lines))
    return 0
