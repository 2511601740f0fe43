"""The approvals desk: a runtime asks before acting beyond its permission envelope.

A runtime that wants to take an action its envelope does not cover asks
(``mailslot approve request --action deploy:staging --summary "..."``). The *autonomy
dial* (``edge.approvals.dial``, set by ``[approvals]`` in ``intents.toml``) decides at
once — allowed, denied — or leaves the request to the user, who approves or rejects it
(or lets it expire). A decision the user made, or an expiry, reaches the runtime as a
local interrupt (source kind ``approval``, type ``approval.approved|rejected|expired``)
that intents route like any other.

Rules this module keeps:

* Requests live in the ``approvals`` table of ``data/engine.sqlite3``
  (``edge.store.approvals``); a row leaves ``pending`` once, inside a write transaction,
  so two processes never both decide or expire the same request. Expiry applies when a
  row is read, and the daemon's timer (``edge.approvals.expiry``) applies it on time.
* As in the engine, records are written before the transaction that makes them true
  commits: the interrupt and the activity-log entry first, the row last. A crash can
  repeat a notification (the request is still pending), never lose one.
* A request made for a Claude Code permission prompt (``permission``, see
  ``edge.mcp.permissions``) records that prompt with the request, and every decision of
  it records the answer the channel gives (``permission_answer``): ``allow`` or ``deny``.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from ulid import ULID

from edge.approvals.dial import HeldPermissions, Ruling, check_action, covers, decide
from edge.config import POKE_FILE, EdgePaths
from edge.errors import (
    AlreadyDecided,
    IntentFileError,
    InvalidRequest,
    UnknownApproval,
    WiderAction,
)
from edge.fswatch import Change, FsWatch
from edge.intents.approvalrules import ApprovalSettings
from edge.intents.file import load_intents
from edge.link.keystore import load_identity
from edge.store.activity import ActivityLog, Event
from edge.store.approvals import Approval, ApprovalStore
from edge.store.inbox import Inbox
from edge.watches.events import LocalRaiser
from shared.errors import InvalidToken
from shared.tokens import check_name, check_session

SUMMARY_MAX = NOTE_MAX = 1000
SOURCE_KIND = "approval"


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
        self._raiser: LocalRaiser | None = None

    def raise_decision(self, approval: Approval) -> str:
        if self._raiser is None:
            identity = load_identity(self.paths.key_file)
            self._raiser = LocalRaiser(identity, Inbox.open(self.paths.inbox_file))
        payload: dict[str, Any] = {"id": approval.id, "action": approval.action,
                                   "summary": approval.summary, "note": approval.note}
        if approval.permission is not None:  # data from the session, as it came (cut)
            payload["permission"] = approval.permission
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
        permission: dict[str, Any] | None = None, refused: str | None = None,
    ) -> Approval:
        """Record a request and the dial's answer: ``allowed``/``denied`` at once, or
        ``pending`` until the user decides (``approve``/``reject``) or it expires.
        ``permission``: the Claude Code permission prompt it was made for (stored with
        it). ``refused``: deny it at once, for this reason, whatever the dial says (a
        prompt that could not be read)."""
        action = check_action(action)
        summary = _text(summary, "summary", SUMMARY_MAX, required=True)
        session, intent = _session(session), _intent(intent)
        now = self.clock()
        ruling = (Ruling("deny", "invalid", refused, self.settings.level)
                  if refused is not None else decide(self.settings, action, held, now))
        status = {"allow": "allowed", "deny": "denied", "ask": "pending"}[ruling.decision]
        approval = Approval(
            str(ULID()), action, summary, session, intent, status, ruling.reason, now,
            None if status == "pending" else now, now + timedelta(seconds=self.settings.expires),
            "", permission,
        )
        base = {"id": approval.id, "action": action, "session": session}
        events = [Event("approval_requested", now, None, intent, None, {
            **base, "summary": summary, "decision": ruling.decision, "reason": ruling.reason,
            **ruling.detail(),
            **({"envelope": held.path} if held is not None and held.path else {}),
            **({"permission": permission} if permission is not None else {}),
        })]
        if status != "pending":
            answer = permission_answer(approval)
            events.append(Event("approval_decided", now, None, intent, None, {
                **base, "status": status, "reason": ruling.reason, **ruling.detail(),
                **({"answer": answer} if answer is not None else {})}))
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
                    "promote": f"mailslot approvals promote {shlex.quote(current.action)}"}))
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
            if current.permission is not None:
                raise InvalidRequest(
                    "a Claude Code permission prompt is answered as it was asked: approve"
                    " or reject it (an edited action would not change what Claude Code runs)")
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
        deadline = time.monotonic() + timeout
        db_name = Path(self.store.db.path).name

        def relevant(_change: Change, path: str) -> bool:
            name = Path(path).name
            return name == POKE_FILE or (bool(db_name) and name.startswith(db_name))

        # Armed once entered: a decision is either already visible or will be seen.
        async with FsWatch(folder, accept=relevant, recursive=False, debounce_ms=200,
                           step_ms=20) as changes:
            while True:
                current = self.get(approval_id)
                left = deadline - time.monotonic()
                if current.status != "pending" or left <= 0:
                    return current
                until_expiry = (current.expires - self.clock()).total_seconds() + 0.01
                await changes.next(timeout=max(0.0, min(left, until_expiry)))

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
        if (answer := permission_answer(decided)) is not None:
            detail["answer"] = answer
        self.log.append([Event("approval_decided", now, interrupt, decided.intent,
                               f"approval.{decided.status}", detail), *extra])
        self.store.settle(decided)
        return decided, interrupt


def permission_answer(approval: Approval) -> dict[str, str] | None:
    """What the channel answers Claude Code for a decided request made for a permission
    prompt: ``{request_id, behavior}``, ``allow`` when the dial allowed it or the user
    approved it, else ``deny``; ``None`` while pending or for any other request."""
    if approval.permission is None or approval.status == "pending":
        return None
    behavior = "allow" if approval.status in ("allowed", "approved") else "deny"
    return {"request_id": str(approval.permission.get("request_id")), "behavior": behavior}


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


def streak_hint(settings: ApprovalSettings, action: str, streak: int) -> str:
    """The sentence the approve command prints when promotion is suggested."""
    # quoted: an action with '*' is copied into a shell by whoever reads this
    text = (f"approved {streak} times in a row: `mailslot approvals promote {shlex.quote(action)}` adds an"
            " allow rule")
    if settings.level != 2:
        text += f" (rules apply at level 2; the dial is at {settings.level})"
    return text


def _settings(paths: EdgePaths) -> ApprovalSettings:
    """The dial as ``intents.toml`` sets it; a broken file asks for everything (the
    daemon keeps its last good file, a CLI process has none to keep)."""
    try:
        return load_intents(paths.intents_file).approvals
    except IntentFileError as exc:
        print(f"mailslot: warning: {exc}; asking for every action until it is fixed",
              file=sys.stderr)
        return ApprovalSettings(level=0)


@contextlib.contextmanager
def open_desk(paths: EdgePaths) -> Iterator[ApprovalDesk]:
    """A desk on the edge at ``paths`` (its engine database, activity log, inbox and
    key), closed when the block ends: what ``mailslot approve``/``approvals`` and the MCP
    tools use, one per call."""
    store = ApprovalStore.open(paths.engine_file)
    notifier = InboxNotifier(paths)
    try:
        with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
            yield ApprovalDesk(store, log, notifier, _settings(paths))
    finally:
        notifier.close()
        store.close()
