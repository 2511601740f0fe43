"""A real daemon (``mailslot edge run``) stopped with SIGTERM checkpoints its databases
as it closes them (``Database.close(checkpoint=True)``): their ``-wal`` files are left
empty, even while another process still has the databases open — when SQLite does not
delete a WAL itself (only the last connection of all does), which left one of about
4 MiB (the autocheckpoint's size) next to ``engine.sqlite3`` before."""

from __future__ import annotations

from pathlib import Path

from tests_support import EdgeProcess, wait_until

from edge.config import EdgePaths
from edge.store.db import Database
from edge.store.inbox import Inbox

#: What the writes below leave in each WAL, at least: the daemon has to empty it.
FILLED = 2**20


def _daemon_pid(paths: EdgePaths) -> int | None:
    with Inbox.open(paths.inbox_file) as inbox:
        return inbox.status().get("pid")


def _fill_wal(db: Database, table: str) -> None:
    """About 1.5 MiB of pages into the WAL: rows written in one transaction, then removed."""
    with db.transaction():
        db.executemany(f"INSERT INTO {table} (key, value) VALUES (?, ?)",
                       [(f"wal-test-{n}", "x" * 1000) for n in range(1500)])
    with db.transaction():
        db.execute(f"DELETE FROM {table} WHERE key LIKE 'wal-test-%'")


async def test_a_sigterm_leaves_empty_wal_files_while_others_have_them_open(
        enrolled_home: Path) -> None:
    paths = EdgePaths.resolve({"MAILSLOT_HOME": str(enrolled_home)})
    edge = EdgeProcess(enrolled_home)
    edge.start()
    try:
        assert edge.process is not None
        pid = edge.process.pid
        await wait_until(lambda: _daemon_pid(paths) == pid, 30, "the daemon's stores open")
        # another process's connections (as a `mailslot mcp` keeps), open past the stop
        others = {"status": Database.open(paths.inbox_file, "inbox"),
                  "meta": Database.open(paths.engine_file, "engine state")}
        try:
            for table, db in others.items():
                _fill_wal(db, table)
            wals = [Path(db.path + "-wal") for db in others.values()]
            assert all(wal.stat().st_size > FILLED for wal in wals)
            assert edge.stop() == 0
            left = {wal.name: wal.stat().st_size if wal.exists() else 0 for wal in wals}
            assert left == dict.fromkeys(left, 0)
        finally:
            for db in others.values():
                db.close()
    finally:
        edge.kill9()
