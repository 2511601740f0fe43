"""``edge.store.db``: the one SQLite adapter, against real SQLite files.

The transaction helper commits, rolls back on an exception (nested: only the inner part),
SQLite's errors come out as ``InboxError`` naming the file and the store, and a new file
is private (0600 in a 0700 folder) and durable (WAL, ``synchronous=FULL``).
"""

from __future__ import annotations

import ast
import stat
from pathlib import Path

import pytest

from edge.errors import InboxError
from edge.store.db import Database

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def db(tmp_path: Path) -> Database:
    opened = Database.open(tmp_path / "data" / "test.sqlite3", "test store")
    opened.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    return opened


def test_a_transaction_commits_for_every_connection(db: Database, tmp_path: Path) -> None:
    with db.transaction():
        db.execute("INSERT INTO t VALUES ('a', 1)")
        db.executemany("INSERT INTO t VALUES (?, ?)", [("b", 2), ("c", 3)])
        assert db.in_transaction
    assert not db.in_transaction
    with Database.open(db.path, "test store") as other:
        assert other.query("SELECT k, v FROM t ORDER BY k") == [("a", 1), ("b", 2), ("c", 3)]
    db.close()


def test_an_exception_rolls_the_whole_transaction_back(db: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"), db.transaction():
        db.execute("INSERT INTO t VALUES ('a', 1)")
        raise RuntimeError("boom")
    assert not db.in_transaction
    assert db.query("SELECT * FROM t") == []
    db.close()


def test_a_nested_transaction_commits_with_the_outer_one_or_rolls_back_alone(
    db: Database,
) -> None:
    with db.transaction():
        db.execute("INSERT INTO t VALUES ('outer', 1)")
        with db.transaction():
            db.execute("INSERT INTO t VALUES ('kept', 2)")
        with pytest.raises(ValueError), db.transaction():
            db.execute("INSERT INTO t VALUES ('dropped', 3)")
            raise ValueError
        assert db.in_transaction  # the outer one is still open
    assert [k for (k,) in db.query("SELECT k FROM t ORDER BY k")] == ["kept", "outer"]
    db.close()


def test_sqlite_errors_come_out_as_inbox_error_naming_file_and_store(db: Database) -> None:
    db.execute("INSERT INTO t VALUES ('a', 1)")
    with pytest.raises(InboxError, match=r"test\.sqlite3: test store database error: UNIQUE"):
        db.execute("INSERT INTO t VALUES ('a', 2)")
    with pytest.raises(InboxError, match="no such table"):
        db.query("SELECT * FROM missing")
    with pytest.raises(InboxError), db.transaction():
        db.execute("INSERT INTO t VALUES ('b', NULL)")  # NOT NULL
    assert db.query("SELECT k FROM t") == [("a",)]  # the failed transaction left nothing
    assert db.one("SELECT v FROM t WHERE k = 'zz'") is None
    db.close()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(InboxError, match=r"garbage\.sqlite3: test store database error"):
        Database.open(garbage, "test store")


def test_a_new_file_is_private_and_durable(db: Database, tmp_path: Path) -> None:
    path = Path(db.path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    db.execute("INSERT INTO t VALUES ('a', 1)")
    wal = path.with_name(path.name + "-wal")
    assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    assert db.one("PRAGMA journal_mode") == ("wal",)
    assert db.one("PRAGMA synchronous") == (2,)  # FULL
    assert db.one("PRAGMA busy_timeout") == (5000,)
    db.close()
    db.close()  # twice is harmless


def test_a_checkpointing_close_empties_the_wal_another_connection_keeps(
        db: Database) -> None:
    """SQLite deletes a WAL only as the last connection closes; ``checkpoint=True`` empties
    it whoever else has the file open (and a busy one is left as it is, never an error)."""
    other = Database.open(db.path, "test store")
    wal = Path(db.path + "-wal")
    with db.transaction():
        db.executemany("INSERT INTO t VALUES (?, ?)", [(f"k{n}", n) for n in range(5000)])
    assert wal.stat().st_size > 0
    busy = Database.open(db.path, "test store")
    busy.begin()  # another's open transaction: the checkpoint waits a moment, then leaves it
    db.close(checkpoint=True)
    assert wal.stat().st_size > 0
    busy.rollback()
    busy.close(checkpoint=True)
    assert wal.stat().st_size == 0
    assert other.one("SELECT count(*) FROM t") == (5000,)
    other.close(checkpoint=True)
    other.close(checkpoint=True)  # twice is harmless
    with Database.open(":memory:", "scratch") as scratch:
        scratch.close(checkpoint=True)


def test_an_existing_loose_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "loose.sqlite3"
    path.touch()
    path.chmod(0o644)
    Database.open(path, "test store").close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_memory_database_works_without_a_file(tmp_path: Path) -> None:
    with Database.open(":memory:", "scratch") as scratch:
        scratch.execute("CREATE TABLE t (v INTEGER)")
        with scratch.transaction():
            scratch.execute("INSERT INTO t VALUES (1)")
        assert scratch.query("SELECT v FROM t") == [(1,)]
    assert list(tmp_path.iterdir()) == []


def test_only_the_adapter_imports_sqlite3() -> None:
    importers = []
    for root in ("shared", "relay", "edge"):
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n.split(".")[0] == "sqlite3" for n in names):
                    importers.append(path.relative_to(REPO).as_posix())
    assert importers == ["edge/store/db.py"]
