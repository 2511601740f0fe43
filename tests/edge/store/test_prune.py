"""Pruning on real SQLite files: only acked, decided, unneeded inbox items and only
finished deliveries past the cutoff go; the space goes back step by step; an older file
is converted to incremental vacuum once."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import ulid

from edge.store.db import Database
from edge.store.deliveries import DeliveryQueue
from edge.store.enginestate import EngineState, open_engine_db
from edge.store.inbox import Accepted, Inbox
from edge.store.prune import convert, give_back, prune_deliveries, prune_engine, prune_inbox
from shared.envelope import Envelope, Priority, Source
from shared.identity import Identity
from shared.signing import sign_envelope

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def accepted(producer: Identity, me: Identity, received: datetime, n: int) -> Accepted:
    envelope = Envelope(id=str(ulid.ULID()), to=me.id, source=Source(kind="producer", name="ci"),
                        type="build.failed", priority=Priority.next, created_at=received,
                        payload={"n": n, "pad": "x" * 2000}, signer=producer.id)
    return Accepted(envelope, sign_envelope(envelope, producer), None, received)


@pytest.fixture
def home(tmp_path: Path) -> tuple[Inbox, EngineState, list[str]]:
    """Ten items received an hour apart; the engine decided the first eight."""
    producer, me = Identity.generate(), Identity.generate()
    inbox = Inbox.open(tmp_path / "inbox.sqlite3")
    items = inbox.commit([accepted(producer, me, T0 + timedelta(hours=i), i) for i in range(10)])
    state = EngineState.open(tmp_path / "engine.sqlite3")
    state.set_cursor(items[7].seq)
    yield inbox, state, [item.id for item in items]
    inbox.close()
    state.close()


def remaining(inbox: Inbox) -> list[int]:
    return sorted(int(item.payload["n"]) for item in inbox.list(state=None, limit=1000)
                  if item.payload)


def test_only_acked_decided_unneeded_items_go(home, tmp_path: Path) -> None:
    inbox, state, ids = home
    for n in (0, 1, 2, 4, 5, 6, 7, 8):  # 3 and 9 stay pending
        assert inbox.ack(ids[n])
    state.add_pending("ci", "", 1, "deferred", 0.0, [ids[5]], False)  # a wake still needs 5
    queue = DeliveryQueue(state.db)
    common = {"route": {"kind": "exec", "argv": ["true"]}, "session": "", "permissions": {},
              "wake_doc": {}, "at": T0.timestamp()}
    queue.enqueue(wake=1, intent="ci", interrupts=[ids[6]], **common)  # in flight: needs 6
    done = queue.enqueue(wake=2, intent="ci", interrupts=[ids[7]], **common)
    state.db.execute("UPDATE deliveries SET status = 'done', finished = 0 WHERE seq = ?", (done,))
    with Database.open(tmp_path / "inbox.sqlite3", "inbox") as db:
        # 8 is acked but past the engine's cursor: not decided yet
        assert prune_inbox(db, state.db, T0 + timedelta(days=1), batch=2) == 5
    assert remaining(inbox) == [3, 5, 6, 8, 9]


def test_the_cutoff_is_by_time_received(home, tmp_path: Path) -> None:
    inbox, state, ids = home
    for item_id in ids:
        inbox.ack(item_id)
    with Database.open(tmp_path / "inbox.sqlite3", "inbox") as db:
        assert prune_inbox(db, state.db, T0 + timedelta(hours=2, minutes=30)) == 3
        assert prune_inbox(db, state.db, T0 + timedelta(hours=2, minutes=30)) == 0
    assert remaining(inbox) == list(range(3, 10))


def test_finished_deliveries_go_with_their_permission_files(tmp_path: Path) -> None:
    db = open_engine_db(tmp_path / "engine.sqlite3")
    queue = DeliveryQueue(db)
    permissions = tmp_path / "permissions"
    permissions.mkdir()
    seqs = [queue.enqueue(wake=i, intent="ci", route={"kind": "exec"}, session="",
                          interrupts=[f"i{i}"], permissions={}, wake_doc={}, at=0.0)
            for i in range(6)]
    for seq in seqs:
        (permissions / f"delivery-{seq}.json").write_text("{}")
    old, new = (T0 - timedelta(days=100)).timestamp(), T0.timestamp()
    for seq, status, finished in zip(seqs, ["done", "failed", "done", "done", "pending",
                                             "claimed"], [old, old, old, new, None, None],
                                     strict=True):
        db.execute("UPDATE deliveries SET status = ?, finished = ? WHERE seq = ?",
                   (status, finished, seq))
    assert prune_deliveries(db, T0 - timedelta(days=90), permissions, batch=2) == 3
    assert [d.seq for d in queue.rows()] == seqs[3:]
    assert sorted(p.name for p in permissions.iterdir()) == [
        f"delivery-{seq}.json" for seq in seqs[3:]]
    db.close()


def test_space_goes_back_in_steps(home, tmp_path: Path) -> None:
    inbox, state, ids = home
    for item_id in ids:
        inbox.ack(item_id)
    state.set_cursor(10**6)
    path = tmp_path / "inbox.sqlite3"
    with Database.open(path, "inbox") as db:
        assert db.incremental  # a new file is made that way
        prune_inbox(db, state.db, T0 + timedelta(days=1))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        free = db.one("PRAGMA freelist_count")
        before = path.stat().st_size
        assert free is not None and free[0] > 2
        assert give_back(db, pages=1) == free[0]
        assert db.one("PRAGMA freelist_count") == (0,)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert path.stat().st_size < before


def test_an_older_file_is_converted_once(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)  # as mailslot made files before incremental vacuum
    old.execute("CREATE TABLE t (x)")
    old.execute("INSERT INTO t VALUES (randomblob(100000))")
    old.commit()
    old.close()
    with Database.open(path, "inbox") as db:
        assert not db.incremental and give_back(db) == 0
        assert convert(db) is True
        assert db.incremental and convert(db) is False
        assert db.one("SELECT length(x) FROM t") == (100000,)


def test_engine_records_past_the_cutoff_go_but_the_newest_wake_and_report_stay(
    home, tmp_path: Path
) -> None:
    _, state, _ = home
    old, new = T0.timestamp(), (T0 + timedelta(days=100)).timestamp()
    for i in range(3):  # three old wakes of ci/s1, then one recent; one old wake of ci/s2
        state.add_wake("ci", "s1", old + i)
    state.add_wake("ci", "s1", new)
    state.add_wake("ci", "s2", old)
    state.report_activity("s1", old)
    state.report_activity("s1", old + 1)
    state.mark_seen("ci", "k-old", old)
    state.mark_seen("ci", "k-new", new)
    state.cache_verdict("ci", "j-old", old, {"wake": True})
    state.spend("2026-03-01", wakes=1)
    state.spend("2026-06-09", wakes=1)
    cutoff = T0 + timedelta(days=50)
    deleted = prune_engine(state.db, cutoff, batch=2)
    assert deleted == 3 + 1 + 1 + 1 + 1  # 3 wakes, 1 report, 1 key, 1 verdict, 1 budget day
    # the newest wake per key stays (ci/s2's only one is old), the newest report too
    assert state.last_wake("ci", "s1") == new
    assert state.last_wake("ci", "s2") == old
    assert state.wakes_since("ci", "s1", 0) == 1
    assert state.last_activity("s1", new) == old + 1
    assert not state.seen("ci", "k-old", 0) and state.seen("ci", "k-new", 0)
    assert state.cached_verdict("ci", "j-old", 0) is None
    assert state.budget("2026-03-01") == (0, 0) and state.budget("2026-06-09")[0] == 1
    assert prune_engine(state.db, cutoff) == 0  # nothing more
