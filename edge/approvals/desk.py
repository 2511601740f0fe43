"""Approvals: a runtime asks before acting beyond its permission envelope.

A runtime that wants to take an action its envelope does not cover asks
(``mailslot approve request --action deploy:staging --summary "..."``). The *autonomy
dial* (``[approvals]`` in ``intents.toml``) decides at once — allowed, denied — or leaves
the request to the user, who approves or rejects it (or lets it expire). A decision the
user made, or an expiry, reaches the runtime as a local interrupt (source kind
``approval``, type ``approval.approved|rejected|expired``) that intents route like any
other.

Rules this module keeps:

* ``decide`` is pure: settings, an action and the caller's envelope in, a ``Verdict``
  out. Actions use the grant alphabet (``[A-Za-z0-9_.:*/-]``), so ``*`` is the only
  wildcard: an action with a ``*`` is allowed only by a pattern that covers every action
  it stands for, and is asked when it overlaps anything irreversible or a rule that does
  not cover it.
* Requests live in the ``approvals`` table of ``data/engine.sqlite3``; a row leaves
  ``pending`` once, inside a write transaction (``BEGIN IMMEDIATE``), so two processes
  never both decide or expire the same request. Expiry applies when a row is read.
* As in the engine, records are written before the transaction that makes them true
  commits: the interrupt and the activity-log entry first, the row last. A crash can
  repeat a notification (the request is still pending), never lose one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field
from ulid import ULID

from edge.config import POKE_FILE, EdgePaths
from edge.errors import EdgeError, InboxError
from edge.intents.model import Duration, Strict, StrictInt
from edge.store.activity import ActivityLog, Event
from edge.store.enginestate import EngineState
from shared.errors import InvalidToken
from shared.tokens import check_name, check_session

ACTION_RE = re.compile(r"[A-Za-z0-9_.:*/-]{1,128}")
Action = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:*/-]{1,128}$")]
Decision = Literal["allow", "ask", "deny"]
#: Row statuses: ``allowed``/``denied`` are the dial's own answers, the rest the user's
#: (or the clock's).
STATUSES = ("pending", "approved", "rejected", "expired", "allowed", "denied")
USER_DECISIONS = ("approved", "rejected")
SUMMARY_MAX = NOTE_MAX = 1000
#: The environment variable naming the runtime's permission envelope (``edge.delivery.deliverer``).
PERMISSIONS_ENV = "MAILSLOT_PERMISSIONS"
SOURCE_KIND = "approval"


class ApprovalError(EdgeError):
    """Root of the approval errors (all the caller's fault; nothing was changed)."""

    code = "approval_error"


class UnknownApproval(ApprovalError):
    code = "unknown_approval"


class AlreadyDecided(ApprovalError):
    code = "already_decided"


class InvalidAction(ApprovalError):
    code = "invalid_action"


class WiderAction(ApprovalError):
    """``approvals edit`` may only narrow a request: the new action must stand for a
    subset of what was asked (``deploy:staging`` for ``deploy:*``), never more."""

    code = "wider_action"


class InvalidRequest(ApprovalError):
    """A summary, note, session or intent that cannot be stored."""

    code = "invalid_request"


# -- settings (``[approvals]`` in intents.toml) -------------------------------------------


class Rule(Strict):
    pattern: Action
    decision: Decision


class ApprovalSettings(Strict):
    """The autonomy dial. ``level``: 0 asks for everything; 1 allows read-only actions;
    2 lets the first matching rule decide (no match: ask); 3 asks only for irreversible
    actions. Whatever the level, an action the caller's envelope covers is allowed."""

    level: StrictInt = Field(default=1, ge=0, le=3)
    read_only: list[Action] = ["*:read", "read:*", "*:list", "*:get"]
    irreversible: list[Action] = [
        "*:delete", "delete:*", "deploy:*", "*:deploy", "rm:*", "*:force-push", "payment:*",
    ]
    #: Level 2 only; first match wins.
    rules: list[Rule] = []
    #: How long a request waits for the user before it expires.
    expires: Annotated[Duration, Field(gt=0)] = 3600.0
    #: Consecutive approvals of one action after which promoting it is suggested.
    promote_after: StrictInt = Field(default=10, ge=1)


# -- the decision (pure) -----------------------------------------------------------------


def check_action(action: str) -> str:
    if not isinstance(action, str) or ACTION_RE.fullmatch(action) is None:
        raise InvalidAction(f"action {action!r} is not allowed (must match {ACTION_RE.pattern})")
    return action


def covers(pattern: str, action: str) -> bool:
    """Every action ``action`` stands for matches ``pattern``. In this alphabet ``*`` is
    the only wildcard, so a literal match of the action's text (its ``*`` absorbed by the
    pattern's) is exactly that."""
    return fnmatchcase(action, pattern)


def overlaps(a: str, b: str) -> bool:
    """Some action matches both globs (a walk over the pair of positions)."""
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        i, j = todo.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if i == len(a) and j == len(b):
            return True
        x = a[i] if i < len(a) else None
        y = b[j] if j < len(b) else None
        if x == "*":
            todo.append((i + 1, j))  # a's star ends here
            if y is not None and y != "*":
                todo.append((i, j + 1))  # a's star takes b's character
        if y == "*":
            todo.append((i, j + 1))
            if x is not None and x != "*":
                todo.append((i + 1, j))
        if x is not None and x == y and x != "*":
            todo.append((i + 1, j + 1))
    return False


@dataclass(frozen=True)
class HeldPermissions:
    """The envelope a runtime was woken with (``MAILSLOT_PERMISSIONS``)."""

    actions: tuple[str, ...]
    expires_at: datetime
    intent: str | None = None
    path: str | None = None

    def covering(self, action: str, now: datetime) -> str | None:
        """The envelope pattern that allows ``action`` now, if any."""
        if now >= self.expires_at:
            return None
        return next((p for p in self.actions if covers(p, action)), None)


def read_permissions(environ: Mapping[str, str]) -> HeldPermissions | None:
    """The envelope named by ``MAILSLOT_PERMISSIONS``, or ``None`` if there is none or it
    is unreadable (the request then goes to the dial, which is never more permissive)."""
    name = environ.get(PERMISSIONS_ENV)
    if not name:
        return None
    try:
        doc = json.loads(Path(name).read_text(encoding="utf-8"))
        expires = datetime.fromisoformat(doc["expires_at"])
        actions = doc["actions"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if expires.utcoffset() is None or not isinstance(actions, list):
        return None
    valid = tuple(a for a in actions if isinstance(a, str) and ACTION_RE.fullmatch(a))
    intent = doc.get("intent") if isinstance(doc.get("intent"), str) else None
    return HeldPermissions(valid, expires, intent, name)


@dataclass(frozen=True)
class Verdict:
    """What the dial says about one action: ``decision`` and why, in words and as data
    (``by``: envelope, level, read_only, irreversible, rule, no_rule)."""

    decision: Decision
    by: str
    reason: str
    level: int
    pattern: str | None = None
    rule: int | None = None

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {"by": self.by, "level": self.level}
        if self.pattern is not None:
            out["pattern"] = self.pattern
        if self.rule is not None:
            out["rule"] = self.rule
        return out


def decide(
    settings: ApprovalSettings, action: str, held: HeldPermissions | None, now: datetime
) -> Verdict:
    """The dial's answer for ``action``; see ``ApprovalSettings``."""
    level = settings.level
    if held is not None and (p := held.covering(action, now)) is not None:
        return Verdict("allow", "envelope", f"the permission envelope allows it ({p!r})",
                       level, pattern=p)
    if level == 0:
        return Verdict("ask", "level", "level 0: every action is asked", level)
    if level == 1:
        if (p := next((p for p in settings.read_only if covers(p, action)), None)) is not None:
            return Verdict("allow", "read_only", f"level 1: read-only ({p!r})", level, pattern=p)
        return Verdict("ask", "level", "level 1: not a read-only action", level)
    if level == 2:
        for index, rule in enumerate(settings.rules):
            if covers(rule.pattern, action):
                return Verdict(rule.decision, "rule",
                               f"level 2: rule {rule.pattern!r} says {rule.decision}",
                               level, pattern=rule.pattern, rule=index)
            if overlaps(rule.pattern, action):  # only a wildcard action gets here
                return Verdict("ask", "rule", f"level 2: only part of it matches rule "
                               f"{rule.pattern!r}", level, pattern=rule.pattern, rule=index)
        return Verdict("ask", "no_rule", "level 2: no rule matches", level)
    for p in settings.irreversible:
        if overlaps(p, action):
            return Verdict("ask", "irreversible", f"level 3: irreversible ({p!r})", level,
                           pattern=p)
    return Verdict("allow", "level", "level 3: not irreversible", level)


# -- requests -------------------------------------------------------------------------


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
        note TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, expires)",
    "CREATE INDEX IF NOT EXISTS approvals_action ON approvals (action, decided)",
)
_COLUMNS = "id, action, summary, session, intent, status, reason, created, decided, expires, note"


def _time(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _approval(row: Sequence[Any]) -> Approval:
    id_, action, summary, session, intent, status, reason, created, decided, expires, note = row
    return Approval(id_, action, summary, session, intent, status, reason, _time(created),
                    None if decided is None else _time(decided), _time(expires), note)


class ApprovalStore:
    """The ``approvals`` table in the engine's database (``edge.store.enginestate``)."""

    def __init__(self, state: EngineState) -> None:
        self.state = state
        self.db = state.db

    @classmethod
    def open(cls, path: Path | str) -> ApprovalStore:
        state = EngineState.open(path)
        try:
            for statement in _SCHEMA:
                state.db.execute(statement)
        except sqlite3.Error as exc:
            state.close()
            raise InboxError(f"{path}: cannot open the approvals table ({exc})") from exc
        return cls(state)

    def close(self) -> None:
        self.state.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction; nested use joins the outer one."""
        if self.db.in_transaction:
            yield
            return
        with self.state.transaction():
            yield

    def insert(self, a: Approval) -> None:
        self.db.execute(
            f"INSERT INTO approvals ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (a.id, a.action, a.summary, a.session, a.intent, a.status, a.reason,
             a.created.timestamp(), a.decided.timestamp() if a.decided else None,
             a.expires.timestamp(), a.note),
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


# -- telling the runtime ------------------------------------------------------------------


class Notifier(Protocol):
    """Raises a decision as a local interrupt, and wakes the daemon once committed."""

    def raise_decision(self, approval: Approval) -> str: ...

    def poke(self) -> None: ...


class InboxNotifier:
    """The real ``Notifier``: a ``LocalRaiser`` on the edge's inbox, signed with the edge's
    key (both opened on first use), and the daemon's poke file."""

    def __init__(self, paths: EdgePaths) -> None:
        self.paths = paths
        self._raiser: Any = None

    def raise_decision(self, approval: Approval) -> str:
        if self._raiser is None:
            from edge.link.keystore import load_identity
            from edge.store.inbox import Inbox
            from edge.watches.events import LocalRaiser

            identity = load_identity(self.paths.key_file)
            self._raiser = LocalRaiser(identity, Inbox.open(self.paths.inbox_file))
        payload = {"id": approval.id, "action": approval.action, "summary": approval.summary,
                   "note": approval.note}
        return str(self._raiser.raise_event(
            SOURCE_KIND, "approvals", f"approval.{approval.status}", payload,
            priority="now", session=approval.session, event_id=approval.id,
        ))

    def poke(self) -> None:
        self.paths.poke_file.write_text(datetime.now(UTC).isoformat())

    def close(self) -> None:
        if self._raiser is not None:
            self._raiser.inbox.close()
            self._raiser = None


# -- the desk -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decided:
    """A user decision as made: the row, the interrupt that carries it, and (for an
    approval) the streak of consecutive approvals of its action and whether promoting it
    is now suggested."""

    approval: Approval
    interrupt: str
    streak: int
    suggest: bool


class ApprovalDesk:
    """Requests in, decisions out: the dial, the store, the activity log and the runtime's
    inbox together. Build one per command; it owns nothing it was handed."""

    def __init__(
        self, store: ApprovalStore, log: ActivityLog, notifier: Notifier,
        settings: ApprovalSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.log = log
        self.notifier = notifier
        self.settings = settings
        self.clock = clock

    def request(
        self, action: str, summary: str, *, session: str | None = None,
        intent: str | None = None, held: HeldPermissions | None = None,
    ) -> Approval:
        """Record a request and the dial's answer: ``allowed``/``denied`` at once, or
        ``pending`` until the user decides (``approve``/``reject``) or it expires."""
        action = check_action(action)
        summary = _text(summary, "summary", SUMMARY_MAX, required=True)
        session, intent = _session(session), _intent(intent)
        now = self.clock()
        verdict = decide(self.settings, action, held, now)
        status = {"allow": "allowed", "deny": "denied", "ask": "pending"}[verdict.decision]
        approval = Approval(
            str(ULID()), action, summary, session, intent, status, verdict.reason, now,
            None if status == "pending" else now, now + timedelta(seconds=self.settings.expires),
            "",
        )
        base = {"id": approval.id, "action": action, "session": session}
        events = [Event("approval_requested", now, None, intent, None, {
            **base, "summary": summary, "decision": verdict.decision, "reason": verdict.reason,
            **verdict.detail(),
            **({"envelope": held.path} if held is not None and held.path else {}),
        })]
        if status != "pending":
            events.append(Event("approval_decided", now, None, intent, None, {
                **base, "status": status, "reason": verdict.reason, **verdict.detail()}))
        with self.store.transaction():
            if status == "pending":
                # the user should hear about it: an ``approval.pending`` interrupt that
                # intents can route to wherever the user is (committed first: never lost)
                self.notifier.raise_decision(approval)
            self.log.append(events)
            self.store.insert(approval)
        if status == "pending":
            self.notifier.poke()
        return approval

    def get(self, approval_id: str) -> Approval:
        """The request as it is now (expired first if its time is up)."""
        self.expire()
        found = self.store.get(approval_id)
        if found is None:
            raise UnknownApproval(f"no approval request {approval_id!r}")
        return found

    def requests(self, everything: bool = False) -> list[Approval]:
        self.expire()
        return self.store.rows(pending_only=not everything)

    def expire(self) -> list[Approval]:
        """Mark pending requests past their expiry as ``expired``, each recorded and
        raised once (``approval.expired``); returns them."""
        if not self.store.overdue(self.clock()):
            return []  # the common case takes no write lock
        with self.store.transaction():
            expired = self._expire_overdue()
        if expired:
            self.notifier.poke()
        return expired

    def approve(self, approval_id: str, note: str = "") -> Decided:
        return self._decide(approval_id, "approved", note)

    def reject(self, approval_id: str, note: str = "") -> Decided:
        return self._decide(approval_id, "rejected", note)

    def _decide(self, approval_id: str, status: str, note: str) -> Decided:
        note = _text(note, "note", NOTE_MAX)
        now = self.clock()
        with self.store.transaction():
            current = self._pending(approval_id)
            streak = self.store.streak(current.action) + 1 if status == "approved" else 0
            after = self.settings.promote_after
            promoted = any(r.pattern == current.action and r.decision == "allow"
                           for r in self.settings.rules)
            suggest = streak > 0 and streak % after == 0 and not promoted
            extra = []
            if suggest:
                extra.append(Event("approval_suggested", now, None, current.intent, None, {
                    "id": current.id, "action": current.action, "streak": streak,
                    "promote": f"mailslot approvals promote {current.action}"}))
            decided, interrupt = self._settle(
                replace(current, status=status, decided=now, note=note,
                        reason=f"{status} by the user"), now, by="user", extra=extra)
        self.notifier.poke()
        return Decided(decided, interrupt, streak, suggest)

    def edit(self, approval_id: str, action: str) -> tuple[Approval, str]:
        """Narrow a pending request's action before deciding; returns the row and the
        action it had. An action the request does not cover (wider, or a different one)
        is refused (``WiderAction``): an edit the agent never asked for must not become
        a permission it gets."""
        action = check_action(action)
        now = self.clock()
        with self.store.transaction():
            current = self._pending(approval_id)
            if not covers(current.action, action):
                raise WiderAction(
                    f"{action!r} is not within the requested {current.action!r}: "
                    "`approvals edit` only narrows a request (reject it instead, and let "
                    "the agent ask for what it needs)")
            self.log.append([Event("approval_requested", now, None, current.intent, None, {
                "id": current.id, "action": action, "edited_from": current.action,
                "session": current.session, "by": "user",
                "reason": "the user changed the action"})])
            self.store.set_action(current.id, action)
        return replace(current, action=action), current.action

    async def wait(self, approval_id: str, timeout: float, folder: Path) -> Approval:
        """The request once it is no longer pending, or as it is after ``timeout``
        seconds. Sleeps on inotify events for ``folder`` (the engine database and the poke
        file live there), waking at the request's expiry to expire it."""
        from watchfiles import awatch

        deadline = time.monotonic() + timeout
        db_name = Path(self.store.state.db.execute("PRAGMA database_list").fetchone()[2]).name

        def relevant(_change: Any, path: str) -> bool:
            name = Path(path).name
            return name == POKE_FILE or (bool(db_name) and name.startswith(db_name))

        # Our own stop flag for watchfiles' thread: awatch sets it when cancelled.
        halt = asyncio.Event()
        changes = awatch(folder, watch_filter=relevant, stop_event=halt, recursive=False,
                         debounce=200, step=20)
        # The generator's first step creates the inotify watch before it first awaits;
        # after one turn of the loop a decision is either already visible or will be seen.
        pending = asyncio.ensure_future(anext(changes))
        try:
            await asyncio.sleep(0)
            while True:
                current = self.get(approval_id)
                left = deadline - time.monotonic()
                if current.status != "pending" or left <= 0:
                    return current
                until_expiry = (current.expires - self.clock()).total_seconds() + 0.01
                await asyncio.wait({pending}, timeout=max(0.0, min(left, until_expiry)))
                if pending.done():
                    pending.result()
                    pending = asyncio.ensure_future(anext(changes))
        finally:
            halt.set()  # the watch thread sees it within one step
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
            await changes.aclose()

    # -- inside a transaction ----------------------------------------------------------

    def _expire_overdue(self) -> list[Approval]:
        now = self.clock()
        return [self._settle(replace(a, status="expired", decided=a.expires,
                                     reason="no decision in time"), now, by="expiry")[0]
                for a in self.store.overdue(now)]

    def _pending(self, approval_id: str) -> Approval:
        self._expire_overdue()
        current = self.store.get(approval_id)
        if current is None:
            raise UnknownApproval(f"no approval request {approval_id!r}")
        if current.status != "pending":
            raise AlreadyDecided(f"approval {approval_id} is already {current.status}")
        return current

    def _settle(self, decided: Approval, now: datetime, *, by: str,
                extra: Sequence[Event] = ()) -> tuple[Approval, str]:
        """Raise the decision into the inbox, record it, then mark the row (in that
        order: a crash repeats the notice, never loses it)."""
        interrupt = self.notifier.raise_decision(decided)
        detail: dict[str, Any] = {
            "id": decided.id, "action": decided.action, "session": decided.session,
            "status": decided.status, "by": by, "level": self.settings.level,
            "reason": decided.reason,
        }
        if decided.note:
            detail["note"] = decided.note
        self.log.append([Event("approval_decided", now, interrupt, decided.intent,
                               f"approval.{decided.status}", detail), *extra])
        self.store.settle(decided)
        return decided, interrupt


def _text(value: str, what: str, limit: int, required: bool = False) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidRequest(f"the {what} cannot be empty")
    if len(value) > limit:
        raise InvalidRequest(f"the {what} is longer than {limit} characters")
    return value


def _session(value: str | None) -> str | None:
    try:
        return check_session(value) if value else None
    except InvalidToken as exc:
        raise InvalidRequest(str(exc)) from None


def _intent(value: str | None) -> str | None:
    try:
        return check_name(value, "intent id") if value else None
    except InvalidToken as exc:
        raise InvalidRequest(str(exc)) from None


# -- promotion: an allow rule in intents.toml ----------------------------------------------


def promote(path: Path, action: str) -> bool:
    """Append ``{pattern = ACTION, decision = "allow"}`` to ``[approvals].rules`` in the
    intents file (comments and layout kept, written atomically under the file's lock).
    ``False`` if that rule is already there."""
    # intentfile loads Declarations, which hold ApprovalSettings: import it late.
    import tomlkit

    from edge.intents.declarations import Declarations
    from edge.intents.file import HEADER, _edit

    action = check_action(action)
    rule = Rule(pattern=action, decision="allow")
    added = True

    def edit(text: str, old: Declarations) -> tuple[str, Declarations]:
        nonlocal added
        if rule in old.approvals.rules:
            added = False
            return text, old
        doc = tomlkit.parse(text)
        entry = tomlkit.inline_table()
        entry.update({"pattern": action, "decision": "allow"})
        if "approvals" not in doc:
            table = tomlkit.table()
            table.add("rules", tomlkit.array())
            doc.add("approvals", table)
        section: Any = doc["approvals"]
        if "rules" not in section:
            section["rules"] = tomlkit.array()
        section["rules"].append(entry)
        new_text = tomlkit.dumps(doc)
        if not text.strip():
            new_text = f"{HEADER}\n{new_text}"
        settings = old.approvals.model_copy(update={"rules": [*old.approvals.rules, rule]})
        return new_text, old.model_copy(update={"approvals": settings})

    _edit(path, edit)
    return added


def streak_hint(settings: ApprovalSettings, action: str, streak: int) -> str:
    """The sentence the approve command prints when promotion is suggested."""
    text = (f"approved {streak} times in a row: `mailslot approvals promote {action}` adds an"
            " allow rule")
    if settings.level != 2:
        text += f" (rules apply at level 2; the dial is at {settings.level})"
    return text

