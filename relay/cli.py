"""``mailslot relay …``: serve, and manage accounts and producer tokens.

Admin commands talk to the registry in JetStream directly: the configured ``--nats``,
else the running relay's embedded server, else the embedded store opened just for the
command under the data folder's lock (never a second nats-server on a store a relay
owns). Tokens are printed once and stored only as hashes.

Flags are checked while parsing (``--listen``, ``--sync``, ``--replicas``,
``--nats-restart-timeout``), so a bad one is a usage error (exit 2) before anything
starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from relay.config import DEFAULT_LISTEN, RelayConfig, StreamSettings, check_listen, relay_data_dir
from shared.host.signals import stop_on_signals

if TYPE_CHECKING:
    from relay.registry import Registry

# relay.server (uvicorn, starlette, nats) is imported inside the commands that need it:
# the `mailslot` CLI also runs the edge daemon, which should not carry the relay's weight.

log = logging.getLogger("mailslot.relay")
T = TypeVar("T")


def add_relay_commands(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
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

    p = with_store_options(command("serve", cmd_serve, "run the relay", relay))
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
            cmd_account_create,
            "create an account; prints a one-time enrollment token",
            account,
        )
    )
    p.add_argument("name")
    p = with_store_options(
        command("token", cmd_account_token, "print another one-time enrollment token", account)
    )
    p.add_argument("name")
    with_store_options(command("list", cmd_account_list, "list accounts", account))

    token = relay.add_parser("token", help="producer tokens").add_subparsers(metavar="COMMAND")
    p = with_store_options(
        command(
            "create", cmd_token_create, "create a producer bearer token for one recipient", token
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


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data) if args.json else text, flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM. Start-up refusals (``already_running``, ``port_in_use``,
    ``store_unavailable``) and a lost embedded store (``store_lost``) propagate as
    ``RelayError`` s carrying their exit code, after everything started was stopped."""
    from relay.server import RelayServer

    config = config_from(args)

    async def serve() -> None:
        server = RelayServer(config)
        stop = asyncio.Event()
        with stop_on_signals(stop):
            await server.start()
            assert server.identity is not None
            _print(
                args,
                {"url": server.url, "relay": server.identity.id},
                f"relay {server.identity.id} listening on {server.url}",
            )
            waiter = asyncio.create_task(server.wait())
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                log.info("stopping relay")
                await server.stop()
            if waiter.done():
                waiter.result()  # StoreLost: exit with its code
            else:
                waiter.cancel()

    asyncio.run(serve())
    return 0


def _with_registry(args: argparse.Namespace, action: Callable[[Registry], Awaitable[T]]) -> T:
    from relay.registry import Registry
    from relay.server import admin_store

    async def run() -> T:
        async with admin_store(config_from(args)) as store:
            return await action(Registry(store))

    return asyncio.run(run())


def cmd_account_create(args: argparse.Namespace) -> int:
    token = _with_registry(args, lambda r: r.create_account(args.name))
    _print(
        args,
        {"account": args.name, "enrollment_token": token},
        f"account {args.name} created\nenrollment token (one use): {token}\n"
        f"enroll an edge with: mailslot edge init --relay URL --token {token}",
    )
    return 0


def cmd_account_token(args: argparse.Namespace) -> int:
    token = _with_registry(args, lambda r: r.enrollment_token(args.name))
    _print(args, {"account": args.name, "enrollment_token": token}, token)
    return 0


def cmd_account_list(args: argparse.Namespace) -> int:
    names = _with_registry(args, lambda r: r.accounts())
    _print(args, names, "\n".join(names) or "(none)")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    token = _with_registry(
        args, lambda r: r.create_producer_token(args.account, args.to, args.name)
    )
    _print(args, {"account": args.account, "to": args.to, "token": token}, token)
    return 0
