"""Deleting what the edge is done with: acked inbox items and finished deliveries past
their retention age, in small batches, and giving the space back to the file system.

Rules this module keeps:

- **Only what nothing needs.** An inbox item is deleted only if it is ``acked``, was
  received before the cutoff, the engine has decided it (at or before its cursor), and
  no pending wake nor unfinished delivery names it. A delivery only once it is ``done``
  or ``failed`` and finished before the cutoff (with the permission file its run read).
  The state is checked again inside the deleting statement, so an item acked or a
  delivery retried meanwhile is never lost.
- **Small steps.** Each batch is one short write transaction of at most ``BATCH`` rows;
  each vacuum step gives back at most ``VACUUM_PAGES`` pages. The link's and the engine's
  transactions run between the steps (SQLite's busy timeout queues them for at most one
  step). The caller runs this in a worker thread, never on the event loop.
- **The link does not pay for it.** Each step is checkpointed by this module
  (``checkpoint``), so the WAL pages it wrote are not copied at the link's next commit.
- **Space goes back.** A file made with ``auto_vacuum=INCREMENTAL`` (every file since
  this module exists, see ``edge.store.db``) shrinks step by step
  (``Database.incremental_vacuum``); an older one is converted once, before the daemon
  serves (``convert``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from edge.store.db import Database
from edge.store.inboxschema import to_text

#: Rows per delete transaction: a few milliseconds of write lock.
BATCH = 200
#: Pages per incremental vacuum step (512 KiB at SQLite's 4 KiB pages).
VACUUM_PAGES = 128


def convert(db: Database) -> bool:
    """Make ``db`` shrink in steps from now on (one ``VACUUM`` if it was made before
    ``auto_vacuum=INCREMENTAL``); True if it had to be converted."""
    if db.incremental:
        return False
    db.convert_to_incremental()
    return True


def checkpoint(db: Database) -> None:
    """Copy the WAL into the file now, in this (the upkeep's) thread, without waiting for
    or blocking anyone (``PASSIVE``): otherwise the pages a batch wrote make the WAL
    pass SQLite's autocheckpoint size at the link's next commit, and the link pays for
    copying them."""
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def needed_interrupts(engine: Database) -> set[str]:
    """Interrupt ids a pending wake or an unfinished delivery still names."""
    needed: set[str] = set()
    for (ids,) in engine.query("SELECT interrupts FROM pending_wakes"):
        needed.update(json.loads(ids))
    for (ids,) in engine.query(
            "SELECT interrupts FROM deliveries WHERE status IN ('pending', 'claimed')"):
        needed.update(json.loads(ids))
    return needed


def engine_cursor(engine: Database) -> int:
    """The last inbox seq the engine has decided."""
    row = engine.one("SELECT value FROM meta WHERE key = 'inbox_cursor'")
    return int(row[0]) if row else 0


def prune_inbox(inbox: Database, engine: Database, before: datetime, *,
                batch: int = BATCH, keep_going: Callable[[], bool] = lambda: True) -> int:
    """Delete acked items received before ``before`` that nothing needs, oldest first,
    ``batch`` at a time, until an item received since is reached; returns how many.
    Stops early when ``keep_going()`` says so (the daemon is stopping)."""
    cutoff = to_text(before)
    needed = needed_interrupts(engine)
    cursor = engine_cursor(engine)
    after, deleted = 0, 0
    while keep_going():
        rows = inbox.query(
            "SELECT seq, id, state, received_at FROM interrupts WHERE seq > ? AND seq <= ?"
            " ORDER BY seq LIMIT ?", (after, cursor, batch))
        doomed, reached = [], False
        for seq, id_, state, received_at in rows:
            if received_at >= cutoff:
                reached = True
                break
            after = seq
            if state == "acked" and id_ not in needed:
                doomed.append(seq)
        if doomed:
            marks = ",".join("?" * len(doomed))
            with inbox.transaction():
                deleted += inbox.execute(
                    f"DELETE FROM interrupts WHERE seq IN ({marks}) AND state = 'acked'",
                    doomed).rowcount
            checkpoint(inbox)
        if reached or len(rows) < batch:
            break
    return deleted


def prune_deliveries(engine: Database, before: datetime, permissions: Path | None = None,
                     *, batch: int = BATCH,
                     keep_going: Callable[[], bool] = lambda: True) -> int:
    """Delete deliveries that ended (``done``/``failed``) before ``before``, ``batch``
    at a time, and the permission files their runs read; returns how many."""
    deleted = 0
    while keep_going():
        seqs = [row[0] for row in engine.query(
            "SELECT seq FROM deliveries WHERE status IN ('done', 'failed')"
            " AND finished < ? ORDER BY seq LIMIT ?", (before.timestamp(), batch))]
        if seqs:
            marks = ",".join("?" * len(seqs))
            with engine.transaction():  # the status again: a retry may have reopened one
                engine.execute(f"DELETE FROM deliveries WHERE seq IN ({marks})"
                               " AND status IN ('done', 'failed')", seqs)
            checkpoint(engine)
        if permissions is not None:
            for seq in seqs:
                (permissions / f"delivery-{seq}.json").unlink(missing_ok=True)
        deleted += len(seqs)
        if len(seqs) < batch:
            break
    return deleted


#: The engine's records of what it did, by table and time column: each older row only
#: matters to a window (cooldown, dedupe, judge cache, reminders since the user was last
#: seen) that reaches that far back. ``wake_log`` and ``activity`` keep their newest row
#: per key whatever its age, so "the last wake" and "the user was last seen" stay known.
_ENGINE_RECORDS = (
    ("wake_log", "at", "intent, session"),
    ("activity", "at", "session"),
    ("dedupe", "at", None),
    ("judge_cache", "at", None),
)


def prune_engine(engine: Database, before: datetime, *, batch: int = BATCH,
                 keep_going: Callable[[], bool] = lambda: True) -> int:
    """Delete the engine's records (wakes, activity reports, dedupe keys, judge answers,
    daily budgets) older than ``before``, ``batch`` rows per transaction; returns how
    many. A window longer than the retention age is cut to it."""
    deleted = 0
    cutoff = before.timestamp()
    for table, column, key in _ENGINE_RECORDS:
        newest = (f" AND rowid NOT IN (SELECT max(rowid) FROM {table} GROUP BY {key})"
                  if key else "")
        while keep_going():
            with engine.transaction():
                count = engine.execute(
                    f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}"
                    f" WHERE {column} < ?{newest} LIMIT ?)", (cutoff, batch)).rowcount
            checkpoint(engine)
            deleted += count
            if count < batch:
                break
    if keep_going():
        with engine.transaction():
            deleted += engine.execute("DELETE FROM budget WHERE day < ?",
                                      (before.date().isoformat(),)).rowcount
    return deleted


def give_back(db: Database, *, pages: int = VACUUM_PAGES,
              keep_going: Callable[[], bool] = lambda: True) -> int:
    """Return free pages to the file system, ``pages`` per step, until none are left;
    returns how many were given back (0 for a file that cannot shrink in steps)."""
    if not db.incremental:
        return 0
    row = db.one("PRAGMA freelist_count")
    free = int(row[0]) if row else 0
    start = free
    while free and keep_going():
        left = db.incremental_vacuum(pages)
        checkpoint(db)
        if left >= free:
            break  # nothing moved (another connection holds it): next pass
        free = left
    return start - free
