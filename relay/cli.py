"""``mailslot relay …``: serve, and manage accounts and producer tokens.

Admin commands talk to the registry in JetStream directly: the configured ``--nats``,
else the running relay's embedded server, else the embedded store opened just for the
command. Tokens are printed once and stored only as hashes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from relay.config import DEFAULT_LISTEN, RelayConfig, StreamSettings, relay_data_dir
from relay.signals import stop_on_signals

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
    p.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    p.add_argument("--replicas", type=int, default=1, help="JetStream replicas (3 on a cluster)")
    p.add_argument(
        "--sync",
        default="always",
        help='embedded nats-server fsync: "always" (default) or an interval like "1s"',
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


def config_from(args: argparse.Namespace) -> RelayConfig:
    return RelayConfig(
        listen=getattr(args, "listen", DEFAULT_LISTEN),
        nats=tuple(args.nats),
        data_dir=args.data_dir or relay_data_dir(),
        embedded_sync=getattr(args, "sync", "always"),
        stream=StreamSettings(replicas=getattr(args, "replicas", 1)),
    )


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data) if args.json else text)


def cmd_serve(args: argparse.Namespace) -> int:
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
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            log.info("stopping relay")
            await server.stop()

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
