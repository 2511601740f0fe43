"""The ``Stop`` hook's wait: until an interrupt for this session arrives, then wake it.

Claude Code runs ``mailslot hook claude stop`` with ``asyncRewake`` each time the session
stops (goes idle): in the background, without waiting for it. This waits — on inotify
for the inbox's database and its write-ahead log, never polling — for a pending
interrupt stored after it started that is for the session (``edge.claude.hooks``'
rules), and returns it; the command then writes the context on stderr and exits 2,
which wakes the session. It returns nothing (exit 0, silent) when ``wait`` runs out, or
when a later ``Stop`` of the same Claude Code session started a newer waiter: each
waiter writes its own token to ``data/claude-stop-<session id>.waiter`` and gives way
as soon as the file holds another one, so one session has one waiter.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from pathlib import Path

from edge.claude.hooks import DEFAULT_LIMIT, for_session
from edge.fswatch import Change, FsWatch
from edge.store.inbox import Inbox, InboxItem, commit_files

_SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def waiter_file(data_dir: Path, session_id: str | None) -> Path:
    """The token file of a Claude Code session's waiter (its id as is when it is a plain
    name, as a hash otherwise)."""
    name = session_id or "default"
    if not _SAFE.fullmatch(name):
        name = hashlib.sha256(name.encode()).hexdigest()[:32]
    return data_dir / f"claude-stop-{name}.waiter"


async def wait_for_rewake(inbox: Inbox, inbox_file: Path, marker: Path, session: str | None,
                          cwd: str | None, wait: float, limit: int = DEFAULT_LIMIT
                          ) -> list[InboxItem]:
    """The interrupts for ``session``/``cwd`` stored from now on, as soon as there is
    one; ``[]`` after ``wait`` seconds or once superseded (see the module)."""
    token = secrets.token_hex(16)
    names = commit_files(inbox_file) | {marker.name}

    def relevant(_change: Change, path: str) -> bool:
        return Path(path).name in names

    deadline = time.monotonic() + wait
    try:
        async with FsWatch(inbox_file.parent, recursive=False, accept=relevant, step_ms=50,
                           debounce_ms=200) as changes:
            last = inbox.last_seq()
            marker.write_text(token)  # armed: from here on nothing is missed
            while True:
                if _holder(marker) != token:
                    return []
                found: list[InboxItem] = []
                while batch := inbox.after(last, 256):
                    found += for_session(batch, session, cwd, limit)
                    last = batch[-1].seq
                if found:
                    return found[:limit]
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                await changes.next(timeout=left)
    finally:
        if _holder(marker) == token:
            marker.unlink(missing_ok=True)


def _holder(marker: Path) -> str | None:
    try:
        return marker.read_text()
    except OSError:
        return None
