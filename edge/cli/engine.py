"""``mailslot activity`` (the user is here), ``mailslot outcome`` (a runtime reports what
it did with a wake, and the tokens it spent) and ``mailslot replay`` (backtest intents)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge.cli.log import since_time
from edge.config import EdgePaths
from edge.engine.decide import record_activity
from edge.engine.replay import replay
from edge.errors import NotInitialized
from edge.intents.file import load_intents
from edge.store.activity import ActivityLog, Event
from edge.store.deliveries import OUTCOMES
from edge.store.enginestate import EngineState, anchored_append
from edge.store.inbox import Inbox
from shared.tokens import check_name, check_opaque, check_session


def add_engine_commands(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("activity", cmd_activity, "report that the user is active (suppresses wakes)")
    p.add_argument("--session", help="only this agent session (default: everywhere)")
    p = command("outcome", cmd_outcome, "report what a woken runtime did (and tokens used)")
    p.add_argument("id", help="interrupt id")
    p.add_argument("--status", required=True, choices=OUTCOMES)
    p.add_argument("--tokens", type=_count, default=0, help="model tokens spent (daily budget)")
    p.add_argument("--intent", help="the intent that woke it")
    p = command("replay", cmd_replay, "run stored interrupts through intents, waking nothing")
    p.add_argument("--since", required=True, type=since_time, metavar="T",
                   help="ISO 8601 time or a duration back from now (2h, 1d)")
    p.add_argument("--intents", type=Path, metavar="FILE",
                   help="candidate intents file (default: the live intents.toml)")


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number >= 0")
    return number


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    from edge.cli.main import emit

    emit(args, data, text)


def cmd_activity(args: argparse.Namespace) -> int:
    data = report_activity(EdgePaths.resolve(), args.session)
    where = f"session {data['session']}" if data["session"] else "everywhere"
    _emit(args, data, f"active ({where})")
    return 0


def report_activity(paths: EdgePaths, session: str | None) -> dict[str, Any]:
    """The user is here: recorded in the engine's state and the log. Shared by
    ``mailslot activity`` and the MCP ``activity`` tool."""
    if not paths.config_file.exists():
        raise NotInitialized("no edge here; run `mailslot edge init` first")
    session = check_session(session) if session else ""
    now = datetime.now(UTC)
    events: list[Event] = []
    state = EngineState.open(paths.engine_file)
    try:
        with state.transaction():
            record_activity(state, events, session, now)
            with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
                anchored_append(state, log, events)
    finally:
        state.close()
    return {"session": session or None, "at": now.isoformat()}


def cmd_outcome(args: argparse.Namespace) -> int:
    paths = EdgePaths.resolve()
    if not paths.config_file.exists():
        raise NotInitialized("no edge here; run `mailslot edge init` first")
    interrupt = check_opaque(args.id, "interrupt id")
    intent = check_name(args.intent, "intent") if args.intent else None
    now = datetime.now(UTC)
    zone = ZoneInfo(load_intents(paths.intents_file).settings.timezone)
    state = EngineState.open(paths.engine_file)
    try:
        with state.transaction():
            state.spend(now.astimezone(zone).date().isoformat(), tokens=args.tokens)
            with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
                anchored_append(state, log, [Event("outcome", now, interrupt, intent, None, {
                    "outcome": args.status, "tokens": args.tokens, "reported_by": "runtime"})])
    finally:
        state.close()
    _emit(args, {"id": interrupt, "outcome": args.status, "tokens": args.tokens},
          f"{interrupt}: {args.status}" + (f", {args.tokens} tokens" if args.tokens else ""))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    paths = EdgePaths.resolve()
    if not paths.inbox_file.exists():
        raise NotInitialized(f"no inbox at {paths.inbox_file}; run `mailslot edge init`")
    intents = load_intents(args.intents or paths.intents_file)
    with Inbox.open(paths.inbox_file) as inbox:
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
    _emit(args, {"decisions": rows, "summary": summary, "unjudged": result.unjudged},
          "\n".join(lines))
    return 0
