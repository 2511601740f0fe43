"""``mailslot relay …``: the relay's command line — serve, and manage accounts and producer
tokens — registered on the ``mailslot`` parser by ``edge.cli.main`` through
``add_relay_commands``; the commands themselves run in ``relay.commands``.

This module only parses: it imports nothing heavy, so that every ``mailslot`` command can
build its parser without loading uvicorn, starlette or nats. ``edge.cli`` hands in
``handler(name)``, which loads ``relay.commands`` when a relay command runs. It never
imports ``edge``.

Flags are checked while parsing (``--listen``, ``--sync``, ``--replicas``,
``--nats-restart-timeout``), so a bad one is a usage error (exit 2) before anything
starts.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay.config import DEFAULT_LISTEN, RelayConfig, StreamSettings, check_listen, relay_data_dir


def add_relay_commands(
    sub: Any, command: Callable[..., argparse.ArgumentParser], handler: Callable[[str], Any]
) -> None:
    """Register ``mailslot relay …`` on the top-level subparsers ``sub``: ``command(name,
    handler, help, parent)`` makes each sub-command's parser, ``handler(name)`` the
    handler that runs ``relay.commands.COMMANDS[name]``."""
    relay = sub.add_parser("relay", help="the relay service").add_subparsers(metavar="COMMAND")

    def with_store_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--nats",
            action="append",
            default=[],
            metavar="URL",
            help="NATS server URL (repeat for a cluster); default: embedded",
        )
        p.add_argument("--data-dir", type=Path, help="relay data folder")
        return p

    p = with_store_options(command("serve", handler("serve"), "run the relay", relay))
    p.add_argument("--listen", default=DEFAULT_LISTEN, type=listen_arg,
                   help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    p.add_argument("--replicas", type=replicas_arg, default=1,
                   help="JetStream replicas, 1 to 5 (3 on a cluster)")
    p.add_argument(
        "--sync",
        default="always",
        type=sync_arg,
        help='embedded nats-server fsync: "always" (default) or an interval like "1s"',
    )
    p.add_argument(
        "--nats-restart-timeout",
        type=seconds_arg,
        default=30.0,
        metavar="SECONDS",
        help="embedded nats-server: how long to try restarting it after it exits before "
        "the relay fails /healthz and exits with code 7 (default 30)",
    )

    account = relay.add_parser("account", help="accounts").add_subparsers(metavar="COMMAND")
    p = with_store_options(
        command(
            "create",
            handler("account create"),
            "create an account; prints a one-time enrollment token",
            account,
        )
    )
    p.add_argument("name")
    p = with_store_options(
        command("token", handler("account token"), "print another one-time enrollment token", account)
    )
    p.add_argument("name")
    with_store_options(command("list", handler("account list"), "list accounts", account))

    token = relay.add_parser("token", help="producer tokens").add_subparsers(metavar="COMMAND")
    p = with_store_options(
        command(
            "create", handler("token create"), "create a producer bearer token for one recipient", token
        )
    )
    p.add_argument("--account", required=True)
    p.add_argument("--to", required=True, help="recipient identity id")
    p.add_argument("--name", default="producer", help="shown as the interrupts' source name")


def listen_arg(value: str) -> str:
    """``--listen``: HOST:PORT, checked while parsing so a typo is a usage error (exit 2)."""
    try:
        return check_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sync_arg(value: str) -> str:
    """``--sync``: "always", or a duration nats-server understands (``500ms``, ``1s``, ``2m``)."""
    if value == "always" or _SYNC_INTERVAL.fullmatch(value):
        return value
    raise argparse.ArgumentTypeError(
        f'must be "always" or an interval like 500ms, 1s, 2m, not {value!r}'
    )


def replicas_arg(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 5:
        raise argparse.ArgumentTypeError(f"must be a number from 1 to 5, not {value!r}")
    return int(value)


def seconds_arg(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 86_400:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {value!r}")
    return seconds


_SYNC_INTERVAL = re.compile(r"[1-9][0-9]{0,6}(ms|s|m|h)")


def config_from(args: argparse.Namespace) -> RelayConfig:
    return RelayConfig(
        listen=getattr(args, "listen", DEFAULT_LISTEN),
        nats=tuple(args.nats),
        data_dir=args.data_dir or relay_data_dir(),
        embedded_sync=getattr(args, "sync", "always"),
        embedded_restart_timeout=getattr(args, "nats_restart_timeout", 30.0),
        stream=StreamSettings(replicas=getattr(args, "replicas", 1)),
    )
