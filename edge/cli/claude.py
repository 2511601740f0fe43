"""``mailslot hook claude session-start|stop`` (run by Claude Code's hooks) and ``mailslot
claude install|uninstall`` (which register them, and ``mailslot mcp``, in Claude Code's
settings).

The hook commands read Claude Code's hook input on stdin: outside input, checked by
``edge.claude.hooks``; a bad one ends the command with ``mailslot: hook_input: …`` on
stderr and exit 1 (Claude Code shows it, the session goes on), never a traceback.
``session-start`` prints the ``SessionStart`` JSON (nothing when nothing is pending);
``stop`` waits in the background for a wake (``edge.claude.rewake``) and exits 2 with it
on stderr, which wakes the session (``asyncRewake``), or 0 when none came.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from edge.claude.hooks import (
    DEFAULT_LIMIT,
    INPUT_MAX_BYTES,
    HookInput,
    context_text,
    for_session,
    parse_hook_input,
    session_for,
    session_start_output,
)
from edge.claude.rewake import wait_for_rewake, waiter_file
from edge.claude.settings import (
    Entries,
    FileChange,
    Target,
    apply,
    load_record,
    plan_install,
    plan_uninstall,
)
from edge.cli.inbox import open_inbox
from edge.cli.output import Command, duration_arg, emit
from edge.config import EdgePaths
from edge.errors import HookInputError, UsageError
from edge.store.inbox import Inbox

#: The longest a ``Stop`` hook waits for a wake, unless told (``--wait``).
DEFAULT_WAIT = 8 * 3600.0
#: Exit code that makes Claude Code wake the session with the hook's stderr (asyncRewake).
REWAKE_EXIT = 2
RECORD_FILE = "claude-install.json"


def add_claude_commands(sub: Any, command: Command) -> None:
    """Register ``mailslot hook claude ...`` and ``mailslot claude ...`` on ``sub``."""
    hook = sub.add_parser("hook", help="commands run by an agent runtime's hooks")
    runtimes = hook.add_subparsers(metavar="RUNTIME")
    claude_hooks = runtimes.add_parser("claude", help="Claude Code's hooks").add_subparsers(
        metavar="EVENT")
    p = command("session-start", cmd_session_start,
                "SessionStart: print what is pending for this session (hook JSON)", claude_hooks)
    _hook_options(p)
    p = command("stop", cmd_stop, "Stop, with asyncRewake: wait for a wake for this session,"
                " then exit 2 with it on stderr", claude_hooks)
    _hook_options(p)
    p.add_argument("--wait", type=duration_arg, default=DEFAULT_WAIT, metavar="DURATION",
                   help="give up after this long (default 8h)")

    claude = sub.add_parser("claude", help="Claude Code: register mailslot in its settings")
    group = claude.add_subparsers(metavar="COMMAND")
    p = command("install", cmd_install, "add mailslot's MCP server and hooks to Claude Code's"
                " settings (idempotent)", group)
    _target_options(p)
    p.add_argument("--channel", action="store_true",
                   help="register `mailslot mcp --channel` (a Claude Code channel)")
    p.add_argument("--session", metavar="S", help="the mailslot session the hooks report on"
                   " (default: MAILSLOT_SESSION, else the working folder's name)")
    p = command("uninstall", cmd_uninstall, "remove exactly what install added", group)
    _target_options(p)


def _hook_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", metavar="S", help="the mailslot session (default:"
                   " MAILSLOT_SESSION, else the name of Claude Code's working folder)")
    p.add_argument("--limit", type=_limit_arg, default=DEFAULT_LIMIT,
                   help=f"list at most N interrupts (default {DEFAULT_LIMIT})")


def _target_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", metavar="DIR", type=Path,
                   help="this project only: DIR/.claude/settings.json and DIR/.mcp.json"
                        " (default: ~/.claude/settings.json and ~/.claude.json)")
    p.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")


def _limit_arg(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 100:
        raise argparse.ArgumentTypeError(f"{value!r}: a whole number from 1 to 100")
    return int(value)


# -- the hooks ----------------------------------------------------------------------------


def read_hook_input() -> HookInput:
    """Claude Code's hook input from stdin (nothing to read at a terminal)."""
    if sys.stdin is None or sys.stdin.isatty():
        return HookInput()
    try:
        raw = sys.stdin.buffer.read(INPUT_MAX_BYTES + 1)  # one more: too large is told
    except OSError as exc:
        raise HookInputError(f"cannot read the hook input: {exc}") from None
    return parse_hook_input(raw)


def cmd_session_start(args: argparse.Namespace, paths: EdgePaths) -> int:
    hook = read_hook_input()
    if hook.hook_event_name not in (None, "SessionStart"):
        raise HookInputError(f"this is the SessionStart hook; Claude Code ran it for"
                             f" {hook.hook_event_name[:40]!r}")
    session = session_for(args.session, hook)
    with open_inbox(paths) as inbox:
        pending = for_session(inbox.list("pending", limit=10_000), session, hook.cwd,
                              limit=10_000)
    if pending:  # nothing pending: no output, no context added
        text = context_text(pending[:args.limit], session, waiting=len(pending))
        print(json.dumps(session_start_output(text), ensure_ascii=False))
    return 0


def cmd_stop(args: argparse.Namespace, paths: EdgePaths) -> int:
    hook = read_hook_input()
    session = session_for(args.session, hook)
    with open_inbox(paths) as inbox:
        found = asyncio.run(_wait(inbox, paths, hook, session, args))
    if not found:
        return 0
    text = context_text(found, session, waiting=len(found)).replace(
        "pending for", "arrived for", 1)
    print(text, file=sys.stderr, flush=True)
    return REWAKE_EXIT


async def _wait(inbox: Inbox, paths: EdgePaths, hook: HookInput, session: str | None,
                args: argparse.Namespace) -> list[Any]:
    marker = waiter_file(paths.data_dir, hook.session_id)
    return await wait_for_rewake(inbox, paths.inbox_file, marker, session, hook.cwd,
                                 args.wait, args.limit)


# -- install, uninstall -------------------------------------------------------------------


def mailslot_argv() -> tuple[str, ...]:
    """How Claude Code should run this mailslot: the ``mailslot`` next to this Python
    (a virtual environment's), else the one on PATH, else ``python -m edge``."""
    beside = Path(sys.executable).parent / "mailslot"
    if beside.exists():
        return (str(beside),)
    found = shutil.which("mailslot")
    return (found,) if found else (sys.executable, "-m", "edge")


def _target(args: argparse.Namespace) -> Target:
    if args.project is None:
        return Target.for_user(Path.home())
    folder = args.project.expanduser().resolve()
    if not folder.is_dir():
        raise UsageError(f"--project {args.project}: not a folder")
    return Target.for_project(folder)


def _report(args: argparse.Namespace, changes: list[FileChange], verb: str) -> None:
    doc = {"dry_run": args.dry_run, "files": [
        {"path": str(c.path), "action": c.action, "entries": c.entries} for c in changes]}
    lines = []
    for change in changes:
        what = ", ".join(change.entries) or "nothing of mailslot's"
        lines.append(f"{change.path}: {change.action} ({verb} {what})" if change.changed
                     else f"{change.path}: unchanged")
        if args.dry_run and change.changed:
            lines.extend(line.rstrip("\n") for line in difflib.unified_diff(
                (change.before or "").splitlines(keepends=True),
                (change.after or "").splitlines(keepends=True),
                fromfile=f"{change.path} (now)", tofile=f"{change.path} ({verb})"))
    if args.dry_run:
        lines.append("(dry run: nothing written)")
    emit(args, doc, "\n".join(lines))


def cmd_install(args: argparse.Namespace, paths: EdgePaths) -> int:
    home = os.environ.get("MAILSLOT_HOME")
    env = (("MAILSLOT_HOME", str(Path(home).expanduser().resolve())),) if home else ()
    entries = Entries(mailslot_argv(), env, args.session, args.channel)
    if args.session:
        session_for(args.session, HookInput())  # refused now, not in every session
    changes = plan_install(_target(args), entries)
    if not args.dry_run:
        apply(changes, paths.data_dir / RECORD_FILE, installing=True)
    _report(args, changes, "adds")
    return 0


def cmd_uninstall(args: argparse.Namespace, paths: EdgePaths) -> int:
    record_file = paths.data_dir / RECORD_FILE
    changes = plan_uninstall(_target(args), load_record(record_file))
    if not args.dry_run:
        apply(changes, record_file, installing=False)
    _report(args, changes, "removes")
    return 0
