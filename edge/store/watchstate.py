"""The watches' durable memory: where each schedule stands, agents' sleeps, tick budgets.

One SQLite file (``data/watches.sqlite3``, 0600, WAL, ``synchronous=FULL``) so that a
restart neither forgets a run nor repeats one: the daemon records a run's ``last_run``
and the schedule's ``next_run`` in the same transaction as whatever else the run changed,
and on start asks ``due(now)`` — a run recorded before the restart is never due again,
a run missed while the daemon was down is (and ``edge.watches.timing.catch_up`` decides it).
``:memory:`` gives tests and ``replay`` a scratch copy.

Times are stored as UTC epoch seconds (floats) and come back as aware UTC datetimes;
datetimes going in must be aware. Definitions live in ``intents.toml``
(``edge.intents.declarations``); this file keeps only runtime state, keyed by watch id.

States, as data::

    watch:  active ⇄ paused, either → cancelled (kept, with no next run, for
            ``watch list``); a cancelled watch re-declared is upserted active again.
    sleep:  sleeping → ended        the deadline passed, or a newer sleep replaced it
            sleeping → interrupted  an interrupt woke the session early
            (ended and interrupted are final)

Every method runs in the caller's ``transaction()`` when there is one, else in its own.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from edge.store.db import Closing, Database, Row

WATCH_STATES = ("active", "paused", "cancelled")
SLEEP_STATES = ("sleeping", "ended", "interrupted")
#: The only moves a sleep makes; anything else is refused.
SLEEP_TRANSITIONS: dict[str, frozenset[str]] = {
    "sleeping": frozenset({"ended", "interrupted"}),
    "ended": frozenset(),
    "interrupted": frozenset(),
}

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS watches (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('active', 'paused', 'cancelled')),
        last_run REAL, next_run REAL, last_result TEXT, data TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS watches_due ON watches (state, next_run)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS sleeps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session TEXT NOT NULL, reason TEXT NOT NULL,
        started REAL NOT NULL, ends REAL NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('sleeping', 'ended', 'interrupted')),
        ended_at REAL)""",
    "CREATE INDEX IF NOT EXISTS sleeps_due ON sleeps (state, ends)",
    # At most one sleep per session is ever open; start_sleep ends the old one first.
    "CREATE UNIQUE INDEX IF NOT EXISTS sleeps_open ON sleeps (session) WHERE state = 'sleeping'",
    """CREATE TABLE IF NOT EXISTS tick_budget (
        session TEXT NOT NULL, day TEXT NOT NULL, used INTEGER NOT NULL,
        PRIMARY KEY (session, day))""",
)


class _Unset(Enum):
    token = 0


#: "Leave this field as it is" for ``upsert(next_run=...)``, where ``None`` means "no next
#: run".
UNSET = _Unset.token


@dataclass(frozen=True)
class WatchRow:
    id: str
    kind: str
    state: str
    last_run: datetime | None
    next_run: datetime | None
    last_result: dict[str, Any] | None
    #: Free-form per-kind memory: last output hash, armed deadline, last activity…
    data: dict[str, Any]


@dataclass(frozen=True)
class Sleep:
    id: int
    session: str
    reason: str
    started: datetime
    ends: datetime
    state: str
    ended_at: datetime | None


class WatchState(Closing):
    """A connection to the watch state. Open with ``WatchState.open(path)``; ``close()`` it
    (or use it as a context manager) when done. One thread at a time."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.path = db.path

    @classmethod
    def open(cls, path: Path | str) -> WatchState:
        """Open (creating if needed) the state at ``path``: parent dir 0700 if it has to be
        created, file 0600, WAL + ``synchronous=FULL``, schema created idempotently."""
        db = Database.open(path, "watch state")
        try:
            for statement in _SCHEMA:
                db.execute(statement)
        except BaseException:
            db.close()
            raise
        return cls(db)

    def close(self, *, checkpoint: bool = False) -> None:
        """Close the connection. Safe to call twice. ``checkpoint``: the daemon's, as it
        stops (``Database.close``)."""
        self.db.close(checkpoint=checkpoint)


    def transaction(self) -> AbstractContextManager[Database]:
        """One atomic batch: ``BEGIN IMMEDIATE`` (the write lock is taken at once) …
        ``COMMIT``, or ``ROLLBACK`` if the block raises. Nested inside another
        ``transaction()`` it is a savepoint: its own changes roll back alone."""
        return self.db.transaction()

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        return self.db.query(sql, params)

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Row | None:
        return self.db.one(sql, params)

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Execute a write; the number of rows it changed."""
        return self.db.execute(sql, params).rowcount

    # -- watches ----------------------------------------------------------------------

    def get(self, watch_id: str) -> WatchRow | None:
        row = self._one("SELECT * FROM watches WHERE id = ?", (watch_id,))
        return _watch(row) if row else None

    def rows(self) -> list[WatchRow]:
        """Every watch ever recorded (cancelled ones too), by id."""
        return [_watch(r) for r in self._all("SELECT * FROM watches ORDER BY id")]

    def upsert(
        self,
        watch_id: str,
        kind: str,
        *,
        state: str | None = None,
        last_run: datetime | None = None,
        next_run: datetime | _Unset | None = UNSET,
        last_result: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> WatchRow:
        """Create or update the watch's row; only the fields given change (``kind`` is
        always written). ``None`` means "unchanged" except for ``next_run``, where
        ``None`` records that the watch has no next run. A new row starts ``active``,
        never run, with no next run and empty ``data``. ``data`` replaces the whole dict:
        read, change and write it back in one transaction."""
        if state is not None and state not in WATCH_STATES:
            raise ValueError(f"unknown watch state {state!r} (one of {', '.join(WATCH_STATES)})")
        with self.transaction():
            old = self.get(watch_id)
            row = WatchRow(
                id=watch_id,
                kind=kind,
                state=state if state is not None else old.state if old else "active",
                last_run=last_run if last_run is not None else old.last_run if old else None,
                next_run=(old.next_run if old else None) if next_run is UNSET else next_run,
                last_result=(
                    last_result if last_result is not None else old.last_result if old else None
                ),
                data=data if data is not None else old.data if old else {},
            )
            self._run(
                "INSERT INTO watches (id, kind, state, last_run, next_run, last_result, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
                " kind = excluded.kind, state = excluded.state, last_run = excluded.last_run,"
                " next_run = excluded.next_run, last_result = excluded.last_result,"
                " data = excluded.data",
                (
                    row.id,
                    row.kind,
                    row.state,
                    _epoch_or_none(row.last_run),
                    _epoch_or_none(row.next_run),
                    None if row.last_result is None else json.dumps(row.last_result),
                    json.dumps(row.data),
                ),
            )
            stored = self.get(watch_id)
        assert stored is not None
        return stored

    def cancel(self, watch_id: str) -> bool:
        """Cancel the watch: state ``cancelled``, no next run; the row stays for
        ``watch list``. ``True`` if it was cancelled now, ``False`` if there was nothing
        to cancel (unknown id, or already cancelled)."""
        return (
            self._run(
                "UPDATE watches SET state = 'cancelled', next_run = NULL"
                " WHERE id = ? AND state != 'cancelled'",
                (watch_id,),
            )
            > 0
        )

    def due(self, now: datetime) -> list[WatchRow]:
        """Active watches whose next run is at or before ``now``, earliest first. For each,
        the caller must record the new ``last_run``/``next_run`` in the same transaction
        as the run's effects, or the run repeats after a restart."""
        rows = self._all(
            "SELECT * FROM watches WHERE state = 'active' AND next_run <= ? ORDER BY next_run, id",
            (_epoch(now),),
        )
        return [_watch(r) for r in rows]

    def next_due(self) -> datetime | None:
        """The earliest next run of an active watch: how long the daemon may sleep."""
        row = self._one("SELECT min(next_run) FROM watches WHERE state = 'active'")
        return _dt_or_none(row[0] if row else None)

    # -- counters ---------------------------------------------------------------------

    def incr(self, counter: str, by: int = 1) -> None:
        """Add ``by`` to ``counter`` (``tick.fired``, ``sleep.entered``,
        ``sleep.interrupted``, ``cache_aware.snapped``…), creating it at 0."""
        self._run(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (counter, by),
        )

    def counters(self) -> dict[str, int]:
        return {
            name: int(value)
            for name, value in self._all("SELECT name, value FROM counters ORDER BY name")
        }

    # -- sleeps -----------------------------------------------------------------------

    def start_sleep(self, session: str, reason: str, started: datetime, ends: datetime) -> Sleep:
        """Put ``session`` to sleep until ``ends`` (already clamped by the caller, see
        ``edge.watches.timing.clamp_sleep``). A sleep the session was still in is ended first, at
        ``started``: a session sleeps at most once at a time."""
        if ends < started:
            raise ValueError(f"a sleep cannot end ({ends}) before it starts ({started})")
        with self.transaction():
            self._run(
                "UPDATE sleeps SET state = 'ended', ended_at = ?"
                " WHERE session = ? AND state = 'sleeping'",
                (_epoch(started), session),
            )
            cursor = self.db.execute(
                "INSERT INTO sleeps (session, reason, started, ends, state)"
                " VALUES (?, ?, ?, ?, 'sleeping')",
                (session, reason, _epoch(started), _epoch(ends)),
            )
            sleep_id = cursor.lastrowid
            assert sleep_id is not None
            return self._sleep(sleep_id)

    def active_sleep(self, session: str) -> Sleep | None:
        row = self._one("SELECT * FROM sleeps WHERE session = ? AND state = 'sleeping'", (session,))
        return _sleep(row) if row else None

    def sleeps(self, state: str | None = None) -> list[Sleep]:
        """All sleeps (or those in ``state``), oldest first."""
        if state is None:
            rows = self._all("SELECT * FROM sleeps ORDER BY id")
        else:
            if state not in SLEEP_STATES:
                raise ValueError(
                    f"unknown sleep state {state!r} (one of {', '.join(SLEEP_STATES)})"
                )
            rows = self._all("SELECT * FROM sleeps WHERE state = ? ORDER BY id", (state,))
        return [_sleep(r) for r in rows]

    def end_sleep(self, sleep_id: int, state: str, at: datetime) -> Sleep | None:
        """End a sleep: ``ended`` (its time is up) or ``interrupted`` (woken early). Returns
        the ended sleep, or ``None`` if it was not sleeping (unknown, or already ended):
        calling twice is harmless, and only the first call should raise the wake."""
        if state not in SLEEP_TRANSITIONS["sleeping"]:
            raise ValueError(f"a sleep can only become ended or interrupted, not {state!r}")
        with self.transaction():
            changed = self._run(
                "UPDATE sleeps SET state = ?, ended_at = ? WHERE id = ? AND state = 'sleeping'",
                (state, _epoch(at), sleep_id),
            )
            return self._sleep(sleep_id) if changed else None

    def due_sleeps(self, now: datetime) -> list[Sleep]:
        """Sleeps still open whose end is at or before ``now`` (including ones that ran out
        while the daemon was down), earliest first. The caller ends each with
        ``end_sleep(id, "ended", now)`` and raises the ``sleep`` interrupt."""
        rows = self._all(
            "SELECT * FROM sleeps WHERE state = 'sleeping' AND ends <= ? ORDER BY ends, id",
            (_epoch(now),),
        )
        return [_sleep(r) for r in rows]

    def next_sleep_end(self) -> datetime | None:
        row = self._one("SELECT min(ends) FROM sleeps WHERE state = 'sleeping'")
        return _dt_or_none(row[0] if row else None)

    def _sleep(self, sleep_id: int) -> Sleep:
        row = self._one("SELECT * FROM sleeps WHERE id = ?", (sleep_id,))
        assert row is not None
        return _sleep(row)

    # -- tick budgets -----------------------------------------------------------------

    def spend_tick(self, session: str, day: str) -> int:
        """Count one tick for ``session`` on local ``day`` (``edge.watches.timing.local_day``);
        returns the ticks used that day including this one. The caller checks the budget
        with ``ticks_used`` first, and spends in the transaction that records the tick."""
        # fetchall: a RETURNING statement left half-read would keep its write uncommitted.
        (row,) = self._all(
            "INSERT INTO tick_budget (session, day, used) VALUES (?, ?, 1)"
            " ON CONFLICT(session, day) DO UPDATE SET used = used + 1 RETURNING used",
            (session, day),
        )
        return int(row[0])

    def ticks_used(self, session: str, day: str) -> int:
        row = self._one(
            "SELECT used FROM tick_budget WHERE session = ? AND day = ?", (session, day)
        )
        return int(row[0]) if row else 0


def _epoch(value: datetime) -> float:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"times must be aware datetimes, got naive {value}")
    return value.timestamp()


def _epoch_or_none(value: datetime | None) -> float | None:
    return None if value is None else _epoch(value)


def _dt_or_none(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _watch(row: Row) -> WatchRow:
    watch_id, kind, state, last_run, next_run, last_result, data = row
    return WatchRow(
        watch_id,
        kind,
        state,
        _dt_or_none(last_run),
        _dt_or_none(next_run),
        None if last_result is None else dict(json.loads(last_result)),
        dict(json.loads(data)),
    )


def _sleep(row: Row) -> Sleep:
    sleep_id, session, reason, started, ends, state, ended_at = row
    return Sleep(
        int(sleep_id),
        session,
        reason,
        datetime.fromtimestamp(started, UTC),
        datetime.fromtimestamp(ends, UTC),
        state,
        _dt_or_none(ended_at),
    )
