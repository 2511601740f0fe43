"""``mailslot service install|uninstall|status|logs``: mailslot as a systemd unit (Linux,
``--user`` or ``--system``) or a launchd agent (macOS). The unit and plist are built in
``edge.service.units``; where they go, what is run and the manifest in
``edge.service.install``. This module parses and prints."""

from __future__ import annotations

import argparse
import subprocess
from typing import Any

from edge.cli.output import Command, emit
from edge.config import EdgePaths
from edge.errors import ServiceError, ServiceManagerFailed
from edge.service.install import (
    Host,
    Installed,
    apply_install,
    build_spec,
    find_executable,
    find_installed,
    logs_command,
    plan_install,
    status,
    this_platform,
    uninstall,
)
from edge.service.units import PLATFORMS, ROLES


def add_service_commands(sub: Any, command: Command) -> None:
    """Register ``mailslot service …`` on the top-level subparsers ``sub``."""
    group = sub.add_parser(
        "service", help="run mailslot as a systemd or launchd service"
    ).add_subparsers(metavar="COMMAND")

    def scoped(name: str, handler: Any, help_text: str, role_default: str | None) -> Any:
        p = command(name, handler, help_text, group)
        scope = p.add_mutually_exclusive_group()
        scope.add_argument("--user", dest="scope", action="store_const", const="user",
                           help="a service of this user (default)")
        scope.add_argument("--system", dest="scope", action="store_const", const="system",
                           help="a system service running as the user `mailslot` (Linux)")
        p.set_defaults(scope="user")
        p.add_argument("--role", choices=ROLES, default=role_default,
                       help="what the service runs: edge (`edge run`), relay (`relay "
                       "serve`), up (`up`)" + (" (default edge)" if role_default else
                                               " (default: the one installed)"))
        p.add_argument("--platform", choices=PLATFORMS, default=this_platform(),
                       help="linux (systemd) or macos (launchd); default: this machine's")
        return p

    p = scoped("install", cmd_install, "install and start the service (idempotent)", "edge")
    p.add_argument("--dry-run", action="store_true",
                   help="print the file and the commands; write and run nothing")
    p.add_argument("--linger", action="store_true",
                   help="also run `loginctl enable-linger` (a user service on a server)")
    p.add_argument("args", nargs="*", metavar="-- ARG",
                   help="more arguments for the role's command, after `--` "
                   "(e.g. -- --listen 0.0.0.0:7710)")
    scoped("uninstall", cmd_uninstall, "stop the service and remove what install wrote", None)
    scoped("status", cmd_status, "installed? enabled? running?", None)
    p = scoped("logs", cmd_logs, "the service's log (journalctl, or launchd's files)", None)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("-n", "--lines", type=int, default=100, help="lines to show (default 100)")


def cmd_install(args: argparse.Namespace, paths: EdgePaths) -> int:
    host = Host.from_environ()
    spec = build_spec(host, paths, args.role, args.scope, args.platform,
                      find_executable(host.environ), args.args)
    plan = plan_install(spec, host, paths, linger=args.linger)
    if args.dry_run:
        lines = [f"# {plan.unit.path}" + ("" if plan.unit.changed else " (unchanged)"),
                 plan.unit.content.decode().rstrip("\n"), "# commands (not run)"]
        lines += [c.text() for c in plan.commands]
        lines += [f"note: {n}" for n in plan.notes]
        emit(args, plan.describe(dry_run=True), "\n".join(lines))
        return 0
    ran = apply_install(plan, host)
    verb = "wrote" if plan.unit.changed else "unchanged"
    lines = [f"{verb} {plan.unit.path}"] + [f"ran   {c.text()}" for c in ran]
    lines += [f"note: {n}" for n in plan.notes]
    emit(args, plan.describe(dry_run=False, ran=ran), "\n".join(lines))
    return 0


def _installed(args: argparse.Namespace, paths: EdgePaths, host: Host) -> Installed | None:
    return find_installed(host, paths, args.scope, args.role)


def cmd_uninstall(args: argparse.Namespace, paths: EdgePaths) -> int:
    host = Host.from_environ()
    installed = _installed(args, paths, host)
    if installed is None:
        emit(args, {"removed": [], "kept": [], "ran": [], "notes": ["nothing installed"]},
             f"no {args.scope} service of mailslot is installed here: nothing to do")
        return 0
    done = uninstall(installed, host)
    lines = [f"removed {p}" for p in done["removed"]] + [f"ran     {' '.join(c)}"
                                                         for c in done["ran"]]
    lines += [f"note: {n}" for n in done["notes"]]
    emit(args, done, "\n".join(lines))
    return 0


def cmd_status(args: argparse.Namespace, paths: EdgePaths) -> int:
    host = Host.from_environ()
    installed = _installed(args, paths, host)
    if installed is None:
        emit(args, {"installed": False, "scope": args.scope},
             f"no {args.scope} service of mailslot is installed (`mailslot service install`)")
        return 0
    doc = status(installed, host)
    enabled = "enabled" if doc["enabled"] else "not enabled"
    emit(args, doc, f"{doc['name']} ({doc['platform']}, {doc['scope']}): {enabled}, "
                    f"{doc['state']}\n  {doc['unit']}"
                    + ("" if doc["unit_present"] else " (missing!)"))
    return 0


def cmd_logs(args: argparse.Namespace, paths: EdgePaths) -> int:
    host = Host.from_environ()
    installed = _installed(args, paths, host)
    if installed is None:
        raise ServiceError(f"no {args.scope} service of mailslot is installed here",
                           code="not_installed")
    command = logs_command(installed, max(1, args.lines), args.follow)
    try:  # its output straight to ours: a log can be long, and -f never ends
        return subprocess.run(list(command.argv), env=dict(host.environ)).returncode
    except FileNotFoundError:
        raise ServiceManagerFailed(f"`{command.argv[0]}` not found on PATH") from None
