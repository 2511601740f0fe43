"""``mailslot watch add|list|pause|resume|rm``: the watches in the intents file, from the
shell.

Watches are ``[[watch]]`` tables in ``intents.toml`` next to the intents, edited through
``edge.intents.edit`` like intents are: what ``add`` writes is what a user could have
typed, comments and layout survive, and a running edge daemon picks the change up on its
own. ``list`` adds what the daemon recorded (last run, next run, last result) from
``data/watches.sqlite3`` when there is one (``edge.status.watch_runtime``); ``add`` checks
the folders a watch names exist (``edge.watches.folders``). Errors carry a code: ``invalid_watch`` (bad
options, or a file watch on a folder that does not exist; nothing written),
``duplicate_watch``, ``unknown_watch``, ``intent_file_error`` (the file itself is broken,
with its line).
"""

from __future__ import annotations

import argparse
import json
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge.cli.intents import (
    WHERE_HELP,
    add_match_options,
    explain,
    match_from_args,
    match_options,
    parse_where,
)
from edge.cli.output import Command, emit
from edge.config import EdgePaths
from edge.errors import InvalidWatch, UnknownWatch
from edge.intents.declarations import (
    WATCH_KINDS,
    AbsenceWatch,
    CommandWatch,
    FileWatch,
    TickWatch,
    TimerWatch,
    Watch,
)
from edge.intents.edit import add_watch, remove_watch, set_watch_paused
from edge.intents.file import load_intents, validation_problems
from edge.status import watch_runtime
from edge.watches.folders import check_folders

_MODELS: dict[str, type[FileWatch | CommandWatch | TimerWatch | AbsenceWatch | TickWatch]] = {
    "file": FileWatch,
    "command": CommandWatch,
    "timer": TimerWatch,
    "absence": AbsenceWatch,
    "tick": TickWatch,
}
_SCHEDULE = ("--every", "--cron", "--at", "--timezone", "--jitter", "--catch-up")
_MATCH = (
    "--match-type",
    "--match-source-kind",
    "--match-source-name",
    "--match-session",
    "--match-priority",
)
#: The options that only some kinds take (all kinds take ID, --kind, --description,
#: --type, --priority, --session and --paused).
_KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "file": (
        "--path",
        "--ignore",
        "--no-default-ignores",
        "--change",
        "--debounce",
        "--include-content",
        "--content-max",
    ),
    "command": (
        "--argv",
        "--arg",
        *_SCHEDULE,
        "--timeout",
        "--fire-on",
        "--exit-code",
        "--where",
        "--output-max",
        "--cwd",
    ),
    "timer": _SCHEDULE,
    "absence": (*_MATCH, "--where", "--within"),
    "tick": ("--every", "--jitter-pct", "--max-idle", "--daily-budget", "--cache-aware"),
}
#: The option a user typed for each field of a watch, to name it in errors.
_OPTIONS: dict[tuple[str, ...], str] = {
    ("id",): "ID",
    ("description",): "--description",
    ("type",): "--type",
    ("priority",): "--priority",
    ("session",): "--session",
    ("paths",): "--path",
    ("ignore",): "--ignore",
    ("changes",): "--change",
    ("debounce",): "--debounce",
    ("content_max",): "--content-max",
    ("argv",): "--argv",
    ("schedule",): "--every, --cron or --at",
    ("schedule", "every"): "--every",
    ("schedule", "cron"): "--cron",
    ("schedule", "at"): "--at",
    ("schedule", "timezone"): "--timezone",
    ("schedule", "jitter"): "--jitter",
    ("schedule", "catch_up"): "--catch-up",
    ("timeout",): "--timeout",
    ("fire_on",): "--fire-on",
    ("exit_codes",): "--exit-code",
    ("condition",): "--where",
    ("output_max",): "--output-max",
    ("cwd",): "--cwd",
    **match_options("match-"),
    ("within",): "--within",
    ("every",): "--every",
    ("jitter_pct",): "--jitter-pct",
    ("max_idle",): "--max-idle",
    ("daily_budget",): "--daily-budget",
}


def add_watch_commands(sub: Any, command: Command) -> None:
    """Register ``mailslot watch ...`` on the top-level subparsers ``sub``."""
    watch = sub.add_parser("watch", help="local sources of interrupts: files, commands, time")
    group = watch.add_subparsers(metavar="COMMAND")

    p = command("add", cmd_add, "add a watch to intents.toml", group)
    p.add_argument("id", metavar="ID", help="a name: lowercase letters, digits, _ and -")
    p.add_argument("--kind", required=True, choices=WATCH_KINDS, help="what to watch")
    p.add_argument("--description", default="", help="what this watch is for")
    p.add_argument("--type", metavar="T", help="interrupt type raised (default <kind>.<event>)")
    p.add_argument("--priority", metavar="P", help="now | next | later (default next)")
    p.add_argument("--session", metavar="S", help="session the interrupt is for (tick: required)")
    p.add_argument("--paused", action="store_true", help="add it paused")

    f = p.add_argument_group("file")
    f.add_argument("--path", action="append", metavar="P", help="absolute path or glob (~ ok)")
    f.add_argument("--ignore", action="append", metavar="GLOB", help="also ignore these names")
    f.add_argument(
        "--no-default-ignores", action="store_true", help="do not ignore .git, *.swp, *~ …"
    )
    f.add_argument("--change", action="append", metavar="C", help="created | modified | deleted")
    f.add_argument("--debounce", metavar="DURATION", help="merge changes within (default 20ms)")
    f.add_argument("--include-content", action="store_true", help="put the file's text in it")
    f.add_argument("--content-max", metavar="N", help="bytes of content (default 4096)")

    c = p.add_argument_group("command (run as an argv, never through a shell)")
    c.add_argument("--argv", metavar="'CMD ARGS'", help="command line, split like a shell")
    c.add_argument("--arg", action="append", metavar="X", help="one argv item (repeat)")
    c.add_argument("--timeout", metavar="DURATION", help="default 30s")
    c.add_argument(
        "--fire-on",
        metavar="change|exit_code|condition",
        help="default: condition with --where, exit_code with --exit-code, else change",
    )
    c.add_argument("--exit-code", action="append", metavar="N", help="exit codes that fire")
    c.add_argument("--output-max", metavar="N", help="bytes of output kept (default 4096)")
    c.add_argument("--cwd", metavar="DIR", help="working directory (default: home)")

    s = p.add_argument_group("schedule (command, timer): one of --every, --cron, --at")
    s.add_argument("--every", metavar="DURATION", help="e.g. 5m (tick: the tick interval)")
    s.add_argument("--cron", metavar="'M H DOM MON DOW'", help="e.g. '*/5 * * * *'")
    s.add_argument("--at", metavar="ISO", help="once, e.g. 2026-05-01T09:00")
    s.add_argument("--timezone", metavar="ZONE", help="time zone of --cron and --at")
    s.add_argument("--jitter", metavar="DURATION", help="random delay up to this")
    s.add_argument("--catch-up", metavar="once|skip", help="after a sleep (default once)")

    m = p.add_argument_group("absence: fire when nothing matching arrived --within")
    add_match_options(m, prefix="match-", where=False)
    m.add_argument("--within", metavar="DURATION", help="e.g. 26h")
    p.add_argument(
        "--where",
        action="append",
        metavar="'FIELD OP VALUE'",
        help=f"command: condition on the JSON output (fields output.<path>); absence: {WHERE_HELP}",
    )

    t = p.add_argument_group("tick (needs --session and --every)")
    t.add_argument("--jitter-pct", metavar="PCT", help="± this %% of --every (default 10)")
    t.add_argument("--max-idle", metavar="DURATION", help="stop after the session idled this")
    t.add_argument("--daily-budget", metavar="N", help="ticks per day (default 0: unlimited)")
    t.add_argument("--cache-aware", action="store_true", help="snap to prompt-cache lifetimes")

    command("list", cmd_list, "list the watches, with their last and next run", group)
    for name, handler, help in (
        ("pause", cmd_pause, "pause a watch (it does not run until resumed)"),
        ("resume", cmd_resume, "resume a paused watch"),
        ("rm", cmd_rm, "remove a watch"),
    ):
        p = command(name, handler, help, group)
        p.add_argument("id", metavar="ID")


# -- add ------------------------------------------------------------------------------


def watch_from_args(args: argparse.Namespace) -> Watch:
    """The watch the options describe; ``InvalidWatch`` naming the option if not (an
    option of another kind, a malformed value, a missing required option)."""
    kind = args.kind
    for other in WATCH_KINDS:
        for option in _KIND_OPTIONS[other]:
            if option not in _KIND_OPTIONS[kind] and _given(args, option):
                raise InvalidWatch(f"{option} does not apply to a {kind} watch")
    doc: dict[str, Any] = {"id": args.id, "kind": kind, "description": args.description}
    for name in ("type", "priority", "session"):
        if getattr(args, name) is not None:
            doc[name] = getattr(args, name)
    doc["paused"] = args.paused
    if kind == "file":
        _put(
            doc,
            paths=args.path,
            ignore=args.ignore,
            changes=args.change,
            debounce=args.debounce,
            content_max=_int(args, "--content-max"),
        )
        if args.no_default_ignores:
            doc["default_ignores"] = False
        if args.include_content:
            doc["include_content"] = True
    elif kind == "command":
        _put(
            doc,
            argv=_argv(args),
            schedule=_schedule(args),
            timeout=args.timeout,
            fire_on=_fire_on(args),
            exit_codes=_ints(args, "--exit-code"),
            condition=[parse_where(text, InvalidWatch) for text in args.where or []] or None,
            output_max=_int(args, "--output-max"),
            cwd=args.cwd,
        )
    elif kind == "timer":
        _put(doc, schedule=_schedule(args))
    elif kind == "absence":
        doc["match"] = match_from_args(args, prefix="match-", error=InvalidWatch)
        _put(doc, within=args.within)
    else:
        _put(
            doc,
            every=args.every,
            jitter_pct=_float(args, "--jitter-pct"),
            max_idle=args.max_idle,
            daily_budget=_int(args, "--daily-budget"),
        )
        if args.cache_aware:
            doc["cache_aware"] = True
    try:
        return _MODELS[kind].model_validate(doc)
    except ValidationError as exc:
        raise InvalidWatch(
            "; ".join(
                explain(loc, why, _OPTIONS) for loc, why in validation_problems(exc, _MODELS[kind])
            )
        ) from None


def _dest(option: str) -> str:
    return option.removeprefix("--").replace("-", "_")


def _given(args: argparse.Namespace, option: str) -> bool:
    return getattr(args, _dest(option)) not in (None, False)


def _put(doc: dict[str, Any], **fields: Any) -> None:
    doc.update({name: value for name, value in fields.items() if value is not None})


def _parse_int(text: str, option: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidWatch(f"{option}: {text!r} is not a whole number") from None


def _int(args: argparse.Namespace, option: str) -> int | None:
    text = getattr(args, _dest(option))
    return None if text is None else _parse_int(text, option)


def _ints(args: argparse.Namespace, option: str) -> list[int] | None:
    texts = getattr(args, _dest(option))
    return None if texts is None else [_parse_int(text, option) for text in texts]


def _float(args: argparse.Namespace, option: str) -> float | None:
    text = getattr(args, _dest(option))
    try:
        return None if text is None else float(text)
    except ValueError:
        raise InvalidWatch(f"{option}: {text!r} is not a number") from None


def _argv(args: argparse.Namespace) -> list[str] | None:
    """``--argv`` split like a shell would (quotes kept together, nothing expanded) or the
    ``--arg`` pieces as given: the command is never run through a shell."""
    if args.argv is not None and args.arg:
        raise InvalidWatch("give --argv or --arg, not both")
    if args.argv is None:
        return list(args.arg) if args.arg else None
    try:
        return shlex.split(args.argv)
    except ValueError as exc:
        raise InvalidWatch(f"--argv {args.argv!r}: {exc}") from None


def _schedule(args: argparse.Namespace) -> dict[str, Any] | None:
    fields = {_dest(o): getattr(args, _dest(o)) for o in _SCHEDULE}
    given = {name: value for name, value in fields.items() if value is not None}
    return given or None


def _fire_on(args: argparse.Namespace) -> str | None:
    if args.fire_on is not None:
        return str(args.fire_on)
    if args.where and args.exit_code:
        raise InvalidWatch("--where and --exit-code fire on different things: say --fire-on")
    if args.where:
        return "condition"
    return "exit_code" if args.exit_code else None


def cmd_add(args: argparse.Namespace, paths: EdgePaths) -> int:
    watch = watch_from_args(args)
    check_folders(watch)
    path = paths.intents_file
    add_watch(path, watch)
    emit(args, watch.model_dump(mode="json"), f"added {watch.kind} watch {watch.id} to {path}")
    return 0


# -- list -----------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return value.astimezone().isoformat(timespec="seconds") if value is not None else "-"


def _result(value: dict[str, Any] | None, width: int = 60) -> str:
    if not value:
        return "-"
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_list(args: argparse.Namespace, paths: EdgePaths) -> int:
    watches = load_intents(paths.intents_file).watches
    runtime = watch_runtime(paths)
    width = max((len(w.id) for w in watches), default=2)
    rows, lines = (
        [],
        [
            f"{'ID':<{width}}  {'KIND':<7}  {'STATE':<9}  {'LAST RUN':<25}  {'NEXT RUN':<25}  "
            "LAST RESULT"
        ],
    )
    for watch in watches:
        row = runtime.get(watch.id)
        last_run, next_run = (row.last_run, row.next_run) if row else (None, None)
        last_result = row.last_result if row else None
        state = "paused" if watch.paused else (row.state if row else "active")
        rows.append(
            {
                "id": watch.id,
                "kind": watch.kind,
                "state": state,
                "description": watch.description,
                "last_run": last_run.isoformat() if last_run else None,
                "next_run": next_run.isoformat() if next_run else None,
                "last_result": last_result,
            }
        )
        lines.append(
            f"{watch.id:<{width}}  {watch.kind:<7}  {state:<9}  {_when(last_run):<25}  "
            f"{_when(next_run):<25}  {_result(last_result)}"
        )
    emit(args, rows, "\n".join(lines) if rows else "(no watches)")
    return 0


# -- pause, resume, rm ----------------------------------------------------------------


def _unknown(path: Path, watch_id: str) -> UnknownWatch:
    return UnknownWatch(f"no watch {watch_id!r} in {path}")


def cmd_pause(args: argparse.Namespace, paths: EdgePaths) -> int:
    if not set_watch_paused(paths.intents_file, args.id, True):
        raise _unknown(paths.intents_file, args.id)
    emit(args, {"id": args.id, "paused": True}, f"paused {args.id}")
    return 0


def cmd_resume(args: argparse.Namespace, paths: EdgePaths) -> int:
    if not set_watch_paused(paths.intents_file, args.id, False):
        raise _unknown(paths.intents_file, args.id)
    emit(args, {"id": args.id, "paused": False}, f"resumed {args.id}")
    return 0


def cmd_rm(args: argparse.Namespace, paths: EdgePaths) -> int:
    if not remove_watch(paths.intents_file, args.id):
        raise _unknown(paths.intents_file, args.id)
    emit(args, {"removed": args.id}, f"removed {args.id}")
    return 0
