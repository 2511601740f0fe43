"""``mailslot grant add|rm|list``: the producer keys this edge accepts. ``add`` and ``rm``
tell the relay (signed with this edge's key) and then the local inbox's trust list."""

from __future__ import annotations

import argparse
from typing import Any

from edge.cli.inbox import open_inbox
from edge.cli.output import Command, emit
from edge.config import EdgeConfig, EdgePaths, load_config
from edge.link.keystore import load_identity
from edge.link.relayclient import RelayClient
from edge.store.inbox import Inbox
from shared.identity import Identity
from shared.tokens import check_identity


def add_grant_commands(sub: Any, command: Command) -> None:
    """Register ``mailslot grant ...`` on the top-level subparsers ``sub``."""
    grant = sub.add_parser("grant", help="producer keys this edge accepts").add_subparsers(
        metavar="COMMAND"
    )
    p = command("add", cmd_grant_add, "accept interrupts signed by an identity", grant)
    p.add_argument("id")
    p = command("rm", cmd_grant_rm, "stop accepting an identity's signatures", grant)
    p.add_argument("id")
    command("list", cmd_grant_list, "list granted producer identities", grant)


def _edge_identity(paths: EdgePaths) -> tuple[EdgeConfig, Identity]:
    return load_config(paths), load_identity(paths.key_file)


def cmd_grant_add(args: argparse.Namespace, paths: EdgePaths) -> int:
    config, identity = _edge_identity(paths)
    with RelayClient(config.relay_url) as client:
        public = client.identity(check_identity(args.id))
        client.set_grant(identity, public.id, True)
    with Inbox.open(paths.inbox_file) as inbox:
        inbox.add_trusted(public)
    emit(args, {"granted": public.id}, f"accepting interrupts signed by {public.id}")
    return 0


def cmd_grant_rm(args: argparse.Namespace, paths: EdgePaths) -> int:
    config, identity = _edge_identity(paths)
    signer = check_identity(args.id)
    with RelayClient(config.relay_url) as client:
        client.set_grant(identity, signer, False)
    with Inbox.open(paths.inbox_file) as inbox:
        inbox.remove_trusted(signer)
    emit(args, {"revoked": signer}, f"no longer accepting {signer}")
    return 0


def cmd_grant_list(args: argparse.Namespace, paths: EdgePaths) -> int:
    with open_inbox(paths) as inbox:
        docs = inbox.trusted_docs()
    emit(args, docs, "\n".join(d["id"] for d in docs) or "(none)")
    return 0
