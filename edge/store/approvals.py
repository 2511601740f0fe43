"""Approval requests as stored: the ``approvals`` table of ``data/engine.sqlite3``.

Rules this module keeps:

* A row leaves ``pending`` once (``settle``: ``UPDATE … WHERE status = 'pending'``), inside
  a write transaction (``BEGIN IMMEDIATE``), so two processes never both decide or expire
  the same request.
* The table lives in the engine's database and shares its ``Database``
  (``edge.store.db``), so a request's row commits in the same transaction as whatever
  else recorded it.
* ``permission`` (JSON, or NULL) holds the Claude Code permission request a row was made
  for (``edge.approvals.claude``): data from the session, stored as it came (cut).
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.store.db import Database, Row
from edge.store.enginestate import open_engine_db

#: Row statuses: ``allowed``/``denied`` are the dial's own answers, the rest the user's
#: (or the clock's).
STATUSES = ("pending", "approved", "rejected", "expired", "allowed", "denied")
USER_DECISIONS = ("approved", "rejected")


@dataclass(frozen=True)
class Approval:
    """One request, as stored. ``decided`` is set once ``status`` is not ``pending``."""

    id: str
    action: str
    summary: str
    session: str | None
    intent: str | None
    status: str
    reason: str
    created: datetime
    decided: datetime | None
    expires: datetime
    note: str
    #: The Claude Code permission request this row answers (``request_id``,
    #: ``tool_name``, ``description``, ``input_preview``), if it was made for one.
    permission: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "created": self.created.isoformat(),
            "decided": self.decided.isoformat() if self.decided else None,
            "expires": self.expires.isoformat(),
        }


_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS approvals (
        id TEXT PRIMARY KEY, action TEXT NOT NULL, summary TEXT NOT NULL,
        session TEXT, intent TEXT,
        status TEXT NOT NULL CHECK (status IN ({", ".join(f"'{s}'" for s in STATUSES)})),
        reason TEXT NOT NULL, created REAL NOT NULL, decided REAL, expires REAL NOT NULL,
        note TEXT NOT NULL DEFAULT '', permission TEXT)""",
    "CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, expires)",
    "CREATE INDEX IF NOT EXISTS approvals_action ON approvals (action, decided)",
)
_COLUMNS = ("id, action, summary, session, intent, status, reason, created, decided, expires,"
            " note, permission")


def _time(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _approval(row: Row) -> Approval:
    (id_, action, summary, session, intent, status, reason, created, decided, expires, note,
     permission) = row
    return Approval(id_, action, summary, session, intent, status, reason, _time(created),
                    None if decided is None else _time(decided), _time(expires), note,
                    None if permission is None else json.loads(permission))


def _migrate(db: Database) -> None:
    """Add the ``permission`` column to a table from before it (in a write transaction:
    two processes opening an old file at once must not both add it)."""
    if "permission" in {row[1] for row in db.query("PRAGMA table_info(approvals)")}:
        return
    with db.transaction():
        if "permission" not in {row[1] for row in db.query("PRAGMA table_info(approvals)")}:
            db.execute("ALTER TABLE approvals ADD COLUMN permission TEXT")


class ApprovalStore:
    """The ``approvals`` table in the engine's database (``edge.store.enginestate``).
    Share the engine's ``Database`` (``ApprovalStore(db)``), or ``open`` one of its own
    (which ``close()`` closes). The table is created if missing."""

    def __init__(self, db: Database, *, owned: bool = False) -> None:
        self.db = db
        self._owned = owned
        for statement in _SCHEMA:
            db.execute(statement)
        _migrate(db)

    @classmethod
    def open(cls, path: Path | str) -> ApprovalStore:
        db = open_engine_db(path)
        try:
            return cls(db, owned=True)
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        if self._owned:
            self.db.close()

    def transaction(self) -> AbstractContextManager[Database]:
        """A write transaction; nested use commits with the outer one."""
        return self.db.transaction()

    def insert(self, a: Approval) -> None:
        self.db.execute(
            f"INSERT INTO approvals ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (a.id, a.action, a.summary, a.session, a.intent, a.status, a.reason,
             a.created.timestamp(), a.decided.timestamp() if a.decided else None,
             a.expires.timestamp(), a.note,
             None if a.permission is None else json.dumps(a.permission)),
        )

    def get(self, approval_id: str) -> Approval | None:
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM approvals WHERE id = ?", (approval_id,)
        ).fetchone()
        return _approval(row) if row else None

    def rows(self, pending_only: bool = True, limit: int = 1000) -> list[Approval]:
        where = "WHERE status = 'pending'" if pending_only else ""
        return [_approval(r) for r in self.db.execute(
            f"SELECT {_COLUMNS} FROM approvals {where} ORDER BY created, id LIMIT ?", (limit,)
        ).fetchall()]

    def overdue(self, now: datetime) -> list[Approval]:
        """Pending rows past their expiry at ``now`` (still marked pending)."""
        return [_approval(r) for r in self.db.execute(
            f"SELECT {_COLUMNS} FROM approvals WHERE status = 'pending' AND expires <= ?"
            " ORDER BY expires, id", (now.timestamp(),)
        ).fetchall()]

    def next_expiry(self) -> datetime | None:
        """When the next pending request expires (``None``: nothing is pending)."""
        row = self.db.execute(
            "SELECT min(expires) FROM approvals WHERE status = 'pending'").fetchone()
        return None if row is None or row[0] is None else _time(row[0])

    def settle(self, a: Approval) -> None:
        """Write ``a``'s decision; the row must still be pending."""
        assert a.decided is not None and a.status != "pending"
        changed = self.db.execute(
            "UPDATE approvals SET status = ?, reason = ?, decided = ?, note = ?"
            " WHERE id = ? AND status = 'pending'",
            (a.status, a.reason, a.decided.timestamp(), a.note, a.id),
        ).rowcount
        assert changed == 1, f"approval {a.id} was not pending"

    def set_action(self, approval_id: str, action: str) -> None:
        self.db.execute("UPDATE approvals SET action = ? WHERE id = ? AND status = 'pending'",
                        (action, approval_id))

    def streak(self, action: str) -> int:
        """Approvals of ``action`` by the user since its last rejection."""
        count = 0
        for (status,) in self.db.execute(
            "SELECT status FROM approvals WHERE action = ? AND status IN ('approved', 'rejected')"
            " ORDER BY decided DESC, id DESC", (action,)
        ):
            if status != "approved":
                break
            count += 1
        return count
