"""The decision engine: does this interrupt matter, to whom, and now?

Every interrupt in the inbox goes through every intent, in file order. For each intent
whose deterministic ``match`` passes, the policy rules run in one fixed order and the
first refusal wins, with its reason recorded:

1. **dedupe** — the same ``dedupe_key`` within the intent's window → suppressed
2. **user active** — ``suppress_when_active`` and a recent ``mailslot activity`` → suppressed
3. **max reminders** — that many wakes for (session, intent) since the user was last active
4. **cooldown** — the last wake for (session, intent) was too recent → suppressed
5. **condition** — the intent's extra predicates → suppressed if one fails
6. **budget** — the day's wakes or tokens are spent → skipped (critical intents go on)
7. **judge** — only now, and only if the intent has one: the model says no → suppressed;
   a failure applies the intent's ``on_failure`` (``wake`` or ``skip``)
8. **active hours** — outside the window → deferred to its next start (``now`` and
   critical intents go on)
9. **coalesce** — within the window, events join one wake listing them all (``now`` goes on)

What survives becomes a *pending wake*. Due wakes are dispatched highest priority first,
FIFO within a class: the daily wake budget is charged then (a wake deferred to tomorrow
morning counts against tomorrow), and the route receives the wake.

Time is logical: an interrupt is decided at the time the edge received it and a wake
happens at the time it was due, so ``replay`` over the same inbox and activity makes the
same decisions the live engine made. All memory is in ``EngineState``; all records go to
the activity log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from edge.engine.judge import Judgment, ask_judge
from edge.intents.model import ActiveHours, Intent, IntentSet, matches
from edge.store.activity import Event
from edge.store.deliveries import DeliveryQueue, permission_envelope
from edge.store.enginestate import EngineState, PendingWake, new_delivery_key
from edge.store.inbox import Inbox, InboxItem
from shared.host.waiting import first_of
from shared.match import describe, holds

log = logging.getLogger("mailslot.edge.engine")

JudgeFn = Callable[[Intent, dict[str, Any]], Awaitable[Judgment]]
Recorder = Callable[[list[Event]], object]
Clock = Callable[[], datetime]
BATCH = 512
#: Most interrupts ``Engine.offer`` keeps waiting to be decided; past that the engine
#: reads them from the inbox when it gets there (an engine held up, e.g. by a judge,
#: while the link drains a backlog does not hold the backlog in memory).
OFFERED_MAX = 8 * BATCH
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Decision:
    """What happened to one interrupt for one intent (``intent`` None: nothing matched)."""

    interrupt: str
    intent: str | None
    outcome: str  # woken | suppressed | skipped | deferred | coalesced | pending | unmatched
    reason: str = ""


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def interrupt_doc(item: InboxItem) -> dict[str, Any]:
    """The envelope as matched on: the signed document, with a sealed payload opened."""
    doc = dict(json.loads(item.envelope))
    doc["payload"] = item.payload
    doc.pop("sealed", None)
    return doc


def minimal_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """What a judge (and later a runtime) sees: the five questions, nothing more."""
    keys = ("id", "type", "priority", "session", "source", "created_at", "payload",
            "permissions", "dedupe_key")
    return {k: doc[k] for k in keys if doc.get(k) is not None}


def in_window(hours: ActiveHours, zone: ZoneInfo, at: float) -> bool:
    local = datetime.fromtimestamp(at, zone)
    start, end, now = hours.start_time(), hours.end_time(), local.time()
    if start == end:
        day, open_ = local.weekday(), True
    elif start < end:
        day, open_ = local.weekday(), start <= now < end
    else:  # crosses midnight: the early hours belong to the previous day's window
        open_ = now >= start or now < end
        day = local.weekday() if now >= start else (local.weekday() - 1) % 7
    return open_ and (not hours.days or day in hours.days)


def next_window_start(hours: ActiveHours, zone: ZoneInfo, at: float) -> float:
    local = datetime.fromtimestamp(at, zone)
    for days_ahead in range(0, 8):
        date = (local + timedelta(days=days_ahead)).date()
        candidate = datetime.combine(date, hours.start_time(), zone)
        if candidate.timestamp() > at and (not hours.days or candidate.weekday() in hours.days):
            return candidate.timestamp()
    raise AssertionError("an active-hours window opens at least once a week")


class Engine:
    """Decides interrupts against ``intents`` and dispatches the wakes they earn. All its
    memory is ``state``; every step goes to ``record`` before the transaction that made
    it commits.
    ``inbox`` is the engine's own connection to the inbox: ``catch_up`` and ``run`` read
    from it and woken interrupts' documents come from it (None only for a replay, which
    is handed its interrupts). ``judge`` replaces running the intents' judge commands."""

    def __init__(
        self,
        intents: IntentSet,
        state: EngineState,
        record: Recorder,
        *,
        inbox: Inbox | None,
        judge: JudgeFn | None = None,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.state = state
        self.record = record
        self.judge = judge or (lambda intent, doc: ask_judge(_judge_of(intent), doc))
        self.clock = clock
        self.decisions: list[Decision] = []
        self.keep_decisions = False
        #: Called after each committed batch with the interrupts it decided (absence
        #: watches re-arm on them) and with the wakes it dispatched (a wake for a
        #: session ends that session's sleep).
        self.on_decided: list[Callable[[list[InboxItem]], None]] = []
        self.on_woken: list[Callable[[PendingWake], None]] = []
        self._woken: list[PendingWake] = []
        #: Where ``catch_up`` reads interrupts and where the documents of woken interrupts
        #: are read for runtimes: the engine's own connection (None for a replay, which
        #: is handed its interrupts and wakes nothing).
        self.inbox = inbox
        self.deliveries = DeliveryQueue(state.db)
        #: Set when a delivery for a runtime was queued (the deliverer waits on it).
        self.queued = asyncio.Event()
        #: Newly committed interrupts handed over by the link, in ``seq`` order.
        self._offered: collections.deque[InboxItem] = collections.deque()
        self.set_intents(intents)

    def set_intents(self, intents: IntentSet) -> None:
        self.intents = intents
        self.zone = ZoneInfo(intents.settings.timezone)
        self._by_type: dict[str, list[int]] = {}
        self._always: list[int] = []
        for index, intent in enumerate(intents.intents):
            types = intent.match.type
            if types is None or any(_GLOB_CHARS & set(t) for t in types):
                self._always.append(index)
            else:
                for t in types:
                    self._by_type.setdefault(t, []).append(index)

    def _candidates(self, type_: str) -> list[Intent]:
        """The unpaused intents that may match an interrupt of ``type_``, in file order."""
        indexes = sorted({*self._always, *self._by_type.get(type_, ())})
        intents = self.intents.intents
        return [intents[i] for i in indexes if not intents[i].paused]

    # -- deciding ---------------------------------------------------------------------

    async def decide(self, items: list[InboxItem]) -> int:
        """Decide a batch of stored interrupts (in arrival order); returns the last seq.
        Wakes that come due before an interrupt's time are dispatched first, so the
        order of events is the order of time."""
        events: list[Event] = []
        last = 0
        with self._batch(events):
            # Asking the state for due wakes before every interrupt was a query each; ask
            # when one may be due, and again only after an interrupt that matched (its
            # policy may have queued a wake; an unmatched one changes no state).
            next_due = self.state.next_due()
            for item in items:
                at = _epoch(item.received_at)
                if next_due is not None and next_due <= at:
                    self._dispatch_due(at, events)
                    next_due = self.state.next_due()
                if await self._decide_one(item, at, events):
                    next_due = self.state.next_due()
                last = item.seq
            self.state.set_cursor(max(last, self.state.cursor))
        for callback in self.on_decided:
            callback(items)
        return last

    @contextlib.contextmanager
    def _batch(self, events: list[Event]) -> Iterator[None]:
        """One transaction; the records go to the log before it commits, so a crash
        can repeat a record but never lose one."""
        try:
            with self.state.db.transaction():
                yield
                if events:
                    self.record(events)
        except BaseException:
            self._woken.clear()
            raise
        woken, self._woken = self._woken, []
        for wake in woken:
            for callback in self.on_woken:
                callback(wake)

    async def _decide_one(self, item: InboxItem, at: float, events: list[Event]) -> bool:
        """Decide one interrupt for every intent; returns whether any matched. The
        document is built only if some intent may match its type (the stored columns
        say everything the first two records need)."""
        when = _at(at)
        events.append(Event("received", when, item.id, None, item.type, {
            "priority": item.priority, "source": f"{item.source_kind}/{item.source_name}",
            "session": item.session,
        }))
        events.append(Event("verified", when, item.id, None, item.type, {"signer": item.signer}))
        matched = False
        candidates = self._candidates(item.type)
        doc = interrupt_doc(item) if candidates else {}
        for intent in candidates:
            if matches(intent.match, doc) is not None:
                continue
            matched = True
            events.append(Event("matched", when, item.id, intent.id, item.type, {}))
            await self._apply_policy(intent, item, doc, at, events)
        if not matched:
            events.append(Event("unmatched", when, item.id, None, item.type,
                                {"reason": "no intent matched"}))
            self._decided(item.id, None, "unmatched", "no intent matched")
        return matched

    async def _apply_policy(
        self, intent: Intent, item: InboxItem, doc: dict[str, Any], at: float,
        events: list[Event],
    ) -> None:
        policy, session, when = intent.policy, item.session or "", _at(at)

        def refuse(step: str, rule: str, reason: str, **detail: Any) -> None:
            events.append(Event(step, when, item.id, intent.id, item.type,
                                {"rule": rule, "reason": reason, **detail}))
            self._decided(item.id, intent.id, "skipped" if step == "outcome" else step, reason)

        dedupe_key = doc.get("dedupe_key")
        if policy.dedupe and dedupe_key:
            if self.state.seen(intent.id, dedupe_key, at - policy.dedupe):
                return refuse("suppressed", "dedupe",
                              f"duplicate of dedupe key {dedupe_key!r} within {_human(policy.dedupe)}")
            self.state.mark_seen(intent.id, dedupe_key, at)
        last_active = self.state.last_activity(session, at)
        if policy.suppress_when_active and last_active is not None and at - last_active < policy.active_for:
            return refuse("suppressed", "user_active",
                          f"the user was active {_human(at - last_active)} ago"
                          + (f" in session {session!r}" if session else ""))
        if policy.max_reminders:
            count = self.state.wakes_since(intent.id, session, last_active or 0.0)
            if count >= policy.max_reminders:
                return refuse("suppressed", "max_reminders",
                              f"{count} reminders already sent since the user was last active"
                              f" (max {policy.max_reminders})")
        if policy.cooldown:
            last_wake = self.state.last_wake(intent.id, session)
            if last_wake is not None and at - last_wake < policy.cooldown:
                return refuse("suppressed", "cooldown",
                              f"last wake {_human(at - last_wake)} ago, cooldown {_human(policy.cooldown)}")
        for predicate in policy.condition:
            if not holds(predicate, doc):
                return refuse("suppressed", "condition", f"condition {describe(predicate)} not met")
        if not intent.critical and (spent := self._budget_spent(at)):
            return refuse("outcome", "budget", spent, outcome="skipped")
        if intent.judge is not None:
            judgment = await self._judged(intent, item, doc, at, events)
            if judgment.failure is not None and intent.judge.on_failure == "skip":
                return refuse("suppressed", "judge",
                              f"judge failed ({judgment.failure}); on_failure=skip")
            if judgment.failure is None and not judgment.wake:
                return refuse("suppressed", "judge", f"judge said no: {judgment.reason}")
        rank = _rank(item.priority)
        hours = policy.active_hours
        if hours and not intent.critical and item.priority != "now":
            zone = ZoneInfo(hours.timezone) if hours.timezone else self.zone
            if not in_window(hours, zone, at):
                due = next_window_start(hours, zone, at)
                self._defer(intent, session, rank, due, item.id)
                local = _at(due).astimezone(zone)
                return refuse("deferred", "active_hours",
                              f"outside active hours {hours.start}-{hours.end} {zone.key}",
                              until=local.isoformat(), zone=zone.key)
        if policy.coalesce and item.priority != "now":
            wake = self.state.open_wake(intent.id, session, "coalescing")
            if wake is not None:
                self.state.extend_pending(wake, item.id, rank)
                return refuse("coalesced", "coalesce",
                              f"joined a wake with {len(wake.interrupts)} earlier event(s)",
                              due=_at(wake.due).isoformat())
            self.state.add_pending(intent.id, session, rank, "coalescing", at + policy.coalesce,
                                   [item.id], intent.critical)
            events.append(Event("coalesced", when, item.id, intent.id, item.type, {
                "rule": "coalesce",
                "reason": f"collecting matching events for {_human(policy.coalesce)}",
                "due": _at(at + policy.coalesce).isoformat()}))
            self._decided(item.id, intent.id, "pending", "coalescing")
            return None
        self.state.add_pending(intent.id, session, rank, "ready", at, [item.id], intent.critical)
        self._decided(item.id, intent.id, "pending", "ready")
        return None

    def _defer(self, intent: Intent, session: str, rank: int, due: float, interrupt: str) -> None:
        """Everything deferred to the same window start becomes one wake then."""
        wake = self.state.open_wake(intent.id, session, "deferred")
        if wake is not None and wake.due == due:
            self.state.extend_pending(wake, interrupt, rank)
        else:
            self.state.add_pending(
                intent.id, session, rank, "deferred", due, [interrupt], intent.critical
            )

    async def _judged(
        self, intent: Intent, item: InboxItem, doc: dict[str, Any], at: float,
        events: list[Event],
    ) -> Judgment:
        judge = _judge_of(intent)
        key = doc.get("dedupe_key") or item.id
        cached = self.state.cached_verdict(intent.id, key, at - judge.cache)
        if cached is not None:
            judgment = Judgment(wake=cached["wake"], reason=cached["reason"])
            events.append(Event("judged", _at(at), item.id, intent.id, item.type,
                                {**judgment.to_dict(), "cached": True}))
            return judgment
        # The judge may take seconds: do not hold the write lock meanwhile.
        self.state.db.commit()
        try:
            judgment = await self.judge(intent, minimal_doc(doc))
        finally:
            self.state.db.begin()
        if judgment.tokens:
            self.state.spend(self.day_of(at), tokens=judgment.tokens)
        if judgment.failure is None:
            self.state.cache_verdict(intent.id, key, at, {"wake": judgment.wake, "reason": judgment.reason})
        events.append(Event("judged", _at(at), item.id, intent.id, item.type, judgment.to_dict()))
        return judgment

    def day_of(self, at: float) -> str:
        return datetime.fromtimestamp(at, self.zone).date().isoformat()

    def _budget_spent(self, at: float) -> str | None:
        settings = self.intents.settings
        wakes, tokens = self.state.budget(self.day_of(at))
        if settings.wakes_per_day and wakes >= settings.wakes_per_day:
            return f"daily wake budget exhausted ({wakes}/{settings.wakes_per_day})"
        if settings.tokens_per_day and tokens >= settings.tokens_per_day:
            return f"daily token budget exhausted ({tokens}/{settings.tokens_per_day})"
        return None

    def _decided(self, interrupt: str, intent: str | None, outcome: str, reason: str) -> None:
        if self.keep_decisions:
            self.decisions.append(Decision(interrupt, intent, outcome, reason))

    # -- waking -----------------------------------------------------------------------

    def dispatch_due(self, now: datetime | None = None) -> int:
        """Dispatch every wake due at ``now`` (default: the clock); returns how many."""
        events: list[Event] = []
        with self._batch(events):
            count = self._dispatch_due(_epoch(now or self.clock()), events)
        return count

    def _dispatch_due(self, now: float, events: list[Event]) -> int:
        due = self.state.due_wakes(now)
        for wake in due:
            self._dispatch(wake, events)
        return len(due)

    def _dispatch(self, wake: PendingWake, events: list[Event]) -> None:
        at = wake.due  # logical time: the moment it was due
        when = _at(at)
        self.state.remove_pending(wake.seq)
        intent = self.intents.get(wake.intent)
        if intent is None:
            for interrupt in wake.interrupts:
                events.append(Event("outcome", when, interrupt, wake.intent, None, {
                    "outcome": "skipped", "rule": "intent_removed",
                    "reason": "the intent was removed before the wake was due"}))
                self._decided(interrupt, wake.intent, "skipped", "intent removed")
            return
        if not wake.critical and (spent := self._budget_spent(at)):
            for interrupt in wake.interrupts:
                events.append(Event("outcome", when, interrupt, wake.intent, None, {
                    "outcome": "skipped", "rule": "budget", "reason": spent}))
                self._decided(interrupt, wake.intent, "skipped", spent)
            return
        disabled = self.deliveries.disabled(intent.id) if intent.route.kind != "record" else None
        if disabled is not None:
            # kept as a given-up delivery, for `mailslot deliveries retry` once it is back
            reason = f"route {intent.route.kind} disabled: {disabled}"
            key, _ = self._enqueue(intent, wake, at, skipped=reason)
            for interrupt in wake.interrupts:
                events.append(Event("outcome", when, interrupt, wake.intent, None, {
                    "outcome": "skipped", "rule": "route_disabled", "reason": reason,
                    "delivery": key}))
                self._decided(interrupt, wake.intent, "skipped", "route disabled")
            return
        self.state.spend(self.day_of(at), wakes=1)
        self.state.add_wake(wake.intent, wake.session, at)
        self._woken.append(wake)
        detail: dict[str, Any] = {
            "route": intent.route.kind, "wake": wake.seq, "events": len(wake.interrupts),
            "priority": ("now", "next", "later")[wake.rank], "kind": wake.kind}
        if intent.route.kind != "record":
            detail["delivery"], detail["permissions"] = self._enqueue(intent, wake, at)
        for interrupt in wake.interrupts:
            events.append(Event("woken", when, interrupt, wake.intent, None, detail))
            if intent.route.kind == "record":  # recorded is delivered: agents pull it
                events.append(Event("delivered", when, interrupt, wake.intent, None,
                                    {"route": "record"}))
                events.append(Event("outcome", when, interrupt, wake.intent, None,
                                    {"outcome": "ok"}))
            self._decided(interrupt, wake.intent, "woken", wake.kind)

    def _enqueue(self, intent: Intent, wake: PendingWake, at: float,
                 skipped: str | None = None) -> tuple[str, dict[str, Any]]:
        """Queue the wake for its runtime, with the minimal context and the permission
        envelope, in the wake's own transaction; returns the delivery key and envelope."""
        docs = self._documents(wake.interrupts)
        envelope = permission_envelope(intent, [d.get("permissions") for d in docs], _at(at))
        first = docs[0].get("type", "an interrupt") if docs else "an interrupt"
        wake_doc = {
            # a one-line summary: what text-only runtimes (OpenClaw's /hooks/wake) show
            "text": f"mailslot: intent {intent.id} woke you for {first}"
                    + (f" and {len(docs) - 1} more" if len(docs) > 1 else ""),
            "wake": {"intent": intent.id, "description": intent.description,
                     "session": wake.session or None,
                     "priority": ("now", "next", "later")[wake.rank], "events": len(docs),
                     "at": _at(at).isoformat()},
            "interrupts": docs,
            "permissions": envelope,
        }
        key = new_delivery_key()
        self.deliveries.enqueue(
            wake=wake.seq, intent=intent.id, route=intent.route.model_dump(mode="json"),
            session=wake.session, interrupts=wake.interrupts, permissions=envelope,
            wake_doc=wake_doc, at=at, key=key, skipped=skipped,
        )
        self.queued.set()
        return key, envelope

    def _documents(self, interrupts: list[str]) -> list[dict[str, Any]]:
        docs = []
        for interrupt in interrupts:
            item = self.inbox.get(interrupt) if self.inbox is not None else None
            docs.append(minimal_doc(interrupt_doc(item)) if item else {"id": interrupt})
        return docs

    # -- outside reports --------------------------------------------------------------

    def report_activity(self, session: str, at: datetime) -> None:
        """The user is here (in ``session``, or everywhere for ''): due wakes first, so
        the order of time holds, then the report."""
        events: list[Event] = []
        with self._batch(events):
            self._dispatch_due(_epoch(at), events)
            record_activity(self.state, events, session, at)


    # -- the daemon loop --------------------------------------------------------------

    def offer(self, items: list[InboxItem]) -> None:
        """Interrupts just committed to the inbox (``Inbox.commit``), in ``seq`` order,
        so that ``catch_up`` decides them without reading them back. Only a shortcut: the
        inbox stays the source of truth. ``catch_up`` uses offered items only while they
        continue its cursor exactly (the next ``seq``, then consecutive ones), so rows
        written by others (local watches, another process), items offered twice or late,
        and a restart (nothing offered) all fall back to reading the inbox."""
        if len(self._offered) + len(items) <= OFFERED_MAX:
            self._offered.extend(items)

    def _take_offered(self, cursor: int) -> list[InboxItem]:
        """The offered items that continue ``cursor`` without a gap (up to ``BATCH``);
        those at or below it were decided already and are dropped."""
        offered = self._offered
        while offered and offered[0].seq <= cursor:
            offered.popleft()
        items: list[InboxItem] = []
        while offered and offered[0].seq == cursor + 1 and len(items) < BATCH:
            cursor += 1
            items.append(offered.popleft())
        return items

    async def catch_up(self) -> int:
        """Decide everything stored in the inbox since the cursor; returns how many."""
        inbox = self.inbox
        assert inbox is not None, "an engine built without an inbox has nothing to catch up from"
        done = 0
        while True:
            cursor = self.state.cursor
            items = self._take_offered(cursor)
            if not items:
                items = await asyncio.to_thread(inbox.after, cursor, BATCH)
            if not items:
                return done
            await self.decide(items)
            done += len(items)

    async def run(self, arrived: asyncio.Event, stop: asyncio.Event) -> None:
        """Decide new interrupts as they arrive and dispatch wakes when due. Sleeps on
        the arrival event and a timer for the next due wake: nothing polls."""
        while not stop.is_set():
            arrived.clear()
            await self.catch_up()
            self.dispatch_due()
            next_due = self.state.next_due()
            timeout = None if next_due is None else max(0.0, next_due - _epoch(self.clock()))
            await first_of(arrived.wait(), stop.wait(), timeout=timeout)


def record_activity(state: EngineState, events: list[Event], session: str, at: datetime) -> None:
    state.report_activity(session, _epoch(at))
    events.append(Event("activity", at, None, None, None, {"session": session}))


def _judge_of(intent: Intent) -> Any:
    assert intent.judge is not None
    return intent.judge


def _rank(priority: str) -> int:
    return {"now": 0, "next": 1, "later": 2}.get(priority, 1)


def _human(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
