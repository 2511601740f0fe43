"""``mailslot sleep``: an agent asks not to be woken for a while, then to be ticked
(``edge.watches.sleeps`` records the sleep and pokes the daemon)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from edge.cli.output import Command, duration_arg, emit
from edge.config import EdgePaths
from edge.watches.sleeps import start_sleep


def add_sleep_command(sub: Any, command: Command) -> None:
    """Register ``mailslot sleep`` on the top-level subparsers ``sub``."""
    p = command("sleep", cmd_sleep, "do not wake this session for a while, then tick it")
    p.add_argument("--for", dest="duration", required=True, type=duration_arg,
                   help="e.g. 20m, 2h (clamped to 60 s .. 24 h)")
    p.add_argument("--reason", required=True, help="shown in the tick when the sleep ends")
    p.add_argument("--session", help="the agent session (default: none in particular)")
    p.add_argument("--cache-aware", action="store_true",
                   help="snap the duration to prompt-cache lifetimes (270 s / 1200 s)")


def cmd_sleep(args: argparse.Namespace, paths: EdgePaths) -> int:
    data = start_sleep(paths, args.duration, args.reason, args.session,
                       cache_aware_snap=args.cache_aware)
    until = datetime.fromisoformat(data["until"]).astimezone()
    note = (" (clamped to 60 s .. 24 h)" if data["clamped"]
            else " (snapped to a prompt-cache lifetime)" if data["snapped"] else "")
    emit(args, data, f"sleeping until {until:%Y-%m-%d %H:%M:%S %Z} "
                     f"({data['seconds']:g}s){note}")
    return 0
