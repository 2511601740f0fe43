"""The ``mailslot relay …`` commands (parsed by ``relay.cli``): serve, and manage accounts
and producer tokens.

Admin commands talk to the registry in JetStream directly: the configured ``--nats``,
else the running relay's embedded server, else the embedded store opened just for the
command under the data folder's lock (never a second nats-server on a store a relay
owns). Tokens are printed once and stored only as hashes.

This module loads the relay server (uvicorn, starlette, nats): ``edge.cli`` imports it only
when a relay command runs, so that the rest of ``mailslot`` does not carry that weight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from relay.cli import config_from
from relay.registry import Registry
from relay.server import RelayServer, admin_store
from shared.host.signals import stop_on_signals
from shared.host.waiting import first_of

log = logging.getLogger("mailslot.relay")
T = TypeVar("T")


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data) if args.json else text, flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM. Start-up refusals (``already_running``, ``port_in_use``,
    ``store_unavailable``) and a lost embedded store (``store_lost``) propagate as
    ``RelayError`` s carrying their exit code, after everything started was stopped."""
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
            waiter = asyncio.ensure_future(server.wait())
            try:
                await first_of(waiter, stop.wait())
            finally:
                log.info("stopping relay")
                await server.stop()
            if not waiter.cancelled():
                waiter.result()  # StoreLost: exit with its code

    asyncio.run(serve())
    return 0


def _with_registry(args: argparse.Namespace, action: Callable[[Registry], Awaitable[T]]) -> T:
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


#: Each relay command by its name under ``mailslot relay``.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "account create": cmd_account_create,
    "account token": cmd_account_token,
    "account list": cmd_account_list,
    "token create": cmd_token_create,
}
