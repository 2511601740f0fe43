"""Wakes on their way to a runtime: the durable delivery queue.

When the engine wakes an intent whose route is a runtime (``exec``, ``webhook``,
``mcp``), it writes a delivery row in the same transaction as the wake, in
``data/engine.sqlite3``, with its *delivery key* (``msg_<ULID>``): the idempotency key
every attempt of that delivery carries (``webhook-id``, ``MAILSLOT_DELIVERY``).

Whoever delivers (the daemon's deliverer for exec and webhooks, a ``mailslot mcp
--channel`` process for MCP) is a running ``edge.store.instances.Instance``. It *claims* one
row just before it runs it, for a lease sized to the route's timeout, renews the lease
while the runtime runs, then finishes, retries (with backoff) or gives up. The rules:

* A claim names its instance. A claim whose instance is no longer alive is released at
  once by the next claimer that looks (``release_dead``: back to pending, due now, its
  attempt still counted), so a crash is recovered in seconds, and the runtime process the
  dead claimer had started (its ``runner``) is stopped first, so one delivery never runs
  twice at once; a claim whose lease ran out without renewal is claimable again (the
  last resort, for a claimer that hangs).
* A delivery marked ``done`` (or ``failed``) is never claimed again. Finishing is one
  committed write after the runtime returned, so a crash between the two runs the
  delivery again, with the same key: at least once, never "maybe zero".
* Only the claim's holder can finish, retry or renew it (same instance, same attempt):
  a claimer whose lease lapsed and was taken over cannot overwrite the new attempt.

Also here: the permission envelope handed to a runtime — the intent's grant intersected
with what the interrupts requested, so a producer can never widen what the user granted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Protocol

from edge.intents.model import Intent
from edge.store.db import Database, Row
from edge.store.enginestate import new_delivery_key, open_engine_db
from shared.encoding import iso_time

#: Backoff between attempts: doubles from this, capped.
RETRY_BASE, RETRY_CAP = 1.0, 300.0
KINDS = ("exec", "webhook", "mcp")
#: What a runtime can report it did with a wake (exec stdout, webhook body, `outcome`).
OUTCOMES = ("ok", "action-taken", "error", "skipped")
#: A claim outlives the route's own timeout by this much: time to kill a runtime that
#: overran, reap it and record the outcome.
LEASE_MARGIN = 30.0
#: While another instance holds claims, a claimer looks this often whether it is still
#: alive: a ``mailslot mcp --channel`` that died mid-delivery is noticed within this time
#: by the daemon (and the other way round), not only when the next claimer starts.
SWEEP_EVERY = 5.0

#: What ``Delivery.retryable`` means, and ``listing("failed")`` selects: each status it
#: covers, with the outcome that status must have (None: any).
_RETRYABLE: dict[str, str | None] = {"failed": None, "done": "error"}
_RETRYABLE_SQL = " OR ".join(
    f"(status = '{status}'" + (f" AND outcome = '{outcome}')" if outcome else ")")
    for status, outcome in _RETRYABLE.items())


class Holder(Protocol):
    """Who claims: a running ``edge.store.instances.Instance`` (or anything shaped like it)."""

    @property
    def id(self) -> str: ...
    @property
    def owner(self) -> str: ...
    def alive(self, instance_id: str) -> bool: ...
    def stop_runner(self, runner: str) -> bool: ...


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
    #: The idempotency key: the same for every attempt, unique across edges.
    key: str
    #: The instance holding the claim (None when not claimed).
    instance: str | None = None
    #: Until when the claim holds, unless renewed.
    claim_until: datetime | None = None
    #: The runtime process this claim started, if any (``edge.store.instances.runner_mark``).
    runner: str | None = None
    #: How it ended (``done``/``failed``): one of ``OUTCOMES``; the last attempt's detail
    #: (also kept while it waits for a retry); when it was queued and when it ended.
    outcome: str | None = None
    detail: dict[str, Any] | None = None
    created: datetime | None = None
    finished: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "next_attempt": self.next_attempt.isoformat(),
                "claim_until": iso_time(self.claim_until), "created": iso_time(self.created),
                "finished": iso_time(self.finished)}

    @property
    def retryable(self) -> bool:
        """Given up (``failed``: out of attempts, or skipped while its route was
        disabled) or ended in ``error``: ``mailslot deliveries retry`` may send it again."""
        return self.status in _RETRYABLE and _RETRYABLE[self.status] in (None, self.outcome)


_COLUMNS = ("seq, wake, intent, kind, route, session, interrupts, permissions, wake_doc,"
            " status, attempts, next_attempt, delivery_key, claim_instance, claim_until, runner,"
            " outcome, detail, created, finished")


def _delivery(row: Row) -> Delivery:
    (seq, wake, intent, kind, route, session, interrupts, permissions, wake_doc, status,
     attempts, next_attempt, key, instance, claim_until, runner, outcome, detail, created,
     finished) = row
    return Delivery(seq, wake, intent, kind, json.loads(route), session, json.loads(interrupts),
                    json.loads(permissions), json.loads(wake_doc), status, attempts,
                    datetime.fromtimestamp(next_attempt, UTC), key, instance,
                    _moment(claim_until), runner, outcome,
                    None if detail is None else json.loads(detail), _moment(created),
                    _moment(finished))


def _moment(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def lease_for(route: dict[str, Any]) -> float:
    """How long a claim on a delivery of ``route`` holds without renewal: the route's
    ``timeout`` (exec: default 10 min; webhook: default 10 s) plus ``LEASE_MARGIN``."""
    timeout = route.get("timeout")
    return (float(timeout) if isinstance(timeout, int | float) else 0.0) + LEASE_MARGIN


class DeliveryQueue:
    """Rows of ``deliveries`` in the engine's database. Share the engine's ``Database``
    (``DeliveryQueue(db)``, the one ``EngineState`` uses) to enqueue inside a wake's
    transaction, or ``open`` a database of its own (which ``close()`` closes)."""

    def __init__(self, db: Database, *, owned: bool = False) -> None:
        self.db = db
        self._owned = owned

    @classmethod
    def open(cls, path: Path | str) -> DeliveryQueue:
        return cls(open_engine_db(path), owned=True)

    def close(self) -> None:
        if self._owned:
            self.db.close()

    def enqueue(self, *, wake: int, intent: str, route: dict[str, Any], session: str,
                interrupts: list[str], permissions: dict[str, Any], wake_doc: dict[str, Any],
                at: float, key: str | None = None, skipped: str | None = None) -> int:
        """Queue a delivery (in the caller's transaction, if one is open) under ``key``
        (a fresh ``new_delivery_key()`` if not given); returns its ``seq``. ``skipped``
        (why: its route is disabled) records it given up at once, ``failed`` with outcome
        ``skipped``, never claimed: kept so that ``mailslot deliveries retry`` can send it
        once the route is back."""
        status, outcome, detail, finished = (
            ("pending", None, None, None) if skipped is None
            else ("failed", "skipped", json.dumps({"error": skipped}), at))
        cur = self.db.execute(
            "INSERT INTO deliveries (wake, intent, kind, route, session, interrupts,"
            " permissions, wake_doc, next_attempt, created, delivery_key, status, outcome,"
            " detail, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (wake, intent, route["kind"], json.dumps(route), session, json.dumps(interrupts),
             json.dumps(permissions), json.dumps(wake_doc), at, at, key or new_delivery_key(),
             status, outcome, detail, finished),
        )
        return int(cur.lastrowid or 0)

    def claim(self, kind: str | Sequence[str], holder: Holder,
              lease: float | Callable[[dict[str, Any]], float], now: datetime,
              limit: int = 1, sessions: Collection[str] | None = None) -> list[Delivery]:
        """Due rows of ``kind`` nobody holds (or whose lease ran out), now held by
        ``holder`` until ``now + lease`` (a number, or a function of the row's route);
        in order of arrival. Claim only what you are about to run: a claimed row waits
        on you. Each returned delivery carries its new attempt count and claim.
        ``sessions``: only rows of these sessions ('' for none; ``None``: any)."""
        kinds = [kind] if isinstance(kind, str) else list(kind)
        at = now.timestamp()
        marks = ",".join("?" * len(kinds))
        only, of = _sessions(sessions)
        claimed: list[Delivery] = []
        with self.db.transaction():
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM deliveries WHERE kind IN ({marks}){only}"
                " AND (status = 'pending' OR (status = 'claimed' AND claim_until <= ?))"
                " AND next_attempt <= ? ORDER BY seq LIMIT ?",
                (*kinds, *of, at, at, limit),
            ).fetchall()
            for row in rows:
                delivery = _delivery(row)
                until = at + (lease(delivery.route) if callable(lease) else lease)
                self.db.execute(
                    "UPDATE deliveries SET status = 'claimed', claim_owner = ?,"
                    " claim_instance = ?, claim_until = ?, attempts = attempts + 1"
                    " WHERE seq = ?",
                    (holder.owner, holder.id, until, delivery.seq),
                )
                claimed.append(replace(
                    delivery, status="claimed", attempts=delivery.attempts + 1,
                    instance=holder.id, claim_until=datetime.fromtimestamp(until, UTC)))
        return claimed

    def renew(self, delivery: Delivery, until: datetime) -> bool:
        """Extend the claim ``delivery`` (as claimed) to ``until``; False if it is no
        longer this claim (finished, or lapsed and taken over by another)."""
        return self._held(delivery, "claim_until = ?", (until.timestamp(),))

    def set_runner(self, delivery: Delivery, runner: str) -> bool:
        """Note the runtime process this claim started, so that if this claimer dies,
        whoever releases the claim can stop what it left running."""
        return self._held(delivery, "runner = ?", (runner,))

    def finish(self, delivery: Delivery, outcome: str, detail: dict[str, Any],
               at: datetime) -> bool:
        """Done: never claimed again. False (and nothing written) if the claim was lost."""
        return self._held(
            delivery, "status = 'done', outcome = ?, detail = ?, finished = ?,"
            " claim_owner = NULL, claim_instance = NULL, claim_until = NULL, runner = NULL",
            (outcome, json.dumps(detail), at.timestamp()))

    def fail(self, delivery: Delivery, detail: dict[str, Any], at: datetime) -> bool:
        """Given up: never claimed again. False if the claim was lost."""
        return self._held(
            delivery, "status = 'failed', outcome = 'error', detail = ?, finished = ?,"
            " claim_owner = NULL, claim_instance = NULL, claim_until = NULL, runner = NULL",
            (json.dumps(detail), at.timestamp()))

    def retry(self, delivery: Delivery, detail: dict[str, Any], now: datetime) -> datetime:
        """Back to pending, not before an exponentially growing delay; returns when."""
        delay = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, delivery.attempts - 1))
        when = now + timedelta(seconds=delay)
        self._held(
            delivery, "status = 'pending', detail = ?, next_attempt = ?,"
            " claim_owner = NULL, claim_instance = NULL, claim_until = NULL, runner = NULL",
            (json.dumps(detail), when.timestamp()))
        return when

    def release(self, delivery: Delivery, now: datetime) -> bool:
        """Give back a claim without an outcome (the claimer is stopping): pending and
        due now, the attempt still counted."""
        return self._held(
            delivery, "status = 'pending', next_attempt = ?,"
            " claim_owner = NULL, claim_instance = NULL, claim_until = NULL, runner = NULL",
            (now.timestamp(),))

    def _held(self, delivery: Delivery, assignments: str, values: tuple[Any, ...]) -> bool:
        return self.db.execute(
            f"UPDATE deliveries SET {assignments} WHERE seq = ? AND status = 'claimed'"
            " AND claim_instance IS ? AND attempts = ?",
            (*values, delivery.seq, delivery.instance, delivery.attempts),
        ).rowcount > 0

    # -- claims of instances that died ----------------------------------------------------

    def holders(self) -> set[str]:
        """The instances holding claims now ('' for a claim from before instances were
        recorded)."""
        return {row[0] for row in self.db.execute(
            "SELECT DISTINCT coalesce(claim_instance, '') FROM deliveries"
            " WHERE status = 'claimed'")}

    def release_instances(self, instances: Collection[str], now: datetime) -> list[Delivery]:
        """Every claim held by one of ``instances`` back to pending, due now, attempt
        count kept; returns the rows as they were (their attempt was interrupted)."""
        if not instances:
            return []
        marks = ",".join("?" * len(instances))
        where = (f"status = 'claimed' AND coalesce(claim_instance, '') IN ({marks})")
        with self.db.transaction():
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM deliveries WHERE {where} ORDER BY seq",
                tuple(instances)).fetchall()
            self.db.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt = min(next_attempt, ?),"
                " claim_owner = NULL, claim_instance = NULL, claim_until = NULL, runner = NULL"
                f" WHERE {where}",
                (now.timestamp(), *instances))
        return [_delivery(r) for r in rows]

    def release_dead(self, holder: Holder, now: datetime) -> list[Delivery]:
        """Release the claims of every instance ``holder`` finds not alive (a crashed
        daemon, a closed MCP session) and stop the runtimes they left running, so the
        delivery never runs twice at once: call it on start and before claiming."""
        dead = {i for i in self.holders() if not holder.alive(i)}
        released = self.release_instances(dead, now)
        for delivery in released:
            if delivery.runner:  # a runtime the dead claimer started may still run
                holder.stop_runner(delivery.runner)
        return released

    def next_look(self, kinds: Sequence[str], holder: Holder, now: datetime,
                  sessions: Collection[str] | None = None) -> datetime | None:
        """When ``holder`` should look at the queue again: the next retry or lease end of
        ``kinds`` (of ``sessions``, as in ``claim``), and within ``SWEEP_EVERY`` while
        another instance holds claims (so one that dies is noticed without anything else
        happening)."""
        due = self.next_due(kinds, sessions)
        if self.holders() - {holder.id}:
            sweep = now + timedelta(seconds=SWEEP_EVERY)
            due = sweep if due is None else min(due, sweep)
        return due

    def next_due(self, kinds: Sequence[str], sessions: Collection[str] | None = None
                 ) -> datetime | None:
        marks = ",".join("?" * len(kinds))
        only, of = _sessions(sessions)
        row = self.db.execute(
            f"SELECT min(CASE WHEN status = 'claimed' THEN claim_until ELSE next_attempt END)"
            f" FROM deliveries WHERE kind IN ({marks}){only}"
            " AND status IN ('pending', 'claimed')",
            (*kinds, *of),
        ).fetchone()
        return datetime.fromtimestamp(row[0], UTC) if row and row[0] is not None else None

    def rows(self, status: str | None = None) -> list[Delivery]:
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        return [_delivery(r) for r in self.db.execute(
            f"SELECT {_COLUMNS} FROM deliveries {where} ORDER BY seq", params).fetchall()]

    # -- what a user sees and fixes (``mailslot deliveries``) -----------------------------

    def find(self, ref: str) -> Delivery | None:
        """The delivery whose key (``msg_…``) or number (its ``seq``) is ``ref``."""
        by_seq = ref.isascii() and ref.isdigit() and len(ref) <= 18
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM deliveries WHERE "
            + ("seq = ?" if by_seq else "delivery_key = ?"),
            (int(ref) if by_seq else ref,)).fetchone()
        return None if row is None else _delivery(row)

    def listing(self, which: str | None = None, limit: int = 50) -> list[Delivery]:
        """The newest ``limit`` deliveries (0: all), newest first. ``which``: ``failed``
        (what waits for a user: given up, or ended in ``error``), ``pending`` (on its way:
        queued, retrying or running), or None (all)."""
        where = {
            None: "",
            "failed": f"WHERE {_RETRYABLE_SQL}",
            "pending": "WHERE status IN ('pending', 'claimed')",
        }[which]
        return [_delivery(r) for r in self.db.execute(
            f"SELECT {_COLUMNS} FROM deliveries {where} ORDER BY seq DESC LIMIT ?",
            (limit if limit > 0 else -1,)).fetchall()]

    def requeue(self, delivery: Delivery, now: datetime, kind: str | None = None,
                route: dict[str, Any] | None = None) -> bool:
        """A delivery that is ``retryable`` back to pending, due ``now``, its attempts
        counted from zero, with the same key (a receiver that deduplicates on it is
        right to); ``route`` (of ``kind``) replaces the recorded one. False if it changed
        meanwhile (someone else retried or dropped it)."""
        return self.db.execute(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt = ?,"
            " outcome = NULL, finished = NULL, kind = ?, route = ?"
            " WHERE seq = ? AND status = ? AND attempts = ?",
            (now.timestamp(), kind or delivery.kind, json.dumps(route or delivery.route),
             delivery.seq, delivery.status, delivery.attempts),
        ).rowcount > 0

    def drop(self, delivery: Delivery) -> bool:
        """Remove a delivery nobody holds (pending, given up, or ended in ``error``): it
        is never delivered. False if it changed meanwhile (claimed, finished, dropped)."""
        return self.db.execute(
            "DELETE FROM deliveries WHERE seq = ? AND status = ? AND attempts = ?"
            " AND status != 'claimed'",
            (delivery.seq, delivery.status, delivery.attempts),
        ).rowcount > 0

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


def _sessions(sessions: Collection[str] | None) -> tuple[str, tuple[str, ...]]:
    """The SQL condition (and its values) keeping rows of ``sessions`` ('' for none)."""
    if sessions is None:
        return "", ()
    of = tuple(sessions)
    return f" AND session IN ({','.join('?' * len(of)) or 'NULL'})", of


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
