"""The ``mailslot relay …`` commands (parsed by ``relay.cli``): serve, and manage
accounts, enrollment tokens, producer tokens and identities.

Admin commands are clients of the admin API (``relay.adminclient``): ``--relay URL``, or
the relay running in this data folder (they say so on stderr); with none running they
fail with ``relay_not_running`` and never open a store. ``--sign`` signs them with this
home's edge identity instead of the admin key. Tokens are printed once and
stored only as hashes. ``serve`` makes the admin credential on the first start and
prints it once.

This module loads the relay server (uvicorn, starlette, nats): ``edge.cli`` imports it only
when a relay command runs, so that the rest of ``mailslot`` does not carry that weight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from relay.admin import ADMINS, ROTATE_KEY
from relay.admin import PREFIX as ACCOUNTS
from relay.adminauth import ADMIN_KEY_FILE, ensure_admin_credential, write_key_file
from relay.adminclient import AdminClient, client_from_args, segment
from relay.cli import config_from
from relay.config import relay_data_dir
from relay.hookcommands import HOOK_COMMANDS
from relay.server import RelayServer, run
from shared.errors import LocalError
from shared.host.notify import ServiceNotifier
from shared.host.signals import stop_on_signals
from shared.host.waiting import first_of

log = logging.getLogger("mailslot.relay")


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
            # SIGINT/SIGTERM while starting (an unreachable --nats is dialled until it
            # answers): start() is cancelled, stops what it had started, and we are done.
            starting = asyncio.ensure_future(server.start())
            await first_of(starting, stop.wait())
            if starting.cancelled():
                log.info("stopped while starting")
                return
            starting.result()  # a start-up refusal (already_running, port_in_use, ...)
            assert server.identity is not None and server.store is not None
            try:
                admin_key = await ensure_admin_credential(server.store, config.data_dir)
            except BaseException:
                await server.stop()
                raise
            announced: dict[str, Any] = {"url": server.url, "relay": server.identity.id}
            text = f"relay {server.identity.id} listening on {server.url}"
            if admin_key is not None:  # the first start: shown this once
                announced["admin_key"] = admin_key
                text += (f"\nadmin key (shown once; saved in "
                         f"{config.data_dir / ADMIN_KEY_FILE}): {admin_key}")
            _print(args, announced, text)
            # systemd (Type=notify): NATS is up and the port listens; then the watchdog.
            notifier = ServiceNotifier.from_environ()
            notifier.ready(f"relay listening on {server.url}")
            waiter = asyncio.ensure_future(server.wait())
            watchdog = asyncio.ensure_future(notifier.watchdog(stop))
            try:
                await first_of(waiter, stop.wait())
            finally:
                log.info("stopping relay")
                notifier.stopping()
                stop.set()
                await watchdog
                await server.stop()
            if not waiter.cancelled():
                waiter.result()  # StoreLost: exit with its code

    run(serve())
    return 0


def _client(args: argparse.Namespace) -> AdminClient:
    """``--relay``, else the local relay; the admin key, or ``--sign``
    (``relay.adminclient.client_from_args``)."""
    return client_from_args(args)


def _account_path(name: str, *rest: str) -> str:
    return "/".join([ACCOUNTS, segment(name), *(segment(r) for r in rest)])


def cmd_account_create(args: argparse.Namespace) -> int:
    body = {"name": args.name} | ({"plan": args.plan} if args.plan else {})
    made = _client(args).request("POST", ACCOUNTS, body)
    token = made["enrollment_token"]
    _print(
        args,
        {"account": args.name, "enrollment_token": token},
        f"account {args.name} created\nenrollment token (one use): {token}\n"
        f"enroll an edge with: mailslot edge init --relay URL --token {token}",
    )
    return 0


def cmd_account_token(args: argparse.Namespace) -> int:
    made = _client(args).request("POST", _account_path(args.name, "enrollments"), {})
    token = made["enrollment_tokens"][0]
    _print(args, {"account": args.name, "enrollment_token": token}, token)
    return 0


def cmd_account_list(args: argparse.Namespace) -> int:
    accounts = _client(args).request("GET", ACCOUNTS)["accounts"]
    names = [a["name"] for a in accounts]
    _print(args, names, "\n".join(names) or "(none)")
    return 0


def cmd_account_show(args: argparse.Namespace) -> int:
    doc = _client(args).request("GET", _account_path(args.name))
    usage = doc["usage"]
    pending = usage["pending"]
    _print(args, doc, "\n".join([
        f"account    {doc['name']}{' (disabled)' if doc['disabled'] else ''}",
        f"created    {doc.get('created_at')}",
        f"identities {usage['identities']}",
        f"tokens     {usage['producer_tokens']} producer, {usage['enrollment_tokens']} "
        "enrollment",
        f"pending    {usage['pending_total']} (now {pending['now']}, next {pending['next']}, "
        f"later {pending['later']})",
        f"plan       {usage.get('plan', 'default')}: " + (", ".join(
            f"{k} {v}" for k, v in sorted(usage.get("limits", {}).items()) if v is not None)
            or "no limits"),
        *_quota_lines(usage.get("quotas", {})),
    ]))
    return 0


def _quota_lines(quotas: dict[str, Any]) -> list[str]:
    """``quotas  NAME USED of LIMIT`` for each quota the plan sets (``account show``)."""
    shown = [(name, q) for name, q in quotas.items() if q.get("limit") is not None]
    return [f"{'quotas' if n == 0 else '':<10} {name} {q['used']} of {q['limit']}"
            for n, (name, q) in enumerate(shown)]


def cmd_account_plan(args: argparse.Namespace) -> int:
    doc = _client(args).request("PATCH", _account_path(args.name), {"plan": args.plan})
    _print(args, doc, f"account {args.name} now runs under plan {doc['plan']}")
    return 0


def _set_disabled(verb: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        doc = _client(args).request("POST", _account_path(args.name, verb))
        _print(args, doc, f"account {args.name} {verb}d")
        return 0

    return run


def cmd_account_delete(args: argparse.Namespace) -> int:
    doc = _client(args).request("DELETE", _account_path(args.name))
    purged = doc["purged"]
    _print(args, doc, f"account {args.name} deleted: {purged['identities']} identities, "
           f"{purged['producer_tokens']} producer tokens, {purged['enrollment_tokens']} "
           f"enrollment tokens, {purged['interrupts']} queued interrupts purged")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"to": args.to, "name": args.name}
    if args.types:
        body["types"] = args.types
    if args.expires is not None:
        body["expires_in"] = args.expires
    made = _client(args).request("POST", _account_path(args.account, "tokens"), body)
    to = args.to[0] if len(args.to) == 1 else args.to
    _print(args, {"account": args.account, "to": to, "token": made["token"], "id": made["id"],
                  "types": made["types"], "expires_at": made["expires_at"]}, made["token"])
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    tokens = _client(args).request("GET", _account_path(args.account, "tokens"))["tokens"]
    lines = [
        f"{t['id']}  {t['state']:<7}  {t['name']}  to {','.join(t['to'])}  "
        f"types {','.join(t['types'])}  expires {t['expires_at'] or 'never'}"
        for t in tokens
    ]
    _print(args, tokens, "\n".join(lines) or "(none)")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    doc = _client(args).request("DELETE", _account_path(args.account, "tokens", args.id))
    _print(args, doc, f"token {args.id} revoked")
    return 0


def cmd_enrollment_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"count": args.count}
    if args.expires is not None:
        body["expires_in"] = args.expires
    made = _client(args).request("POST", _account_path(args.account, "enrollments"), body)
    _print(args, made, "\n".join(made["enrollment_tokens"]))
    return 0


def cmd_enrollment_list(args: argparse.Namespace) -> int:
    doc = _client(args).request("GET", _account_path(args.account, "enrollments"))
    lines = [f"{t['id']}  {t['state']:<7}  created {t['created_at']}  "
             f"expires {t['expires_at'] or 'never'}" for t in doc["enrollments"]]
    _print(args, doc["enrollments"], "\n".join(lines) or "(none)")
    return 0


def cmd_enrollment_revoke(args: argparse.Namespace) -> int:
    doc = _client(args).request("DELETE", _account_path(args.account, "enrollments", args.id))
    _print(args, doc, f"enrollment token {args.id} revoked")
    return 0


def cmd_identity_list(args: argparse.Namespace) -> int:
    doc = _client(args).request("GET", _account_path(args.account, "identities"))
    lines = [f"{i['id']}  enrolled {i['created_at']}" for i in doc["identities"]]
    _print(args, doc["identities"], "\n".join(lines) or "(none)")
    return 0


def cmd_identity_revoke(args: argparse.Namespace) -> int:
    doc = _client(args).request("DELETE", _account_path(args.account, "identities", args.id))
    _print(args, doc, f"identity {args.id} revoked ({doc['purged_interrupts']} queued "
           "interrupts purged)")
    return 0


def cmd_identity_admin(args: argparse.Namespace) -> int:
    path = f"{ADMINS}/{segment(args.id)}"
    if args.grant:
        doc = _client(args).request("PUT", path)
        _print(args, doc, f"identity {args.id} (account {doc['account']}) may now "
               "administer the relay with signed requests")
    else:
        doc = _client(args).request("DELETE", path)
        _print(args, doc, f"identity {args.id} is no longer an admin" if doc["was_admin"]
               else f"identity {args.id} was not an admin")
    return 0


def cmd_identity_admins(args: argparse.Namespace) -> int:
    admins = _client(args).request("GET", ADMINS)["admins"]
    lines = [f"{a['id']}  account {a['account'] or '(not enrolled)'}  since "
             f"{a['granted_at']}  by {a['granted_by']}" for a in admins]
    _print(args, admins, "\n".join(lines) or "(none)")
    return 0


def cmd_admin_key_rotate(args: argparse.Namespace) -> int:
    """Rotate, then save the new key where the old one was read from: the local relay's
    ``DATA_DIR/admin.key`` (no ``--relay``) and ``--admin-key-file FILE``. The key is
    printed even when a file cannot be written: it is the one copy."""
    doc = _client(args).request("POST", ROTATE_KEY)
    files = [f for f in (
        None if args.relay or args.sign else (args.data_dir or relay_data_dir()) / ADMIN_KEY_FILE,
        args.admin_key_file) if f is not None]
    saved, failures = [], []
    for path in dict.fromkeys(files):
        try:
            write_key_file(path, doc["admin_key"])
            saved.append(str(path))
        except OSError as exc:
            failures.append(f"cannot write {path}: {exc.strerror or exc}")
    where = f"saved in {', '.join(saved)}" if saved else "saved nowhere: keep it"
    _print(args, {**doc, "saved_in": saved},
           f"new admin key (shown once; {where}): {doc['admin_key']}\n"
           "the old key is refused from now on, by every relay process")
    if failures:
        raise LocalError("; ".join(failures), code="key_not_saved")
    return 0


#: Each relay command by its name under ``mailslot relay``.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "account create": cmd_account_create,
    "account token": cmd_account_token,
    "account list": cmd_account_list,
    "account show": cmd_account_show,
    "account plan": cmd_account_plan,
    "account disable": _set_disabled("disable"),
    "account enable": _set_disabled("enable"),
    "account delete": cmd_account_delete,
    "token create": cmd_token_create,
    "token list": cmd_token_list,
    "token revoke": cmd_token_revoke,
    "enrollment create": cmd_enrollment_create,
    "enrollment list": cmd_enrollment_list,
    "enrollment revoke": cmd_enrollment_revoke,
    "identity list": cmd_identity_list,
    "identity revoke": cmd_identity_revoke,
    "identity admin": cmd_identity_admin,
    "identity admins": cmd_identity_admins,
    "admin-key rotate": cmd_admin_key_rotate,
    **HOOK_COMMANDS,  # mailslot relay hook … (relay.hookcommands)
}
