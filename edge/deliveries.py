"""Wakes on their way to a runtime: the durable delivery queue.

When the engine wakes an intent whose route is a runtime (``exec``, ``webhook``,
``mcp``), it writes a delivery row in the same transaction as the wake, in
``data/engine.sqlite3``. Whoever delivers (the daemon's deliverer for exec and webhooks,
a ``mailslot mcp --channel`` process for MCP) *claims* rows with a lease, delivers, then
finishes, retries (with backoff) or gives up. A crash, a runtime that is down, or an
edge restart loses no wake: an unfinished claim expires and the row is claimed again.

Also here: the permission envelope handed to a runtime — the intent's grant intersected
with what the interrupts requested, so a producer can never widen what the user granted.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from edge.enginestate import EngineState
from edge.intents import Intent

#: Backoff between attempts: doubles from this, capped.
RETRY_BASE, RETRY_CAP = 1.0, 300.0
KINDS = ("exec", "webhook", "mcp")
#: What a runtime can report it did with a wake (exec stdout, webhook body, `outcome`).
OUTCOMES = ("ok", "action-taken", "error", "skipped")


@dataclass(frozen=True)
class Delivery:
    seq: int
    wake: int
    intent: str
    kind: str
    route: dict[str, Any]
    session: str
    interrupts: list[str]
    permissions: dict[str, Any]
    wake_doc: dict[str, Any]
    status: str
    attempts: int
    next_attempt: datetime

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "next_attempt": self.next_attempt.isoformat()}


_COLUMNS = ("seq, wake, intent, kind, route, session, interrupts, permissions, wake_doc,"
            " status, attempts, next_attempt")


def _delivery(row: Sequence[Any]) -> Delivery:
    (seq, wake, intent, kind, route, session, interrupts, permissions, wake_doc, status,
     attempts, next_attempt) = row
    return Delivery(seq, wake, intent, kind, json.loads(route), session, json.loads(interrupts),
                    json.loads(permissions), json.loads(wake_doc), status, attempts,
                    datetime.fromtimestamp(next_attempt, UTC))


class DeliveryQueue:
    """Rows of ``deliveries`` in the engine's database. Use the engine's connection
    (``DeliveryQueue(state.db)``) to enqueue inside a wake's transaction, or ``open``
    from another process."""

    def __init__(self, db: sqlite3.Connection, owned: EngineState | None = None) -> None:
        self.db = db
        self._owned = owned

    @classmethod
    def open(cls, path: Path | str) -> DeliveryQueue:
        state = EngineState.open(path)
        return cls(state.db, owned=state)

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

    def enqueue(self, *, wake: int, intent: str, route: dict[str, Any], session: str,
                interrupts: list[str], permissions: dict[str, Any], wake_doc: dict[str, Any],
                at: float) -> int:
        cur = self.db.execute(
            "INSERT INTO deliveries (wake, intent, kind, route, session, interrupts,"
            " permissions, wake_doc, next_attempt, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (wake, intent, route["kind"], json.dumps(route), session, json.dumps(interrupts),
             json.dumps(permissions), json.dumps(wake_doc), at, at),
        )
        return int(cur.lastrowid or 0)

    def claim(self, kind: str | Sequence[str], owner: str, lease: float, now: datetime,
              limit: int = 16) -> list[Delivery]:
        """Due rows of ``kind`` nobody holds (or whose lease ran out), now held by
        ``owner`` until ``now + lease``; in order of arrival."""
        kinds = [kind] if isinstance(kind, str) else list(kind)
        at = now.timestamp()
        marks = ",".join("?" * len(kinds))
        in_txn = self.db.in_transaction
        if not in_txn:
            self.db.execute("BEGIN IMMEDIATE")
        try:
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM deliveries WHERE kind IN ({marks})"
                " AND (status = 'pending' OR (status = 'claimed' AND claim_until <= ?))"
                " AND next_attempt <= ? ORDER BY seq LIMIT ?",
                (*kinds, at, at, limit),
            ).fetchall()
            for row in rows:
                self.db.execute(
                    "UPDATE deliveries SET status = 'claimed', claim_owner = ?,"
                    " claim_until = ?, attempts = attempts + 1 WHERE seq = ?",
                    (owner, at + lease, row[0]),
                )
        except BaseException:
            if not in_txn:
                self.db.execute("ROLLBACK")
            raise
        if not in_txn:
            self.db.execute("COMMIT")
        # as they now are: held, and this attempt counted
        return [replace(_delivery(r), status="claimed", attempts=r[10] + 1) for r in rows]

    def finish(self, seq: int, outcome: str, detail: dict[str, Any], at: datetime) -> None:
        self.db.execute(
            "UPDATE deliveries SET status = 'done', outcome = ?, detail = ?, finished = ?,"
            " claim_owner = NULL, claim_until = NULL WHERE seq = ?",
            (outcome, json.dumps(detail), at.timestamp(), seq),
        )

    def fail(self, seq: int, detail: dict[str, Any], at: datetime) -> None:
        self.db.execute(
            "UPDATE deliveries SET status = 'failed', outcome = 'error', detail = ?,"
            " finished = ?, claim_owner = NULL, claim_until = NULL WHERE seq = ?",
            (json.dumps(detail), at.timestamp(), seq),
        )

    def retry(self, delivery: Delivery, detail: dict[str, Any], now: datetime) -> datetime:
        """Back to pending, not before an exponentially growing delay; returns when."""
        delay = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, delivery.attempts - 1))
        when = now + timedelta(seconds=delay)
        self.db.execute(
            "UPDATE deliveries SET status = 'pending', detail = ?, next_attempt = ?,"
            " claim_owner = NULL, claim_until = NULL WHERE seq = ?",
            (json.dumps(detail), when.timestamp(), delivery.seq),
        )
        return when

    def next_due(self, kinds: Sequence[str]) -> datetime | None:
        marks = ",".join("?" * len(kinds))
        row = self.db.execute(
            f"SELECT min(CASE WHEN status = 'claimed' THEN claim_until ELSE next_attempt END)"
            f" FROM deliveries WHERE kind IN ({marks}) AND status IN ('pending', 'claimed')",
            tuple(kinds),
        ).fetchone()
        return datetime.fromtimestamp(row[0], UTC) if row and row[0] is not None else None

    def rows(self, status: str | None = None) -> list[Delivery]:
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        return [_delivery(r) for r in self.db.execute(
            f"SELECT {_COLUMNS} FROM deliveries {where} ORDER BY seq", params).fetchall()]

    # -- routes a runtime turned away (HTTP 410) --------------------------------------

    def disable_route(self, intent: str, reason: str, at: datetime) -> None:
        self.db.execute(
            "INSERT INTO disabled_routes (intent, at, reason) VALUES (?, ?, ?)"
            " ON CONFLICT(intent) DO UPDATE SET at = excluded.at, reason = excluded.reason",
            (intent, at.timestamp(), reason),
        )

    def disabled(self, intent: str) -> str | None:
        row = self.db.execute(
            "SELECT reason FROM disabled_routes WHERE intent = ?", (intent,)
        ).fetchone()
        return str(row[0]) if row else None

    def enable_route(self, intent: str) -> bool:
        return self.db.execute(
            "DELETE FROM disabled_routes WHERE intent = ?", (intent,)
        ).rowcount > 0


def permission_envelope(
    intent: Intent, requested: Sequence[dict[str, Any] | None], now: datetime
) -> dict[str, Any]:
    """What a runtime may do because of this wake: every action some interrupt
    requested that the intent's grant covers (grant patterns may use ``*``); when no
    interrupt requested anything, the grant itself. Valid until the earliest of the
    grant's ttl and any requested expiry."""
    asked = [a for r in requested if r for a in r.get("actions", [])]
    expiries = [datetime.fromisoformat(r["expires_at"]) for r in requested
                if r and r.get("expires_at")]
    if any(r for r in requested):
        allowed = sorted({a for a in asked if any(fnmatchcase(a, g) for g in intent.grant)})
        denied = sorted(set(asked) - set(allowed))
    else:
        allowed, denied = sorted(intent.grant), []
    expires = min([now + timedelta(seconds=intent.grant_ttl), *expiries])
    return {
        "intent": intent.id,
        "actions": allowed,
        "denied": denied,
        "expires_at": expires.astimezone(UTC).isoformat(),
    }


def write_envelope_file(folder: Path, delivery: int, envelope: dict[str, Any]) -> Path:
    """The envelope as a 0600 file a runtime can read (``MAILSLOT_PERMISSIONS``)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"delivery-{delivery}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(envelope, fh)
    return path
