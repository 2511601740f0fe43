"""``mailslot mcp [--channel [--session S [--include-unsessioned]]]``: serve this edge to
one agent session over MCP (stdio).

An MCP client (Claude Code: ``claude mcp add mailslot -- mailslot mcp --channel``) starts
this command and talks to it on stdin/stdout; nothing but MCP messages may be written to
stdout, so logs go to stderr. The ``mcp`` SDK (``edge.mcp.server``) is imported only when
the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from edge.cli.output import Command
from edge.config import EdgePaths
from edge.errors import UsageError
from edge.store.claims import channel_sessions, default_owner


def add_mcp_commands(sub: Any, command: Command) -> None:
    """Register ``mailslot mcp`` on the top-level subparsers ``sub``."""
    p = command("mcp", cmd_mcp, "serve this edge's inbox, intents and watches over MCP (stdio)")
    p.add_argument(
        "--channel", action="store_true",
        help="also push wakes routed to mcp into the session and relay its permission "
             "prompts to the autonomy dial (a Claude Code channel)",
    )
    p.add_argument(
        "--session", metavar="S",
        help="with --channel: claim only the wakes of session S (default: every session's);"
             " permission prompts are asked in session S",
    )
    p.add_argument(
        "--include-unsessioned", action="store_true",
        help="with --session: also claim the wakes that have no session",
    )


def cmd_mcp(args: argparse.Namespace, paths: EdgePaths) -> int:
    if args.session is not None and not args.channel:
        raise UsageError("--session needs --channel (see `mailslot mcp --help`)")
    try:
        channel_sessions(args.session, args.include_unsessioned)  # refused here, as usage
    except ValueError as exc:
        raise UsageError(f"{exc} (see `mailslot mcp --help`)") from None
    from edge.mcp.server import McpConfig, serve  # lazy: see LAZY_IMPORTS in edge.cli.main

    serve(McpConfig(paths=paths, channel=args.channel, owner=default_owner(),
                    session=args.session, include_unsessioned=args.include_unsessioned))
    return 0
