"""``mailslot up``: one machine, one command — embedded JetStream, a relay, and a local
edge enrolled with it, in one process.

First run: creates the account ``local``, enrolls this edge and makes a producer token,
kept in ``up.json`` (0600) in the config folder. Later runs reuse all of it, so pending
interrupts and the curl line survive restarts. Ctrl-C stops the edge, then the relay,
then nats-server.

One ``mailslot up`` per home: it takes the edge home's lock, then the relay data folder's
(``shared.host.lockfile``), before it writes anything, so a second one (or an ``edge run`` /
``relay serve`` on the same folders) is refused with ``already_running`` and the first
one's ``edge.json`` and store are left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import TYPE_CHECKING, Any

from edge.cli.output import Command
from edge.config import EdgePaths, load_config, save_config
from edge.enrollment import enroll_edge
from edge.errors import EdgeError
from relay.cli import listen_arg
from relay.config import DEFAULT_LISTEN, RelayConfig, relay_data_dir
from relay.errors import Conflict
from shared.host.lockfile import edge_lock
from shared.host.logs import LOG_FORMATS
from shared.host.signals import stop_on_signals

if TYPE_CHECKING:
    from edge.daemon import EdgeDaemon
    from relay.server import RelayServer

LOCAL_ACCOUNT = "local"


def add_up_command(sub: Any, command: Command) -> None:
    """Register ``mailslot up`` on the top-level subparsers ``sub``."""
    p = command("up", cmd_up, "embedded JetStream + relay + a local edge, in one process")
    p.add_argument(
        "--listen", default=DEFAULT_LISTEN, type=listen_arg,
        help=f"relay HOST:PORT (default {DEFAULT_LISTEN})",
    )
    p.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                   help="log lines as text (default) or one JSON object per line")


def cmd_up(args: argparse.Namespace, paths: EdgePaths) -> int:
    asyncio.run(run_up(paths, args.listen, json_output=args.json))
    return 0


async def run_up(paths: EdgePaths, listen: str, json_output: bool = False,
                 stop: asyncio.Event | None = None) -> None:
    from edge.daemon import EdgeDaemon  # lazy: see LAZY_IMPORTS in edge.cli.main
    from relay.server import RelayServer

    lock = edge_lock(paths.data_dir).acquire()  # before anything is written
    try:
        paths.ensure()
        relay = RelayServer(RelayConfig(listen=listen, data_dir=relay_data_dir()))
        stop = stop or asyncio.Event()
        with stop_on_signals(stop):
            await relay.start()
            try:
                token = await _local_setup(paths, relay)
                admin_key = await _admin_key(relay)
                daemon = EdgeDaemon(paths)
                daemon.start(lock=lock)
                assert daemon.config is not None
                _announce(relay.url, daemon.config.identity, token, json_output, admin_key)
                await _run_until_stopped(daemon, relay, stop)
            finally:
                await relay.stop()
    finally:
        lock.release()


async def _run_until_stopped(daemon: EdgeDaemon, relay: RelayServer, stop: asyncio.Event) -> None:
    """Run the edge until ``stop``; if the relay fails for good (``store_lost``), stop the
    edge and raise that, so ``mailslot up`` exits with its code."""
    edge = asyncio.create_task(daemon.run(stop))
    watcher = asyncio.create_task(relay.wait())
    try:
        await asyncio.wait([edge, watcher], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        watcher.cancel()
        results = await asyncio.gather(edge, watcher, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


async def _local_setup(paths: EdgePaths, relay: RelayServer) -> str:
    """Enroll the local edge and make its producer token, once; return the token."""
    from relay.registry import Registry  # lazy: see LAZY_IMPORTS in edge.cli.main

    assert relay.store is not None and relay.identity is not None
    state_file = paths.config_dir / "up.json"
    if paths.config_file.exists() and state_file.exists():
        config = load_config(paths)
        if config.relay_identity["id"] != relay.identity.id:
            raise EdgeError("this MAILSLOT_HOME's edge is enrolled with another relay")
        if config.relay_url != relay.url:
            save_config(paths, config.model_copy(update={"relay_url": relay.url}))
        return str(json.loads(state_file.read_text())["producer_token"])
    registry = Registry(relay.store)
    try:
        enrollment = await registry.create_account(LOCAL_ACCOUNT)
    except Conflict:
        enrollment = await registry.enrollment_token(LOCAL_ACCOUNT)
    config = await asyncio.to_thread(enroll_edge, paths, relay.url, enrollment)
    token = await registry.create_producer_token(LOCAL_ACCOUNT, config.identity, "curl")
    fd = os.open(state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"account": LOCAL_ACCOUNT, "producer_token": token}, fh)
    return token


async def _admin_key(relay: RelayServer) -> str | None:
    """The relay's admin credential if this start made it (shown once), else None."""
    from relay.adminauth import ensure_admin_credential  # lazy: see LAZY_IMPORTS

    assert relay.store is not None
    return await ensure_admin_credential(relay.store, relay.config.data_dir)


def _announce(
    url: str, identity: str, token: str, json_output: bool, admin_key: str | None = None
) -> None:
    body = json.dumps(
        {
            "to": identity,
            "type": "demo.hello",
            "priority": "now",
            "payload": {"text": "hello from curl"},
        }
    )
    curl = (
        f"curl -sS -X POST {url}/v1/interrupts -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d '{body}'"
    )
    if json_output:
        doc = {"relay": url, "identity": identity, "curl": curl}
        if admin_key is not None:
            doc["admin_key"] = admin_key
        print(json.dumps(doc), flush=True)
        return
    if admin_key is not None:  # the first start: shown this once
        print(f"admin key (shown once; saved in the relay's data folder, admin.key): "
              f"{admin_key}", flush=True)
    print(
        f"mailslot is up.\n  relay     {url}\n  identity  {identity}\n\n"
        f"send it an interrupt:\n  {curl}\n\nthen: mailslot inbox list   (Ctrl-C stops)",
        flush=True,
    )
