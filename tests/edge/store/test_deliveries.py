"""The durable delivery queue and the permission envelope: claims, leases, recovery after a
crash, delivery keys — real SQLite, real processes."""

from __future__ import annotations

import json
import re
import stat
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from engine_support import at

from edge.intents.model import Intent
from edge.store.deliveries import DeliveryQueue, permission_envelope
from edge.store.instances import Instance

T = at("2026-11-24 10:00")


def test_permission_envelope_is_the_intersection() -> None:
    intent = Intent.model_validate({"id": "i", "grant": ["repo:read", "ci:*"], "grant_ttl": "1h"})
    asked = {"actions": ["repo:read", "repo:write", "ci:rerun", "deploy:prod"],
             "expires_at": (T + timedelta(minutes=10)).isoformat()}
    envelope = permission_envelope(intent, [asked], T)
    assert envelope["actions"] == ["ci:rerun", "repo:read"]
    assert envelope["denied"] == ["deploy:prod", "repo:write"]
    assert envelope["expires_at"] == (T + timedelta(minutes=10)).isoformat()
    unasked = permission_envelope(intent, [None], T)
    assert unasked["actions"] == ["ci:*", "repo:read"] and unasked["denied"] == []
    assert unasked["expires_at"] == (T + timedelta(hours=1)).isoformat()
    nothing = permission_envelope(Intent.model_validate({"id": "j"}), [asked], T)
    assert nothing["actions"] == []


def test_queue_claims_are_exclusive_and_leases_expire(tmp_path: Path) -> None:
    path = tmp_path / "engine.sqlite3"
    a, b = DeliveryQueue.open(path), DeliveryQueue.open(path)
    one = Instance.start(tmp_path / "instances", "one")
    two = Instance.start(tmp_path / "instances", "two")
    try:
        a.db.execute("BEGIN IMMEDIATE")
        for n in range(3):
            a.enqueue(wake=n, intent="i", route={"kind": "mcp"}, session="", interrupts=[str(n)],
                      permissions={}, wake_doc={}, at=T.timestamp())
        a.db.execute("COMMIT")
        first = a.claim("mcp", one, lease=60, now=T, limit=2)
        second = b.claim("mcp", two, lease=60, now=T, limit=5)
        assert [d.seq for d in first] == [1, 2] and [d.seq for d in second] == [3]
        assert b.claim("mcp", two, lease=60, now=T + timedelta(seconds=30)) == []
        again = b.claim("mcp", two, lease=60, now=T + timedelta(seconds=61), limit=5)
        assert [d.seq for d in again] == [1, 2, 3]
        assert {d.instance for d in again} == {two.id}
    finally:
        a.close()
        b.close()
        one.stop()
        two.stop()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- claims owned by instances: recovery after a crash, renewal, keys ----------------------

KEY_RE = r"msg_[0-9A-HJKMNP-TV-Z]{26}"


def enqueue(queue: DeliveryQueue, n: int, kind: str = "mcp", **route: Any) -> list[int]:
    return [queue.enqueue(wake=i, intent="i", route={"kind": kind, **route}, session="",
                          interrupts=[f"int-{i}"], permissions={}, wake_doc={},
                          at=T.timestamp()) for i in range(n)]


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[DeliveryQueue]:
    """The delivery queue in ``tmp_path / "engine.sqlite3"``, closed after the test."""
    opened = DeliveryQueue.open(tmp_path / "engine.sqlite3")
    yield opened
    opened.close()


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Callable[[str], Instance]]:
    """Start instances in ``tmp_path / "instances"``; each is stopped after the test."""
    started: list[Instance] = []

    def start(owner: str) -> Instance:
        started.append(Instance.start(tmp_path / "instances", owner))
        return started[-1]

    yield start
    for one in started:
        one.stop()


CLAIMER = """
import json, sys
from datetime import datetime, UTC
from pathlib import Path
from edge.store.deliveries import DeliveryQueue
from edge.store.instances import Instance
instance = Instance.start(Path(sys.argv[1]), "crashy")
queue = DeliveryQueue.open(sys.argv[2])
claimed = queue.claim("mcp", instance, 3600, datetime.now(UTC), limit=2)
print(json.dumps({"id": instance.id, "seqs": [d.seq for d in claimed]}), flush=True)
sys.stdin.read()  # hold the claims until killed
"""


def test_a_dead_instances_claims_are_released_at_once(
    tmp_path: Path, queue: DeliveryQueue, instance: Callable[[str], Instance]
) -> None:
    """A real process claims with an hour's lease and is killed -9: the next claimer
    gets the rows back at once (pending, due now, attempt counted, same key)."""
    import subprocess

    path, folder = tmp_path / "engine.sqlite3", tmp_path / "instances"
    me = instance("me")
    enqueue(queue, 3)
    keys = {d.seq: d.key for d in queue.rows()}
    with subprocess.Popen([sys.executable, "-c", CLAIMER, str(folder), str(path)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            held = json.loads(child.stdout.readline())
            assert held["seqs"] == [1, 2]
            assert me.alive(held["id"]) and queue.holders() == {held["id"]}
            now = datetime.now(UTC)
            assert queue.release_dead(me, now) == []  # alive: its claims stand
            assert [d.seq for d in queue.claim("mcp", me, 60, now, limit=5)] == [3]
        finally:
            child.kill()
            child.wait(10)
    now = datetime.now(UTC)
    assert not me.alive(held["id"])
    released = queue.release_dead(me, now)
    assert [d.seq for d in released] == [1, 2]
    rows = {d.seq: d for d in queue.rows()}
    for seq in (1, 2):
        assert rows[seq].status == "pending" and rows[seq].attempts == 1
        assert rows[seq].instance is None and rows[seq].next_attempt <= now
        assert rows[seq].key == keys[seq]
    assert rows[3].status == "claimed" and rows[3].instance == me.id  # mine: untouched
    assert not (folder / f"{held['id']}.lock").exists()
    again = queue.claim("mcp", me, 60, now, limit=5)
    assert [(d.seq, d.attempts, d.key) for d in again] == [(1, 2, keys[1]), (2, 2, keys[2])]


def test_only_the_claims_holder_can_finish_it(
    queue: DeliveryQueue, instance: Callable[[str], Instance]
) -> None:
    a, b = instance("a"), instance("b")
    enqueue(queue, 1)
    (mine,) = queue.claim("mcp", a, 1, T)
    (theirs,) = queue.claim("mcp", b, 60, T + timedelta(seconds=2))  # a's lease lapsed
    assert theirs.attempts == 2 and theirs.key == mine.key
    assert not queue.renew(mine, T + timedelta(minutes=5))
    assert not queue.finish(mine, "ok", {}, T + timedelta(seconds=3))
    (row,) = queue.rows()
    assert row.status == "claimed" and row.instance == b.id
    assert queue.finish(theirs, "ok", {}, T + timedelta(seconds=3))
    # done is done: no lease, no release, no restart brings it back
    assert queue.claim("mcp", a, 60, T + timedelta(days=1)) == []
    assert queue.release_instances({a.id, b.id, ""}, T + timedelta(days=1)) == []
    assert [d.status for d in queue.rows()] == ["done"]


def test_claimers_look_again_soon_while_someone_else_holds_claims(
    queue: DeliveryQueue, instance: Callable[[str], Instance]
) -> None:
    from edge.store.deliveries import SWEEP_EVERY

    me, other = instance("me"), instance("other")
    assert queue.next_look(("exec", "webhook"), me, T) is None  # nothing queued: sleep
    enqueue(queue, 1)
    queue.claim("mcp", other, 3600, T)
    # nothing of mine is due, but if ``other`` dies I must notice within SWEEP_EVERY
    assert queue.next_look(("exec", "webhook"), me, T) == T + timedelta(seconds=SWEEP_EVERY)
    assert queue.next_look(("exec", "webhook"), other, T) is None  # its own claim


def test_each_claim_is_sized_to_its_route(
    queue: DeliveryQueue, instance: Callable[[str], Instance]
) -> None:
    me = instance("me")
    enqueue(queue, 1, "exec", argv=["true"], timeout=600.0)
    enqueue(queue, 1, "webhook", url="http://127.0.0.1:9/x", timeout=10.0)
    from edge.store.deliveries import LEASE_MARGIN, lease_for

    claimed = queue.claim(("exec", "webhook"), me, lease_for, T, limit=5)
    assert [(d.claim_until - T).total_seconds() for d in claimed if d.claim_until] == [
        600 + LEASE_MARGIN, 10 + LEASE_MARGIN]


def test_an_old_queue_gets_keys_and_its_claims_back(tmp_path: Path) -> None:
    """A database from before delivery keys: a webhook row already sent keeps the id its
    receiver saw; the others get new keys; a claim with no instance is released."""
    import sqlite3

    path = tmp_path / "engine.sqlite3"
    db = sqlite3.connect(path)
    db.execute("""CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        wake INTEGER NOT NULL, intent TEXT NOT NULL, kind TEXT NOT NULL, route TEXT NOT NULL,
        session TEXT NOT NULL, interrupts TEXT NOT NULL, permissions TEXT NOT NULL,
        wake_doc TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'claimed', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL,
        claim_owner TEXT, claim_until REAL, outcome TEXT, detail TEXT,
        created REAL NOT NULL, finished REAL)""")
    old = T.timestamp()
    for kind, status, attempts, until in (("webhook", "pending", 2, None),
                                          ("exec", "pending", 0, None),
                                          ("exec", "claimed", 1, old + 3600)):
        db.execute("INSERT INTO deliveries (wake, intent, kind, route, session, interrupts,"
                   " permissions, wake_doc, status, attempts, next_attempt, claim_owner,"
                   " claim_until, created) VALUES (1, 'i', ?, '{}', '', '[]', '{}', '{}', ?, ?,"
                   " ?, ?, ?, ?)", (kind, status, attempts, old,
                                    "daemon" if until else None, until, old))
    db.commit()
    db.close()
    queue = DeliveryQueue.open(path)
    me = Instance.start(tmp_path / "instances", "me")
    rows = queue.rows()
    assert rows[0].key == "msg_mailslot_1"
    assert re.fullmatch(KEY_RE, rows[1].key) and re.fullmatch(KEY_RE, rows[2].key)
    assert queue.holders() == {""}
    assert [d.seq for d in queue.release_dead(me, T)] == [3]
    assert [d.seq for d in queue.claim("exec", me, 60, T, limit=5)] == [2, 3]
    me.stop()
    queue.close()
    again = DeliveryQueue.open(path)  # opening again changes nothing
    assert [d.key for d in again.rows()] == [d.key for d in rows]
    again.close()


def test_a_dead_claimers_runtime_is_stopped_and_only_it(tmp_path: Path) -> None:
    """What a killed daemon left running is recognised by pid and start time: a pid
    that is not that process any more is never signalled."""
    import subprocess

    from edge.store.instances import runner_mark, stop_runner

    with subprocess.Popen(["sleep", "30"], start_new_session=True) as runtime:
        mark = runner_mark(runtime.pid)
        pid, start = mark.split(":")
        assert pid == str(runtime.pid) and start.isdigit()
        assert not stop_runner(f"{pid}:{int(start) + 1}")  # another process with that pid
        assert not stop_runner(f"{pid}:")  # no start time known: never
        assert runtime.poll() is None
        assert stop_runner(mark)
        assert runtime.wait(10) == -9
    assert not stop_runner(mark)  # gone: nothing to do
