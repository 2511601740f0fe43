"""The ``mailslot relay hook …`` commands (parsed by ``relay.hooks.cli``): clients of the
admin API's hook routes (``relay.hooks.routes``), like the other admin commands.

``create`` prints the hook's URL — ``--public-url``, else the relay's own URL, followed
by ``/v1/hooks/<hook id>`` — and, where the relay made it, the signing secret: once.
Nothing else ever shows a secret (``list``/``show`` answer them masked)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from relay.adminclient import AdminClient, client_from_args, segment
from shared.errors import LocalError

HOOKS = "/v1/admin/hooks"
_OPTIONS = ("type", "keep", "keep_max_bytes", "body_max_bytes", "rate", "burst")
_SOURCE_OPTIONS = ("header", "algorithm", "encoding", "prefix", "timestamp_header", "signed",
                   "tolerance", "id_header", "event_header")


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data) if args.json else text, flush=True)


def _client(args: argparse.Namespace) -> AdminClient:
    """``--relay``, else the local relay; the admin key, or ``--sign``
    (``relay.adminclient.client_from_args``)."""
    return client_from_args(args)


def _secret(var: str | None) -> str | None:
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise LocalError(f"environment variable {var} is not set", code="missing_secret")
    return value.strip()


def _source(args: argparse.Namespace) -> dict[str, Any]:
    source: dict[str, Any] = {"kind": args.source}
    for name in _SOURCE_OPTIONS:
        if getattr(args, name) is not None:
            source[name] = getattr(args, name)
    if args.source == "none":
        if not args.accept_unsigned:
            raise LocalError("--source none accepts deliveries nobody signed: say so with "
                             "--accept-unsigned", code="unsigned_not_accepted")
        source["accept_unsigned"] = True
    return source


def _line(hook: dict[str, Any]) -> str:
    state = "paused" if hook.get("paused") else "active"
    return (f"{hook['id']}  {state:<6}  {hook['name']}  {hook['source']['kind']}  "
            f"to {hook['to']}  account {hook['account']}")


def cmd_hook_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "to": args.to, "source": _source(args)}
    secret = _secret(args.secret_env)
    if secret is not None:
        body["secret"] = secret
    filters: dict[str, Any] = {}
    if args.filter_event:
        filters["event"] = args.filter_event
    if args.where:
        filters["all"] = args.where
    if args.where_any:
        filters["any"] = args.where_any
    if filters:
        body["filter"] = filters
    if args.priority_rule:
        body["priority"] = args.priority_rule
    if args.priority:
        body["default_priority"] = args.priority
    if args.store_body:
        body["store_body"] = True
    if args.paused:
        body["paused"] = True
    for name in _OPTIONS:
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    client = _client(args)
    made = client.request("POST", HOOKS, body)
    base = (args.public_url or client.target.url).rstrip("/")
    url = base + made["path"]
    hook = made["hook"]
    lines = [f"hook {hook['name']} ({hook['id']}) for {hook['to']}", f"url:    {url}"]
    if made.get("secret"):
        lines.append(f"secret (shown once): {made['secret']}")
    if made.get("warning"):
        print(f"mailslot: warning: {made['warning']}", file=sys.stderr, flush=True)
    _print(args, {"id": hook["id"], "url": url, "secret": made.get("secret"), "hook": hook},
           "\n".join(lines))
    return 0


def cmd_hook_list(args: argparse.Namespace) -> int:
    params = "&".join(f"{k}={segment(v)}" for k, v in (("account", args.account),
                                                       ("to", args.to)) if v)
    hooks = _client(args).request("GET", HOOKS + (f"?{params}" if params else ""))["hooks"]
    _print(args, hooks, "\n".join(_line(h) for h in hooks) or "(none)")
    return 0


def cmd_hook_show(args: argparse.Namespace) -> int:
    doc = _client(args).request("GET", f"{HOOKS}/{segment(args.id)}")
    hook = doc["hook"]
    secrets = hook.get("secrets", [])
    lines = [
        _line(hook),
        f"path     {hook['path']}",
        f"created  {hook['created_at']}",
        f"secrets  {len(secrets)}" + "".join(
            f" (previous valid until {s['until']})" for s in secrets if s.get("until")),
        f"type     {hook.get('type') or 'default for ' + hook['source']['kind']}",
        f"filter   {hook.get('filter') or 'none'}",
        "last refusals:" if doc["refusals"] else "last refusals: none",
        *(f"  {r['at']}  {r['status']} {r['code']}: {r['message']}" for r in doc["refusals"]),
    ]
    _print(args, doc, "\n".join(lines))
    return 0


def _action(verb: str, done: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        doc = _client(args).request("POST", f"{HOOKS}/{segment(args.id)}/{verb}")
        _print(args, doc, f"hook {doc['hook']['name']} {done}")
        return 0

    return run


def cmd_hook_rotate_secret(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"grace": args.grace}
    secret = _secret(args.secret_env)
    if secret is not None:
        body["secret"] = secret
    doc = _client(args).request("POST", f"{HOOKS}/{segment(args.id)}/rotate-secret", body)
    lines = [f"hook {doc['hook']['name']}: new secret in use"]
    if doc.get("previous_valid_until"):
        lines.append(f"the previous one verifies until {doc['previous_valid_until']} "
                     "(unix seconds)")
    if doc.get("secret"):
        lines.append(f"secret (shown once): {doc['secret']}")
    _print(args, doc, "\n".join(lines))
    return 0


def cmd_hook_delete(args: argparse.Namespace) -> int:
    doc = _client(args).request("DELETE", f"{HOOKS}/{segment(args.id)}")
    _print(args, doc, f"hook {doc['name']} deleted")
    return 0


#: Each hook command by its name under ``mailslot relay``.
HOOK_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "hook create": cmd_hook_create,
    "hook list": cmd_hook_list,
    "hook show": cmd_hook_show,
    "hook pause": _action("pause", "paused"),
    "hook resume": _action("resume", "resumed"),
    "hook rotate-secret": cmd_hook_rotate_secret,
    "hook delete": cmd_hook_delete,
}
