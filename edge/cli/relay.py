"""``mailslot relay …``: the relay's commands on the ``mailslot`` parser. ``relay.cli``
parses them (it never imports ``edge``); this module hands it the handler that loads
``relay.commands`` — the relay server, uvicorn, starlette, nats — only when a relay
command runs."""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from edge.cli.output import Command, Handler
from edge.config import EdgePaths, load_config
from edge.link.keystore import load_identity
from relay.cli import add_relay_commands
from shared.identity import Identity


def add_relay_group(sub: Any, command: Command) -> None:
    """Register ``mailslot relay …`` on the top-level subparsers ``sub``."""
    add_relay_commands(sub, command, relay_handler)


def relay_handler(name: str) -> Handler:
    """The handler of ``mailslot relay NAME`` (``relay.commands.COMMANDS[name]``). Of the
    edge's paths the relay uses one thing, and only for an admin command's ``--sign``:
    this home's identity (and the relay it enrolled with), as ``args.edge_key``."""

    def run(args: argparse.Namespace, paths: EdgePaths) -> int:
        from relay.commands import COMMANDS  # lazy: see LAZY_IMPORTS in edge.cli.main

        args.edge_key = partial(edge_key, paths)
        return COMMANDS[name](args)

    return run


def edge_key(paths: EdgePaths, need_relay: bool) -> tuple[Identity, str | None]:
    """This home's identity, to sign admin requests with (``relay.adminclient``), and,
    with ``need_relay``, the URL of the relay it is enrolled with (from ``edge.json``)."""
    identity = load_identity(paths.key_file)
    return identity, load_config(paths).relay_url if need_relay else None
