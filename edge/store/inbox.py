"""The edge's durable inbox: interrupts the link committed, for the engine and agents.

The file is opened through ``edge.store.db`` (0600, WAL, ``synchronous=FULL``, short
``BEGIN IMMEDIATE`` transactions, ``InboxError`` out); its tables and their upgrades are
``edge.store.inboxschema``, the claim owner and lease rules ``edge.store.claims``.

Rules this module keeps:

- **Durable before acknowledged.** The link acks a delivery upstream only after
  ``commit_batch`` returned: when it returns, the batch is committed (``synchronous=FULL``
  in WAL mode survives a power cut, not only a crash).
- **Idempotent by interrupt id.** Transport is at-least-once; ``id`` is ``UNIQUE`` and
  inserts are ``ON CONFLICT(id) DO NOTHING``. ``commit_batch`` returns only the ids that
  were new, so a redelivery is acked again but never handled twice.
- **Many processes, short transactions.** The daemon and CLI commands open the same file
  at once; every write is one transaction that holds the write lock for milliseconds.
  Readers never block writers.
- **A claim is a lease, not a state.** ``claim()`` marks one pending item with an owner
  and a deadline inside one ``BEGIN IMMEDIATE`` transaction, so two pullers (threads or
  processes) never get the same item. The item stays ``pending``: when the lease runs out
  nothing has to happen for it to be claimable again — every query treats a
  ``claim_until`` in the past as no claim. Until then only its owner may ``ack``/``nack``
  it (anyone else gets ``ClaimedByOther``), and ``next()`` skips it.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.errors import ClaimedByOther, InboxError
from edge.store.claims import check_lease, check_owner
from edge.store.db import Closing, Database, Row
from edge.store.inboxschema import (
    AVAILABLE,
    COLUMNS,
    INSERT,
    LIVE_CLAIM,
    from_text,
    migrate,
    to_text,
)
from shared.envelope import PRIORITIES, Envelope
from shared.errors import InvalidIdentity
from shared.identity import PublicIdentity
from shared.signing import SignedEnvelope

Clock = Callable[[], datetime]

STATES = ("pending", "acked")
#: Rejections kept for ``mailslot status``/debugging; older ones are dropped, so a flood
#: of bad input cannot fill the disk.
REJECTIONS_KEPT = 1000
#: Longest envelope text kept with a rejection (the link caps frames anyway).
_REJECTED_TEXT_MAX = 128 * 1024


def utc_now() -> datetime:
    return datetime.now(UTC)


def commit_files(inbox_file: Path) -> frozenset[str]:
    """The names of the files a commit to the inbox at ``inbox_file`` writes: the database,
    its write-ahead log, its rollback journal (not ``-shm``: readers touch it too). What
    a watcher of new items (``mailslot inbox follow``, the Claude Code ``Stop`` hook)
    sleeps on."""
    name = inbox_file.name
    return frozenset({name, f"{name}-wal", f"{name}-journal"})


@dataclass(frozen=True)
class Accepted:
    """An interrupt the link has verified and wants stored.

    ``payload`` is what agents will read: the plain payload, or the sealed payload the
    caller opened. ``None`` falls back to ``envelope.payload`` (``None`` if sealed)."""

    envelope: Envelope
    signed: SignedEnvelope
    payload: dict[str, Any] | None
    received_at: datetime


@dataclass(frozen=True)
class InboxItem:
    """One stored interrupt, as agents and ``mailslot inbox`` see it."""

    seq: int
    id: str
    priority: str
    rank: int
    type: str
    source_kind: str
    source_name: str
    session: str | None
    signer: str
    created_at: datetime
    expires_at: datetime | None
    received_at: datetime
    state: str
    nacks: int
    not_before: datetime | None
    envelope: str
    signature: str
    payload: dict[str, Any] | None
    #: The last claim, or ``None``. A ``claim_until`` in the past is a lapsed claim: the
    #: item is free to be claimed again.
    claim_owner: str | None = None
    claim_until: datetime | None = None

    @classmethod
    def _from_row(cls, row: Row) -> InboxItem:
        return cls(
            seq=row[0],
            id=row[1],
            priority=row[2],
            rank=row[3],
            type=row[4],
            source_kind=row[5],
            source_name=row[6],
            session=row[7],
            signer=row[8],
            created_at=datetime.fromisoformat(row[9]),
            expires_at=from_text(row[10]),
            received_at=datetime.fromisoformat(row[11]),
            state=row[12],
            nacks=row[13],
            not_before=from_text(row[14]),
            envelope=row[15],
            signature=row[16],
            payload=None if row[17] is None else json.loads(row[17]),
            claim_owner=row[18],
            claim_until=from_text(row[19]),
        )

    def signed(self) -> SignedEnvelope:
        """The exact signed bytes, so anyone can re-verify what was stored."""
        return SignedEnvelope(self.envelope, self.signature)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``--json`` output: times as ISO-8601 text."""
        doc = asdict(self)
        for key in ("created_at", "expires_at", "received_at", "not_before", "claim_until"):
            if doc[key] is not None:
                doc[key] = doc[key].isoformat()
        return doc


@dataclass(frozen=True)
class Rejection:
    """An interrupt the edge refused, kept so the user can see why nothing arrived."""

    seq: int
    received_at: datetime
    envelope_id: str | None
    code: str
    message: str
    envelope: str
    signature: str

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["received_at"] = self.received_at.isoformat()
        return doc


#: The stored payload text. Built once: ``json.dumps`` with options builds an encoder
#: per call, a measurable share of the edge's CPU per drained interrupt.
_PAYLOAD_JSON = json.JSONEncoder(separators=(",", ":"))


def _accepted_row(item: Accepted, received_at: str | None = None) -> tuple[Any, ...]:
    """The inbox row of ``item``; ``received_at`` is ``to_text(item.received_at)`` when
    the caller has it already (a batch shares one)."""
    env = item.envelope
    payload = item.payload if item.payload is not None else env.payload
    return (
        env.id,
        env.priority.value,
        env.priority.rank,
        env.type,
        env.source.kind,
        env.source.name,
        env.session,
        env.signer,
        to_text(env.created_at),
        None if env.expires_at is None else to_text(env.expires_at),
        received_at if received_at is not None else to_text(item.received_at),
        item.signed.envelope,
        item.signed.signature,
        None if payload is None else _PAYLOAD_JSON.encode(payload),
    )


def _payload_of(item: Accepted) -> dict[str, Any] | None:
    return item.payload if item.payload is not None else item.envelope.payload


def _stored_item(seq: int, row: tuple[Any, ...], payload: dict[str, Any] | None) -> InboxItem:
    """The ``InboxItem`` that ``row`` (from ``_accepted_row``) became when inserted as
    ``seq``: the columns as stored (times parsed back from their stored text, as ``after``
    does) and the defaults of a new row.

    Built by filling the instance's ``__dict__`` in one go: the frozen dataclass's
    ``__init__`` sets its 20 fields one ``object.__setattr__`` at a time, which took
    ~3 µs of the edge's CPU per drained interrupt. Same object, same fields (a test
    compares it with what ``after`` reads back)."""
    item = object.__new__(InboxItem)
    item.__dict__.update(
        seq=seq,
        id=row[0],
        priority=row[1],
        rank=row[2],
        type=row[3],
        source_kind=row[4],
        source_name=row[5],
        session=row[6],
        signer=row[7],
        created_at=datetime.fromisoformat(row[8]),
        expires_at=from_text(row[9]),
        received_at=datetime.fromisoformat(row[10]),
        state="pending",
        nacks=0,
        not_before=None,
        envelope=row[11],
        signature=row[12],
        payload=payload,
        claim_owner=None,
        claim_until=None,
    )
    return item


class Inbox(Closing):
    """A connection to the inbox file. Open with ``Inbox.open(path)``; ``close()`` it (or
    use it as a context manager) when done.

    One ``Inbox`` must be used by one thread at a time; other processes and threads open
    their own. ``clock`` (default UTC now) is injectable for ``not_before``/``next()``."""

    def __init__(self, db: Database, path: Path, clock: Clock) -> None:
        self._db = db
        self.path = path
        self._clock = clock
        self._data_version = self._read_data_version()
        self._own_trust_write = False

    @classmethod
    def open(cls, path: Path, *, clock: Clock = utc_now) -> Inbox:
        """Open (creating if needed) the inbox at ``path``: parent dir 0700, file 0600,
        WAL + ``synchronous=FULL``, schema created idempotently."""
        path = Path(path)
        db = Database.open(path, "inbox")
        try:
            migrate(db)
            return cls(db, path, clock)
        except BaseException:
            db.close()
            raise

    def close(self, *, checkpoint: bool = False) -> None:
        """Close the connection. Safe to call twice. ``checkpoint``: the daemon's, as it
        stops (``Database.close``)."""
        self._db.close(checkpoint=checkpoint)


    def _write(self) -> AbstractContextManager[Database]:
        """One short write transaction; the write lock is taken at ``BEGIN``."""
        return self._db.transaction()

    def _query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> builtins.list[Any]:
        return self._db.query(sql, params)

    # -- interrupts: the hot path -------------------------------------------------------

    def commit_batch(self, items: Sequence[Accepted]) -> builtins.list[str]:
        """Store ``items`` in one transaction; return the ids that were new, in order.

        Ids already stored (or repeated within ``items``) are skipped and not returned:
        the caller acks every item upstream, but hands only the returned ids on to
        intents. When this returns, the batch is on disk; ack only then."""
        return [item.id for item in self.commit(items)]

    def commit(self, items: Sequence[Accepted]) -> builtins.list[InboxItem]:
        """``commit_batch``, returning the new items as stored, in ``seq`` order: what
        ``after`` would read back, without reading it back. The link hands them to the
        decision engine (``Engine.offer``) so that a drained interrupt is not fetched
        and decoded from SQLite a second time.

        Each item's ``payload`` is the object the caller passed (equal to what ``after``
        decodes from the stored text); ``state`` and the other fields an agent changes
        later are as inserted."""
        if not items:
            return []
        texts: dict[datetime, str] = {}  # a batch shares its received_at: format it once
        rows = [
            _accepted_row(item, texts.get(item.received_at)
                          or texts.setdefault(item.received_at, to_text(item.received_at)))
            for item in items
        ]
        with self._write() as db:
            # The write lock is held, so rows with seq above the old maximum are exactly
            # the ones this executemany inserted (AUTOINCREMENT never reuses a seq).
            (before,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM interrupts").fetchone()
            db.executemany(INSERT, rows)
            new = db.execute(
                "SELECT seq, id FROM interrupts WHERE seq > ? ORDER BY seq", (before,)
            ).fetchall()
        if not new:
            return []
        first: dict[str, int] = {}  # a repeated id was stored from its first occurrence
        for index, row in enumerate(rows):
            first.setdefault(row[0], index)
        return [_stored_item(seq, rows[first[id]], _payload_of(items[first[id]]))
                for seq, id in new]

    # -- interrupts: reading and acking (agents, CLI) ------------------------------------

    def list(self, state: str | None = "pending", limit: int = 100) -> builtins.list[InboxItem]:
        """Items in ``state`` (``None``: all), most urgent first, then in arrival order."""
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {STATES} or None")
        where, params = ("WHERE state = ?", [state]) if state is not None else ("", [])
        rows = self._query(
            f"SELECT {COLUMNS} FROM interrupts {where} ORDER BY rank, seq LIMIT ?",
            [*params, limit],
        )
        return [InboxItem._from_row(row) for row in rows]

    def after(self, seq: int, limit: int = 512) -> builtins.list[InboxItem]:
        """Items stored after ``seq``, in arrival order (the decision engine's feed)."""
        rows = self._query(
            f"SELECT {COLUMNS} FROM interrupts WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return [InboxItem._from_row(row) for row in rows]

    def last_seq(self) -> int:
        """The ``seq`` of the newest stored item (0 when empty): ``after(last_seq())``
        is what arrives from now on (``mailslot inbox follow``)."""
        return int(self._query("SELECT coalesce(max(seq), 0) FROM interrupts")[0][0])

    def received_since(self, since: datetime) -> builtins.list[InboxItem]:
        """Every item received at or after ``since``, in arrival order (for replay)."""
        rows = self._query(
            f"SELECT {COLUMNS} FROM interrupts WHERE received_at >= ? ORDER BY seq",
            (to_text(since),),
        )
        return [InboxItem._from_row(row) for row in rows]

    def next(self) -> InboxItem | None:
        """The pending item an agent should look at now: most urgent, oldest first,
        skipping items nacked with a delay that has not passed yet and items under a live
        claim. Only a peek: another puller may take it at once; use ``claim()`` to own it."""
        rows = self._query(
            f"SELECT {COLUMNS} FROM interrupts WHERE {AVAILABLE} ORDER BY rank, seq LIMIT 1",
            {"now": to_text(self._clock())},
        )
        return InboxItem._from_row(rows[0]) if rows else None

    def claim(self, owner: str, lease_seconds: float) -> InboxItem | None:
        """Take the item ``next()`` would show, for ``owner``, for ``lease_seconds``
        (1 s to 24 h); ``None`` if nothing is available.

        Pick and mark happen in one write transaction, so concurrent pullers — in this
        process or others — each get a different item. The caller must then ``ack`` it
        (handled) or ``nack`` it (give it back), passing the same ``owner``, before the
        lease runs out; after that the item is free and another puller may claim it."""
        owner = check_owner(owner)
        lease = check_lease(lease_seconds)
        now = self._clock()
        with self._write() as db:
            row = db.execute(
                f"SELECT seq FROM interrupts WHERE {AVAILABLE} ORDER BY rank, seq LIMIT 1",
                {"now": to_text(now)},
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE interrupts SET claim_owner = ?, claim_until = ? WHERE seq = ?",
                (owner, to_text(now + timedelta(seconds=lease)), row[0]),
            )
            claimed = db.execute(
                f"SELECT {COLUMNS} FROM interrupts WHERE seq = ?", (row[0],)
            ).fetchone()
        return InboxItem._from_row(claimed)

    def get(self, id: str) -> InboxItem | None:
        rows = self._query(f"SELECT {COLUMNS} FROM interrupts WHERE id = ?", (id,))
        return InboxItem._from_row(rows[0]) if rows else None

    def ack(self, id: str, owner: str | None = None) -> bool:
        """Mark a pending item handled and drop its claim. ``False`` if it is unknown or
        already acked.

        Raises ``ClaimedByOther`` if another owner holds a live claim on it; ``owner``
        ``None`` (a caller that claimed nothing) counts as another owner. Unclaimed items
        and lapsed claims can be acked by anyone."""
        with self._write() as db:
            self._refuse_if_claimed_by_other(db, id, owner)
            cur = db.execute(
                "UPDATE interrupts SET state = 'acked', claim_owner = NULL, claim_until = NULL"
                " WHERE id = ? AND state = 'pending'",
                (id,),
            )
        return cur.rowcount == 1

    def nack(self, id: str, delay_seconds: float = 0, owner: str | None = None) -> bool:
        """Give a pending item back: drop its claim and hide it from ``next()`` and
        ``claim()`` for ``delay_seconds`` (0: claimable again at once). ``False`` if it is
        unknown or not pending. Raises ``ClaimedByOther`` as ``ack`` does."""
        if delay_seconds < 0:
            raise ValueError("delay_seconds must not be negative")
        not_before = to_text(self._clock() + timedelta(seconds=delay_seconds))
        with self._write() as db:
            self._refuse_if_claimed_by_other(db, id, owner)
            cur = db.execute(
                "UPDATE interrupts SET nacks = nacks + 1, not_before = ?, claim_owner = NULL,"
                " claim_until = NULL WHERE id = ? AND state = 'pending'",
                (not_before, id),
            )
        return cur.rowcount == 1

    def _refuse_if_claimed_by_other(
        self, db: Database, id: str, owner: str | None
    ) -> None:
        """Inside a write transaction: raise ``ClaimedByOther`` if a live claim on ``id``
        belongs to someone other than ``owner``."""
        if owner is not None:
            check_owner(owner)
        row = db.execute(
            f"SELECT claim_owner, claim_until FROM interrupts"
            f" WHERE id = :id AND state = 'pending' AND {LIVE_CLAIM}",
            {"id": id, "now": to_text(self._clock())},
        ).fetchone()
        if row is not None and row[0] != owner:
            raise ClaimedByOther(id, row[0], datetime.fromisoformat(row[1]))

    def counts(self) -> dict[str, int]:
        """Pending items per priority; every priority is present, zero or not."""
        counts = {p.value: 0 for p in PRIORITIES}
        rows = self._query(
            "SELECT priority, COUNT(*) FROM interrupts WHERE state = 'pending' GROUP BY priority"
        )
        counts.update({priority: n for priority, n in rows})
        return counts

    def total(self) -> int:
        """All stored interrupts, pending and acked."""
        return int(self._query("SELECT COUNT(*) FROM interrupts")[0][0])

    # -- rejections -----------------------------------------------------------------------

    def record_rejection(
        self,
        *,
        envelope_text: str,
        signature: str,
        code: str,
        message: str,
        envelope_id: str | None,
        received_at: datetime,
    ) -> None:
        """Keep a refused interrupt and why (the ``RemoteProtocolError`` code/message).
        Only the newest ``REJECTIONS_KEPT`` are kept."""
        row = (
            to_text(received_at),
            envelope_id,
            code,
            message,
            envelope_text[:_REJECTED_TEXT_MAX],
            signature[:_REJECTED_TEXT_MAX],
        )
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO rejections (received_at, envelope_id, code, message, envelope,"
                " signature) VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
            db.execute(
                "DELETE FROM rejections WHERE seq <= ?", ((cur.lastrowid or 0) - REJECTIONS_KEPT,)
            )

    def rejections(self, limit: int = 100) -> builtins.list[Rejection]:
        """The most recent rejections, newest first."""
        rows = self._query(
            "SELECT seq, received_at, envelope_id, code, message, envelope, signature"
            " FROM rejections ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        return [
            Rejection(seq, datetime.fromisoformat(at), env_id, code, msg, env, sig)
            for seq, at, env_id, code, msg, env, sig in rows
        ]

    # -- status shared by the daemon and `mailslot status` ---------------------------------

    def set_status(self, **values: Any) -> None:
        """Set status keys (each value JSON-encoded) in one transaction."""
        rows = [(key, json.dumps(value)) for key, value in values.items()]
        with self._write() as db:
            db.executemany(
                "INSERT INTO status (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                rows,
            )

    def status(self) -> dict[str, Any]:
        """Everything the daemon last published with ``set_status``, decoded."""
        rows = self._query("SELECT key, value FROM status")
        return {key: json.loads(value) for key, value in rows}

    # -- trusted producer signers ---------------------------------------------------------

    def add_trusted(self, public: PublicIdentity) -> None:
        """Trust ``public`` as a signer of interrupts to us (replacing its document)."""
        doc = json.dumps(public.to_doc(), sort_keys=True)
        with self._write() as db:
            db.execute(
                "INSERT INTO trusted (id, doc, added_at) VALUES (?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                (public.id, doc, to_text(self._clock())),
            )
        self._own_trust_write = True

    def remove_trusted(self, id: str) -> bool:
        """Stop trusting signer ``id``. ``False`` if it was not trusted."""
        with self._write() as db:
            cur = db.execute("DELETE FROM trusted WHERE id = ?", (id,))
        self._own_trust_write = True
        return cur.rowcount == 1

    def trusted_docs(self) -> builtins.list[dict[str, str]]:
        return [json.loads(doc) for (doc,) in self._query("SELECT doc FROM trusted ORDER BY id")]

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        """Signer id → verification key, for ``shared.signing.verify_envelope``. Each
        document is re-checked (self-certifying), so a tampered row cannot add a key."""
        keys = {}
        for doc in self.trusted_docs():
            try:
                public = PublicIdentity.from_doc(doc)
            except InvalidIdentity as exc:
                raise InboxError(f"{self.path}: trusted signer is invalid: {exc.message}") from None
            keys[public.id] = public.verifier()
        return keys

    def changed(self) -> bool:
        """Whether the database was written since ``open`` or the last call — by another
        connection (``PRAGMA data_version``), or by this one's trust changes. Cheap: use
        it to decide when to reload a cache such as ``trusted_keys()``."""
        version = self._read_data_version()
        changed = version != self._data_version or self._own_trust_write
        self._data_version = version
        self._own_trust_write = False
        return changed

    def _read_data_version(self) -> int:
        return int(self._query("PRAGMA data_version")[0][0])
