"""``mailslot sleep``: an agent asks not to be woken for a while, then to be ticked.

The sleep is written to the watch state (another process: the daemon) and the daemon is
poked through a file it watches with inotify, so its timer is re-armed at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.activity import ActivityLog, Event
from edge.config import EdgePaths
from edge.errors import NotInitialized
from edge.intents import parse_duration
from edge.timing import cache_aware, clamp_sleep
from edge.watchstate import WatchState
from shared.tokens import check_session

POKE_FILE = "watches.poke"


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


def cmd_sleep(args: argparse.Namespace) -> int:
    from edge.cli import emit

    paths = EdgePaths.resolve()
    if not paths.config_file.exists():
        raise NotInitialized("no edge here; run `mailslot edge init` first")
    session = check_session(args.session) if args.session else ""
    seconds = clamp_sleep(args.duration)
    snapped = False
    if args.cache_aware:
        ms = cache_aware(round(seconds * 1000))
        snapped = ms != round(seconds * 1000)
        seconds = ms / 1000
    now = datetime.now(UTC)
    state = WatchState.open(paths.watches_file)
    try:
        with state.transaction():
            sleep = state.start_sleep(session, args.reason[:500], now,
                                      now + timedelta(seconds=seconds))
            state.incr("sleep.entered")
            if snapped:
                state.incr("cache_aware.snapped")
        with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
            log.append([Event("sleep_started", now, None, None, None, {
                "session": session, "reason": sleep.reason, "seconds": seconds,
                "requested_s": args.duration, "snapped": snapped})])
    finally:
        state.close()
    (paths.data_dir / POKE_FILE).write_text(now.isoformat())
    data = {"session": session or None, "until": sleep.ends.isoformat(), "seconds": seconds,
            "clamped": seconds != args.duration and not snapped, "snapped": snapped}
    emit(args, data, f"sleeping until {sleep.ends.astimezone():%H:%M:%S} ({seconds:g}s)")
    return 0
