"""``mailslot doctor [--json]``: check this home's setup (``edge.service.doctor``); one
line per problem with what to do, exit 0 only when all is well."""

from __future__ import annotations

import argparse
import json
from typing import Any

from edge.cli.output import Command
from edge.config import EdgePaths
from edge.service.doctor import Setup, run_checks
from edge.service.install import Host
from relay.config import RUNTIME_FILE, relay_data_dir
from shared.errors import ExitCode


def add_doctor_command(sub: Any, command: Command) -> None:
    """Register ``mailslot doctor`` on the top-level subparsers ``sub``."""
    command("doctor", cmd_doctor,
            "check this home: folders, key, config, relay, clock, daemon, service, disk")


def cmd_doctor(args: argparse.Namespace, paths: EdgePaths) -> int:
    checks = run_checks(Setup(paths=paths, host=Host.from_environ(),
                              relay_dir=relay_data_dir(), runtime_file=RUNTIME_FILE))
    healthy = all(check.ok for check in checks)
    if args.json:
        print(json.dumps([check.to_dict() for check in checks]))
    else:
        for check in checks:
            if check.ok:
                print(f"ok    {check.name:<12} {check.detail}")
            else:
                print(f"FAIL  {check.name:<12} {check.detail}\n      fix: {check.fix}")
        problems = sum(not check.ok for check in checks)
        print("all is well" if healthy else f"{problems} problem(s)")
    return ExitCode.OK if healthy else ExitCode.ERROR
