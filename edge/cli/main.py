"""``mailslot``: the one command-line entry point (edge, relay and ``up``).

Config flows one way: options → one config object → the server or daemon. Every command
that prints data takes ``--json``. Errors print one line ``mailslot: <code>: <message>``
(or the JSON object ``{"error": code, "message": text}`` with ``--json``) and exit with
the code their error carries (``relay.errors.ExitCode``: 1 in general, 5
``already_running``, 6 a server that could not start, 7 ``store_lost``); usage errors are
code ``usage`` and exit 2. A closed stdout (``mailslot … | head``) ends the command
quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

from ulid import ULID

from edge.cli.approvals import add_approval_commands
from edge.cli.engine import add_engine_commands
from edge.cli.intents import add_intent_commands
from edge.cli.log import add_activity_commands
from edge.cli.mcp import add_mcp_commands
from edge.cli.sleep import add_time_commands
from edge.cli.watches import add_watch_commands
from edge.config import EdgeConfig, EdgePaths, load_config, save_config
from edge.daemon import EdgeDaemon
from edge.errors import EdgeError, NotInitialized, UsageError
from edge.intents.model import parse_duration
from edge.link.keystore import load_identity, save_identity
from edge.store.inbox import (
    DEFAULT_LEASE,
    Inbox,
    NotPending,
    check_lease,
    check_owner,
    default_owner,
)
from relay.cli import add_relay_commands
from relay.errors import ExitCode, RelayError
from shared.envelope import Envelope, Source
from shared.errors import MailslotError, MalformedInput, RemoteProtocolError
from shared.host.lockfile import pid_alive
from shared.host.signals import stop_on_signals
from shared.identity import Identity
from shared.sealing import seal
from shared.signing import sign_envelope
from shared.tokens import check_identity

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse, with errors raised as ``UsageError`` (sub-commands inherit the class)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _version() -> str:
    try:
        return version("mailslot")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
    except BrokenPipeError:
        # The reader went away (``mailslot … | head``): nothing more to say. Point stdout
        # at /dev/null so the interpreter's own final flush cannot fail again (Python docs,
        # "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = ExitCode.ERROR
    raise SystemExit(code)


def _main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return _fail(argparse.Namespace(json="--json" in argv), exc.code, exc.message,
                     ExitCode.USAGE)
    if not hasattr(args, "handler"):
        parser.print_help()
        return ExitCode.USAGE
    logging.basicConfig(
        level=os.environ.get("MAILSLOT_LOG", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("websockets", "uvicorn.error", "httpx", "nats", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.handler(args))
    except (EdgeError, RelayError, RemoteProtocolError) as exc:
        return _fail(args, getattr(exc, "code", "error"), exc.message,
                     getattr(exc, "exit_code", ExitCode.ERROR))
    except MailslotError as exc:
        return _fail(args, "error", str(exc))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


def _fail(
    args: argparse.Namespace, code: str, message: str, exit_code: int = ExitCode.ERROR
) -> int:
    """Report an error the documented way; return the exit code to use."""
    if getattr(args, "json", False):
        print(json.dumps({"error": code, "message": message}))
    else:
        print(f"mailslot: {code}: {message}", file=sys.stderr)
    return int(exit_code)


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=None, default=str) if args.json else text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mailslot", description="Interrupt infrastructure for proactive AI agents."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(metavar="COMMAND")

    def command(
        name: str, handler: Handler, help: str, parent: Any = sub
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        p.add_argument("--json", action="store_true", help="print JSON")
        return p

    from edge.cli.up import add_up_command

    add_up_command(sub, command)
    add_relay_commands(sub, command)
    add_intent_commands(sub, command)
    add_watch_commands(sub, command)
    add_activity_commands(sub, command)
    add_engine_commands(sub, command)
    add_time_commands(sub, command)
    add_approval_commands(sub, command)
    add_mcp_commands(sub, command)

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

    inbox = sub.add_parser("inbox", help="the local inbox").add_subparsers(metavar="COMMAND")
    p = command("list", cmd_inbox_list, "list interrupts (pending by default)", inbox)
    p.add_argument("--all", action="store_true", help="include acked interrupts")
    p.add_argument("--limit", type=int, default=100)
    p = command("next", cmd_inbox_next, "show (or --claim) the next pending interrupt", inbox)
    p.add_argument("--claim", action="store_true",
                   help="take it under a lease: other pullers skip it until ack, nack or expiry")
    p.add_argument("--lease", type=_lease_arg,
                   help="with --claim: how long, e.g. 30s, 5m (default 5m; 1s to 24h)")
    p.add_argument("--owner", type=_owner_arg,
                   help="with --claim: claim owner name (default pid-<pid>@<host>)")
    p = command("ack", cmd_inbox_ack, "mark an interrupt handled", inbox)
    p.add_argument("id")
    p.add_argument("--owner", type=_owner_arg, help="the owner that claimed it")
    p = command("nack", cmd_inbox_nack, "put an interrupt back (optionally later)", inbox)
    p.add_argument("id")
    p.add_argument("--delay", type=_delay_arg, default=0.0,
                   help="how long before it is next again, e.g. 30, 30s, 5m (default 0)")
    p.add_argument("--owner", type=_owner_arg, help="the owner that claimed it")
    p = command("rejected", cmd_inbox_rejected, "envelopes refused by verification", inbox)
    p.add_argument("--limit", type=int, default=50)

    grant = sub.add_parser("grant", help="producer keys this edge accepts").add_subparsers(
        metavar="COMMAND"
    )
    p = command("add", cmd_grant_add, "accept interrupts signed by an identity", grant)
    p.add_argument("id")
    p = command("rm", cmd_grant_rm, "stop accepting an identity's signatures", grant)
    p.add_argument("id")
    command("list", cmd_grant_list, "list granted producer identities", grant)

    p = command("status", cmd_status, "link, inbox, watch counters and daemon status")
    p.add_argument("--metrics", action="store_true", help="Prometheus text format")
    return parser


# -- edge -----------------------------------------------------------------------------


def _relay_client(url: str) -> Any:
    """httpx is imported only by commands that talk to the relay, not by the daemon."""
    from edge.link.relayclient import RelayClient

    return RelayClient(url)


def _paths() -> EdgePaths:
    paths = EdgePaths.resolve()
    paths.ensure()
    return paths


def enroll_edge(paths: EdgePaths, relay_url: str, token: str) -> EdgeConfig:
    """Create (or reuse) this edge's key, enroll it, pin the relay, save the config."""
    if paths.config_file.exists():
        raise EdgeError(f"already initialized ({paths.config_file}); remove it to re-enroll")
    try:
        identity = load_identity(paths.key_file)
    except NotInitialized:
        identity = Identity.generate()
        save_identity(paths.key_file, identity)
    with _relay_client(relay_url) as client:
        _account, relay = client.enroll(token, identity)
    config = EdgeConfig(relay_url=relay_url, identity=identity.id, relay_identity=relay.to_doc())
    save_config(paths, config)
    Inbox.open(paths.inbox_file).close()
    return config


def cmd_edge_init(args: argparse.Namespace) -> int:
    config = enroll_edge(_paths(), args.relay, args.token)
    emit(
        args,
        {"identity": config.identity, "relay": config.relay_url},
        f"enrolled identity {config.identity} with {config.relay_url}",
    )
    return 0


def cmd_edge_run(args: argparse.Namespace) -> int:
    daemon = EdgeDaemon(_paths())
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


def cmd_send(args: argparse.Namespace) -> int:
    paths = EdgePaths.resolve()
    token = args.token or os.environ.get("MAILSLOT_TOKEN")
    relay_url = args.relay or _configured_relay(paths)
    to = check_identity(args.to)
    payload = _payload(args.data)
    envelope_id = args.id or str(ULID())
    now = datetime.now(UTC)
    expires_at = now + timedelta(seconds=args.expires_in) if args.expires_in else None
    with _relay_client(relay_url) as client:
        sealed = None
        if args.seal:
            sealed = seal(payload or {}, client.identity(to).box_key, envelope_id)
            payload = None
        if token:
            draft: dict[str, Any] = {
                "id": envelope_id,
                "to": to,
                "type": args.type,
                "priority": args.priority,
            }
            for key, value in (
                ("session", args.session),
                ("dedupe_key", args.dedupe_key),
                ("payload", payload),
            ):
                if value is not None:
                    draft[key] = value
            if expires_at is not None:
                draft["expires_at"] = expires_at.isoformat()
            if sealed is not None:
                draft["sealed"] = sealed.model_dump()
            result = client.post_draft(draft, token)
        else:
            identity = load_identity(paths.key_file)
            envelope = Envelope.model_validate(
                {
                    "id": envelope_id,
                    "to": to,
                    "type": args.type,
                    "priority": args.priority,
                    "session": args.session,
                    "dedupe_key": args.dedupe_key,
                    "payload": payload,
                    "sealed": sealed,
                    "source": Source(kind="signed", name="cli"),  # not "producer": the relay's
                    "created_at": now,
                    "expires_at": expires_at,
                    "signer": identity.id,
                }
            )
            result = client.post_signed(sign_envelope(envelope, identity))
    note = " (duplicate: already stored)" if result.get("duplicate") else ""
    emit(args, result, f"{result['id']}{note}")
    return 0


def _configured_relay(paths: EdgePaths) -> str:
    try:
        return load_config(paths).relay_url
    except EdgeError as exc:
        raise EdgeError(f"no --relay given and no edge configured: {exc.message}") from exc


# -- inbox ----------------------------------------------------------------------------


def _inbox() -> Inbox:
    paths = EdgePaths.resolve()
    if not paths.inbox_file.exists():
        raise NotInitialized(f"no inbox at {paths.inbox_file}; run `mailslot edge init`")
    return Inbox.open(paths.inbox_file)


def _line(item: Any, now: datetime | None = None) -> str:
    """One item; with ``now``, a live claim is shown (``claimed OWNER until T``) in place
    of the state, so ``inbox list`` tells who holds what."""
    payload = json.dumps(item.payload, separators=(",", ":")) if item.payload else ""
    line = f"{item.id}  {item.priority:<5}  {item.state:<7}  {item.type}  {payload[:80]}".rstrip()
    if now is not None and item.state == "pending" and item.claim_until is not None \
            and item.claim_until > now:
        until = item.claim_until.astimezone(UTC).isoformat(timespec="seconds")
        line = f"{line}  [claimed by {item.claim_owner} until {until}]"
    return line


def cmd_inbox_list(args: argparse.Namespace) -> int:
    with _inbox() as inbox:
        items = inbox.list(state=None if args.all else "pending", limit=args.limit)
    now = datetime.now(UTC)
    emit(args, [i.to_dict() for i in items],
         "\n".join(_line(i, now) for i in items) or "(empty)")
    return 0


def _owner_arg(value: str) -> str:
    try:
        return check_owner(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _delay_arg(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _lease_arg(value: str) -> float:
    try:
        return check_lease(parse_duration(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_inbox_next(args: argparse.Namespace) -> int:
    if not args.claim and (args.lease is not None or args.owner is not None):
        raise UsageError("--lease and --owner apply only with --claim")
    with _inbox() as inbox:
        if args.claim:
            owner = args.owner or default_owner()
            item = inbox.claim(owner, DEFAULT_LEASE if args.lease is None else args.lease)
        else:
            item = inbox.next()
    if item is None:
        emit(args, None, "(nothing pending)")
        return 0
    text = _line(item)
    if args.claim and item.claim_until is not None:
        text += f"\nclaimed by {item.claim_owner} until {item.claim_until.isoformat()}"
    emit(args, item.to_dict(), text)
    return 0


def cmd_inbox_ack(args: argparse.Namespace) -> int:
    """Exit 1 with ``not_pending`` if the item is unknown or not pending, or with
    ``claimed_by_other`` if another owner holds a live claim on it; ``--owner`` must name
    the claim's owner."""
    with _inbox() as inbox:
        if not inbox.ack(args.id, args.owner):
            raise NotPending(args.id)
    emit(args, {"id": args.id, "acked": True}, "acked")
    return 0


def cmd_inbox_nack(args: argparse.Namespace) -> int:
    """Exit 1 as ``ack`` does; a nacked item loses its claim."""
    with _inbox() as inbox:
        if not inbox.nack(args.id, args.delay, args.owner):
            raise NotPending(args.id)
    emit(args, {"id": args.id, "nacked": True}, "back to pending")
    return 0


def cmd_inbox_rejected(args: argparse.Namespace) -> int:
    with _inbox() as inbox:
        rows = inbox.rejections(limit=args.limit)
    text = "\n".join(
        f"{r.received_at}  {r.envelope_id or '-'}  {r.code}: {r.message}" for r in rows
    )
    emit(args, [r.to_dict() for r in rows], text or "(none)")
    return 0


# -- grants ---------------------------------------------------------------------------


def _edge_identity() -> tuple[EdgePaths, EdgeConfig, Identity]:
    paths = EdgePaths.resolve()
    return paths, load_config(paths), load_identity(paths.key_file)


def cmd_grant_add(args: argparse.Namespace) -> int:
    paths, config, identity = _edge_identity()
    with _relay_client(config.relay_url) as client:
        public = client.identity(check_identity(args.id))
        client.set_grant(identity, public.id, True)
    with Inbox.open(paths.inbox_file) as inbox:
        inbox.add_trusted(public)
    emit(args, {"granted": public.id}, f"accepting interrupts signed by {public.id}")
    return 0


def cmd_grant_rm(args: argparse.Namespace) -> int:
    paths, config, identity = _edge_identity()
    signer = check_identity(args.id)
    with _relay_client(config.relay_url) as client:
        client.set_grant(identity, signer, False)
    with Inbox.open(paths.inbox_file) as inbox:
        inbox.remove_trusted(signer)
    emit(args, {"revoked": signer}, f"no longer accepting {signer}")
    return 0


def cmd_grant_list(args: argparse.Namespace) -> int:
    with _inbox() as inbox:
        docs = inbox.trusted_docs()
    emit(args, docs, "\n".join(d["id"] for d in docs) or "(none)")
    return 0


# -- status ---------------------------------------------------------------------------


def edge_status(paths: EdgePaths) -> dict[str, Any]:
    config = load_config(paths)
    with Inbox.open(paths.inbox_file) as inbox:
        status = inbox.status()
        pending = inbox.counts()
        rejected = len(inbox.rejections(limit=1000))
    running = pid_alive(status.get("pid"))
    return {
        "identity": config.identity,
        "relay": config.relay_url,
        "daemon_running": running,
        "connected": bool(status.get("connected")) and running,
        "pending": pending,
        "relay_pending_at_connect": status.get("relay_pending"),
        "last_delivery": status.get("last_delivery"),
        "delivered_total": status.get("delivered_total", 0),
        "rejected": rejected,
        "counters": _counters(paths),
    }


def _counters(paths: EdgePaths) -> dict[str, int]:
    """Watch and sleep counters (``tick.fired``, ``sleep.entered``, …), zero if none yet."""
    from edge.store.watchstate import WatchState

    counters = dict.fromkeys(COUNTERS, 0)
    path = paths.watches_file
    if path.exists():
        state = WatchState.open(path)
        try:
            counters.update(state.counters())
        finally:
            state.close()
    return counters


COUNTERS = ("tick.fired", "sleep.entered", "sleep.interrupted", "cache_aware.snapped")


def metrics_text(status: dict[str, Any]) -> str:
    """``mailslot status --metrics``: the same figures in Prometheus text format."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class StatusCollector:
        def collect(self) -> Any:
            for name, value in sorted(status["counters"].items()):
                metric = "mailslot_" + name.replace(".", "_")
                yield CounterMetricFamily(metric, f"mailslot {name}", value=value)
            pending = GaugeMetricFamily(
                "mailslot_inbox_pending", "pending interrupts in the inbox", labels=["priority"]
            )
            for priority, count in status["pending"].items():
                pending.add_metric([priority], count)
            yield pending
            yield GaugeMetricFamily("mailslot_link_connected", "1 if the edge is connected",
                                    value=1 if status["connected"] else 0)
            yield CounterMetricFamily("mailslot_delivered", "interrupts received from the relay",
                                      value=status["delivered_total"] or 0)
            yield CounterMetricFamily("mailslot_rejected", "envelopes refused by verification",
                                      value=status["rejected"])

    registry = CollectorRegistry()
    registry.register(StatusCollector())
    return generate_latest(registry).decode()


def cmd_status(args: argparse.Namespace) -> int:
    s = edge_status(EdgePaths.resolve())
    if args.metrics:
        print(metrics_text(s), end="")
        return 0
    link = (
        "connected"
        if s["connected"]
        else ("daemon running, not connected" if s["daemon_running"] else "daemon not running")
    )
    p = s["pending"]
    text = "\n".join(
        [
            f"identity       {s['identity']}",
            f"relay          {s['relay']} ({link})",
            f"pending        now={p['now']} next={p['next']} later={p['later']}",
            f"last delivery  {s['last_delivery'] or 'never'}",
            f"rejected       {s['rejected']}",
            "counters       " + " ".join(f"{k}={v}" for k, v in s["counters"].items()),
        ]
    )
    emit(args, s, text)
    return 0
