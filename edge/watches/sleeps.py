"""An agent asks not to be woken for a while, then to be ticked: ``mailslot sleep`` and
the MCP ``sleep`` tool.

The sleep is written to the watch state (the daemon is another process) and the daemon is
poked through ``EdgePaths.poke_file``, which it watches with inotify, so its timer is
re-armed at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from edge.config import EdgePaths
from edge.store.activity import ActivityLog, Event
from edge.store.watchstate import WatchState
from edge.watches.timing import cache_aware, clamp_sleep
from shared.tokens import check_session


def start_sleep(paths: EdgePaths, duration: float, reason: str, session: str | None = None,
                *, cache_aware_snap: bool = False) -> dict[str, Any]:
    """Record a sleep (clamped, optionally snapped), log it, poke the daemon; return what
    ``--json`` prints."""
    paths.require_initialized()
    session = check_session(session) if session else ""
    seconds = clamp_sleep(duration)
    snapped = False
    if cache_aware_snap:
        ms = cache_aware(round(seconds * 1000))
        snapped = ms != round(seconds * 1000)
        seconds = ms / 1000
    now = datetime.now(UTC)
    state = WatchState.open(paths.watches_file)
    try:
        with state.transaction():
            sleep = state.start_sleep(session, reason[:500], now, now + timedelta(seconds=seconds))
            state.incr("sleep.entered")
            if snapped:
                state.incr("cache_aware.snapped")
        with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
            log.append([Event("sleep_started", now, None, None, None, {
                "session": session, "reason": sleep.reason, "seconds": seconds,
                "requested_s": duration, "snapped": snapped})])
    finally:
        state.close()
    paths.poke_file.write_text(now.isoformat())
    return {"session": session or None, "until": sleep.ends.isoformat(), "seconds": seconds,
            "clamped": seconds != duration and not snapped, "snapped": snapped}
