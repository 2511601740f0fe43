"""``mailslot log`` and ``mailslot explain``: read and check the activity log.

``mailslot log`` lists entries (the last ``--limit``, filtered); ``mailslot log --verify``
checks the chain, the MACs, the head anchor and the anchor kept in the engine state (so a
log deleted together with its head is caught) and exits 1 on any problem, one line per
problem saying where, the most serious one's code last (across every segment of the log,
from what retention pruned, which it reports); ``mailslot explain ID`` tells one
interrupt's story in plain words (exit 1, ``no_record``, if the log has nothing on it).
Times print in the local time zone; ``--json`` gives the stored fields. Reading and
checking the log against the engine's anchor is ``edge.engine.audit``'s; this module
parses and prints.
"""

from __future__ import annotations

import argparse
import re
from collections import deque
from datetime import datetime, timedelta, tzinfo
from typing import Any

from edge.cli.output import Command, emit
from edge.config import EdgePaths
from edge.engine.audit import open_log, verify_log
from edge.engine.explain import explain
from edge.errors import NoRecord
from edge.store.activity import Entry
from edge.store.activityline import canonical

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_log_commands(sub: Any, command: Command) -> None:
    """Register ``mailslot log`` and ``mailslot explain`` on ``sub``."""
    p = command("log", cmd_log, "the decision engine's activity log (tamper-evident)")
    p.add_argument("--since", type=since_time, metavar="T",
                   help="from T: ISO 8601 (local time if no offset) or back from now: 30m, 2h, 1d")
    p.add_argument("--intent", metavar="I", help="only entries of this intent")
    p.add_argument("--type", metavar="T", help="only interrupts of this type")
    p.add_argument("--interrupt", metavar="ID", help="only this interrupt")
    p.add_argument("--limit", type=int, default=100, metavar="N",
                   help="the last N matching entries (default 100; 0: all)")
    p.add_argument("--verify", action="store_true",
                   help="check the hash chain, MACs and head anchor; exit 1 if anything is wrong")
    p.set_defaults(log_parser=p)
    p = command("explain", cmd_explain, "why an interrupt did or did not wake an agent")
    p.add_argument("id", help="interrupt id")


def since_time(value: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO 8601 time (naive means local), or ``2h``/``30m``/``1d``/``90s``/
    ``1w`` before ``now``."""
    if match := _AGO.match(value):
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
        return (now or datetime.now().astimezone()) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither an ISO 8601 time nor a duration like 30m, 2h, 1d"
        ) from None
    return moment if moment.utcoffset() is not None else moment.astimezone()


def cmd_log(args: argparse.Namespace, paths: EdgePaths) -> int:
    if args.verify:
        if any(v is not None for v in (args.since, args.intent, args.type, args.interrupt)):
            args.log_parser.error("--verify checks the whole log; it takes no filters")
        report = verify_log(paths)
        segments = f" in {report.segments} segments" if report.segments > 1 else ""
        pruned = ""
        if report.pruned is not None:
            until = datetime.fromisoformat(report.pruned["until"]).astimezone(_local_zone())
            pruned = (f"; seq 1 to {report.pruned['seq']} pruned by retention (entries until "
                      f"{until:%Y-%m-%d %H:%M:%S})")
        if report.ok:
            text = f"ok: {report.count} entries{segments}, chain intact{pruned}"
        else:
            text = "\n".join([*(str(p) for p in report.problems),
                              f"FAILED: {report.code}: {len(report.problems)} problem(s) in "
                              f"{report.count} entries{segments}{pruned}"])
        emit(args, report.to_dict(), text)
        return 0 if report.ok else 1
    log = open_log(paths)
    shown: deque[Entry] = deque(maxlen=args.limit if args.limit > 0 else None)
    if log is not None:
        with log:
            shown.extend(log.entries(since=args.since, intent=args.intent, type=args.type,
                                     interrupt=args.interrupt))
    emit(args, [e.to_dict() for e in shown], "\n".join(map(log_line, shown)) or "(no entries)")
    return 0


def log_line(entry: Entry) -> str:
    """``time  step  intent  interrupt  details``, in local time."""
    at = entry.at.astimezone(_local_zone())
    return "  ".join([f"{at:%Y-%m-%d %H:%M:%S}", f"{entry.step:<10}", entry.intent or "-",
                      entry.interrupt or "-", details(entry)]).rstrip()


def details(entry: Entry) -> str:
    """``rule: reason`` first, then every other detail as ``key=value``."""
    d = {k: v for k, v in entry.detail.items() if v is not None}
    why = ": ".join(str(d.pop(k)) for k in ("rule", "reason") if k in d)
    rest = " ".join(f"{k}={v if isinstance(v, str) else canonical(v)}" for k, v in d.items())
    return "  ".join(part for part in (why, rest) if part)


def _local_zone() -> tzinfo:
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None  # astimezone() always attaches one
    return zone


def cmd_explain(args: argparse.Namespace, paths: EdgePaths) -> int:
    log = open_log(paths)
    entries: list[Entry] = []
    if log is not None:
        with log:
            entries = log.trace(args.id)
    if not entries:
        raise NoRecord(f"no record of interrupt {args.id} in the activity log")
    emit(args, [e.to_dict() for e in entries], explain(args.id, entries, tz=_local_zone()))
    return 0
