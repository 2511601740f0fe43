"""Runs the declared watches inside the edge daemon and raises their local interrupts.

One loop for everything that happens in time: timers, command runs, absence deadlines,
ticks and the end of agent-requested sleeps. It sleeps until the earliest due moment
(a timer, not a poll) or until something changes: the declarations are reloaded, an
absence watch is re-armed, or ``mailslot sleep`` pokes it. File watches run beside it on
inotify. Every run's outcome is kept in ``WatchState`` (what ``mailslot watch list``
shows) in the same transaction that moves the schedule forward, so after a restart no
schedule fires twice and none is forgotten; a machine that slept through schedules gets
each missed one once (``catch_up = "once"``) or not at all (``"skip"``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.engine.decide import Recorder, interrupt_doc
from edge.fswatch import FsWatch, FsWatchService
from edge.intents.declarations import (
    AbsenceWatch,
    CommandWatch,
    Declarations,
    FileWatch,
    TickWatch,
    TimerWatch,
)
from edge.intents.model import matches
from edge.store.activity import Event
from edge.store.enginestate import PendingWake
from edge.store.inbox import InboxItem
from edge.store.watchstate import WatchRow, WatchState
from edge.watches.commands import run_command
from edge.watches.events import LocalRaiser
from edge.watches.fileevents import FileEvent
from edge.watches.files import FileWatcher
from edge.watches.timing import catch_up, jittered, local_day, next_run, next_tick
from shared.host.waiting import first_of, settle

log = logging.getLogger("mailslot.edge.watches")

AnyWatch = FileWatch | CommandWatch | TimerWatch | AbsenceWatch | TickWatch
#: The last activity report for a session at or before a time (epoch seconds), or None.
ActivityFn = Callable[[str, float], float | None]


class WatchRunner:
    """Runs the declared watches: ``set_declarations`` whenever ``intents.toml`` was
    (re)loaded, then ``await run(stop)``. Interrupts go out through ``raiser``, what
    happened to ``record`` (the activity log); the runtime rows live in ``state``."""

    def __init__(
        self,
        state: WatchState,
        raiser: LocalRaiser,
        record: Recorder,
        *,
        last_activity: ActivityFn = lambda _session, _at: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        poke_file: Path | None = None,
        fs: FsWatchService | None = None,
    ) -> None:
        """``fs``: the process's file-system watcher (the daemon's one), shared by the
        file watches and the poke file; without it each watch has its own."""
        self.state = state
        self.raiser = raiser
        self.record = record
        self.last_activity = last_activity
        self.clock = clock
        self.rng = rng or random.Random()
        self.poke_file = poke_file
        self.declarations = Declarations()
        self.changed = asyncio.Event()
        self.fs = fs
        self.files = FileWatcher(self._file_event, fs)

    # -- definitions ----------------------------------------------------------------

    def set_declarations(self, declarations: Declarations, now: datetime | None = None) -> None:
        """Bring the runtime rows in line with the declared watches: new ones are
        scheduled, paused ones marked, removed ones cancelled; existing schedules kept."""
        now = now or self.clock()
        self.declarations = declarations
        declared = {w.id: w for w in declarations.watches}
        with self.state.transaction():
            for row in self.state.rows():
                if row.id not in declared and row.state != "cancelled":
                    self.state.cancel(row.id)
            for watch in declarations.watches:
                self._sync(watch, self.state.get(watch.id), now)
        self.files.set_watches([w for w in declarations.watches if isinstance(w, FileWatch)])
        self.changed.set()

    def _sync(self, watch: AnyWatch, row: WatchRow | None, now: datetime) -> None:
        state = "paused" if watch.paused else "active"
        if row is not None and row.kind == watch.kind and row.state != "cancelled":
            if row.state != state:
                self.state.upsert(watch.id, watch.kind, state=state)
            if row.next_run is None and isinstance(watch, TickWatch | CommandWatch | TimerWatch):
                self.state.upsert(watch.id, watch.kind, next_run=self._first_run(watch, now))
            return
        self.state.upsert(
            watch.id, watch.kind, state=state, next_run=self._first_run(watch, now),
            data={"armed_at": now.isoformat()} if isinstance(watch, AbsenceWatch) else {},
        )

    def _first_run(self, watch: AnyWatch, now: datetime) -> datetime | None:
        if isinstance(watch, TimerWatch | CommandWatch):
            first = next_run(watch.schedule, now, self.declarations.settings.timezone)
            return jittered(first, watch.schedule.jitter, self.rng) if first else None
        if isinstance(watch, AbsenceWatch):
            return now + timedelta(seconds=watch.within)
        if isinstance(watch, TickWatch):
            return self._next_tick(watch, now)
        return None  # file watches run on inotify, not on a schedule

    # -- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self.files.run(stop), name="file-watches")]
        if self.poke_file is not None:
            tasks.append(asyncio.create_task(self._watch_pokes(stop), name="pokes"))
        try:
            while not stop.is_set():
                self.changed.clear()
                await self.run_due(self.clock())
                due = self.next_due()
                timeout = None if due is None else max(0.0, (due - self.clock()).total_seconds())
                await first_of(self.changed.wait(), stop.wait(), timeout=timeout)
        finally:
            for task in tasks:
                task.cancel()
            await settle(list(tasks))

    async def _watch_pokes(self, stop: asyncio.Event) -> None:
        """``mailslot sleep`` and approval decisions (other processes) touch the poke file
        after they wrote: this loop's timer is re-armed and the engine looks at the inbox
        (a decision raises an interrupt there); inotify, no polling."""
        assert self.poke_file is not None
        name = self.poke_file.name
        async with FsWatch(self.poke_file.parent, recursive=False, step_ms=500, stop=stop,
                           accept=lambda _change, path: Path(path).name == name,
                           service=self.fs) as pokes:
            while await pokes.next() is not None:
                self.changed.set()
                # another process (an approval decision) may have raised an interrupt
                self.raiser.on_new()

    def next_due(self) -> datetime | None:
        moments = [m for m in (self.state.next_due(), self.state.next_sleep_end()) if m]
        return min(moments) if moments else None

    async def run_due(self, now: datetime) -> int:
        """Run everything due at ``now``; returns how many watches and sleeps ran."""
        ran = 0
        for sleep in self.state.due_sleeps(now):
            self._end_sleep(sleep.id, now)
            ran += 1
        for row in self.state.due(now):
            watch = self.declarations.watch(row.id)
            if watch is None or watch.paused:
                continue
            try:
                await self._run(watch, row, now)
            except Exception as exc:  # one broken watch must not stop the others
                log.exception("watch %s failed", watch.id)
                self._log("watch_error", now, watch, reason=f"{type(exc).__name__}: {exc}")
                self.state.upsert(watch.id, watch.kind, last_run=now, next_run=None,
                                  last_result={"error": str(exc)})
            ran += 1
        return ran

    async def _run(self, watch: AnyWatch, row: WatchRow, now: datetime) -> None:
        if isinstance(watch, TimerWatch):
            self._run_timer(watch, row, now)
        elif isinstance(watch, CommandWatch):
            await self._run_command(watch, row, now)
        elif isinstance(watch, AbsenceWatch):
            self._run_absence(watch, row, now)
        elif isinstance(watch, TickWatch):
            self._run_tick(watch, row, now)

    # -- kinds ----------------------------------------------------------------------

    def _scheduled(self, watch: TimerWatch | CommandWatch, row: WatchRow, now: datetime
                   ) -> tuple[bool, datetime | None, bool]:
        """Whether to run now, the next run, and whether this run catches up."""
        assert row.next_run is not None
        zone = self.declarations.settings.timezone
        fire, following = catch_up(watch.schedule, row.next_run, now, zone)
        if following is not None:
            following = jittered(following, watch.schedule.jitter, self.rng)
        late = (now - row.next_run).total_seconds() > 60
        return fire, following, late

    def _run_timer(self, watch: TimerWatch, row: WatchRow, now: datetime) -> None:
        fire, following, late = self._scheduled(watch, row, now)
        result: dict[str, Any] = {"fired": fire, "scheduled_for": row.next_run.isoformat()
                                  if row.next_run else None, "caught_up": late}
        with self.state.transaction():
            if fire:
                self._raise(watch, "timer", watch.type or "timer.fired", now, result)
            else:
                self._log("watch_skipped", now, watch, reason="missed while asleep; catch_up=skip")
            self.state.upsert(watch.id, watch.kind, last_run=now, next_run=following,
                              last_result=result)

    async def _run_command(self, watch: CommandWatch, row: WatchRow, now: datetime) -> None:
        fire, following, late = self._scheduled(watch, row, now)
        if not fire:
            with self.state.transaction():
                self._log("watch_skipped", now, watch, reason="missed while asleep; catch_up=skip")
                self.state.upsert(watch.id, watch.kind, next_run=following)
            return
        previous = row.data.get("output_hash")
        result = await run_command(watch, previous)
        summary = {**result.payload(), "fired": result.fire, "reason": result.reason}
        data = dict(row.data)
        if result.error is None:
            data["output_hash"] = result.output_hash
        with self.state.transaction():
            if result.error is not None:
                self._log("watch_error", now, watch, reason=result.error)
            elif result.fire:
                kind = {"change": "changed", "exit_code": "exit_code",
                        "condition": "condition"}[watch.fire_on]
                self._raise(watch, "command", watch.type or f"command.{kind}", now,
                            {**result.payload(), "caught_up": late})
            self.state.upsert(watch.id, watch.kind, last_run=now, next_run=following,
                              last_result=summary, data=data)

    def _run_absence(self, watch: AbsenceWatch, row: WatchRow, now: datetime) -> None:
        payload = {"within_s": watch.within, "last_seen": row.data.get("last_seen"),
                   "armed_at": row.data.get("armed_at")}
        with self.state.transaction():
            self._raise(watch, "absence", watch.type or "absence.timeout", now, payload)
            # disarmed until the next matching event re-arms it
            self.state.upsert(watch.id, watch.kind, last_run=now, next_run=None,
                              last_result={"fired": True})

    def _run_tick(self, watch: TickWatch, row: WatchRow, now: datetime) -> None:
        following = self._next_tick(watch, now)
        skip = self._tick_refusal(watch, now)
        with self.state.transaction():
            if skip is not None:
                self._log("watch_skipped", now, watch, reason=skip)
                result: dict[str, Any] = {"fired": False, "reason": skip}
            else:
                day = local_day(now, self.declarations.settings.timezone)
                used = self.state.spend_tick(watch.session, day)
                self.state.incr("tick.fired")
                result = {"fired": True, "today": used}
                self._raise(watch, "tick", watch.type or "tick.fired", now,
                            {"session": watch.session, "every_s": watch.every, "today": used})
            self.state.upsert(watch.id, watch.kind, last_run=now, next_run=following,
                              last_result=result)

    def _tick_refusal(self, watch: TickWatch, now: datetime) -> str | None:
        if self.state.active_sleep(watch.session) is not None:
            return "the session is asleep"
        if watch.max_idle:
            last = self.last_activity(watch.session, now.timestamp())
            if last is None or now.timestamp() - last > watch.max_idle:
                return f"the session has been idle longer than {watch.max_idle:g}s"
        if watch.daily_budget:
            day = local_day(now, self.declarations.settings.timezone)
            if self.state.ticks_used(watch.session, day) >= watch.daily_budget:
                return f"daily tick budget exhausted ({watch.daily_budget})"
        return None

    def _next_tick(self, watch: TickWatch, after: datetime) -> datetime:
        following, snapped = next_tick(watch, after, self.rng)
        if snapped:
            self.state.incr("cache_aware.snapped")
        return following

    # -- events from elsewhere ------------------------------------------------------

    def _file_event(self, event: FileEvent) -> None:
        watch, now = event.watch, self.clock()
        with self.state.transaction():
            self._raise(watch, "file", event.event_type(), now, event.payload())
            self.state.upsert(watch.id, watch.kind, last_run=now,
                              last_result={"fired": True, "changes": len(event.changes)})

    def observe(self, items: list[InboxItem]) -> None:
        """Absence watches: every matching interrupt re-arms the deadline."""
        absences = [w for w in self.declarations.watches
                    if isinstance(w, AbsenceWatch) and not w.paused]
        if not absences:
            return
        rearmed = False
        with self.state.transaction():
            for item in items:
                if item.source_kind == "absence":
                    continue
                doc = interrupt_doc(item)
                for watch in absences:
                    if matches(watch.match, doc) is None:
                        row = self.state.get(watch.id)
                        data = dict(row.data) if row else {}
                        data["last_seen"] = item.received_at.isoformat()
                        self.state.upsert(
                            watch.id, watch.kind, data=data,
                            next_run=item.received_at + timedelta(seconds=watch.within),
                        )
                        rearmed = True
        if rearmed:
            self.changed.set()

    def woken(self, wake: PendingWake) -> None:
        """A real interrupt woke a sleeping session (or anything woke during a sleep for
        no session in particular): the sleep ends now, interrupted."""
        sleep = self.state.active_sleep(wake.session)
        if sleep is None and wake.session:
            sleep = self.state.active_sleep("")  # a sleep for no session in particular
        if sleep is None:
            return
        now = self.clock()
        with self.state.transaction():
            self.state.end_sleep(sleep.id, "interrupted", now)
            self.state.incr("sleep.interrupted")
        self.record([Event("sleep_interrupted", now, wake.interrupts[0], wake.intent, None, {
            "session": wake.session, "reason": sleep.reason,
            "slept_s": round((now - sleep.started).total_seconds(), 1),
            "interrupts": wake.interrupts})])
        self.changed.set()

    def _end_sleep(self, sleep_id: int, now: datetime) -> None:
        with self.state.transaction():
            sleep = self.state.end_sleep(sleep_id, "ended", now)
            if sleep is None:
                return
            elapsed = (now - sleep.started).total_seconds()
            interrupt = self.raiser.raise_event(
                "sleep", "sleep", "sleep.ended",
                {"reason": sleep.reason, "elapsed_s": round(elapsed, 1),
                 "requested_s": round((sleep.ends - sleep.started).total_seconds(), 1)},
                session=sleep.session or None, at=now,
            )
        self.record([Event("sleep_ended", now, interrupt, None, "sleep.ended",
                           {"session": sleep.session, "reason": sleep.reason})])

    # -- plumbing -------------------------------------------------------------------

    def _raise(self, watch: AnyWatch, kind: str, type_: str, now: datetime,
               payload: dict[str, Any]) -> str:
        interrupt = self.raiser.raise_event(
            kind, watch.id, type_, payload, priority=watch.priority, session=watch.session,
            at=now,
        )
        self._log("watch_fired", now, watch, interrupt=interrupt, type_=type_)
        return interrupt

    def _log(self, step: str, now: datetime, watch: AnyWatch, *, interrupt: str | None = None,
             type_: str | None = None, **detail: Any) -> None:
        self.record([Event(step, now, interrupt, None, type_,
                           {"watch": watch.id, "kind": watch.kind, **detail})])
