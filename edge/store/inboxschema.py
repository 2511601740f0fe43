"""The inbox's tables: their schema, the upgrades from older files, and the SQL the
``Inbox`` (``edge.store.inbox``) runs over them.

Rules this module keeps:

- **Versioned.** ``PRAGMA user_version`` is the schema version. ``migrate`` creates the
  tables of a new file and brings an older file up to ``SCHEMA_VERSION`` in one write
  transaction (every step in ``UPGRADES`` above its version, in order); a file from a
  newer mailslot is refused. An up-to-date file is only read, not written: opening the
  inbox (every CLI command does) must not take the write lock nor look like a change.
- **Times as fixed-width text.** Stored as UTC ISO-8601 with microseconds
  (``to_text``), so text order is time order and SQL can compare ``not_before`` and
  ``claim_until`` with a bound parameter.
"""

from __future__ import annotations

from datetime import UTC, datetime

from edge.errors import InboxError
from edge.store.db import Database

SCHEMA_VERSION = 2

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS interrupts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT UNIQUE NOT NULL,
        priority TEXT NOT NULL,
        rank INTEGER NOT NULL,
        type TEXT NOT NULL,
        source_kind TEXT NOT NULL,
        source_name TEXT NOT NULL,
        session TEXT,
        signer TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        received_at TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'acked')),
        nacks INTEGER NOT NULL DEFAULT 0,
        not_before TEXT,
        envelope TEXT NOT NULL,
        signature TEXT NOT NULL,
        payload TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS interrupts_queue ON interrupts (state, rank, seq)",
    """CREATE TABLE IF NOT EXISTS rejections (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        received_at TEXT NOT NULL,
        envelope_id TEXT,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        envelope TEXT NOT NULL,
        signature TEXT NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS status (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS trusted (
        id TEXT PRIMARY KEY,
        doc TEXT NOT NULL,
        added_at TEXT NOT NULL
    )""",
)

#: Changes since schema 1 (``SCHEMA``), by the version they bring a file to. A file at
#: version n gets every step above n, in order, in one transaction.
UPGRADES: dict[int, tuple[str, ...]] = {
    # Claims (leases) for the pull queue; NULL is "not claimed".
    2: (
        "ALTER TABLE interrupts ADD COLUMN claim_owner TEXT",
        "ALTER TABLE interrupts ADD COLUMN claim_until TEXT",
    ),
}

COLUMNS = (
    "seq, id, priority, rank, type, source_kind, source_name, session, signer, created_at,"
    " expires_at, received_at, state, nacks, not_before, envelope, signature, payload,"
    " claim_owner, claim_until"
)
#: A live claim: a lease that has not run out at ``:now``.
LIVE_CLAIM = "(claim_until IS NOT NULL AND claim_until > :now)"
#: What a puller may take at ``:now``: pending, not nacked into the future, not under a
#: live claim.
AVAILABLE = (
    "state = 'pending' AND (not_before IS NULL OR not_before <= :now)"
    f" AND NOT {LIVE_CLAIM}"
)

INSERT = (
    "INSERT INTO interrupts (id, priority, rank, type, source_kind, source_name, session,"
    " signer, created_at, expires_at, received_at, envelope, signature, payload)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING"
)



def to_text(moment: datetime) -> str:
    """The one stored form of a time: UTC, microseconds, fixed width (sorts as time)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_text(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def migrate(db: Database) -> None:
    """Create the schema if missing, upgrade an older file (``UPGRADES``, in one
    transaction); refuse a file from a newer mailslot."""
    (version,) = db.query("PRAGMA user_version")[0]
    if version == SCHEMA_VERSION:
        return
    with db.transaction():
        (version,) = db.query("PRAGMA user_version")[0]
        if version > SCHEMA_VERSION:
            raise InboxError(
                f"{db.path}: inbox schema {version} is newer than this mailslot"
                f" ({SCHEMA_VERSION})"
            )
        for statement in SCHEMA:
            db.execute(statement)
        for target in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
            for statement in UPGRADES[target]:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
