"""The decision engine's durable memory: everything a policy rule needs to remember.

One SQLite file (``data/engine.sqlite3``, WAL, ``synchronous=FULL``) so that cooldowns,
reminder counts, budgets, dedupe windows, judge answers, deferred and coalescing wakes
and the engine's place in the inbox all survive a restart, and change together: the
engine applies one batch of decisions in one transaction. ``:memory:`` gives ``replay``
the same rules on a scratch copy.

The same file holds the delivery queue (``edge.store.deliveries``) and the approval
requests (``edge.store.approvals``). ``open_engine_db`` opens it (``edge.store.db``) and
creates its schema; whoever needs a decision and its delivery to commit together hands
that one ``Database`` to ``EngineState``, ``DeliveryQueue`` and ``ApprovalStore``.

Times are stored as UTC epoch seconds (floats): the engine compares them, the log and the
CLI show them.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ulid import ULID

from edge.store.activity import ActivityLog, Entry, Event
from edge.store.activityline import Anchor
from edge.store.db import Database

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # Every wake that happened, for cooldowns and reminder counts.
    """CREATE TABLE IF NOT EXISTS wake_log (
        intent TEXT NOT NULL, session TEXT NOT NULL, at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS wake_log_key ON wake_log (intent, session, at)",
    # "The user is here" reports per session ('' = everywhere).
    "CREATE TABLE IF NOT EXISTS activity (session TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS activity_key ON activity (session, at)",
    "CREATE TABLE IF NOT EXISTS budget (day TEXT PRIMARY KEY, wakes INTEGER NOT NULL,"
    " tokens INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS dedupe (
        intent TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (intent, key))""",
    """CREATE TABLE IF NOT EXISTS judge_cache (
        intent TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL, verdict TEXT NOT NULL,
        PRIMARY KEY (intent, key))""",
    # Wakes not yet dispatched: ready now, deferred to a window, or collecting a burst.
    """CREATE TABLE IF NOT EXISTS pending_wakes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        intent TEXT NOT NULL, session TEXT NOT NULL, rank INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('ready', 'deferred', 'coalescing')),
        due REAL NOT NULL, interrupts TEXT NOT NULL, critical INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS pending_due ON pending_wakes (due, rank, seq)",
    # Wakes on their way to a runtime (see ``edge.store.deliveries``).
    """CREATE TABLE IF NOT EXISTS deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        wake INTEGER NOT NULL, intent TEXT NOT NULL, kind TEXT NOT NULL, route TEXT NOT NULL,
        session TEXT NOT NULL, interrupts TEXT NOT NULL, permissions TEXT NOT NULL,
        wake_doc TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'claimed', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL,
        claim_owner TEXT, claim_until REAL, outcome TEXT, detail TEXT,
        created REAL NOT NULL, finished REAL,
        delivery_key TEXT, claim_instance TEXT, runner TEXT)""",
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (kind, status, next_attempt)",
    """CREATE TABLE IF NOT EXISTS disabled_routes (
        intent TEXT PRIMARY KEY, at REAL NOT NULL, reason TEXT NOT NULL)""",
)


@dataclass(frozen=True)
class PendingWake:
    seq: int
    intent: str
    session: str
    rank: int
    kind: str
    due: float
    interrupts: list[str]
    critical: bool


def open_engine_db(path: Path | str) -> Database:
    """The engine's database at ``path`` (``":memory:"`` for a scratch copy), its schema
    created or brought up to date: open it once and hand it to ``EngineState``,
    ``DeliveryQueue`` and ``ApprovalStore``, so that a decision and the delivery or
    approval it makes commit in one transaction."""
    db = Database.open(path, "engine state")
    try:
        for statement in _SCHEMA:
            db.execute(statement)
        _migrate_deliveries(db)
    except BaseException:
        db.close()
        raise
    return db


class EngineState:
    """The engine's memory in ``db`` (from ``open_engine_db``); ``EngineState.open(path)``
    opens a database of its own, which ``close()`` closes."""

    def __init__(self, db: Database, *, owned: bool = False) -> None:
        self.db = db
        self._owned = owned

    @classmethod
    def open(cls, path: Path | str) -> EngineState:
        return cls(open_engine_db(path), owned=True)

    def close(self, *, checkpoint: bool = False) -> None:
        """Close its own connection (not a shared one). ``checkpoint``: the daemon's, as it
        stops (``Database.close``)."""
        if self._owned:
            self.db.close(checkpoint=checkpoint)

    def transaction(self) -> AbstractContextManager[Database]:
        """One write transaction (``BEGIN IMMEDIATE``: the write lock up front), or a part
        of the caller's if one is already open — the engine's batch, which a delivery row
        joins so that a wake and its delivery commit together."""
        return self.db.transaction()

    # -- meta -------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @property
    def cursor(self) -> int:
        return int(self.get_meta("inbox_cursor", "0") or 0)

    def set_cursor(self, seq: int) -> None:
        self.set_meta("inbox_cursor", str(seq))

    # -- the activity log's outside anchor ----------------------------------------------

    def log_anchor(self) -> Anchor | None:
        """The last activity log entry the engine committed a batch after (see
        ``edge.store.activity``): what ``mailslot log --verify`` checks the log still holds."""
        raw = self.get_meta("activity_anchor")
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            seq, digest = doc["seq"], doc["hash"]
        except (ValueError, KeyError, TypeError):
            return None
        if type(seq) is not int or not isinstance(digest, str):
            return None
        return Anchor(seq, digest)

    def advance_log_anchor(self, anchor: Anchor) -> None:
        """Record ``anchor`` inside the caller's transaction, after the entries are on
        disk; it only moves forward, so a batch another writer numbered lower (or a
        replay) never pulls it back."""
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES ('activity_anchor', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value"
            " WHERE json_extract(meta.value, '$.seq') < json_extract(excluded.value, '$.seq')",
            (json.dumps({"seq": anchor.seq, "hash": anchor.hash}),),
        )

    # -- wakes, activity --------------------------------------------------------------

    def last_wake(self, intent: str, session: str) -> float | None:
        row = self.db.execute(
            "SELECT max(at) FROM wake_log WHERE intent = ? AND session = ?", (intent, session)
        ).fetchone()
        return row[0] if row and row[0] is not None else None

    def wakes_since(self, intent: str, session: str, since: float) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM wake_log WHERE intent = ? AND session = ? AND at > ?",
            (intent, session, since),
        ).fetchone()
        return int(row[0])

    def add_wake(self, intent: str, session: str, at: float) -> None:
        self.db.execute(
            "INSERT INTO wake_log (intent, session, at) VALUES (?, ?, ?)", (intent, session, at)
        )

    def last_activity(self, session: str, before: float) -> float | None:
        """The latest report at or before ``before`` for ``session`` or everywhere ('').
        Reports made after an interrupt arrived never change its decision."""
        row = self.db.execute(
            "SELECT max(at) FROM activity WHERE session IN (?, '') AND at <= ?",
            (session, before),
        ).fetchone()
        return row[0] if row and row[0] is not None else None

    def report_activity(self, session: str, at: float) -> None:
        self.db.execute("INSERT INTO activity (session, at) VALUES (?, ?)", (session, at))

    # -- budget -----------------------------------------------------------------------

    def budget(self, day: str) -> tuple[int, int]:
        row = self.db.execute("SELECT wakes, tokens FROM budget WHERE day = ?", (day,)).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def spend(self, day: str, wakes: int = 0, tokens: int = 0) -> None:
        self.db.execute(
            "INSERT INTO budget (day, wakes, tokens) VALUES (?, ?, ?) ON CONFLICT(day) DO"
            " UPDATE SET wakes = wakes + excluded.wakes, tokens = tokens + excluded.tokens",
            (day, wakes, tokens),
        )

    # -- dedupe, judge cache ----------------------------------------------------------

    def seen(self, intent: str, key: str, since: float) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM dedupe WHERE intent = ? AND key = ? AND at > ?", (intent, key, since)
        ).fetchone()
        return row is not None

    def mark_seen(self, intent: str, key: str, at: float) -> None:
        self.db.execute(
            "INSERT INTO dedupe (intent, key, at) VALUES (?, ?, ?)"
            " ON CONFLICT(intent, key) DO UPDATE SET at = excluded.at",
            (intent, key, at),
        )

    def cached_verdict(self, intent: str, key: str, since: float) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT verdict FROM judge_cache WHERE intent = ? AND key = ? AND at > ?",
            (intent, key, since),
        ).fetchone()
        return dict(json.loads(row[0])) if row else None

    def cache_verdict(self, intent: str, key: str, at: float, verdict: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO judge_cache (intent, key, at, verdict) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(intent, key) DO UPDATE SET at = excluded.at, verdict = excluded.verdict",
            (intent, key, at, json.dumps(verdict)),
        )

    # -- pending wakes ----------------------------------------------------------------

    def open_wake(self, intent: str, session: str, kind: str) -> PendingWake | None:
        """The not yet dispatched wake of ``kind`` for (intent, session), if any."""
        row = self.db.execute(
            "SELECT * FROM pending_wakes WHERE intent = ? AND session = ? AND kind = ?"
            " ORDER BY seq LIMIT 1",
            (intent, session, kind),
        ).fetchone()
        return _pending(row) if row else None

    def add_pending(
        self, intent: str, session: str, rank: int, kind: str, due: float,
        interrupts: list[str], critical: bool,
    ) -> None:
        self.db.execute(
            "INSERT INTO pending_wakes (intent, session, rank, kind, due, interrupts, critical)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (intent, session, rank, kind, due, json.dumps(interrupts), int(critical)),
        )

    def extend_pending(self, wake: PendingWake, interrupt: str, rank: int) -> None:
        self.db.execute(
            "UPDATE pending_wakes SET interrupts = ?, rank = min(rank, ?) WHERE seq = ?",
            (json.dumps([*wake.interrupts, interrupt]), rank, wake.seq),
        )

    def due_wakes(self, now: float) -> list[PendingWake]:
        """Wakes due at ``now``: highest priority first, then in order of arrival."""
        rows = self.db.execute(
            "SELECT * FROM pending_wakes WHERE due <= ? ORDER BY rank, due, seq", (now,)
        ).fetchall()
        return [_pending(r) for r in rows]

    def remove_pending(self, seq: int) -> None:
        self.db.execute("DELETE FROM pending_wakes WHERE seq = ?", (seq,))

    def next_due(self) -> float | None:
        row = self.db.execute("SELECT min(due) FROM pending_wakes").fetchone()
        return row[0] if row and row[0] is not None else None

    def pending(self) -> list[PendingWake]:
        rows = self.db.execute("SELECT * FROM pending_wakes ORDER BY due, rank, seq").fetchall()
        return [_pending(r) for r in rows]


def anchored_append(state: EngineState, log: ActivityLog, events: list[Event]) -> list[Entry]:
    """Append ``events`` inside the caller's ``state`` transaction and anchor the chain
    there (as the daemon's engine does per batch), numbering after the anchor if the log
    vanished, so that a command's entries are covered by ``mailslot log --verify`` too.
    The anchor commits with the caller's transaction, after the entries are on disk."""
    log.continue_after(state.log_anchor())
    return append_anchored(state, log, events)


def append_anchored(state: EngineState, log: ActivityLog, events: list[Event]) -> list[Entry]:
    """Append ``events``, then move the anchor inside the caller's open ``state``
    transaction, so the anchor commits with it and never before the entries are on disk.
    For a long-lived writer (the daemon's engine) that ran ``log.continue_after`` once at
    start; a short-lived command uses ``anchored_append``."""
    entries = log.append(events)
    if entries:
        state.advance_log_anchor(entries[-1].anchor)
    return entries


def _pending(row: tuple[Any, ...]) -> PendingWake:
    seq, intent, session, rank, kind, due, interrupts, critical = row
    return PendingWake(seq, intent, session, rank, kind, due, json.loads(interrupts), bool(critical))


def new_delivery_key() -> str:
    """The idempotency key of a new delivery (``webhook-id``, ``MAILSLOT_DELIVERY``): made
    once when the row is queued and kept across every retry, so a runtime dedupes on it.
    A ULID: 80 random bits, so unique across edges and reinstalls, not just this file."""
    return f"msg_{ULID()}"


def _migrate_deliveries(db: Database) -> None:
    """Bring a ``deliveries`` table from before delivery keys, claiming instances and
    runners up to date. In a write transaction: two processes opening an old file at
    once must not both add the columns. A row already sent to a webhook keeps the id its
    receiver saw (``msg_mailslot_<seq>``, from when keys were per-edge counters); others
    get a new key."""
    columns = {row[1] for row in db.query("PRAGMA table_info(deliveries)")}
    if {"delivery_key", "claim_instance", "runner"} <= columns:
        _delivery_indexes(db)
        return
    with db.transaction():
        columns = {row[1] for row in db.query("PRAGMA table_info(deliveries)")}
        for column in ("delivery_key", "claim_instance", "runner"):
            if column not in columns:
                db.execute(f"ALTER TABLE deliveries ADD COLUMN {column} TEXT")
        rows = db.query("SELECT seq, kind, attempts FROM deliveries WHERE delivery_key IS NULL")
        for seq, kind, attempts in rows:
            key = f"msg_mailslot_{seq}" if kind == "webhook" and attempts else new_delivery_key()
            db.execute("UPDATE deliveries SET delivery_key = ? WHERE seq = ?", (key, seq))
        _delivery_indexes(db)


def _delivery_indexes(db: Database) -> None:
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS deliveries_key ON deliveries (delivery_key)")
    # Who holds claims is asked before every round of deliveries: only live claims,
    # however many finished rows the table keeps.
    db.execute("CREATE INDEX IF NOT EXISTS deliveries_claims ON deliveries (claim_instance)"
               " WHERE status = 'claimed'")
