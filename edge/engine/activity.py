"""What runtimes and users tell the engine from outside the daemon: the user is here
(``mailslot activity``, the MCP ``activity`` tool) and what a woken runtime did with a
wake and the tokens it spent (``mailslot outcome``).

Each report is one transaction on the engine state with its activity-log entries appended
under the state's anchor (``edge.store.enginestate.anchored_append``), so the log and the
state never disagree about what was reported.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge.config import EdgePaths
from edge.engine.decide import record_activity
from edge.intents.file import load_intents
from edge.store.activity import ActivityLog, Event
from edge.store.enginestate import EngineState, anchored_append
from shared.tokens import check_name, check_opaque, check_session


def report_activity(paths: EdgePaths, session: str | None) -> dict[str, Any]:
    """The user is here (in ``session``, or everywhere): recorded in the engine's state
    and the log; return what ``--json`` prints."""
    paths.require_initialized()
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


def report_outcome(paths: EdgePaths, interrupt: str, status: str, tokens: int,
                   intent: str | None = None) -> dict[str, Any]:
    """A runtime did ``status`` with ``interrupt`` and spent ``tokens`` (counted against
    today's budget, in the intents' time zone); return what ``--json`` prints."""
    paths.require_initialized()
    interrupt = check_opaque(interrupt, "interrupt id")
    intent = check_name(intent, "intent") if intent else None
    now = datetime.now(UTC)
    zone = ZoneInfo(load_intents(paths.intents_file).settings.timezone)
    state = EngineState.open(paths.engine_file)
    try:
        with state.transaction():
            state.spend(now.astimezone(zone).date().isoformat(), tokens=tokens)
            with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
                anchored_append(state, log, [Event("outcome", now, interrupt, intent, None, {
                    "outcome": status, "tokens": tokens, "reported_by": "runtime"})])
    finally:
        state.close()
    return {"id": interrupt, "outcome": status, "tokens": tokens}
