"""``mailslot inbox list|next|ack|nack|rejected|follow``: the local inbox from the shell.

``ack`` and ``nack`` exit 1 with ``not_pending`` if the item is unknown or not pending, or
with ``claimed_by_other`` if another owner holds a live claim on it; ``--owner`` must name
the claim's owner. ``--lease``/``--delay``/``--owner`` are checked while parsing (exit 2).

``follow`` prints each interrupt as it is committed (``--json``: one object a line), until
interrupted. It never polls: it sleeps on inotify for the inbox's database and its
write-ahead log (every commit writes the log), then reads what came after the last item
it printed, so nothing is missed or printed twice, whoever committed it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.cli.output import Command, arg_type, duration_arg, emit
from edge.config import EdgePaths
from edge.errors import NotInitialized, NotPending, UsageError
from edge.fswatch import Change, FsWatch
from edge.intents.model import parse_duration
from edge.store.claims import DEFAULT_LEASE, check_lease, check_owner, default_owner
from edge.store.inbox import Inbox, commit_files


def add_inbox_commands(sub: Any, command: Command) -> None:
    """Register ``mailslot inbox ...`` on the top-level subparsers ``sub``."""
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
    p.add_argument("--delay", type=duration_arg, default=0.0,
                   help="how long before it is next again, e.g. 30, 30s, 5m (default 0)")
    p.add_argument("--owner", type=_owner_arg, help="the owner that claimed it")
    p = command("rejected", cmd_inbox_rejected, "envelopes refused by verification", inbox)
    p.add_argument("--limit", type=int, default=50)
    p = command("follow", cmd_inbox_follow,
                "print interrupts as they are committed, until interrupted", inbox)
    p.add_argument("--after", type=_seq_arg, metavar="SEQ",
                   help="start after this seq (each item carries its seq), e.g. where a"
                        " previous follow stopped; default: from now on")


def open_inbox(paths: EdgePaths) -> Inbox:
    """The inbox, which ``mailslot edge init`` created; ``NotInitialized`` if there is none
    (nothing is created)."""
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


def cmd_inbox_list(args: argparse.Namespace, paths: EdgePaths) -> int:
    with open_inbox(paths) as inbox:
        items = inbox.list(state=None if args.all else "pending", limit=args.limit)
    now = datetime.now(UTC)
    emit(args, [i.to_dict() for i in items],
         "\n".join(_line(i, now) for i in items) or "(empty)")
    return 0


_owner_arg = arg_type(check_owner)
_lease_arg = arg_type(lambda value: check_lease(parse_duration(value)))


def cmd_inbox_next(args: argparse.Namespace, paths: EdgePaths) -> int:
    if not args.claim and (args.lease is not None or args.owner is not None):
        raise UsageError("--lease and --owner apply only with --claim")
    with open_inbox(paths) as inbox:
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


def cmd_inbox_ack(args: argparse.Namespace, paths: EdgePaths) -> int:
    """Exit 1 with ``not_pending`` if the item is unknown or not pending, or with
    ``claimed_by_other`` if another owner holds a live claim on it; ``--owner`` must name
    the claim's owner."""
    with open_inbox(paths) as inbox:
        if not inbox.ack(args.id, args.owner):
            raise NotPending(args.id)
    emit(args, {"id": args.id, "acked": True}, "acked")
    return 0


def cmd_inbox_nack(args: argparse.Namespace, paths: EdgePaths) -> int:
    """Exit 1 as ``ack`` does; a nacked item loses its claim."""
    with open_inbox(paths) as inbox:
        if not inbox.nack(args.id, args.delay, args.owner):
            raise NotPending(args.id)
    emit(args, {"id": args.id, "nacked": True}, "back to pending")
    return 0


#: Items read at a time by ``follow``.
FOLLOW_BATCH = 256


def _seq_arg(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise argparse.ArgumentTypeError(f"{value!r} is not a seq (a whole number >= 0)")
    return int(value)


def cmd_inbox_follow(args: argparse.Namespace, paths: EdgePaths) -> int:
    """Until interrupted (Ctrl-C: exit 130; a closed pipe ends it quietly)."""
    with open_inbox(paths) as inbox:
        asyncio.run(follow(inbox, paths.inbox_file, args.after, json_lines=args.json))
    return 0


async def follow(inbox: Inbox, path: Path, after: int | None, *, json_lines: bool,
                 stop: asyncio.Event | None = None) -> None:
    """Print every item stored after ``after`` (None: after the newest one now), as it
    is committed, until ``stop``. The watch is armed before the first read, so a commit
    between the two is seen."""
    names = commit_files(path)

    def relevant(_change: Change, changed: str) -> bool:
        return Path(changed).name in names

    async with FsWatch(path.parent, recursive=False, accept=relevant, step_ms=20,
                       debounce_ms=100, stop=stop) as changes:
        last = inbox.last_seq() if after is None else after
        print(f"following {path} after seq {last}; Ctrl-C to stop", file=sys.stderr,
              flush=True)
        while True:
            while batch := inbox.after(last, FOLLOW_BATCH):
                for item in batch:
                    text = json.dumps(item.to_dict(), default=str) if json_lines else _line(item)
                    print(text, flush=True)
                    last = item.seq
            if await changes.next() is None:
                return


def cmd_inbox_rejected(args: argparse.Namespace, paths: EdgePaths) -> int:
    with open_inbox(paths) as inbox:
        rows = inbox.rejections(limit=args.limit)
    text = "\n".join(
        f"{r.received_at}  {r.envelope_id or '-'}  {r.code}: {r.message}" for r in rows
    )
    emit(args, [r.to_dict() for r in rows], text or "(none)")
    return 0
