"""``mailslot relay …``: the relay's commands on the ``mailslot`` parser. ``relay.cli``
parses them (it never imports ``edge``); this module hands it the handler that loads
``relay.commands`` — the relay server, uvicorn, starlette, nats — only when a relay
command runs."""

from __future__ import annotations

import argparse
from typing import Any

from edge.cli.output import Command, Handler
from edge.config import EdgePaths
from relay.cli import add_relay_commands


def add_relay_group(sub: Any, command: Command) -> None:
    """Register ``mailslot relay …`` on the top-level subparsers ``sub``."""
    add_relay_commands(sub, command, relay_handler)


def relay_handler(name: str) -> Handler:
    """The handler of ``mailslot relay NAME`` (``relay.commands.COMMANDS[name]``); the
    relay does not use the edge's paths."""

    def run(args: argparse.Namespace, _paths: EdgePaths) -> int:
        from relay.commands import COMMANDS  # lazy: see LAZY_IMPORTS in edge.cli.main

        return COMMANDS[name](args)

    return run
