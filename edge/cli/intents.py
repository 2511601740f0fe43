"""``mailslot intent add|list|show|pause|resume|rm``: the intents file from the shell.

Every command reads or edits ``intents.toml`` through ``edge.intents.file|edit``, so the file
stays the one place intents live: what ``add`` writes is what a user could have typed,
comments and layout survive, and a running edge daemon picks the change up on its own.
Errors carry a code: ``invalid_intent`` (bad options; nothing written),
``duplicate_intent``, ``unknown_intent``, ``intent_file_error`` (the file itself is broken,
with its line).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from edge.cli.output import Command, emit
from edge.config import EdgePaths
from edge.errors import EdgeError, InvalidIntent, UnknownIntent
from edge.intents.edit import add_intent, remove_intent, render_intent, set_paused
from edge.intents.file import dotted, load_intents, validation_problems
from edge.intents.model import Intent
from edge.intents.resume import resume_intent
from edge.intents.summary import intent_rows
from shared.match import Op

OPS: tuple[str, ...] = get_args(Op)
WHERE_HELP = (
    f"predicate, e.g. 'payload.branch eq main'; OP is one of {' '.join(OPS)}; "
    "VALUE is JSON if it parses as JSON, else a string"
)
#: The ``Match`` fields set by one option each: ``--type`` (or ``--match-type``…).
MATCH_FIELDS = ("type", "source_kind", "source_name", "session", "priority")
_MATCH_HELP = {
    "type": ("GLOB", "interrupt type glob"),
    "source_kind": ("K", "source kind"),
    "source_name": ("GLOB", "source name glob"),
    "session": ("S", "session glob"),
    "priority": ("P", "now | next | later"),
}


def match_options(prefix: str = "") -> dict[tuple[str, ...], str]:
    """The option a user typed for each field of ``match``, to name it in errors."""
    options: dict[tuple[str, ...], str] = {
        ("match", name): f"--{prefix}{name.replace('_', '-')}" for name in MATCH_FIELDS
    }
    return {**options, ("match", "all"): "--where"}


#: The option a user typed for each field of ``Intent``, to name it in errors.
_OPTIONS: dict[tuple[str, ...], str] = {
    ("id",): "ID",
    ("description",): "--description",
    **match_options(),
    ("judge", "command"): "--judge",
    ("judge", "timeout"): "--judge-timeout",
    ("judge", "on_failure"): "--judge-on-failure",
    ("policy", "cooldown"): "--cooldown",
    ("policy", "max_reminders"): "--max-reminders",
    ("policy", "coalesce"): "--coalesce",
    ("policy", "dedupe"): "--dedupe",
    ("policy", "active_hours"): "--active-hours",
    ("policy", "active_hours", "timezone"): "--timezone",
    ("grant",): "--grant",
    ("route",): "--route",
    **{("route", name): option for name, option in (
        ("timeout", "--route-timeout"), ("cwd", "--cwd"), ("secret_env", "--secret-env"),
        ("bearer_env", "--bearer-env"), ("max_attempts", "--max-attempts"),
        ("template", "--template"))},
}
#: What ``--route`` takes; the options that go with each kind.
ROUTE_HELP = ("who receives the wakes: exec:'CMD ARGS' (an argv, split like a shell line,"
              " never run through one), webhook:URL, mcp, or record (the default)")
_ROUTE_OPTIONS = {
    "route_timeout": ("timeout", ("exec", "webhook")),
    "cwd": ("cwd", ("exec",)),
    "secret_env": ("secret_env", ("webhook",)),
    "bearer_env": ("bearer_env", ("webhook",)),
    "max_attempts": ("max_attempts", ("webhook",)),
    "template": ("template", ("webhook",)),
}


def add_intent_commands(sub: Any, command: Command) -> None:
    """Register ``mailslot intent ...`` on the top-level subparsers ``sub``."""
    intent = sub.add_parser("intent", help="the intents that decide what wakes an agent")
    group = intent.add_subparsers(metavar="COMMAND")

    p = command("add", cmd_add, "add an intent to intents.toml", group)
    p.add_argument("id", metavar="ID", help="a name: lowercase letters, digits, _ and -")
    p.add_argument("--description", default="", help="what this intent is for")
    add_match_options(p.add_argument_group("match (all given criteria must hold)"))
    j = p.add_argument_group("judge (asked only after the match and the policy let it through)")
    j.add_argument("--judge", metavar="'CMD ...'", help="judge command line (split like a shell)")
    j.add_argument("--judge-timeout", metavar="DURATION", help="default 10s")
    j.add_argument("--judge-on-failure", metavar="skip|wake", help="default skip")
    q = p.add_argument_group("policy")
    q.add_argument("--cooldown", metavar="DURATION", help="minimum time between two wakes")
    q.add_argument("--max-reminders", metavar="N", help="wakes until the user is active again")
    q.add_argument(
        "--suppress-when-active", action="store_true", help="no wake while the user is active"
    )
    q.add_argument("--coalesce", metavar="DURATION", help="group matches into one wake")
    q.add_argument("--dedupe", metavar="DURATION", help="drop repeated dedupe keys")
    q.add_argument("--active-hours", metavar="HH:MM-HH:MM", help="e.g. 08:00-22:00")
    q.add_argument("--timezone", metavar="ZONE", help="time zone of --active-hours")
    p.add_argument(
        "--grant", action="append", metavar="ACTION", help="an action a woken agent may take"
    )
    p.add_argument("--critical", action="store_true", help="wake outside hours and budget")
    p.add_argument("--paused", action="store_true", help="add it paused")
    r = p.add_argument_group("route (default: record; agents pull the inbox)")
    r.add_argument("--route", metavar="SPEC", help=ROUTE_HELP)
    r.add_argument("--route-timeout", metavar="DURATION",
                   help="exec: default 10m; webhook: default 10s")
    r.add_argument("--cwd", metavar="DIR", help="exec: working directory (absolute)")
    r.add_argument("--secret-env", metavar="VAR", help="webhook: variable holding the whsec_ secret")
    r.add_argument("--bearer-env", metavar="VAR", help="webhook: variable holding a bearer token")
    r.add_argument("--max-attempts", metavar="N", help="webhook: attempts before giving up")
    r.add_argument("--template", metavar="JSON",
                   help="webhook: the body, JSON with {path} placeholders, e.g."
                        " '{\"message\": \"{summary}\"}'")

    command("list", cmd_list, "list the intents", group)
    p = command("show", cmd_show, "show one intent", group)
    p.add_argument("id", metavar="ID")
    for name, handler, help in (
        ("pause", cmd_pause, "pause an intent (it matches nothing until resumed)"),
        ("resume", cmd_resume, "resume a paused intent"),
        ("rm", cmd_rm, "remove an intent"),
    ):
        p = command(name, handler, help, group)
        p.add_argument("id", metavar="ID")


def add_match_options(group: Any, prefix: str = "", where: bool = True) -> None:
    """Register ``--{prefix}type`` … ``--{prefix}priority`` and, with ``where``,
    ``--where`` on ``group``; read them back with ``match_from_args``. Each match option
    takes one or more values and may be repeated (``--source-kind file timer`` is
    ``--source-kind file --source-kind timer``): any of them matches."""
    for name in MATCH_FIELDS:
        metavar, help = _MATCH_HELP[name]
        option = f"--{prefix}{name.replace('_', '-')}"
        group.add_argument(option, action="extend", nargs="+", metavar=metavar,
                           help=f"{help}: one or more, any of them matches (repeatable)")
    if where:
        group.add_argument("--where", action="append", metavar="'FIELD OP VALUE'", help=WHERE_HELP)


def match_from_args(
    args: argparse.Namespace, prefix: str = "", error: type[EdgeError] = InvalidIntent
) -> dict[str, Any]:
    """The ``match`` document the options of ``add_match_options`` describe (``--where``
    as ``all``); ``error`` (naming the option) for a malformed ``--where``."""
    match: dict[str, Any] = {}
    for name in MATCH_FIELDS:
        if values := getattr(args, prefix.replace("-", "_") + name):
            match[name] = values
    if args.where:
        match["all"] = [parse_where(text, error) for text in args.where]
    return match


def explain(loc: tuple[str | int, ...], reason: str, options: dict[tuple[str, ...], str]) -> str:
    """A problem at ``loc`` named by the option that set it (from ``options``)."""
    names = tuple(p for p in loc if isinstance(p, str))
    for end in range(len(names), 0, -1):
        if (option := options.get(names[:end])) is not None:
            return f"{option}: {reason}"
    return f"{dotted(loc)}: {reason}" if loc else reason


# -- add ------------------------------------------------------------------------------


def intent_from_args(args: argparse.Namespace) -> Intent:
    """The ``Intent`` the options describe; ``InvalidIntent`` naming the option if not."""
    match = match_from_args(args)
    doc: dict[str, Any] = {"id": args.id, "description": args.description, "match": match}
    if args.judge is not None:
        judge: dict[str, Any] = {"command": shlex.split(args.judge)}
        if args.judge_timeout is not None:
            judge["timeout"] = args.judge_timeout
        if args.judge_on_failure is not None:
            judge["on_failure"] = args.judge_on_failure
        doc["judge"] = judge
    elif args.judge_timeout is not None or args.judge_on_failure is not None:
        raise InvalidIntent("--judge-timeout and --judge-on-failure need --judge")
    policy: dict[str, Any] = {}
    for name in ("cooldown", "coalesce", "dedupe"):
        if getattr(args, name) is not None:
            policy[name] = getattr(args, name)
    if args.max_reminders is not None:
        try:
            policy["max_reminders"] = int(args.max_reminders)
        except ValueError:
            raise InvalidIntent(
                f"--max-reminders: {args.max_reminders!r} is not a whole number"
            ) from None
    if args.suppress_when_active:
        policy["suppress_when_active"] = True
    if args.active_hours is not None:
        start, sep, end = args.active_hours.partition("-")
        if not sep:
            raise InvalidIntent(f"--active-hours {args.active_hours!r}: expected HH:MM-HH:MM")
        policy["active_hours"] = {"start": start.strip(), "end": end.strip()}
        if args.timezone is not None:
            policy["active_hours"]["timezone"] = args.timezone
    elif args.timezone is not None:
        raise InvalidIntent("--timezone needs --active-hours")
    doc["policy"] = policy
    doc["grant"] = args.grant or []
    doc["critical"] = args.critical
    doc["paused"] = args.paused
    if (route := route_from_args(args)) is not None:
        doc["route"] = route
    try:
        return Intent.model_validate(doc)
    except ValidationError as exc:
        raise InvalidIntent(
            "; ".join(explain(loc, why, _OPTIONS) for loc, why in validation_problems(exc, Intent))
        ) from None


def parse_route(spec: str) -> dict[str, Any]:
    """``--route`` → the route's table: ``exec:'CMD ARGS'`` (split with ``shlex``, as a
    shell would split it, but nothing is ever run through a shell), ``webhook:URL``,
    ``mcp``, ``record``. ``InvalidIntent`` if it is none of these (the route's own fields
    are checked by the model)."""
    kind, sep, rest = spec.partition(":")
    kind = kind.strip()
    if kind in ("mcp", "record") and not rest.strip():
        return {"kind": kind}
    if kind == "exec" and sep:
        try:
            argv = shlex.split(rest)
        except ValueError as exc:  # an unclosed quote
            raise InvalidIntent(f"--route {spec!r}: {exc}") from None
        if not argv:
            raise InvalidIntent(f"--route {spec!r}: exec needs a command")
        return {"kind": "exec", "argv": argv}
    if kind == "webhook" and sep and rest.strip():
        return {"kind": "webhook", "url": rest.strip()}
    raise InvalidIntent(f"--route {spec!r}: expected exec:'CMD ARGS', webhook:URL, mcp or"
                        " record")


def route_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """The route ``--route`` and its options describe (None: none given);
    ``InvalidIntent`` for an option of another kind of route, or a bad ``--template``."""
    given = {name: getattr(args, name) for name in _ROUTE_OPTIONS
             if getattr(args, name, None) is not None}
    if args.route is None:
        if given:
            raise InvalidIntent(f"--{next(iter(given)).replace('_', '-')} needs --route")
        return None
    route = parse_route(args.route)
    for name, value in given.items():
        field, kinds = _ROUTE_OPTIONS[name]
        option = f"--{name.replace('_', '-')}"
        if route["kind"] not in kinds:
            raise InvalidIntent(f"{option} applies only to a route of kind"
                                f" {' or '.join(kinds)}")
        if name == "template":
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise InvalidIntent(f"--template: not JSON ({exc})") from None
        elif name == "max_attempts":
            try:
                value = int(value)
            except ValueError:
                raise InvalidIntent(f"--max-attempts: {value!r} is not a whole number") from None
        route[field] = value
    return route


def parse_where(text: str, error: type[EdgeError] = InvalidIntent) -> dict[str, Any]:
    """``'payload.branch eq main'`` → ``{"field": ..., "op": "eq", "value": "main"}``.
    VALUE is JSON if it parses (``3``, ``true``, ``["a","b"]``), else the text as is.
    Raises ``error`` (``InvalidIntent`` unless told) if ``text`` is not of that form."""
    parts = text.split(None, 2)
    if len(parts) < 2 or parts[1] not in OPS:
        raise error(f"--where {text!r}: expected 'FIELD OP VALUE' with OP one of {', '.join(OPS)}")
    field, op = parts[0], parts[1]
    if op in ("present", "absent"):
        if len(parts) == 3:
            raise error(f"--where {text!r}: {op} takes no value")
        return {"field": field, "op": op}
    if len(parts) < 3:
        raise error(f"--where {text!r}: {op} needs a value")
    try:
        value = json.loads(parts[2])
    except ValueError:
        value = parts[2]
    return {"field": field, "op": op, "value": value}


def cmd_add(args: argparse.Namespace, paths: EdgePaths) -> int:
    intent = intent_from_args(args)
    path = paths.intents_file
    add_intent(path, intent)
    emit(args, intent.model_dump(mode="json"), f"added intent {intent.id} to {path}")
    return 0


# -- list, show -----------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, paths: EdgePaths) -> int:
    intents = load_intents(paths.intents_file).intents
    rows = intent_rows(intents)
    width = max((len(i.id) for i in intents), default=0)
    text = "\n".join(
        f"{r['id']:<{width}}  {'paused' if r['paused'] else 'active'}  "
        f"{'critical' if r['critical'] else '-':<8}  {r['route']:<6}  {r['summary']}"
        for r in rows
    )
    emit(args, rows, text or "(no intents)")
    return 0


def _get(path: Path, intent_id: str) -> Intent:
    intent = load_intents(path).get(intent_id)
    if intent is None:
        raise UnknownIntent(f"no intent {intent_id!r} in {path}")
    return intent


def cmd_show(args: argparse.Namespace, paths: EdgePaths) -> int:
    intent = _get(paths.intents_file, args.id)
    text = render_intent(intent).rstrip() + "\n# (fields not shown are at their defaults)"
    emit(args, intent.model_dump(mode="json"), text)
    return 0


# -- pause, resume, rm ----------------------------------------------------------------


def _unknown(path: Path, intent_id: str) -> UnknownIntent:
    return UnknownIntent(f"no intent {intent_id!r} in {path}")


def cmd_pause(args: argparse.Namespace, paths: EdgePaths) -> int:
    if not set_paused(paths.intents_file, args.id, True):
        raise _unknown(paths.intents_file, args.id)
    emit(args, {"id": args.id, "paused": True}, f"paused {args.id}")
    return 0


def cmd_resume(args: argparse.Namespace, paths: EdgePaths) -> int:
    enabled = resume_intent(paths, args.id)
    emit(args, {"id": args.id, "paused": False, "route_enabled": enabled},
         f"resumed {args.id}" + (" (its route, disabled by a 410, is enabled again)"
                                 if enabled else ""))
    return 0


def cmd_rm(args: argparse.Namespace, paths: EdgePaths) -> int:
    if not remove_intent(paths.intents_file, args.id):
        raise _unknown(paths.intents_file, args.id)
    emit(args, {"removed": args.id}, f"removed {args.id}")
    return 0
