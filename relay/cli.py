"""``mailslot relay …``: the relay's command line — serve, and the admin API's clients
(accounts, producer tokens, enrollment tokens, identities) — registered on the ``mailslot`` parser by ``edge.cli.main`` through
``add_relay_commands``; the commands themselves run in ``relay.commands``.

This module only parses: it imports nothing heavy, so that every ``mailslot`` command can
build its parser without loading uvicorn, starlette or nats. ``edge.cli`` hands in
``handler(name)``, which loads ``relay.commands`` when a relay command runs. It never
imports ``edge``.

Flags are checked while parsing (``--listen``, ``--sync``, ``--replicas``, ``--trusted-proxy``,
``--nats-restart-timeout``, ``--expires``, ``--count``), so a bad one is a usage error (exit 2) before anything
starts.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay.config import (
    DEFAULT_LISTEN,
    PlansFile,
    RelayConfig,
    StreamSettings,
    check_listen,
    check_networks,
    load_plans,
    relay_data_dir,
)
from relay.hooks.cli import add_hook_commands
from shared.host.logs import LOG_FORMATS


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
            help="NATS server URL; a cluster's: repeat it or separate URLs with commas "
            "(default: embedded)",
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
    p.add_argument("--metrics-listen", type=listen_arg, metavar="HOST:PORT",
                   help="serve GET /metrics on this address only (the main port then "
                   "answers 404 for it)")
    p.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                   help="log lines as text (default) or one JSON object per line")
    p.add_argument("--trusted-proxy", action="append", type=proxy_arg, metavar="CIDR",
                   help="a load balancer or reverse proxy whose X-Forwarded-For names the "
                   "client (repeat; adds to the --config file's [proxy] trusted)")
    p.add_argument("--max-links", type=links_arg, metavar="N",
                   help="links (connected edges) this process holds at most; past it a "
                   "handshake gets 503 relay_full with Retry-After (default: its open-file "
                   "limit less 1,024)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="plans (quotas and rate limits per account), TOML; see README, "
                   "\"Configuration\"")

    add_admin_commands(relay, command, handler)


def add_admin_commands(
    relay: Any, command: Callable[..., argparse.ArgumentParser], handler: Callable[[str], Any]
) -> None:
    """``mailslot relay account|token|enrollment|identity …``: clients of the admin API
    (``relay.adminclient``), never a store of their own."""

    def admin(name: str, help_text: str, group: Any) -> argparse.ArgumentParser:
        p = command(name.rsplit(" ", 1)[-1], handler(name), help_text, group)
        p.add_argument("--relay", metavar="URL",
                       help="the relay's URL (default: the relay running in this "
                       "MAILSLOT_HOME, from DATA_DIR/relay.json)")
        how = p.add_mutually_exclusive_group()
        how.add_argument("--admin-key-file", type=Path, metavar="FILE",
                         help="the admin credential (default: $MAILSLOT_ADMIN_KEY, else "
                         "DATA_DIR/admin.key of the local relay)")
        how.add_argument("--sign", action="store_true",
                         help="no admin credential: sign the request with this "
                         "MAILSLOT_HOME's edge identity, an admin identity of the relay "
                         "(default relay: the one it is enrolled with)")
        p.add_argument("--data-dir", type=Path, help="the local relay's data folder")
        return p

    def with_account(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--account", required=True, metavar="NAME")
        return p

    account = relay.add_parser("account", help="accounts").add_subparsers(metavar="COMMAND")
    p = admin("account create", "create an account; prints a one-time enrollment token",
              account)
    p.add_argument("name")
    p.add_argument("--plan", metavar="PLAN",
                   help="one of the relay's plans (default: its default_plan)")
    admin("account token", "print another one-time enrollment token",
          account).add_argument("name")
    admin("account list", "list accounts", account)
    admin("account show", "an account: disabled?, identities, tokens, pending interrupts, "
          "usage against its plan's quotas", account).add_argument("name")
    p = admin("account plan", "run an account under another plan (from its next request)",
              account)
    p.add_argument("name")
    p.add_argument("plan", help="one of the relay's plans (its --config file)")
    admin("account disable", "refuse the account's producers and edges (data kept)",
          account).add_argument("name")
    admin("account enable", "accept a disabled account's producers and edges again",
          account).add_argument("name")
    admin("account delete", "delete an account: its identities, tokens and queued "
          "interrupts are purged", account).add_argument("name")

    token = relay.add_parser("token", help="producer tokens").add_subparsers(metavar="COMMAND")
    p = with_account(admin("token create", "create a producer bearer token", token))
    p.add_argument("--to", required=True, action="append", metavar="ID",
                   help="recipient identity id (repeat for several)")
    p.add_argument("--name", default="producer", help="shown as the interrupts' source name")
    p.add_argument("--type", action="append", dest="types", metavar="GLOB",
                   help="allowed interrupt types, a glob (repeat; default: any)")
    p.add_argument("--expires", type=duration_arg, metavar="DURATION",
                   help="valid for this long (90s, 30m, 12h, 30d, 1w; default: until revoked)")
    with_account(admin("token list", "the account's producer tokens (never the secret)",
                       token))
    with_account(admin("token revoke", "revoke a producer token by its id",
                       token)).add_argument("id")

    enrollment = relay.add_parser("enrollment", help="enrollment tokens").add_subparsers(
        metavar="COMMAND")
    p = with_account(admin("enrollment create", "one-time enrollment tokens", enrollment))
    p.add_argument("--count", type=count_arg, default=1, help="how many (default 1)")
    p.add_argument("--expires", type=duration_arg, metavar="DURATION",
                   help="valid for this long (default: until spent or revoked)")
    with_account(admin("enrollment list", "the account's unspent enrollment tokens",
                       enrollment))
    with_account(admin("enrollment revoke", "revoke an enrollment token by its id",
                       enrollment)).add_argument("id")

    identity = relay.add_parser("identity", help="enrolled identities").add_subparsers(
        metavar="COMMAND")
    with_account(admin("identity list", "the account's identities", identity))
    with_account(admin("identity revoke", "remove an identity: its link is refused, its "
                       "queued interrupts purged", identity)).add_argument("id")
    p = admin("identity admin", "let an enrolled identity administer the relay with "
              "signed requests (--grant), or no longer (--revoke)", identity)
    p.add_argument("id")
    grant = p.add_mutually_exclusive_group(required=True)
    grant.add_argument("--grant", action="store_true", help="name it an admin identity")
    grant.add_argument("--revoke", action="store_true", help="withdraw its admin")
    admin("identity admins", "the admin identities", identity)
    admin_key = relay.add_parser("admin-key", help="the relay's admin credential")
    admin("admin-key rotate", "make a new admin credential (shown once; the old one is "
          "refused at once); saved in DATA_DIR/admin.key of the local relay and in "
          "--admin-key-file FILE", admin_key.add_subparsers(metavar="COMMAND"))
    add_hook_commands(relay, admin)  # mailslot relay hook … (relay.hooks.cli)


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(s|m|h|d|w)?")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def duration_arg(value: str) -> float:
    """``--expires``: ``90s``, ``30m``, ``12h``, ``30d``, ``1w`` or seconds."""
    match = _DURATION.fullmatch(value.strip())
    seconds = float(match[1]) * _UNIT[match[2] or "s"] if match else 0.0
    if not 0 < seconds <= 10 * 365 * 86_400:
        raise argparse.ArgumentTypeError(
            f"must be a duration like 90s, 30m, 12h, 30d, 1w (up to 10 years), not {value!r}")
    return seconds


def number_arg(name: str, high: int) -> Callable[[str], int]:
    """An argparse type named ``name`` (as argparse's own errors call it): a whole number
    from 1 to ``high``."""

    def parse(value: str) -> int:
        if not value.isdigit() or not 1 <= int(value) <= high:
            raise argparse.ArgumentTypeError(f"must be a number from 1 to {high}, not {value!r}")
        return int(value)

    parse.__name__ = parse.__qualname__ = name
    return parse


count_arg = number_arg("count_arg", 1000)  # --count
links_arg = number_arg("links_arg", 10_000_000)  # --max-links
replicas_arg = number_arg("replicas_arg", 5)  # --replicas


def listen_arg(value: str) -> str:
    """``--listen``: HOST:PORT, checked while parsing so a typo is a usage error (exit 2)."""
    try:
        return check_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def proxy_arg(value: str) -> str:
    """``--trusted-proxy``: a CIDR (``10.0.0.0/8``) or one address."""
    try:
        return check_networks([value])[0]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sync_arg(value: str) -> str:
    """``--sync``: "always", or a duration nats-server understands (``500ms``, ``1s``, ``2m``)."""
    if value == "always" or _SYNC_INTERVAL.fullmatch(value):
        return value
    raise argparse.ArgumentTypeError(
        f'must be "always" or an interval like 500ms, 1s, 2m, not {value!r}'
    )


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
    """The one config of ``relay serve`` (``ConfigInvalid``, exit 2, for a bad
    ``--config`` file)."""
    config_file = getattr(args, "config", None)
    found = load_plans(config_file) if config_file is not None else PlansFile()
    return RelayConfig(
        plans=found.plans,
        default_plan=found.default_plan,
        listen=getattr(args, "listen", DEFAULT_LISTEN),
        nats=tuple(url.strip() for arg in args.nats for url in arg.split(",") if url.strip()),
        data_dir=args.data_dir or relay_data_dir(),
        embedded_sync=getattr(args, "sync", "always"),
        embedded_restart_timeout=getattr(args, "nats_restart_timeout", 30.0),
        stream=StreamSettings(replicas=getattr(args, "replicas", 1),
                              max_bytes=found.stream.max_bytes),
        metrics_listen=getattr(args, "metrics_listen", None),
        unauthenticated=found.unauthenticated,
        trusted_proxies=(*found.proxy.trusted, *(getattr(args, "trusted_proxy", None) or ())),
        max_links=getattr(args, "max_links", None),
    )
