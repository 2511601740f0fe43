"""The pure timing rules: plain datetimes in, a seeded generator, no clock, no I/O.

DST dates are Europe/Berlin's in 2026: spring forward on 29 March (02:00 CET → 03:00
CEST), fall back on 25 October (03:00 CEST → 02:00 CET, so 02:00-02:59 happens twice)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from edge.intents.declarations import SLEEP_MAX, SLEEP_MIN, Schedule, TickWatch
from edge.watches.timing import (
    CACHE_LONG_MS,
    CACHE_SHORT_MS,
    cache_aware,
    catch_up,
    clamp_sleep,
    jittered,
    local_day,
    next_run,
    next_tick,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    """``"2026-03-29 01:00:00"`` as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(schedule: Schedule, start: datetime, end: datetime, zone: str = "UTC") -> list[datetime]:
    """Every fire in (start, end], each found from the one before, as the daemon does."""
    found: list[datetime] = []
    moment: datetime | None = start
    while True:
        assert moment is not None
        moment = next_run(schedule, moment, zone)
        if moment is None or moment > end:
            return found
        found.append(moment)


def tick(**fields: object) -> TickWatch:
    return TickWatch.model_validate({"kind": "tick", "id": "t", "session": "main", **fields})


# -- cron -------------------------------------------------------------------------------


def test_cron_daily_keeps_local_wall_clock_across_spring_forward() -> None:
    daily = Schedule(cron="30 9 * * *", timezone="Europe/Berlin")
    got = fires(daily, utc("2026-03-26 12:00"), utc("2026-04-01 12:00"))
    assert got == [
        utc("2026-03-27 08:30"),  # CET, +01:00
        utc("2026-03-28 08:30"),
        utc("2026-03-29 07:30"),  # CEST, +02:00 from the change day on
        utc("2026-03-30 07:30"),
        utc("2026-03-31 07:30"),
        utc("2026-04-01 07:30"),
    ]
    local = [t.astimezone(BERLIN) for t in got]
    assert {(t.hour, t.minute) for t in local} == {(9, 30)}
    assert [t.day for t in local] == [27, 28, 29, 30, 31, 1]
    assert [t.utcoffset() for t in local] == [timedelta(hours=1)] * 2 + [timedelta(hours=2)] * 4
    assert all(t.tzinfo is UTC for t in got)


def test_cron_daily_keeps_local_wall_clock_across_fall_back() -> None:
    daily = Schedule(cron="30 9 * * *", timezone="Europe/Berlin")
    got = fires(daily, utc("2026-10-22 12:00"), utc("2026-10-28 12:00"))
    assert got == [
        utc("2026-10-23 07:30"),  # CEST
        utc("2026-10-24 07:30"),
        utc("2026-10-25 08:30"),  # CET from the change day on
        utc("2026-10-26 08:30"),
        utc("2026-10-27 08:30"),
        utc("2026-10-28 08:30"),
    ]
    local = [t.astimezone(BERLIN) for t in got]
    assert {(t.hour, t.minute) for t in local} == {(9, 30)}
    assert [t.day for t in local] == [23, 24, 25, 26, 27, 28]
    assert [t.utcoffset() for t in local] == [timedelta(hours=2)] * 2 + [timedelta(hours=1)] * 4


def test_cron_in_the_spring_forward_gap_runs_when_the_gap_ends() -> None:
    # 02:30 does not exist on 29 March: cronsim (like Debian cron) runs the job as soon as
    # the gap ends, at 03:00 CEST, once; the next day is back to 02:30.
    nightly = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    got = fires(nightly, utc("2026-03-27 12:00"), utc("2026-03-30 12:00"))
    assert got == [
        utc("2026-03-28 01:30"),  # 02:30 CET
        utc("2026-03-29 01:00"),  # 03:00 CEST: the gap's end
        utc("2026-03-30 00:30"),  # 02:30 CEST
    ]
    assert got[1].astimezone(BERLIN).isoformat() == "2026-03-29T03:00:00+02:00"


def test_cron_in_the_fall_back_overlap_runs_once_in_the_first_pass() -> None:
    nightly = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    got = fires(nightly, utc("2026-10-24 12:00"), utc("2026-10-26 12:00"))
    assert got == [utc("2026-10-25 00:30"), utc("2026-10-26 01:30")]
    assert got[0].astimezone(BERLIN).isoformat() == "2026-10-25T02:30:00+02:00"
    assert got[1].astimezone(BERLIN).isoformat() == "2026-10-26T02:30:00+01:00"


@pytest.mark.parametrize(
    "after",
    [
        utc("2026-10-25 00:30"),  # the first-pass fire itself
        utc("2026-10-25 01:20"),  # 02:20 CET: the second pass, before its 02:30
        utc("2026-10-25 01:30"),  # 02:30 CET: the second 02:30
        utc("2026-10-25 01:40"),
    ],
)
def test_cron_from_inside_the_repeated_hour_never_fires_twice(after: datetime) -> None:
    nightly = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    assert next_run(nightly, after) == utc("2026-10-26 01:30")


def test_cronsim_alone_can_answer_before_its_start_in_the_repeated_hour() -> None:
    # Why next_run checks every answer: cronsim walks fixed-time jobs on naive local time,
    # so started at 02:20 CET (second pass) it returns 02:30 CEST (first pass) — 50 minutes
    # *before* the start. If cronsim changes this, the guard is merely unused.
    start = utc("2026-10-25 01:20").astimezone(BERLIN)
    raw = next(CronSim("30 2 * * *", start)).astimezone(UTC)
    assert raw == utc("2026-10-25 00:30")


def test_cron_every_15_minutes_follows_real_time_through_the_overlap() -> None:
    quarter = Schedule(cron="*/15 * * * *", timezone="Europe/Berlin")
    got = fires(quarter, utc("2026-10-24 23:55"), utc("2026-10-25 02:00"))
    assert got == [utc("2026-10-25 00:00") + timedelta(minutes=15 * i) for i in range(9)]
    # Wall-clock 02:00..02:45 shows up twice, once per offset.
    walls = [t.astimezone(BERLIN).strftime("%H:%M%z") for t in got]
    assert walls[:4] == ["02:00+0200", "02:15+0200", "02:30+0200", "02:45+0200"]
    assert walls[4:8] == ["02:00+0100", "02:15+0100", "02:30+0100", "02:45+0100"]


def test_cron_zone_defaults_to_the_callers_zone() -> None:
    daily = Schedule(cron="30 9 * * *")
    assert next_run(daily, utc("2026-07-01 00:00")) == utc("2026-07-01 09:30")
    assert next_run(daily, utc("2026-07-01 00:00"), "Europe/Berlin") == utc("2026-07-01 07:30")


def test_cron_result_is_strictly_after() -> None:
    daily = Schedule(cron="30 9 * * *", timezone="Europe/Berlin")
    on_the_dot = utc("2026-07-01 07:30")
    assert next_run(daily, on_the_dot) == utc("2026-07-02 07:30")
    assert next_run(daily, on_the_dot - timedelta(microseconds=1)) == on_the_dot


# -- every, at --------------------------------------------------------------------------


def test_every_is_measured_from_the_last_run() -> None:
    every = Schedule(every=90.0)
    last = datetime(2026, 5, 1, 14, 0, 10, tzinfo=BERLIN)
    result = next_run(every, last)
    assert result == utc("2026-05-01 12:01:40")
    assert result is not None and result.tzinfo is UTC


def test_at_with_an_offset_fires_once() -> None:
    once = Schedule(at="2026-06-01T12:00:00+02:00")
    assert next_run(once, utc("2026-06-01 09:59")) == utc("2026-06-01 10:00")
    assert next_run(once, utc("2026-06-01 10:00")) is None  # not strictly after
    assert next_run(once, utc("2026-07-01 00:00")) is None


def test_naive_at_is_local_to_the_zone() -> None:
    berlin = Schedule(at="2026-06-01T12:00:00", timezone="Europe/Berlin")
    assert next_run(berlin, utc("2026-01-01 00:00")) == utc("2026-06-01 10:00")
    default = Schedule(at="2026-06-01T12:00:00")
    assert next_run(default, utc("2026-01-01 00:00")) == utc("2026-06-01 12:00")
    assert next_run(default, utc("2026-01-01 00:00"), "Asia/Tokyo") == utc("2026-06-01 03:00")


def test_naive_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_run(Schedule(every=60), datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        local_day(datetime(2026, 1, 1), "UTC")


# -- jitter -----------------------------------------------------------------------------


def test_jitter_is_zero_to_jitter_seconds_later() -> None:
    rng = random.Random(7)
    base = utc("2026-05-01 12:00")
    delays = [(jittered(base, 30.0, rng) - base).total_seconds() for _ in range(2000)]
    assert all(0.0 <= d <= 30.0 for d in delays)
    assert min(delays) < 1.0 and max(delays) > 29.0


def test_no_jitter_leaves_the_time_and_the_generator_alone() -> None:
    rng = random.Random(7)
    state = rng.getstate()
    base = datetime(2026, 5, 1, 14, 0, tzinfo=BERLIN)
    result = jittered(base, 0.0, rng)
    assert result == base and result.tzinfo is UTC
    assert rng.getstate() == state


# -- catch-up ---------------------------------------------------------------------------


def run_due(schedule: Schedule, due: datetime, now: datetime) -> tuple[int, datetime | None]:
    """What the daemon does on wake: handle the due run, then anything still due."""
    fired = 0
    pending: datetime | None = due
    while pending is not None and pending <= now:
        fire, pending = catch_up(schedule, pending, now)
        fired += fire
    return fired, pending


def test_after_an_8_hour_sleep_a_15_minute_cron_fires_exactly_once() -> None:
    quarter = Schedule(cron="*/15 * * * *")
    due = utc("2026-05-01 00:00")
    now = utc("2026-05-01 08:00:07")  # 32 slots were slept through
    assert catch_up(quarter, due, now) == (True, utc("2026-05-01 08:15"))
    assert run_due(quarter, due, now) == (1, utc("2026-05-01 08:15"))


def test_skip_policy_does_not_fire_a_late_run() -> None:
    quarter = Schedule(cron="*/15 * * * *", catch_up="skip")
    due = utc("2026-05-01 00:00")
    now = utc("2026-05-01 08:00:07")
    assert catch_up(quarter, due, now) == (False, utc("2026-05-01 08:15"))
    assert run_due(quarter, due, now) == (0, utc("2026-05-01 08:15"))


def test_within_grace_a_run_is_on_time_whatever_the_policy() -> None:
    skip = Schedule(cron="*/15 * * * *", catch_up="skip")
    due = utc("2026-05-01 08:00")
    assert catch_up(skip, due, due) == (True, utc("2026-05-01 08:15"))
    assert catch_up(skip, due, due + timedelta(seconds=60)) == (True, utc("2026-05-01 08:15"))
    assert catch_up(skip, due, due + timedelta(seconds=61)) == (False, utc("2026-05-01 08:15"))
    assert catch_up(skip, due, due + timedelta(seconds=61), grace=120) == (
        True,
        utc("2026-05-01 08:15"),
    )


def test_catch_up_for_every_and_at() -> None:
    now = utc("2026-05-01 08:00")
    every = Schedule(every=3600.0)
    assert catch_up(every, utc("2026-05-01 01:00"), now) == (True, utc("2026-05-01 09:00"))
    once = Schedule(at="2026-05-01T01:00:00Z")
    assert catch_up(once, utc("2026-05-01 01:00"), now) == (True, None)
    once_skip = Schedule(at="2026-05-01T01:00:00Z", catch_up="skip")
    assert catch_up(once_skip, utc("2026-05-01 01:00"), now) == (False, None)


def test_catch_up_before_the_run_is_due_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="before the run is due"):
        catch_up(Schedule(every=60), utc("2026-05-01 08:00"), utc("2026-05-01 07:59"))


# -- cache-aware snapping, sleeps, ticks ------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "snapped"),
    [
        (0, 0),
        (60_000, 60_000),
        (270_000, 270_000),
        (270_001, 270_000),
        (500_000, 270_000),
        (735_000, 270_000),  # the midpoint goes down: the warm cache
        (735_001, 1_200_000),
        (1_199_999, 1_200_000),
        (1_200_000, 1_200_000),
        (3_600_000, 3_600_000),
    ],
)
def test_cache_aware(ms: int, snapped: int) -> None:
    assert cache_aware(ms) == snapped
    assert (CACHE_SHORT_MS, CACHE_LONG_MS) == (270_000, 1_200_000)


@pytest.mark.parametrize(
    ("asked", "given"),
    [
        (59.0, 60.0),
        (0.0, 60.0),
        (-5.0, 60.0),
        (60.0, 60.0),
        (3600.0, 3600.0),
        (24 * 3600.0, 24 * 3600.0),
        (25 * 3600.0, 24 * 3600.0),
        (math.inf, 24 * 3600.0),
    ],
)
def test_clamp_sleep(asked: float, given: float) -> None:
    assert clamp_sleep(asked) == given
    assert (SLEEP_MIN, SLEEP_MAX) == (60.0, 86400.0)


def test_clamp_sleep_refuses_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        clamp_sleep(math.nan)


def test_next_tick_jitter_stays_within_bounds() -> None:
    watch = tick(every="10m", jitter_pct=10)
    rng = random.Random(20260329)
    after = utc("2026-05-01 12:00")
    gaps = []
    for _ in range(5000):
        when, snapped = next_tick(watch, after, rng)
        assert not snapped
        gaps.append((when - after).total_seconds())
    assert all(540.0 <= g <= 660.0 for g in gaps)
    # Uniform over the whole band: both ends are reached, the mean is near the middle.
    assert min(gaps) < 541.0 and max(gaps) > 659.0
    assert abs(sum(gaps) / len(gaps) - 600.0) < 3.0


def test_next_tick_without_jitter_is_exact_and_draws_nothing() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    when, snapped = next_tick(tick(every="7m", jitter_pct=0), utc("2026-05-01 12:00"), rng)
    assert (when, snapped) == (utc("2026-05-01 12:07"), False)
    assert rng.getstate() == state


def test_next_tick_cache_aware_snaps_after_jitter() -> None:
    rng = random.Random(5)
    after = utc("2026-05-01 12:00")
    down = tick(every="10m", jitter_pct=10, cache_aware=True)  # 540..660 s → 270 s
    up = tick(every="15m", jitter_pct=10, cache_aware=True)  # 810..990 s → 1200 s
    kept = tick(every="30m", jitter_pct=10, cache_aware=True)  # 1620..1980 s: kept
    for _ in range(500):
        assert next_tick(down, after, rng) == (after + timedelta(seconds=270), True)
        assert next_tick(up, after, rng) == (after + timedelta(seconds=1200), True)
        when, snapped = next_tick(kept, after, rng)
        assert not snapped and 1620.0 <= (when - after).total_seconds() <= 1980.0
    exact = tick(every="270s", jitter_pct=0, cache_aware=True)
    assert next_tick(exact, after, rng) == (after + timedelta(seconds=270), False)


def test_local_day() -> None:
    late = utc("2026-03-28 23:30")
    assert local_day(late, "UTC") == "2026-03-28"
    assert local_day(late, "Europe/Berlin") == "2026-03-29"
    assert local_day(late, "America/Los_Angeles") == "2026-03-28"
