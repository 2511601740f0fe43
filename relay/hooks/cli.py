"""``mailslot relay hook …``: the parser (registered by ``relay.cli``); the commands run in
``relay.hookcommands``. Imports nothing heavy (``relay.cli``'s rule): the flags are
checked here only for their form; the hook itself is validated by the relay.

Each flag sets one field of ``relay.hooks.model.Hook`` (README, "Webhooks")."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from typing import Any

KINDS = ("github", "stripe", "slack", "standard-webhooks", "hmac", "none")
PRIORITIES = ("now", "next", "later")
OPS = ("eq", "ne", "in", "glob", "regex", "lt", "le", "gt", "ge", "present", "absent")
_WHERE = re.compile(r"\s*(\S+)\s+([a-z]+)(?:\s+(.*))?", re.DOTALL)
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(s|m|h|d)?")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def where_arg(value: str) -> dict[str, Any]:
    """``--where 'PATH OP VALUE'``: a predicate as in intents. VALUE is JSON if it parses
    (``3``, ``true``, ``"x"``), else text; for ``in``, a comma-separated list."""
    match = _WHERE.fullmatch(value)
    if match is None or match[2] not in OPS:
        raise argparse.ArgumentTypeError(
            f"must be 'PATH OP VALUE' with OP one of {', '.join(OPS)}, not {value!r}")
    field, op, text = match[1], match[2], (match[3] or "").strip()
    if op in ("present", "absent"):
        if text:
            raise argparse.ArgumentTypeError(f"op {op} takes no value")
        return {"field": field, "op": op}
    if op == "in":
        return {"field": field, "op": op, "value": [_value(v.strip()) for v in text.split(",")]}
    return {"field": field, "op": op, "value": _value(text)}


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def priority_rule_arg(value: str) -> dict[str, Any]:
    """``--priority-rule 'EVENT-GLOB=now'``: events matching the glob get that priority."""
    glob, _, priority = value.rpartition("=")
    if not glob or priority not in PRIORITIES:
        raise argparse.ArgumentTypeError(
            f"must be EVENT-GLOB=now|next|later (e.g. 'charge.dispute.*=now'), not {value!r}")
    return {"when": {"event": [glob]}, "priority": priority}


def grace_arg(value: str) -> float:
    """``--grace``: ``0``, ``90s``, ``30m``, ``24h``, ``7d`` (at most 30 days)."""
    match = _DURATION.fullmatch(value.strip())
    seconds = float(match[1]) * _UNIT[match[2] or "s"] if match else -1.0
    if not 0 <= seconds <= 30 * 86_400:
        raise argparse.ArgumentTypeError(
            f"must be a duration like 0, 90s, 30m, 24h, 7d (up to 30d), not {value!r}")
    return seconds


def add_hook_commands(relay: Any, admin: Callable[[str, str, Any], argparse.ArgumentParser]
                      ) -> None:
    """``mailslot relay hook create|list|show|pause|resume|rotate-secret|delete``;
    ``admin(name, help, group)`` makes an admin command's parser (``relay.cli``)."""
    hook = relay.add_parser("hook", help="webhook ingress: hooks").add_subparsers(
        metavar="COMMAND")
    p = admin("hook create", "create a hook: prints its URL and, where the relay makes "
              "it, its signing secret (once)", hook)
    p.add_argument("name", help="the interrupts' source name")
    p.add_argument("--to", required=True, metavar="ID", help="the recipient identity")
    p.add_argument("--source", required=True, choices=KINDS, help="how deliveries are signed")
    p.add_argument("--secret-env", metavar="VAR",
                   help="take the signing secret from this environment variable (the "
                   "provider's: Stripe, Slack; or your own)")
    p.add_argument("--public-url", metavar="URL",
                   help="the relay's address as providers reach it, for the printed URL "
                   "(default: the relay's URL, --relay)")
    g = p.add_argument_group("what becomes of a delivery")
    g.add_argument("--filter-event", action="append", metavar="GLOB",
                   help="keep only events matching a glob (repeat)")
    g.add_argument("--where", action="append", type=where_arg, metavar="'PATH OP VALUE'",
                   help="keep only deliveries where this holds (all of them; repeat)")
    g.add_argument("--where-any", action="append", type=where_arg, metavar="'PATH OP VALUE'",
                   help="... and at least one of these")
    g.add_argument("--type", metavar="TEMPLATE", help="the interrupt's type, e.g. "
                   "'github.{event}.{payload.action}' (default per source)")
    g.add_argument("--priority-rule", action="append", type=priority_rule_arg,
                   metavar="GLOB=PRIORITY", help="events matching GLOB get PRIORITY (repeat; "
                   "the first that matches wins)")
    g.add_argument("--priority", choices=PRIORITIES, help="otherwise (default next)")
    g.add_argument("--keep", action="append", metavar="PATH",
                   help="a dotted path of the body to keep (repeat; default per source)")
    g.add_argument("--keep-max-bytes", type=int, metavar="N")
    g.add_argument("--store-body", action="store_true", help="keep the whole body too")
    g.add_argument("--body-max-bytes", type=int, metavar="N")
    g.add_argument("--rate", type=float, metavar="N", help="deliveries per second")
    g.add_argument("--burst", type=int, metavar="N")
    g.add_argument("--paused", action="store_true", help="create it paused")
    s = p.add_argument_group("--source hmac and none")
    s.add_argument("--header", help="hmac: the signature's header")
    s.add_argument("--algorithm", choices=("sha256", "sha512"))
    s.add_argument("--encoding", choices=("hex", "base64"))
    s.add_argument("--prefix", help="hmac: text before the digest, e.g. sha256=")
    s.add_argument("--timestamp-header", help="hmac: the signing time's header")
    s.add_argument("--signed", help="hmac: what is signed, e.g. '{timestamp}.{body}'")
    s.add_argument("--tolerance", type=int, metavar="SECONDS")
    s.add_argument("--id-header", help="the delivery id's header (deduplication)")
    s.add_argument("--event-header", help="the event name's header")
    s.add_argument("--accept-unsigned", action="store_true",
                   help="--source none: accept deliveries nobody signed (the URL alone is "
                   "the secret)")
    p = admin("hook list", "the hooks (never their secrets)", hook)
    p.add_argument("--account", metavar="NAME")
    p.add_argument("--to", metavar="ID")
    admin("hook show", "a hook and its last refusals (never the bodies)",
          hook).add_argument("id")
    admin("hook pause", "answer deliveries 503 hook_paused (providers retry later)",
          hook).add_argument("id")
    admin("hook resume", "accept deliveries again", hook).add_argument("id")
    p = admin("hook rotate-secret", "a new signing secret; the current one verifies too "
              "during the grace period", hook)
    p.add_argument("id")
    p.add_argument("--secret-env", metavar="VAR", help="take the new secret from this "
                   "environment variable (else one is made and printed once)")
    p.add_argument("--grace", type=grace_arg, default=86_400.0, metavar="DURATION",
                   help="how long the current secret still verifies (default 24h; 0: not)")
    admin("hook delete", "delete a hook (its deliveries are then answered 410)",
          hook).add_argument("id")
