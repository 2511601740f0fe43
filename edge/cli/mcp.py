"""``mailslot mcp [--channel]``: serve this edge to one agent session over MCP (stdio).

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
from edge.store.claims import default_owner


def add_mcp_commands(sub: Any, command: Command) -> None:
    """Register ``mailslot mcp`` on the top-level subparsers ``sub``."""
    p = command("mcp", cmd_mcp, "serve this edge's inbox, intents and watches over MCP (stdio)")
    p.add_argument(
        "--channel", action="store_true",
        help="also push wakes routed to mcp into the session (a Claude Code channel)",
    )


def cmd_mcp(args: argparse.Namespace, paths: EdgePaths) -> int:
    from edge.mcp.server import McpConfig, serve  # lazy: see LAZY_IMPORTS in edge.cli.main

    serve(McpConfig(paths=paths, channel=args.channel, owner=default_owner()))
    return 0
