"""``mailslot sleep``: an agent asks not to be woken for a while, then to be ticked.

The sleep is written to the watch state (another process: the daemon) and the daemon is
poked through a file it watches with inotify, so its timer is re-armed at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.config import EdgePaths
from edge.errors import NotInitialized
from edge.intents.model import parse_duration
from edge.store.activity import ActivityLog, Event
from edge.store.watchstate import WatchState
from edge.watches.timing import cache_aware, clamp_sleep
from shared.tokens import check_session


def add_time_commands(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("sleep", cmd_sleep, "do not wake this session for a while, then tick it")
    p.add_argument("--for", dest="duration", required=True, type=_duration,
                   help="e.g. 20m, 2h (clamped to 60 s .. 24 h)")
    p.add_argument("--reason", required=True, help="shown in the tick when the sleep ends")
    p.add_argument("--session", help="the agent session (default: none in particular)")
    p.add_argument("--cache-aware", action="store_true",
                   help="snap the duration to prompt-cache lifetimes (270 s / 1200 s)")


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def start_sleep(paths: EdgePaths, duration: float, reason: str, session: str | None = None,
                *, cache_aware_snap: bool = False) -> dict[str, Any]:
    """Record a sleep (clamped, optionally snapped), log it, poke the daemon; return what
    ``--json`` prints. Shared by ``mailslot sleep`` and the MCP ``sleep`` tool."""
    if not paths.config_file.exists():
        raise NotInitialized("no edge here; run `mailslot edge init` first")
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


def cmd_sleep(args: argparse.Namespace) -> int:
    from edge.cli.main import emit

    data = start_sleep(EdgePaths.resolve(), args.duration, args.reason, args.session,
                       cache_aware_snap=args.cache_aware)
    until = datetime.fromisoformat(data["until"]).astimezone()
    emit(args, data, f"sleeping until {until:%H:%M:%S} ({data['seconds']:g}s)")
    return 0
