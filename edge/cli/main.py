"""``mailslot``: the one command-line entry point (edge, relay and ``up``).

Config flows one way: options → one config object → the server or daemon. This module
builds the parser from each command group's module (``add_*`` below, one module per group,
named for its commands), resolves the edge's paths once per command and hands them to the
handler, and is the one place errors become output: one line ``mailslot: <code>:
<message>`` (or the JSON object ``{"error": code, "message": text}`` with ``--json``,
``edge.cli.output``) and the exit code their error carries (``shared.errors.ExitCode``: 1
in general, 5 ``already_running``, 6 a server that could not start, 7 ``store_lost``);
usage errors are code ``usage`` and exit 2. A closed stdout (``mailslot … | head``) ends
the command quietly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, NoReturn

from edge.about import package_version
from edge.cli.activity import add_activity_commands
from edge.cli.approvals import add_approval_commands
from edge.cli.claude import add_claude_commands
from edge.cli.deliveries import add_delivery_commands
from edge.cli.doctor import add_doctor_command
from edge.cli.edge import add_edge_commands
from edge.cli.grants import add_grant_commands
from edge.cli.inbox import add_inbox_commands
from edge.cli.intents import add_intent_commands
from edge.cli.log import add_log_commands
from edge.cli.mcp import add_mcp_commands
from edge.cli.output import Handler, fail
from edge.cli.relay import add_relay_group
from edge.cli.replay import add_replay_command
from edge.cli.service import add_service_commands
from edge.cli.sleep import add_sleep_command
from edge.cli.status import add_status_command
from edge.cli.up import add_up_command
from edge.cli.watches import add_watch_commands
from edge.config import EdgePaths
from edge.errors import UsageError
from shared.errors import ExitCode, MailslotError
from shared.host.logs import configure_logging

#: The only imports made inside functions in the project, each for start-up cost: a
#: command that does not need a heavy library does not pay for loading it. (module, where,
#: why); ``tests/test_architecture.py`` reads this tuple.
LAZY_IMPORTS = (
    ("edge.mcp.server", "edge/cli/mcp.py",
     "the mcp SDK (~0.6 s to load): only `mailslot mcp` needs it"),
    ("relay.commands", "edge/cli/relay.py",
     "the relay server (uvicorn, starlette, nats: ~0.1 s): only `mailslot relay …` needs it"),
    ("relay.server", "edge/cli/up.py", "the relay server, for `mailslot up`"),
    ("relay.registry", "edge/cli/up.py", "the relay's registry (nats), for `mailslot up`"),
    ("relay.adminauth", "edge/cli/up.py",
     "the relay's admin credential (nats), made on `mailslot up`'s first start"),
    ("edge.daemon", "edge/cli/edge.py",
     "the daemon and all it runs (websockets, httpx, the engine: ~0.1 s): `edge run` only"),
    ("edge.daemon", "edge/cli/up.py", "the daemon, for `mailslot up`"),
    ("edge.metrics", "edge/cli/status.py", "prometheus_client (~25 ms): `status --metrics` only"),
)


class _Parser(argparse.ArgumentParser):
    """argparse, with errors raised as ``UsageError`` (sub-commands inherit the class)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
    except BrokenPipeError:
        # The reader went away (``mailslot … | head``): nothing more to say. Point stdout
        # at /dev/null so the interpreter's own final flush cannot fail again (Python docs,
        # "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = ExitCode.ERROR
    raise SystemExit(code)


def _main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return fail(argparse.Namespace(json="--json" in argv), exc.code, exc.message,
                    ExitCode.USAGE)
    if not hasattr(args, "handler"):
        parser.print_help()
        return ExitCode.USAGE
    configure_logging(
        os.environ.get("MAILSLOT_LOG", "INFO").upper(), getattr(args, "log_format", "text")
    )
    for noisy in ("websockets", "uvicorn.error", "httpx", "nats", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    paths = EdgePaths.resolve()  # once per command; every handler is given these
    try:
        return int(args.handler(args, paths))
    except MailslotError as exc:  # the one root: every error carries its code and exit code
        return fail(args, exc.code, exc.message, exc.exit_code)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mailslot", description="Interrupt infrastructure for proactive AI agents."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(metavar="COMMAND")

    def command(
        name: str, handler: Handler, help: str, parent: Any = sub
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        p.add_argument("--json", action="store_true", help="print JSON")
        return p

    # In the order ``mailslot --help`` lists them.
    add_up_command(sub, command)
    add_relay_group(sub, command)
    add_intent_commands(sub, command)
    add_watch_commands(sub, command)
    add_log_commands(sub, command)
    add_activity_commands(sub, command)
    add_replay_command(sub, command)
    add_sleep_command(sub, command)
    add_approval_commands(sub, command)
    add_mcp_commands(sub, command)
    add_claude_commands(sub, command)
    add_edge_commands(sub, command)
    add_inbox_commands(sub, command)
    add_delivery_commands(sub, command)
    add_grant_commands(sub, command)
    add_status_command(sub, command)
    add_doctor_command(sub, command)
    add_service_commands(sub, command)
    return parser
