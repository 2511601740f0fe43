"""The inbox against real SQLite files: idempotence, ordering, acks, sharing a file."""

from __future__ import annotations

import json
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import ulid

from edge.errors import InboxError
from edge.store.inbox import Accepted, Inbox
from shared.envelope import Envelope, Priority, Source
from shared.identity import Identity
from shared.sealing import open_sealed, seal
from shared.signing import sign_envelope, verify_envelope

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def producer() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def me() -> Identity:
    return Identity.generate()


def make(
    producer: Identity,
    me: Identity,
    priority: Priority = Priority.next,
    *,
    payload: dict[str, Any] | None = None,
    session: str | None = None,
) -> Accepted:
    """A real signed envelope from ``producer`` to ``me``, as the link would accept it."""
    envelope = Envelope(
        id=str(ulid.ULID()),
        to=me.id,
        session=session,
        source=Source(kind="producer", name="ci.github"),
        type="build.failed",
        priority=priority,
        created_at=T0,
        expires_at=T0 + timedelta(days=1),
        payload={"n": 1} if payload is None else payload,
        signer=producer.id,
    )
    signed = sign_envelope(envelope, producer)
    return Accepted(envelope=envelope, signed=signed, payload=None, received_at=T0)


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


def test_commit_is_idempotent_by_id(inbox: Inbox, producer: Identity, me: Identity) -> None:
    a, b = make(producer, me), make(producer, me)
    assert inbox.commit_batch([a]) == [a.envelope.id]
    assert inbox.commit_batch([a]) == []
    assert inbox.commit_batch([a, b]) == [b.envelope.id]
    assert inbox.total() == 2


def test_duplicates_within_one_batch_are_stored_once(
    inbox: Inbox, producer: Identity, me: Identity
) -> None:
    a, b = make(producer, me), make(producer, me)
    assert inbox.commit_batch([a, b, a, b]) == [a.envelope.id, b.envelope.id]
    assert inbox.commit_batch([]) == []
    assert inbox.total() == 2


def test_large_batch_in_one_transaction(inbox: Inbox, producer: Identity, me: Identity) -> None:
    items = [make(producer, me, Priority.later) for _ in range(2000)]
    assert inbox.commit_batch(items) == [i.envelope.id for i in items]
    assert inbox.commit_batch(items) == []
    assert inbox.counts() == {"now": 0, "next": 0, "later": 2000}


def test_stored_item_keeps_exact_signed_text(
    inbox: Inbox, producer: Identity, me: Identity
) -> None:
    item = make(producer, me, Priority.now, payload={"repo": "a/b", "ok": False}, session="w1")
    inbox.commit_batch([item])
    stored = inbox.get(item.envelope.id)
    assert stored is not None
    assert stored.envelope == item.signed.envelope
    assert stored.signature == item.signed.signature
    assert stored.payload == {"repo": "a/b", "ok": False}
    assert (stored.priority, stored.rank, stored.state, stored.nacks) == ("now", 0, "pending", 0)
    assert (stored.type, stored.source_kind, stored.source_name) == (
        "build.failed",
        "producer",
        "ci.github",
    )
    assert (stored.session, stored.signer) == ("w1", producer.id)
    assert stored.created_at == T0 and stored.received_at == T0
    assert stored.expires_at == T0 + timedelta(days=1)
    # What was stored still verifies end to end.
    again = verify_envelope(
        stored.signed(), trusted={producer.id: producer.public.verifier()}, recipient=me.id, now=T0
    )
    assert again == item.envelope
    assert inbox.get("01ARZ3NDEKTSV4RRFFQ69G5FAV") is None


def test_opened_sealed_payload_is_stored(inbox: Inbox, producer: Identity, me: Identity) -> None:
    eid = str(ulid.ULID())
    sealed = seal({"secret": "42"}, me.public.box_key, eid)
    envelope = Envelope(
        id=eid,
        to=me.id,
        source=Source(kind="producer", name="vault"),
        type="secret.rotated",
        created_at=T0,
        sealed=sealed,
        signer=producer.id,
    )
    signed = sign_envelope(envelope, producer)
    opened = open_sealed(sealed, me, eid)
    inbox.commit_batch([Accepted(envelope, signed, opened, T0)])
    stored = inbox.get(eid)
    assert stored is not None
    assert stored.payload == {"secret": "42"}
    assert stored.expires_at is None


def test_list_and_next_order_by_priority_then_arrival(
    inbox: Inbox, producer: Identity, me: Identity
) -> None:
    later1, next1, now1, later2, now2 = (
        make(producer, me, p)
        for p in (Priority.later, Priority.next, Priority.now, Priority.later, Priority.now)
    )
    inbox.commit_batch([later1, next1])
    inbox.commit_batch([now1, later2, now2])
    expected = [now1, now2, next1, later1, later2]
    assert [i.id for i in inbox.list()] == [a.envelope.id for a in expected]
    assert [i.id for i in inbox.list(limit=2)] == [now1.envelope.id, now2.envelope.id]
    first = inbox.next()
    assert first is not None and first.id == now1.envelope.id


def test_ack(inbox: Inbox, producer: Identity, me: Identity) -> None:
    a, b = make(producer, me), make(producer, me)
    inbox.commit_batch([a, b])
    assert inbox.ack(a.envelope.id) is True
    assert inbox.ack(a.envelope.id) is False
    assert inbox.ack("01ARZ3NDEKTSV4RRFFQ69G5FAV") is False
    assert [i.id for i in inbox.list()] == [b.envelope.id]
    assert [i.id for i in inbox.list("acked")] == [a.envelope.id]
    assert [i.id for i in inbox.list(None)] == [a.envelope.id, b.envelope.id]
    nxt = inbox.next()
    assert nxt is not None and nxt.id == b.envelope.id
    assert inbox.counts()["next"] == 1
    assert inbox.total() == 2
    with pytest.raises(ValueError):
        inbox.list("done")


def test_nack_hides_item_until_not_before(
    inbox: Inbox, clock: FakeClock, producer: Identity, me: Identity
) -> None:
    urgent, other = make(producer, me, Priority.now), make(producer, me, Priority.later)
    inbox.commit_batch([urgent, other])
    assert inbox.nack(urgent.envelope.id, delay_seconds=30) is True
    nxt = inbox.next()
    assert nxt is not None and nxt.id == other.envelope.id
    stored = inbox.get(urgent.envelope.id)
    assert stored is not None
    assert (stored.state, stored.nacks, stored.not_before) == (
        "pending",
        1,
        T0 + timedelta(seconds=30),
    )
    clock.advance(29)
    nxt = inbox.next()
    assert nxt is not None and nxt.id == other.envelope.id
    clock.advance(1)
    nxt = inbox.next()
    assert nxt is not None and nxt.id == urgent.envelope.id
    # Still pending and listed throughout; list() does not hide delayed items.
    assert [i.id for i in inbox.list()] == [urgent.envelope.id, other.envelope.id]


def test_nack_without_delay_and_on_acked(inbox: Inbox, producer: Identity, me: Identity) -> None:
    a = make(producer, me)
    inbox.commit_batch([a])
    assert inbox.nack(a.envelope.id) is True
    assert inbox.nack(a.envelope.id) is True
    nxt = inbox.next()
    assert nxt is not None and nxt.id == a.envelope.id and nxt.nacks == 2
    assert inbox.ack(a.envelope.id)
    assert inbox.nack(a.envelope.id) is False
    assert inbox.nack("01ARZ3NDEKTSV4RRFFQ69G5FAV") is False
    assert inbox.next() is None
    with pytest.raises(ValueError):
        inbox.nack(a.envelope.id, delay_seconds=-1)


def test_counts(inbox: Inbox, producer: Identity, me: Identity) -> None:
    assert inbox.counts() == {"now": 0, "next": 0, "later": 0}
    items = [make(producer, me, p) for p in (Priority.now, Priority.later, Priority.later)]
    inbox.commit_batch(items)
    assert inbox.counts() == {"now": 1, "next": 0, "later": 2}
    inbox.ack(items[1].envelope.id)
    assert inbox.counts() == {"now": 1, "next": 0, "later": 1}


def test_rejections_recorded_newest_first(inbox: Inbox, producer: Identity, me: Identity) -> None:
    bad = make(producer, me)
    inbox.record_rejection(
        envelope_text=bad.signed.envelope,
        signature=bad.signed.signature,
        code="untrusted_signer",
        message=f"signer {producer.id} is not trusted",
        envelope_id=bad.envelope.id,
        received_at=T0,
    )
    inbox.record_rejection(
        envelope_text="{not json",
        signature="",
        code="malformed_json",
        message="envelope is not valid JSON",
        envelope_id=None,
        received_at=T0 + timedelta(seconds=1),
    )
    rejections = inbox.rejections()
    assert [r.code for r in rejections] == ["malformed_json", "untrusted_signer"]
    assert rejections[1].envelope == bad.signed.envelope
    assert rejections[1].envelope_id == bad.envelope.id
    assert rejections[1].received_at == T0
    assert rejections[0].envelope_id is None
    assert [r.code for r in inbox.rejections(limit=1)] == ["malformed_json"]
    json.dumps([r.to_dict() for r in rejections])
    assert inbox.total() == 0  # a rejection is not an interrupt


def test_status_round_trip(inbox: Inbox) -> None:
    assert inbox.status() == {}
    inbox.set_status(connected=True, relay="http://127.0.0.1:7710", pending={"now": 1})
    inbox.set_status(connected=False)
    assert inbox.status() == {
        "connected": False,
        "relay": "http://127.0.0.1:7710",
        "pending": {"now": 1},
    }


def test_to_dict_is_json(inbox: Inbox, producer: Identity, me: Identity) -> None:
    a = make(producer, me)
    inbox.commit_batch([a])
    inbox.nack(a.envelope.id, 5)
    item = inbox.get(a.envelope.id)
    assert item is not None
    doc = json.loads(json.dumps(item.to_dict()))
    assert doc["id"] == a.envelope.id
    assert doc["payload"] == {"n": 1}
    assert doc["not_before"] == (T0 + timedelta(seconds=5)).isoformat()
    assert doc["created_at"] == T0.isoformat()


def test_trusted_keys_and_changed_across_connections(inbox_path: Path, producer: Identity) -> None:
    with Inbox.open(inbox_path) as daemon, Inbox.open(inbox_path) as cli:
        assert daemon.changed() is False
        assert daemon.trusted_keys() == {}
        cli.add_trusted(producer.public)
        assert daemon.changed() is True
        assert daemon.changed() is False
        keys = daemon.trusted_keys()
        assert list(keys) == [producer.id]
        signature = producer.sign(b"hello")
        keys[producer.id].verify(signature, b"hello")  # raises if it were the wrong key
        assert daemon.trusted_docs() == [producer.public.to_doc()]
        cli.add_trusted(producer.public)  # re-adding is harmless
        assert len(cli.trusted_docs()) == 1
        assert cli.remove_trusted(producer.id) is True
        assert cli.remove_trusted(producer.id) is False
        assert daemon.changed() is True
        assert daemon.trusted_keys() == {}
        # This connection's own trust writes count too.
        assert cli.changed() is True
        assert cli.changed() is False
        daemon.add_trusted(producer.public)
        assert daemon.changed() is True


def test_tampered_trusted_row_is_refused(inbox_path: Path, producer: Identity) -> None:
    other = Identity.generate()
    doc = dict(producer.public.to_doc(), sign_key=other.public.to_doc()["sign_key"])
    with Inbox.open(inbox_path) as box:
        box.add_trusted(producer.public)
        # Tamper behind the API, as another program with access to the file could.
        box._db.execute("UPDATE trusted SET doc = ?", (json.dumps(doc),))
    with Inbox.open(inbox_path) as box, pytest.raises(InboxError, match="trusted signer"):
        box.trusted_keys()


def test_daemon_and_cli_interleave_on_one_file(
    inbox_path: Path, producer: Identity, me: Identity
) -> None:
    with Inbox.open(inbox_path) as daemon, Inbox.open(inbox_path) as cli:
        first = [make(producer, me, Priority.next) for _ in range(3)]
        assert daemon.commit_batch(first) == [a.envelope.id for a in first]
        assert [i.id for i in cli.list()] == [a.envelope.id for a in first]
        assert cli.ack(first[0].envelope.id)
        urgent = make(producer, me, Priority.now)
        # A redelivery of an item the CLI already acked stays acked and is not new.
        assert daemon.commit_batch([first[0], urgent]) == [urgent.envelope.id]
        nxt = cli.next()
        assert nxt is not None and nxt.id == urgent.envelope.id
        assert cli.nack(urgent.envelope.id, 60)
        daemon.set_status(connected=True)
        assert cli.status() == {"connected": True}
        assert daemon.counts() == {"now": 1, "next": 2, "later": 0}
        acked = daemon.get(first[0].envelope.id)
        assert acked is not None and acked.state == "acked"
        nxt = daemon.next()
        assert nxt is not None and nxt.id == first[1].envelope.id
        assert daemon.total() == cli.total() == 4


def test_concurrent_writers_in_threads(inbox_path: Path, producer: Identity, me: Identity) -> None:
    Inbox.open(inbox_path).close()
    batches = [[make(producer, me) for _ in range(20)] for _ in range(20)]
    errors: list[BaseException] = []

    def writer(mine: list[list[Accepted]]) -> None:
        try:
            with Inbox.open(inbox_path) as box:
                for batch in mine:
                    box.commit_batch(batch)
                    box.set_status(last=batch[-1].envelope.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            with Inbox.open(inbox_path) as box:
                for _ in range(50):
                    box.counts()
                    item = box.next()
                    if item is not None:
                        box.ack(item.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(batches[0::2],)),
        threading.Thread(target=writer, args=(batches[1::2],)),
        threading.Thread(target=reader),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Inbox.open(inbox_path) as box:
        assert box.total() == 400


def test_file_modes_and_durability_pragmas(
    inbox_path: Path, producer: Identity, me: Identity
) -> None:
    with Inbox.open(inbox_path) as box:
        box.commit_batch([make(producer, me)])
        assert stat.S_IMODE(inbox_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(inbox_path.parent.stat().st_mode) == 0o700
        wal = inbox_path.with_name(inbox_path.name + "-wal")
        assert wal.exists()
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
        db = box._db
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000


def test_existing_loose_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    path.touch(mode=0o644)
    path.chmod(0o644)
    Inbox.open(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reopen_keeps_data_and_schema_is_idempotent(
    inbox_path: Path, producer: Identity, me: Identity
) -> None:
    a = make(producer, me)
    with Inbox.open(inbox_path) as box:
        box.commit_batch([a])
        box.ack(a.envelope.id)
    with Inbox.open(inbox_path) as box:
        assert box.total() == 1
        assert box.commit_batch([a]) == []
        stored = box.get(a.envelope.id)
        assert stored is not None and stored.state == "acked"


def test_newer_schema_is_refused(inbox_path: Path) -> None:
    with Inbox.open(inbox_path) as box:
        box._db.execute("PRAGMA user_version = 99")
    with pytest.raises(InboxError, match="newer"):
        Inbox.open(inbox_path)


def test_close_is_idempotent(inbox_path: Path) -> None:
    box = Inbox.open(inbox_path)
    box.close()
    box.close()
    with pytest.raises(InboxError):
        box.total()


def test_only_the_newest_rejections_are_kept(inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge.store.inbox.REJECTIONS_KEPT", 3)
    for n in range(5):
        inbox.record_rejection(
            envelope_text=f"junk {n}",
            signature="",
            code="malformed_json",
            message="not JSON",
            envelope_id=None,
            received_at=T0,
        )
    assert [r.envelope for r in inbox.rejections()] == ["junk 4", "junk 3", "junk 2"]


def test_second_connection_in_one_process_keeps_the_wal_alive(tmp_path):
    """Regression: opening a second Inbox in the daemon's process used to open and close
    the database file, dropping SQLite's POSIX locks; a CLI process closing the file then
    deleted the live WAL, and the daemon's later commits were invisible and lost."""
    import subprocess
    import sys

    path = tmp_path / "inbox.sqlite3"
    daemon_status = Inbox.open(path)
    daemon_receiver = Inbox.open(path)
    try:
        daemon_receiver.set_status(marker=1)
        reader = "from edge.store.inbox import Inbox; import sys; i = Inbox.open(sys.argv[1]); print(i.status()); i.close()"
        subprocess.run([sys.executable, "-c", reader, str(path)], check=True, capture_output=True)
        assert (tmp_path / "inbox.sqlite3-wal").exists()
        daemon_receiver.set_status(marker=2)
        out = subprocess.run(
            [sys.executable, "-c", reader, str(path)], check=True, capture_output=True, text=True
        ).stdout
        assert "'marker': 2" in out
    finally:
        daemon_status.close()
        daemon_receiver.close()
