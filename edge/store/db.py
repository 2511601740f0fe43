"""SQLite, opened the one way every edge store needs it: the only ``sqlite3`` import.

The inbox, the engine's state (with its delivery queue and approvals), and the watches'
state each live in one SQLite file. This module opens such a file and runs statements and
transactions on it; the stores talk to its ``Database`` and never to ``sqlite3``.

Rules this module keeps:

- **Private.** The file is created 0600 before SQLite opens it (SQLite would honour only
  the umask; its ``-wal`` and ``-shm`` files copy the main file's mode), an existing one
  is tightened to 0600, and a missing parent folder is created 0700.
- **Durable.** WAL mode with ``synchronous=FULL``: a committed transaction survives a
  power cut, not only a crash (the link acks upstream only after the inbox committed).
  ``:memory:`` (tests, ``replay``) skips both.
- **Many processes, short transactions.** Connections run in autocommit mode
  (``isolation_level=None``) with a busy timeout; every write batch is one
  ``transaction()``: ``BEGIN IMMEDIATE`` takes the write lock up front (two processes never
  deadlock upgrading a read lock), ``COMMIT`` on success, ``ROLLBACK`` if the block raises.
  Nested inside an open transaction it is a savepoint, so its writes commit with the
  outer one (a wake and its delivery row, a decision and its approval row, together).
- **No WAL left behind.** The daemon closes its stores with ``checkpoint=True``: the WAL
  is moved into the database and truncated first, so a stopped daemon leaves an empty
  ``-wal`` (not the ~4 MiB SQLite's autocheckpoint lets it reach) even while another
  process (``mailslot mcp``, a command) has the file open; SQLite deletes the WAL itself
  only when the last connection of all closes.
- **One error type out.** ``sqlite3.Error`` (and ``OSError`` while creating the file) is
  translated to ``edge.errors.InboxError`` naming the file and the store (its ``label``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from edge.config import FILE_MODE, private_dir
from edge.errors import InboxError

#: One row as SQLite returns it: a tuple of column values.
Row = tuple[Any, ...]
#: Statement parameters: positional (``?``) or named (``:name``).
Params = Sequence[Any] | Mapping[str, Any]

BUSY_TIMEOUT_MS = 5000
#: How long a closing checkpoint waits for another process's write or read to end: then
#: it moves what it can and leaves the rest (the WAL is checkpointed later, as usual).
CHECKPOINT_WAIT_MS = 200
MEMORY = ":memory:"


class Cursor:
    """The result of one statement: its rows (read them before the next statement on the
    same database), ``rowcount`` and ``lastrowid``. Errors while reading are translated
    like the statement's own."""

    __slots__ = ("_cursor", "_db")

    def __init__(self, cursor: sqlite3.Cursor, db: Database) -> None:
        self._cursor = cursor
        self._db = db

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    def fetchone(self) -> Any:
        with self._db.translated():
            return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        with self._db.translated():
            return self._cursor.fetchall()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class Closing:
    """``with Store.open(...) as store:`` for every store: the block's end calls
    ``close()`` (which each store defines, and which is safe to call twice)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Database(Closing):
    """One connection to one SQLite file. Open with ``Database.open(path, label)``;
    ``close()`` it (or use it as a context manager) when done. One thread at a time;
    other threads and processes open their own. Stores sharing a transaction share the
    ``Database`` object: pass it to each at construction."""

    def __init__(self, connection: sqlite3.Connection, path: str, label: str) -> None:
        self._connection = connection
        self.path = path
        self.label = label

    @classmethod
    def open(cls, path: Path | str, label: str) -> Database:
        """Open (creating if needed) the database at ``path`` (``":memory:"`` for a scratch
        one) for the store called ``label`` (``inbox``, ``engine state``, ``watch
        state``: it names the store in error messages)."""
        name = str(path)
        memory = name == MEMORY
        if not memory:
            _create_private(Path(path), label)
        try:
            connection = sqlite3.connect(
                name, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise InboxError(f"{name}: {label} database error: {exc}") from exc
        db = cls(connection, name, label)
        try:
            with db.translated():
                connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                if not memory:
                    # A new (empty) file gives deleted pages back to the file system in
                    # small steps (``incremental_vacuum``); an older one waits for
                    # ``convert_to_incremental``. Only when empty: setting it writes.
                    (pages,) = connection.execute("PRAGMA page_count").fetchone()
                    if pages == 0:
                        connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
                    (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
                    if str(mode).lower() != "wal":
                        raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode})")
                    # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on
                    # power loss, and the relay has already forgotten what we acked.
                    connection.execute("PRAGMA synchronous = FULL")
        except BaseException:
            connection.close()
            raise
        return db

    def close(self, *, checkpoint: bool = False) -> None:
        """Close the connection. Safe to call twice. ``checkpoint``: first move the WAL
        into the database and truncate it (``PRAGMA wal_checkpoint(TRUNCATE)``, waiting
        at most ``CHECKPOINT_WAIT_MS`` for others), as a long-lived owner shuts down."""
        if checkpoint and self.path != MEMORY:
            with contextlib.suppress(sqlite3.Error):  # closed already, or busy: as it is
                self._connection.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        self._connection.close()

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
        """Turn SQLite's errors inside the block into ``InboxError`` naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            raise InboxError(f"{self.path}: {self.label} database error: {exc}") from exc

    # -- statements -----------------------------------------------------------------------

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        """Run one statement (in the open transaction, if any, else on its own)."""
        with self.translated():
            return Cursor(self._connection.execute(sql, params), self)

    def executemany(self, sql: str, rows: Iterable[Params]) -> Cursor:
        with self.translated():
            return Cursor(self._connection.executemany(sql, rows), self)

    def query(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row of one statement."""
        with self.translated():
            rows: list[Row] = self._connection.execute(sql, params).fetchall()
            return rows

    def one(self, sql: str, params: Params = ()) -> Row | None:
        """The first row of one statement, or ``None``."""
        with self.translated():
            row: Row | None = self._connection.execute(sql, params).fetchone()
            return row

    # -- space ----------------------------------------------------------------------------

    @property
    def incremental(self) -> bool:
        """Whether freed pages can be given back in steps (``auto_vacuum=INCREMENTAL``)."""
        row = self.one("PRAGMA auto_vacuum")
        return row is not None and row[0] == 2

    def convert_to_incremental(self) -> None:
        """Turn on ``auto_vacuum=INCREMENTAL`` for a file made before it was the default:
        one full ``VACUUM`` (it rewrites the file and holds the write lock while it
        does: run it before the daemon serves)."""
        with self.translated():
            self._connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            self._connection.execute("VACUUM")

    def incremental_vacuum(self, pages: int) -> int:
        """Give up to ``pages`` free pages back to the file system (one short write
        transaction); returns how many free pages are left."""
        with self.translated():
            self._connection.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
        row = self.one("PRAGMA freelist_count")
        return int(row[0]) if row else 0

    # -- transactions ---------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._connection.in_transaction

    def begin(self) -> None:
        """Open a write transaction (``BEGIN IMMEDIATE``); prefer ``transaction()``. For a
        caller that must commit and reopen in the middle of a batch (to wait without
        holding the write lock), with ``commit`` and ``rollback``."""
        self.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not already done so."""
        if self._connection.in_transaction:
            self.execute("ROLLBACK")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """One atomic write batch: ``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` if
        the block raises. Inside an open transaction it is a savepoint: its writes
        commit with the outer transaction, and roll back alone if the block raises."""
        if self._connection.in_transaction:
            self.execute("SAVEPOINT nested")
            try:
                yield self
            except BaseException:
                if self._connection.in_transaction:  # SQLite may have rolled back already
                    self.execute("ROLLBACK TO nested")
                    self.execute("RELEASE nested")
                raise
            self.execute("RELEASE nested")
            return
        self.begin()
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        self.commit()


def _create_private(path: Path, label: str) -> None:
    """Create the file 0600 before SQLite does, and tighten an existing one.

    An existing file is never opened here: closing *any* descriptor of a file drops all
    of this process's POSIX locks on it, including the ones SQLite holds for another
    open connection — after which a second process may checkpoint and delete the WAL
    under the first connection, and its commits vanish."""
    try:
        if not path.parent.exists():
            private_dir(path.parent)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            os.chmod(path, FILE_MODE)
            return
        os.close(fd)
    except OSError as exc:
        raise InboxError(f"{path}: cannot open {label} ({exc.strerror})") from None
