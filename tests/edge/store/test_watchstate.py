"""The watches' durable state on real SQLite files, with times passed in (no clock): round
trips, partial updates, what is due, sleeps, tick budgets, and restarts that neither
forget nor repeat a run."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.errors import InboxError
from edge.intents.declarations import Schedule
from edge.store.watchstate import Sleep, WatchRow, WatchState
from edge.watches.timing import catch_up, next_run

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "watches.sqlite3"


@pytest.fixture
def state(path: Path) -> Iterator[WatchState]:
    opened = WatchState.open(path)
    yield opened
    opened.close()


def mode(target: Path) -> int:
    return stat.S_IMODE(target.stat().st_mode)


# -- the file ---------------------------------------------------------------------------


def test_file_is_private_wal_and_synchronous_full(path: Path) -> None:
    old = os.umask(0o022)
    try:
        with WatchState.open(path) as state:
            state.incr("x")  # a write, so that -wal and -shm exist
            assert mode(path) == 0o600
            assert mode(path.parent) == 0o700
            for suffix in ("-wal", "-shm"):
                assert mode(path.with_name(path.name + suffix)) == 0o600
            assert state.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert state.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        os.umask(old)


def test_an_existing_file_is_tightened(path: Path) -> None:
    WatchState.open(path).close()
    os.chmod(path, 0o644)
    WatchState.open(path).close()
    assert mode(path) == 0o600


def test_sqlite_errors_are_translated(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database, not at all" * 100)
    with pytest.raises(InboxError, match=r"garbage\.sqlite3"):
        WatchState.open(garbage)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(InboxError, match="cannot open watch state"):
        WatchState.open(blocked / "watches.sqlite3")


def test_memory_works() -> None:
    with WatchState.open(":memory:") as state:
        state.upsert("w", "timer", next_run=at(0))
        assert [r.id for r in state.due(at(0))] == ["w"]


# -- watch rows -------------------------------------------------------------------------


def test_round_trip(state: WatchState) -> None:
    berlin = datetime(2026, 5, 1, 10, 0, 0, 123456, tzinfo=ZoneInfo("Europe/Berlin"))
    row = state.upsert(
        "nightly",
        "command",
        state="paused",
        last_run=berlin,
        next_run=berlin + timedelta(days=1),
        last_result={"exit": 0, "hash": "ab12", "lines": ["a", "b"]},
        data={"armed": None, "n": 3},
    )
    expected = WatchRow(
        id="nightly",
        kind="command",
        state="paused",
        last_run=datetime(2026, 5, 1, 8, 0, 0, 123456, tzinfo=UTC),
        next_run=datetime(2026, 5, 2, 8, 0, 0, 123456, tzinfo=UTC),
        last_result={"exit": 0, "hash": "ab12", "lines": ["a", "b"]},
        data={"armed": None, "n": 3},
    )
    assert row == expected
    assert state.get("nightly") == expected
    assert row.last_run is not None and row.last_run.tzinfo is UTC
    assert state.get("missing") is None


def test_a_new_row_starts_active_never_run(state: WatchState) -> None:
    assert state.upsert("t", "timer") == WatchRow("t", "timer", "active", None, None, None, {})


def test_rows_are_listed_by_id(state: WatchState) -> None:
    for watch_id in ("c", "a", "b"):
        state.upsert(watch_id, "timer")
    assert [r.id for r in state.rows()] == ["a", "b", "c"]


def test_partial_upserts_keep_the_other_fields(state: WatchState) -> None:
    state.upsert(
        "w", "command", last_run=at(0), next_run=at(15), last_result={"exit": 1}, data={"h": "x"}
    )
    state.upsert("w", "command", state="paused")
    assert state.get("w") == WatchRow(
        "w", "command", "paused", at(0), at(15), {"exit": 1}, {"h": "x"}
    )
    state.upsert("w", "command", last_run=at(15), next_run=at(30))
    assert state.get("w") == WatchRow(
        "w", "command", "paused", at(15), at(30), {"exit": 1}, {"h": "x"}
    )
    state.upsert("w", "command", last_result={"exit": 0}, data={})
    assert state.get("w") == WatchRow("w", "command", "paused", at(15), at(30), {"exit": 0}, {})
    # next_run=None is a value: "no next run" (a one-shot that is done).
    state.upsert("w", "command", next_run=None)
    assert state.get("w") == WatchRow("w", "command", "paused", at(15), None, {"exit": 0}, {})


def test_upsert_refuses_unknown_states_and_naive_times(state: WatchState) -> None:
    with pytest.raises(ValueError, match="unknown watch state"):
        state.upsert("w", "timer", state="sleeping")
    with pytest.raises(ValueError, match="aware"):
        state.upsert("w", "timer", next_run=datetime(2026, 5, 1, 8, 0))
    assert state.get("w") is None  # nothing half-written


def test_cancel_keeps_the_row_without_a_next_run(state: WatchState) -> None:
    state.upsert("w", "timer", last_run=at(0), next_run=at(15))
    assert state.cancel("w") is True
    assert state.get("w") == WatchRow("w", "timer", "cancelled", at(0), None, None, {})
    assert state.cancel("w") is False  # already cancelled
    assert state.cancel("missing") is False
    assert [r.id for r in state.rows()] == ["w"]
    # Declared again: active again.
    state.upsert("w", "timer", state="active", next_run=at(30))
    assert [r.id for r in state.due(at(30))] == ["w"]


def test_due_and_next_due_only_see_active_watches(state: WatchState) -> None:
    state.upsert("late", "timer", next_run=at(10))
    state.upsert("early", "timer", next_run=at(5))
    state.upsert("future", "timer", next_run=at(60))
    state.upsert("paused", "timer", state="paused", next_run=at(1))
    state.upsert("cancelled", "timer", next_run=at(1))
    state.cancel("cancelled")
    state.upsert("never", "tick")  # active, no next run
    assert [r.id for r in state.due(at(10))] == ["early", "late"]  # by next_run
    assert [r.id for r in state.due(at(9))] == ["early"]
    assert state.due(at(4)) == []
    assert state.next_due() == at(5)
    state.upsert("early", "timer", state="paused")
    assert state.next_due() == at(10)


def test_next_due_is_none_without_active_schedules(state: WatchState) -> None:
    assert state.next_due() is None
    state.upsert("p", "timer", state="paused", next_run=at(1))
    assert state.next_due() is None


# -- counters, transactions -------------------------------------------------------------


def test_counters(state: WatchState) -> None:
    assert state.counters() == {}
    state.incr("tick.fired")
    state.incr("tick.fired")
    state.incr("cache_aware.snapped", 5)
    state.incr("sleep.entered")
    assert state.counters() == {"cache_aware.snapped": 5, "sleep.entered": 1, "tick.fired": 2}


def test_a_failed_transaction_changes_nothing(state: WatchState) -> None:
    state.upsert("w", "timer", next_run=at(0))
    with pytest.raises(RuntimeError), state.transaction():
        state.upsert("w", "timer", last_run=at(0), next_run=at(15))
        state.incr("timer.fired")
        raise RuntimeError("the run failed half-way")
    assert state.get("w") == WatchRow("w", "timer", "active", None, at(0), None, {})
    assert state.counters() == {}


def test_a_nested_transaction_rolls_back_alone(state: WatchState) -> None:
    with state.transaction():
        state.incr("outer")
        with pytest.raises(RuntimeError), state.transaction():
            state.incr("inner")
            raise RuntimeError
        state.incr("outer")
    assert state.counters() == {"outer": 2}


# -- sleeps -----------------------------------------------------------------------------


def test_sleep_lifecycle(state: WatchState) -> None:
    first = state.start_sleep("main", "waiting for CI", at(0), at(30))
    assert first == Sleep(first.id, "main", "waiting for CI", at(0), at(30), "sleeping", None)
    assert state.active_sleep("main") == first
    assert state.active_sleep("other") is None
    assert state.next_sleep_end() == at(30)
    assert state.due_sleeps(at(29)) == []
    assert state.due_sleeps(at(30)) == [first]

    ended = state.end_sleep(first.id, "ended", at(30))
    assert ended == Sleep(first.id, "main", "waiting for CI", at(0), at(30), "ended", at(30))
    assert state.end_sleep(first.id, "interrupted", at(31)) is None  # idempotent
    assert state.end_sleep(9999, "ended", at(31)) is None
    assert state.active_sleep("main") is None
    assert state.next_sleep_end() is None

    second = state.start_sleep("main", "nap", at(40), at(100))
    woken = state.end_sleep(second.id, "interrupted", at(45))
    assert woken is not None and (woken.state, woken.ended_at) == ("interrupted", at(45))
    assert [s.id for s in state.sleeps()] == [first.id, second.id]
    assert state.sleeps("interrupted") == [woken]
    assert state.sleeps("sleeping") == []


def test_a_new_sleep_ends_the_sessions_earlier_one(state: WatchState) -> None:
    old = state.start_sleep("main", "long", at(0), at(600))
    elsewhere = state.start_sleep("other", "unrelated", at(0), at(600))
    new = state.start_sleep("main", "shorter", at(10), at(20))
    assert state.active_sleep("main") == new
    assert state.active_sleep("other") == elsewhere
    replaced = state.sleeps("ended")
    assert replaced == [Sleep(old.id, "main", "long", at(0), at(600), "ended", at(10))]
    assert state.next_sleep_end() == at(20)
    assert [s.id for s in state.due_sleeps(at(600))] == [new.id, elsewhere.id]  # by end


def test_sleep_arguments_are_checked(state: WatchState) -> None:
    with pytest.raises(ValueError, match="before it starts"):
        state.start_sleep("main", "backwards", at(10), at(5))
    sleep = state.start_sleep("main", "ok", at(0), at(5))
    with pytest.raises(ValueError, match="ended or interrupted"):
        state.end_sleep(sleep.id, "sleeping", at(1))
    with pytest.raises(ValueError, match="unknown sleep state"):
        state.sleeps("asleep")


# -- tick budgets -----------------------------------------------------------------------


def test_tick_budget_per_session_and_day(state: WatchState) -> None:
    assert state.ticks_used("main", "2026-05-01") == 0
    assert [state.spend_tick("main", "2026-05-01") for _ in range(3)] == [1, 2, 3]
    assert state.spend_tick("main", "2026-05-02") == 1
    assert state.spend_tick("other", "2026-05-01") == 1
    assert state.ticks_used("main", "2026-05-01") == 3
    assert state.ticks_used("main", "2026-05-02") == 1


# -- restarts ---------------------------------------------------------------------------


def test_everything_survives_a_restart_and_a_sleep_that_ended_while_down_is_due(
    path: Path,
) -> None:
    with WatchState.open(path) as state:
        state.upsert("w", "command", last_run=at(0), next_run=at(15), data={"hash": "x"})
        state.upsert("p", "timer", state="paused", next_run=at(5))
        state.incr("sleep.entered")
        sleep = state.start_sleep("main", "until the build is done", at(0), at(20))
        state.spend_tick("main", "2026-05-01")
        before = (state.rows(), state.counters(), state.sleeps())

    # The daemon is down from at(1) to at(90): the sleep's end passes unseen.
    with WatchState.open(path) as state:
        assert (state.rows(), state.counters(), state.sleeps()) == before
        assert state.ticks_used("main", "2026-05-01") == 1
        assert state.due_sleeps(at(90)) == [sleep]
        assert state.active_sleep("main") == sleep


def test_a_restart_mid_schedule_never_fires_a_run_twice(path: Path) -> None:
    quarter = Schedule(cron="*/15 * * * *")
    with WatchState.open(path) as state:
        state.upsert("q", "timer", next_run=next_run(quarter, at(-1)))
        assert state.next_due() == at(0)

    def wake(now: datetime) -> int:
        """The daemon's loop body: run what is due, recording each run with its next one."""
        fired = 0
        with WatchState.open(path) as state, state.transaction():
            for row in state.due(now):
                assert row.next_run is not None
                fire, following = catch_up(quarter, row.next_run, now)
                if fire:
                    fired += 1
                    state.incr("timer.fired")
                state.upsert(row.id, row.kind, last_run=now, next_run=following)
        return fired

    assert wake(at(0) + timedelta(seconds=2)) == 1
    # Restarted right away, at the same moment: nothing is due again.
    with WatchState.open(path) as state:
        assert state.due(at(0) + timedelta(seconds=2)) == []
        assert state.due(at(14)) == []
        assert state.next_due() == at(15)
    assert wake(at(14)) == 0
    # Down for 8 hours: exactly one catch-up fire, then the next future slot.
    assert wake(at(8 * 60 + 1)) == 1
    with WatchState.open(path) as state:
        row = state.get("q")
        assert row is not None
        assert (row.last_run, row.next_run) == (at(8 * 60 + 1), at(8 * 60 + 15))
        assert state.counters() == {"timer.fired": 2}


def test_a_run_cut_short_before_commit_is_still_due_after_restart(path: Path) -> None:
    with WatchState.open(path) as state:
        state.upsert("q", "timer", next_run=at(0))
    with WatchState.open(path) as state, pytest.raises(KeyboardInterrupt), state.transaction():
        state.upsert("q", "timer", last_run=at(0), next_run=at(15))
        raise KeyboardInterrupt  # the daemon stopped before the run was recorded
    with WatchState.open(path) as state:
        assert [r.id for r in state.due(at(1))] == ["q"]


def test_two_connections_share_the_file(path: Path) -> None:
    with WatchState.open(path) as writer, WatchState.open(path) as reader:
        writer.upsert("w", "timer", next_run=at(0))
        assert [r.id for r in reader.due(at(0))] == ["w"]
