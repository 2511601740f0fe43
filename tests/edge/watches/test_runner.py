"""The watch runner on real files (SQLite inbox and watch state, real subprocesses) with
time in the test's hands: nothing here waits for real hours."""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from engine_support import ME, at

from edge.intents.declarations import Declarations
from edge.store.activity import Event
from edge.store.enginestate import PendingWake
from edge.store.inbox import Inbox
from edge.store.watchstate import WatchState
from edge.watches.events import LocalRaiser
from edge.watches.runner import WatchRunner

T0 = at("2026-11-24 08:00", "Europe/Berlin")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Rig:
    """A runner, its state file and its inbox; ``restart`` reopens from the files."""

    def __init__(self, root: Path, watches: list[dict[str, Any]], **settings: Any) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.clock = Clock(T0)
        self.inbox = Inbox.open(root / "inbox.sqlite3")
        self.records: list[Event] = []
        self.activity: dict[str, float] = {}
        self.declarations = Declarations.model_validate(
            {"settings": {"timezone": "Europe/Berlin", **settings}, "watches": watches}
        )
        self.runner = self._runner()

    def _runner(self) -> WatchRunner:
        runner = WatchRunner(
            WatchState.open(self.root / "watches.sqlite3"),
            LocalRaiser(ME, self.inbox, clock=self.clock),
            self.records.extend,
            last_activity=lambda session, _at: self.activity.get(session),
            clock=self.clock,
            rng=random.Random(1),
        )
        runner.set_declarations(self.declarations, self.clock())
        return runner

    def restart(self) -> None:
        self.runner.state.close()
        self.runner = self._runner()

    async def at(self, moment: datetime) -> int:
        self.clock.now = moment
        return await self.runner.run_due(moment)

    def raised(self, kind: str | None = None) -> list[Any]:
        items = self.inbox.list(state=None, limit=10_000)
        return [i for i in sorted(items, key=lambda i: i.seq)
                if kind is None or i.source_kind == kind]

    def close(self) -> None:
        self.runner.state.close()
        self.inbox.close()


@pytest.fixture
def rig(tmp_path: Path):
    made: list[Rig] = []

    def make(watches: list[dict[str, Any]], **settings: Any) -> Rig:
        r = Rig(tmp_path / f"rig{len(made)}", watches, **settings)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def local(text: str) -> datetime:
    return at(text, "Europe/Berlin")


async def test_cron_in_berlin_fires_at_wall_clock_times_across_dst(rig) -> None:
    r = rig([{"id": "standup", "kind": "timer",
              "schedule": {"cron": "30 9 * * *", "timezone": "Europe/Berlin"}}])
    r.clock.now = local("2026-03-27 12:00")
    r.runner.set_declarations(r.declarations, r.clock())
    r.runner.state.upsert("standup", "timer", next_run=local("2026-03-28 09:30"))
    fired = []
    for day in ("2026-03-28", "2026-03-29", "2026-03-30"):  # spring forward on the 29th
        moment = local(f"{day} 09:30")
        assert r.runner.next_due() == moment
        await r.at(moment)
        fired.append(r.raised("timer")[-1].created_at)
    assert [f.astimezone(UTC).hour for f in fired] == [8, 7, 7]  # CET, then CEST
    r.runner.state.upsert("standup", "timer", next_run=local("2026-10-24 09:30"))
    for day in ("2026-10-24", "2026-10-25", "2026-10-26"):  # fall back on the 25th
        moment = local(f"{day} 09:30")
        assert r.runner.next_due() == moment
        await r.at(moment)
    assert [i.created_at.astimezone(UTC).hour for i in r.raised("timer")[3:]] == [7, 8, 8]


async def test_after_an_8_hour_sleep_catch_up_fires_once(rig) -> None:
    r = rig([{"id": "q", "kind": "timer", "schedule": {"cron": "*/15 * * * *"}},
             {"id": "skip", "kind": "timer",
              "schedule": {"cron": "*/15 * * * *", "catch_up": "skip"}}])
    await r.at(T0 + timedelta(minutes=15))
    assert len(r.raised("timer")) == 2
    await r.at(T0 + timedelta(hours=8, minutes=7))  # the laptop slept through 32 runs
    fired = r.raised("timer")
    assert len(fired) == 3 and fired[-1].source_name == "q"
    assert fired[-1].payload["caught_up"] is True
    assert r.runner.next_due() == T0 + timedelta(hours=8, minutes=15)


async def test_restart_fires_nothing_twice(rig) -> None:
    r = rig([{"id": "t", "kind": "timer", "schedule": {"every": "10m"}}])
    await r.at(T0 + timedelta(minutes=10))
    r.restart()
    assert await r.at(T0 + timedelta(minutes=10)) == 0
    await r.at(T0 + timedelta(minutes=20))
    assert len(r.raised("timer")) == 2
    row = r.runner.state.get("t")
    assert row is not None and row.next_run == T0 + timedelta(minutes=30)


async def test_absence_fires_once_then_rearms_on_a_matching_event(rig) -> None:
    r = rig([{"id": "backup", "kind": "absence", "within": "26h",
              "match": {"type": "backup.done"}}])
    await r.at(T0 + timedelta(hours=25))
    assert r.raised("absence") == []
    await r.at(T0 + timedelta(hours=26))
    await r.at(T0 + timedelta(hours=60))
    assert len(r.raised("absence")) == 1  # once, not every tick of the clock
    assert r.runner.next_due() is None
    # the backup reports in: re-armed for 26 h after that
    r.clock.now = T0 + timedelta(hours=61)
    LocalRaiser(ME, r.inbox, clock=r.clock).raise_event("timer", "backup", "backup.done", {})
    r.runner.observe(r.inbox.after(0))
    assert r.runner.next_due() == T0 + timedelta(hours=61 + 26)
    await r.at(T0 + timedelta(hours=61 + 26))
    assert len(r.raised("absence")) == 2


async def test_tick_budget_exhausted_then_rearmed(rig) -> None:
    r = rig([{"id": "tick", "kind": "tick", "session": "api", "every": "1h",
              "jitter_pct": 0, "daily_budget": 2}])
    for hour in range(1, 5):
        await r.at(T0 + timedelta(hours=hour))
    assert [i.type for i in r.raised("tick")] == ["tick.fired"] * 2  # <kind>.<event>
    skipped = [e for e in r.records if e.step == "watch_skipped"]
    assert len(skipped) == 2 and "budget" in skipped[0].detail["reason"]
    assert r.runner.state.counters()["tick.fired"] == 2
    await r.at(local("2026-11-25 00:30"))  # a new local day: re-armed, fires again
    assert len(r.raised("tick")) == 3


async def test_ticks_stop_when_the_session_is_idle(rig) -> None:
    r = rig([{"id": "tick", "kind": "tick", "session": "api", "every": "1h",
              "jitter_pct": 0, "max_idle": "2h"}])
    r.activity["api"] = T0.timestamp()
    await r.at(T0 + timedelta(hours=1))
    await r.at(T0 + timedelta(hours=2))
    await r.at(T0 + timedelta(hours=3))
    assert len(r.raised("tick")) == 2


async def test_sleep_ends_with_a_tick_or_is_interrupted(rig) -> None:
    r = rig([])
    state = r.runner.state
    state.start_sleep("api", "waiting for CI", T0, T0 + timedelta(minutes=20))
    await r.at(T0 + timedelta(minutes=19))
    assert r.raised("sleep") == []
    await r.at(T0 + timedelta(minutes=20))
    (tick,) = r.raised("sleep")
    assert tick.session == "api" and tick.payload["reason"] == "waiting for CI"
    assert tick.payload["elapsed_s"] == 1200
    # a real interrupt woken for that session ends the next sleep at once
    state.start_sleep("api", "nap", T0 + timedelta(hours=1), T0 + timedelta(hours=3))
    r.clock.now = T0 + timedelta(hours=1, minutes=5)
    r.runner.woken(PendingWake(1, "ci", "api", 0, "ready", 0.0, ["01JINTERRUPT00000000000000"], False))
    assert state.active_sleep("api") is None
    assert state.counters()["sleep.interrupted"] == 1
    assert [e.step for e in r.records][-1] == "sleep_interrupted"
    await r.at(T0 + timedelta(hours=3))
    assert len(r.raised("sleep")) == 1  # no tick for an interrupted sleep


async def test_command_watch_fires_on_change_and_a_broken_watch_spares_the_others(
    rig, tmp_path: Path
) -> None:
    status = tmp_path / "status.txt"
    status.write_text("green")
    r = rig([
        {"id": "ci", "kind": "command", "schedule": {"every": "5m"},
         "argv": [sys.executable, "-c", f"print(open({str(status)!r}).read())"]},
        {"id": "hang", "kind": "command", "schedule": {"every": "5m"}, "timeout": "0.3s",
         "argv": [sys.executable, "-c", "import time; time.sleep(30)"]},
    ])
    await r.at(T0 + timedelta(minutes=5))   # baseline
    await r.at(T0 + timedelta(minutes=10))  # unchanged
    status.write_text("red")
    await r.at(T0 + timedelta(minutes=15))  # changed: fires
    await r.at(T0 + timedelta(minutes=20))  # unchanged again
    fired = r.raised("command")
    assert len(fired) == 1 and "red" in fired[0].payload["output"]
    hang = r.runner.state.get("hang")
    assert hang is not None and "timed out" in str(hang.last_result)
    assert hang.next_run == T0 + timedelta(minutes=25)  # still scheduled
    errors = [e for e in r.records if e.step == "watch_error"]
    assert len(errors) == 4 and all(e.detail["watch"] == "hang" for e in errors)


async def test_removed_and_paused_watches(rig) -> None:
    r = rig([{"id": "a", "kind": "timer", "schedule": {"every": "1m"}},
             {"id": "b", "kind": "timer", "schedule": {"every": "1m"}, "paused": True}])
    await r.at(T0 + timedelta(minutes=1))
    assert [i.source_name for i in r.raised("timer")] == ["a"]
    r.runner.set_declarations(Declarations.model_validate({"watches": []}), r.clock())
    states = {row.id: row.state for row in r.runner.state.rows()}
    assert states == {"a": "cancelled", "b": "cancelled"}
    assert await r.at(T0 + timedelta(minutes=2)) == 0
