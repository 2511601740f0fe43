"""The pull queue: claims (leases) on real SQLite files, concurrent pullers in real
processes, and the ``mailslot inbox`` commands as an agent runs them."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import ulid
from tests_support import json_out, mailslot

from edge.config import EdgePaths
from edge.errors import ClaimedByOther, InboxError
from edge.store.claims import LEASE_MAX, check_lease, check_owner, default_owner
from edge.store.inbox import Accepted, Inbox, _accepted_row
from edge.store.inboxschema import INSERT, SCHEMA, SCHEMA_VERSION
from shared.envelope import Envelope, Priority, Source
from shared.identity import Identity
from shared.signing import sign_envelope

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PRODUCER = Identity.generate()
ME = Identity.generate()


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make(priority: Priority = Priority.next, n: int = 1) -> Accepted:
    """A real signed envelope, as the link would accept it."""
    envelope = Envelope(
        id=str(ulid.ULID()),
        to=ME.id,
        source=Source(kind="producer", name="ci.github"),
        type="build.failed",
        priority=priority,
        created_at=T0,
        payload={"n": n},
        signer=PRODUCER.id,
    )
    return Accepted(envelope, sign_envelope(envelope, PRODUCER), None, T0)


@pytest.fixture
def inbox_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "inbox.sqlite3"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def inbox(inbox_path: Path, clock: FakeClock) -> Any:
    with Inbox.open(inbox_path, clock=clock) as box:
        yield box


def _ids(*items: Accepted) -> list[str]:
    return [i.envelope.id for i in items]


# -- claiming -------------------------------------------------------------------------


def test_claim_takes_most_urgent_oldest_and_sets_the_lease(inbox: Inbox) -> None:
    later, nxt, now1, now2 = make(Priority.later), make(), make(Priority.now), make(Priority.now)
    inbox.commit_batch([later, nxt, now1, now2])
    order = []
    for owner in ("a", "b", "c", "d"):
        item = inbox.claim(owner, 60)
        assert item is not None
        assert (item.state, item.claim_owner) == ("pending", owner)
        assert item.claim_until == T0 + timedelta(seconds=60)
        order.append(item.id)
    assert order == _ids(now1, now2, nxt, later)
    assert inbox.claim("e", 60) is None
    # Claimed items are still pending: counted, listed with their claim.
    assert inbox.counts() == {"now": 2, "next": 1, "later": 1}
    docs = [i.to_dict() for i in inbox.list()]
    assert [d["claim_owner"] for d in docs] == ["a", "b", "c", "d"]
    assert {d["claim_until"] for d in docs} == {(T0 + timedelta(seconds=60)).isoformat()}
    assert json.loads(json.dumps(docs))[0]["id"] == now1.envelope.id


def test_unclaimed_item_has_empty_claim_fields(inbox: Inbox) -> None:
    a = make()
    inbox.commit_batch([a])
    doc = inbox.list()[0].to_dict()
    assert (doc["claim_owner"], doc["claim_until"]) == (None, None)


def test_next_peeks_past_live_claims(inbox: Inbox, clock: FakeClock) -> None:
    urgent, other = make(Priority.now), make()
    inbox.commit_batch([urgent, other])
    claimed = inbox.claim("a", 30)
    assert claimed is not None and claimed.id == urgent.envelope.id
    peek = inbox.next()
    assert peek is not None and peek.id == other.envelope.id
    assert peek.claim_owner is None
    # A peek claims nothing: the same item is still there to claim.
    again = inbox.claim("b", 30)
    assert again is not None and again.id == other.envelope.id
    assert inbox.next() is None
    clock.advance(30)  # a lease ends at claim_until exactly
    peek = inbox.next()
    assert peek is not None and peek.id == urgent.envelope.id
    assert (peek.claim_owner, peek.claim_until) == ("a", T0 + timedelta(seconds=30))


def test_claim_respects_not_before(inbox: Inbox, clock: FakeClock) -> None:
    a = make()
    inbox.commit_batch([a])
    assert inbox.nack(a.envelope.id, 30)
    assert inbox.claim("a", 60) is None
    clock.advance(30)
    item = inbox.claim("a", 60)
    assert item is not None and item.id == a.envelope.id and item.nacks == 1


def test_expired_claim_returns_to_pending(inbox: Inbox, clock: FakeClock) -> None:
    a = make()
    inbox.commit_batch([a])
    first = inbox.claim("agent-a", 60)
    assert first is not None and first.id == a.envelope.id
    assert inbox.claim("agent-b", 60) is None
    clock.advance(59)
    assert inbox.claim("agent-b", 60) is None
    clock.advance(2)  # 61 s after the claim
    second = inbox.claim("agent-b", 60)
    assert second is not None and second.id == a.envelope.id
    assert second.claim_owner == "agent-b"
    assert second.claim_until == T0 + timedelta(seconds=121)
    # The first owner's lease is gone: it may no longer ack what agent-b now holds.
    with pytest.raises(ClaimedByOther):
        inbox.ack(a.envelope.id, owner="agent-a")
    assert inbox.ack(a.envelope.id, owner="agent-b") is True


def test_ack_by_another_owner_under_a_live_lease_is_refused(
    inbox: Inbox, clock: FakeClock
) -> None:
    a = make()
    inbox.commit_batch([a])
    assert inbox.claim("agent-a", 60) is not None
    clock.advance(10)
    with pytest.raises(ClaimedByOther) as refused:
        inbox.ack(a.envelope.id, owner="agent-b")
    exc = refused.value
    assert isinstance(exc, InboxError)
    assert exc.code == "claimed_by_other"
    assert (exc.id, exc.owner, exc.until) == (
        a.envelope.id, "agent-a", T0 + timedelta(seconds=60)
    )
    assert "agent-a" in exc.message
    # A caller that names no owner is someone else too; so is a nack.
    with pytest.raises(ClaimedByOther):
        inbox.ack(a.envelope.id)
    with pytest.raises(ClaimedByOther):
        inbox.nack(a.envelope.id, 0, owner="agent-b")
    stored = inbox.get(a.envelope.id)
    assert stored is not None
    assert (stored.state, stored.nacks, stored.claim_owner) == ("pending", 0, "agent-a")
    # The owner may.
    assert inbox.ack(a.envelope.id, owner="agent-a") is True
    stored = inbox.get(a.envelope.id)
    assert stored is not None
    assert (stored.state, stored.claim_owner, stored.claim_until) == ("acked", None, None)
    assert inbox.ack(a.envelope.id, owner="agent-a") is False
    assert inbox.ack(a.envelope.id, owner="agent-b") is False  # acked: nothing to refuse


def test_lapsed_claim_can_be_acked_by_anyone(inbox: Inbox, clock: FakeClock) -> None:
    a, b = make(), make()
    inbox.commit_batch([a, b])
    assert inbox.claim("agent-a", 5) is not None
    clock.advance(5)
    assert inbox.ack(a.envelope.id, owner="agent-b") is True
    # Unclaimed items: as before claims existed, with or without an owner.
    assert inbox.ack(b.envelope.id) is True
    assert inbox.counts()["next"] == 0


def test_nack_returns_it_at_once(inbox: Inbox, clock: FakeClock) -> None:
    a = make()
    inbox.commit_batch([a])
    assert inbox.claim("agent-a", 600) is not None
    assert inbox.nack(a.envelope.id, 0, owner="agent-a") is True
    stored = inbox.get(a.envelope.id)
    assert stored is not None
    assert (stored.state, stored.nacks, stored.claim_owner, stored.claim_until) == (
        "pending", 1, None, None
    )
    again = inbox.claim("agent-b", 600)  # no time has passed
    assert again is not None and again.id == a.envelope.id and again.nacks == 1


def test_nack_with_delay_hides_it_from_claims(inbox: Inbox, clock: FakeClock) -> None:
    a = make()
    inbox.commit_batch([a])
    assert inbox.claim("agent-a", 600) is not None
    assert inbox.nack(a.envelope.id, 30, owner="agent-a") is True
    assert inbox.claim("agent-b", 60) is None
    assert inbox.next() is None
    clock.advance(30)
    item = inbox.claim("agent-b", 60)
    assert item is not None and item.id == a.envelope.id


def test_owner_and_lease_are_validated(inbox: Inbox) -> None:
    a = make()
    inbox.commit_batch([a])
    for bad_owner in ("", "a b", "x" * 65, "ágent", "a/b", "a\n"):
        with pytest.raises(ValueError):
            inbox.claim(bad_owner, 60)
        with pytest.raises(ValueError):
            check_owner(bad_owner)
    with pytest.raises(ValueError):
        inbox.ack(a.envelope.id, owner="a b")
    for bad_lease in (0, 0.999, -5, LEASE_MAX + 0.001, math.nan, math.inf):
        with pytest.raises(ValueError):
            inbox.claim("ok", bad_lease)
    assert check_lease(1) == 1.0 and check_lease(24 * 3600) == LEASE_MAX
    assert check_owner("x" * 64) == "x" * 64
    stored = inbox.get(a.envelope.id)
    assert stored is not None and stored.claim_owner is None  # nothing half-done
    item = inbox.claim("agent_1.x:y@host-2", 1)
    assert item is not None


def test_default_owner_is_a_valid_owner() -> None:
    owner = default_owner()
    assert re.fullmatch(r"pid-\d+@.+", owner)
    assert check_owner(owner) == owner


def test_claims_are_seen_across_connections(inbox_path: Path) -> None:
    with Inbox.open(inbox_path) as daemon, Inbox.open(inbox_path) as agent:
        daemon.commit_batch([make(), make()])
        mine = agent.claim("agent-a", 60)
        assert mine is not None
        peek = daemon.next()
        assert peek is not None and peek.id != mine.id
        with pytest.raises(ClaimedByOther):
            daemon.ack(mine.id)
        assert agent.ack(mine.id, owner="agent-a")


def test_schema_1_file_is_upgraded(inbox_path: Path) -> None:
    """A file written before claims existed gains the columns and keeps its rows."""
    a = make()
    inbox_path.parent.mkdir(mode=0o700)
    db = sqlite3.connect(inbox_path, isolation_level=None)
    for statement in SCHEMA:  # schema 1, as mailslot wrote it before claims
        db.execute(statement)
    db.execute(INSERT, _accepted_row(a))
    db.execute("PRAGMA user_version = 1")
    db.close()
    with Inbox.open(inbox_path) as box:
        assert box._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        columns = [row[1] for row in box._db.execute("PRAGMA table_info(interrupts)")]
        assert columns[-2:] == ["claim_owner", "claim_until"]
        stored = box.get(a.envelope.id)
        assert stored is not None and stored.claim_owner is None
        item = box.claim("agent-a", 60)
        assert item is not None and item.id == a.envelope.id
    with Inbox.open(inbox_path) as box:  # reopening a current file changes nothing
        assert box.total() == 1
        stored = box.get(a.envelope.id)
        assert stored is not None and stored.claim_owner == "agent-a"


# -- concurrent pullers in separate processes -----------------------------------------

_PULLER = r"""
import json, sys, time
from pathlib import Path
from edge.store.inbox import Inbox

path, owner, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()  # the start signal: all four begin together
claimed, refused = [], []
with Inbox.open(Path(path)) as box:
    while True:
        item = box.claim(owner, 60)
        if item is None:
            break
        claimed.append([item.rank, item.seq, item.id])
        time.sleep(0.001)  # the work, done holding the claim but not the database lock
        if not box.ack(item.id, owner=owner):
            refused.append(item.id)
out.write_text(json.dumps({"claimed": claimed, "refused": refused}))
"""


def test_four_processes_pull_1000_items_each_exactly_once(
    inbox_path: Path, tmp_path: Path
) -> None:
    priorities = (Priority.later, Priority.next, Priority.now)
    items = [make(priorities[n % 3], n) for n in range(1000)]
    with Inbox.open(inbox_path) as box:
        assert len(box.commit_batch(items)) == 1000
    outs = [tmp_path / f"puller{n}.json" for n in range(4)]
    pullers = [
        subprocess.Popen(
            [sys.executable, "-c", _PULLER, str(inbox_path), f"puller-{n}", str(out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n, out in enumerate(outs)
    ]
    try:
        for p in pullers:  # blocking reads: each has opened its imports and is waiting
            assert p.stdout is not None and p.stdout.readline() == "ready\n", p.communicate()
        for p in pullers:  # all four start pulling at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in pullers:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
    finally:
        for p in pullers:
            if p.poll() is None:
                p.kill()
                p.communicate()
    results = [json.loads(out.read_text()) for out in outs]
    claims = [[tuple(c) for c in r["claimed"]] for r in results]
    per_puller = [{c[2] for c in mine} for mine in claims]
    assert all(r["refused"] == [] for r in results)
    # No item claimed twice (by two pullers, or twice by one); together: all of them.
    assert sum(len(mine) for mine in claims) == 1000
    for a, b in combinations(per_puller, 2):
        assert a.isdisjoint(b)
    assert set().union(*per_puller) == set(_ids(*items))
    # All four really pulled, each in queue order (most urgent, then oldest).
    assert all(per_puller), [len(p) for p in per_puller]
    assert all(mine == sorted(mine) for mine in claims)
    with Inbox.open(inbox_path) as box:
        assert box.counts() == {"now": 0, "next": 0, "later": 0}
        acked = box.list("acked", limit=2000)
        assert len(acked) == 1000
        assert all(i.claim_owner is None for i in acked)
        assert box.next() is None


# -- the command line -----------------------------------------------------------------


def test_cli_claim_ack_nack_round_trip(home: Path) -> None:
    urgent, other = make(Priority.now), make()
    with Inbox.open(EdgePaths(home / "config", home / "data").inbox_file) as box:
        box.commit_batch([urgent, other])

    before = datetime.now(UTC)
    mine = json_out(mailslot(
        home, "inbox", "next", "--claim", "--lease", "30s", "--owner", "agent-1", "--json"
    ))
    assert mine["id"] == urgent.envelope.id
    assert mine["claim_owner"] == "agent-1" and mine["state"] == "pending"
    until = datetime.fromisoformat(mine["claim_until"])
    assert before + timedelta(seconds=29) < until < datetime.now(UTC) + timedelta(seconds=31)

    theirs = json_out(mailslot(home, "inbox", "next", "--claim", "--json"))  # default owner
    assert theirs["id"] == other.envelope.id
    assert re.fullmatch(r"pid-\d+@.+", theirs["claim_owner"])
    assert json_out(mailslot(home, "inbox", "next", "--claim", "--json")) is None
    assert json_out(mailslot(home, "inbox", "next", "--json")) is None  # peek skips claims

    # Someone else (or nobody) may not ack it: exit 1 with a code.
    refused = mailslot(home, "inbox", "ack", urgent.envelope.id, "--owner", "agent-2", "--json")
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"] == "claimed_by_other"
    refused = mailslot(home, "inbox", "ack", urgent.envelope.id)
    assert refused.returncode == 1
    assert "claimed_by_other" in refused.stderr and "agent-1" in refused.stderr
    refused = mailslot(home, "inbox", "nack", other.envelope.id, "--json")
    assert json.loads(refused.stdout)["error"] == "claimed_by_other"

    acked = json_out(mailslot(
        home, "inbox", "ack", urgent.envelope.id, "--owner", "agent-1", "--json"
    ))
    assert acked == {"id": urgent.envelope.id, "acked": True}
    nacked = json_out(mailslot(
        home, "inbox", "nack", other.envelope.id, "--owner", theirs["claim_owner"], "--json"
    ))
    assert nacked == {"id": other.envelope.id, "nacked": True}
    # Back at once, and claimable again.
    again = json_out(mailslot(home, "inbox", "next", "--claim", "--owner", "agent-1", "--json"))
    assert again["id"] == other.envelope.id and again["nacks"] == 1
    text = mailslot(home, "inbox", "nack", other.envelope.id, "--owner", "agent-1",
                    "--delay", "5m")
    assert text.returncode == 0, text.stderr
    assert json_out(mailslot(home, "inbox", "next", "--claim", "--json")) is None
    listed = json_out(mailslot(home, "inbox", "list", "--all", "--json"))
    assert {d["id"]: d["claim_owner"] for d in listed} == {
        urgent.envelope.id: None, other.envelope.id: None
    }


def test_cli_text_output_and_usage_errors(home: Path) -> None:
    a = make()
    with Inbox.open(EdgePaths(home / "config", home / "data").inbox_file) as box:
        box.commit_batch([a])
    out = mailslot(home, "inbox", "next", "--claim", "--owner", "me")
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.startswith(a.envelope.id)
    assert second.startswith("claimed by me until ")
    for argv in (
        ("next", "--lease", "5m"),  # --lease needs --claim
        ("next", "--owner", "me"),
        ("next", "--claim", "--lease", "2d"),  # over 24 h
        ("next", "--claim", "--lease", "500ms"),  # under 1 s
        ("next", "--claim", "--lease", "soon"),
        ("next", "--claim", "--owner", "not valid"),
        ("ack", a.envelope.id, "--owner", "x" * 65),
        ("nack", a.envelope.id, "--delay", "-1"),
    ):
        result = mailslot(home, "inbox", *argv)
        assert result.returncode == 2, (argv, result.stdout, result.stderr)
    stored = json_out(mailslot(home, "inbox", "list", "--json"))
    assert stored[0]["claim_owner"] == "me"  # nothing above touched the claim
