"""``mailslot approve request`` (a runtime asks) and ``mailslot approvals ...`` (the user
decides): the approvals desk from the shell.

``approve request`` exits 0 when the action may go ahead (``allowed`` by the dial or
``approved`` by the user), 3 while it is ``pending`` (also when ``--wait`` ran out), and 4
when it may not (``denied``, ``rejected``, ``expired``). Errors exit 1 with a code:
``unknown_approval``, ``already_decided``, ``invalid_action``, ``invalid_request``,
``intent_file_error`` (``promote`` on a broken file).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import UTC, datetime
from typing import Any

from edge.approvals.desk import open_desk, streak_hint
from edge.approvals.dial import check_action, read_permissions
from edge.cli.output import Command, duration_arg, emit
from edge.config import EdgePaths
from edge.engine.explain import human_duration
from edge.intents.edit import promote
from edge.intents.file import load_intents
from edge.store.approvals import Approval

#: Exit code of ``approve request`` per status.
EXIT = {"allowed": 0, "approved": 0, "pending": 3, "rejected": 4, "denied": 4, "expired": 4}
WAIT_MAX = 24 * 3600.0


def add_approval_commands(sub: Any, command: Command) -> None:
    """Register ``mailslot approve ...`` and ``mailslot approvals ...`` on ``sub``."""
    approve = sub.add_parser("approve", help="ask before acting beyond the permission envelope")
    group = approve.add_subparsers(metavar="COMMAND")
    p = command("request", cmd_request, "ask for an action; the autonomy dial or the user "
                "decides (exit 0 go ahead, 3 pending, 4 refused)", group)
    p.add_argument("--action", required=True, help="e.g. deploy:staging, repo:write")
    p.add_argument("--summary", required=True, help="what and why, for the user")
    p.add_argument("--session", help="agent session (default: $MAILSLOT_SESSION)")
    p.add_argument("--intent", help="the intent that woke the runtime (default: "
                   "$MAILSLOT_INTENT, or the envelope's)")
    p.add_argument("--wait", type=_wait, metavar="DURATION",
                   help="wait this long for the user's decision, e.g. 60s, 10m")

    approvals = sub.add_parser("approvals", help="approval requests: list, decide, promote")
    group = approvals.add_subparsers(metavar="COMMAND")
    p = command("list", cmd_list, "pending approval requests", group)
    p.add_argument("--all", action="store_true", help="decided and expired ones too")
    for name, handler, help in (("approve", cmd_approve, "approve a pending request"),
                                ("reject", cmd_reject, "reject a pending request")):
        p = command(name, handler, help, group)
        p.add_argument("id", metavar="ID")
        p.add_argument("--note", default="", help="passed on to the runtime")
    p = command("edit", cmd_edit, "narrow a pending request's action before deciding", group)
    p.add_argument("id", metavar="ID")
    p.add_argument("--action", required=True,
                   help="the action as it may be approved: within the requested one "
                        "(deploy:staging for deploy:*), else refused (wider_action)")
    p = command("promote", cmd_promote,
                "add an allow rule for an action to [approvals] in intents.toml", group)
    p.add_argument("action", metavar="ACTION")


def _wait(value: str) -> float:
    seconds = duration_arg(value)
    if not 0 < seconds <= WAIT_MAX:
        raise argparse.ArgumentTypeError("the wait must be more than 0 and at most 24h")
    return seconds


def _initialized(paths: EdgePaths) -> EdgePaths:
    """``paths``, checked to be an enrolled edge and made sure to exist."""
    paths.require_initialized()
    paths.ensure()
    return paths


def _line(a: Approval, now: datetime) -> str:
    where = f"  session {a.session}" if a.session else ""
    if a.status == "pending":
        when = f"expires in {human_duration(max(0.0, (a.expires - now).total_seconds()))}"
    else:
        when = f"{a.decided.astimezone():%Y-%m-%d %H:%M}" if a.decided else ""
    return f"{a.id}  {a.status:<8}  {a.action}  {a.summary[:60]!r}{where}  {when}"


def cmd_request(args: argparse.Namespace, paths: EdgePaths) -> int:
    paths = _initialized(paths)
    held = read_permissions(os.environ)
    session = args.session or os.environ.get("MAILSLOT_SESSION") or None
    intent = (args.intent or os.environ.get("MAILSLOT_INTENT")
              or (held.intent if held else None) or None)
    with open_desk(paths) as desk:
        approval = desk.request(args.action, args.summary, session=session, intent=intent,
                                held=held)
        if approval.status == "pending" and args.wait:
            approval = asyncio.run(desk.wait(approval.id, args.wait, paths.data_dir))
    if approval.status == "pending":
        text = (f"pending {approval.id}: {approval.reason}\n"
                f"decide with `mailslot approvals approve|reject {approval.id}`"
                f" (expires {approval.expires.astimezone():%H:%M:%S})")
    else:
        text = f"{approval.status} {approval.id}: {approval.action}"
        text += f" ({approval.note})" if approval.note else f" ({approval.reason})"
    emit(args, approval.to_dict(), text)
    return EXIT[approval.status]


def cmd_list(args: argparse.Namespace, paths: EdgePaths) -> int:
    with open_desk(_initialized(paths)) as desk:
        rows = desk.requests(everything=args.all)
    now = datetime.now(UTC)
    emit(args, [a.to_dict() for a in rows], "\n".join(_line(a, now) for a in rows) or "(none)")
    return 0


def _cmd_decide(args: argparse.Namespace, paths: EdgePaths, approve: bool) -> int:
    with open_desk(_initialized(paths)) as desk:
        done = desk.approve(args.id, args.note) if approve else desk.reject(args.id, args.note)
        settings = desk.settings
    a = done.approval
    suggestion = streak_hint(settings, a.action, done.streak) if done.suggest else None
    text = f"{a.status} {a.id}: {a.action}"
    if suggestion:
        text += f"\n{suggestion}"
    emit(args, {**a.to_dict(), "interrupt": done.interrupt, "streak": done.streak,
                "suggestion": suggestion}, text)
    return 0


def cmd_approve(args: argparse.Namespace, paths: EdgePaths) -> int:
    return _cmd_decide(args, paths, approve=True)


def cmd_reject(args: argparse.Namespace, paths: EdgePaths) -> int:
    return _cmd_decide(args, paths, approve=False)


def cmd_edit(args: argparse.Namespace, paths: EdgePaths) -> int:
    with open_desk(_initialized(paths)) as desk:
        approval, before = desk.edit(args.id, args.action)
    emit(args, {**approval.to_dict(), "edited_from": before},
         f"{approval.id}: {before} -> {approval.action} (still pending)")
    return 0


def cmd_promote(args: argparse.Namespace, paths: EdgePaths) -> int:
    paths = _initialized(paths)
    action = check_action(args.action)
    added = promote(paths.intents_file, action)
    level = load_intents(paths.intents_file).approvals.level
    text = (f'added {{pattern = "{action}", decision = "allow"}} to [approvals].rules in '
            f"{paths.intents_file}" if added else f"{action}: an allow rule is already there")
    if level != 2:
        text += f"\nnote: rules apply at level 2; the dial is at {level}"
    emit(args, {"action": action, "added": added, "file": str(paths.intents_file),
                "level": level}, text)
    return 0
