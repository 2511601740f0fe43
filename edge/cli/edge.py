"""``mailslot edge init|run`` (enroll this edge, run its daemon: ``edge.enrollment``,
``edge.daemon``) and ``mailslot send`` (send an interrupt through the relay, with a
producer token or signed with this edge's key: ``edge.sending``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from edge.cli.output import Command, emit
from edge.config import EdgePaths, load_config
from edge.enrollment import enroll_edge
from edge.errors import EdgeConfigError, EdgeError
from edge.link.relayclient import RelayClient
from edge.sending import Outgoing, send_interrupt
from shared.errors import MalformedInput
from shared.host.signals import stop_on_signals
from shared.tokens import check_identity


def add_edge_commands(sub: Any, command: Command) -> None:
    """Register ``mailslot edge init|run`` and ``mailslot send`` on ``sub``."""
    edge = sub.add_parser("edge", help="the edge daemon").add_subparsers(metavar="COMMAND")
    p = command("init", cmd_edge_init, "create keys and enroll with a relay", edge)
    p.add_argument("--relay", required=True, help="relay base URL, e.g. https://relay.example")
    p.add_argument("--token", required=True, help="one-time enrollment token")
    command("run", cmd_edge_run, "run the edge daemon (outbound link, inbox)", edge)

    p = command("send", cmd_send, "send an interrupt")
    p.add_argument("--to", required=True, help="recipient identity id")
    p.add_argument("--type", required=True, help="interrupt type, e.g. build.failed")
    p.add_argument("--priority", default="next", help="now | next | later (default next)")
    p.add_argument("--data", help="payload: a JSON object, or @FILE")
    p.add_argument("--session", help="agent session / workspace")
    p.add_argument("--expires-in", type=float, help="seconds until it expires")
    p.add_argument("--dedupe-key", help="dedupe key")
    p.add_argument("--id", help="interrupt id (ULID); reuse it to retry idempotently")
    p.add_argument("--seal", action="store_true", help="encrypt the payload to the recipient")
    p.add_argument(
        "--token", help="producer token (or MAILSLOT_TOKEN); without: sign with this edge's key"
    )
    p.add_argument("--relay", help="relay URL (default: this edge's relay)")


# -- edge -----------------------------------------------------------------------------


def cmd_edge_init(args: argparse.Namespace, paths: EdgePaths) -> int:
    paths.ensure()
    config = enroll_edge(paths, args.relay, args.token)
    emit(
        args,
        {"identity": config.identity, "relay": config.relay_url},
        f"enrolled identity {config.identity} with {config.relay_url}",
    )
    return 0


def cmd_edge_run(args: argparse.Namespace, paths: EdgePaths) -> int:
    from edge.daemon import EdgeDaemon  # lazy: see LAZY_IMPORTS

    paths.ensure()
    daemon = EdgeDaemon(paths)
    daemon.start()

    async def run() -> None:
        stop = asyncio.Event()
        with stop_on_signals(stop):
            await daemon.run(stop)

    asyncio.run(run())
    return 0


# -- send -----------------------------------------------------------------------------


def _payload(data: str | None) -> dict[str, Any] | None:
    if data is None:
        return None
    text = Path(data[1:]).read_text() if data.startswith("@") else data
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise MalformedInput(f"--data is not valid JSON: {exc}", code="malformed_json") from exc
    if not isinstance(value, dict):
        raise MalformedInput("--data must be a JSON object", code="malformed_json")
    return value


def cmd_send(args: argparse.Namespace, paths: EdgePaths) -> int:
    token = args.token or os.environ.get("MAILSLOT_TOKEN")
    relay_url = args.relay or _configured_relay(paths)
    outgoing = Outgoing(
        to=check_identity(args.to), type=args.type, priority=args.priority,
        payload=_payload(args.data), session=args.session, expires_in=args.expires_in,
        dedupe_key=args.dedupe_key, id=args.id, seal=args.seal,
    )
    with RelayClient(relay_url) as client:
        result = send_interrupt(client, outgoing, token=token, key_file=paths.key_file)
    note = " (duplicate: already stored)" if result.get("duplicate") else ""
    emit(args, result, f"{result['id']}{note}")
    return 0


def _configured_relay(paths: EdgePaths) -> str:
    try:
        return load_config(paths).relay_url
    except EdgeConfigError as exc:
        raise EdgeError(f"no --relay given and no edge configured: {exc.message}") from exc
