"""The timing rules of time-based watches: when a schedule fires next, what happens after
the machine slept through runs, how long an agent may sleep, when a session ticks next.

Everything here is pure: no I/O, no clock reads, no global randomness. Every function
takes the current time (``after``/``now``/``due``) and, where it draws, a
``random.Random`` — so the daemon owns the clock and the generator, and a test passes
plain datetimes and a seeded generator. Datetimes going in must be aware; datetimes
coming out are aware and in UTC (the watch state stores UTC epoch seconds).

The rules, in one place:

* ``cron`` runs in ``schedule.timezone`` (else the caller's default zone) with cron's own
  DST rules (via ``cronsim``, which mimics Debian cron): a job at a fixed local time that
  falls into the spring-forward gap runs when the gap ends (02:30 → 03:00 local), and a
  fixed-time job in the fall-back overlap runs once, in the first occurrence. Jobs with a
  ``*`` in the minute or hour field run on real elapsed time (an hourly job runs twice
  in a repeated hour, and not at all in a skipped one).
* ``every`` is measured from the last run, not from a fixed grid: the next run is the last
  run plus the interval, so a late run pushes the following ones back.
* ``at`` fires once; a naive ``at`` is wall-clock time in the schedule's zone.
* A run that is late by more than ``grace`` (the machine slept) fires once on wake with
  ``catch_up = "once"`` — never a burst for every missed slot — or not at all with
  ``"skip"``; either way the schedule resumes at the next slot after now.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

from edge.intents.declarations import SLEEP_MAX, SLEEP_MIN, Schedule, TickWatch

#: Runs at most this late (seconds) are ordinary on-time runs, not catch-up.
GRACE = 60.0
#: The prompt-cache lifetimes ticks snap to (milliseconds): just inside a ~5 min cache
#: (4.5 min, 30 s of margin), and 20 min.
CACHE_SHORT_MS = 270_000
CACHE_LONG_MS = 1_200_000


def next_run(schedule: Schedule, after: datetime, default_zone: str = "UTC") -> datetime | None:
    """The first time ``schedule`` fires strictly after ``after``, in UTC; ``None`` when it
    never fires again (a one-shot ``at`` that is not after ``after``).

    ``every`` intervals are measured from the last run: pass the time of the last run as
    ``after``. The result is unjittered; the caller adds ``jittered(...)`` before storing
    it as the watch's next run.
    """
    _aware(after, "after")
    zone = ZoneInfo(schedule.timezone or default_zone)
    if schedule.cron is not None:
        return _next_cron(schedule.cron, after, zone)
    if schedule.every is not None:
        return (after + timedelta(seconds=schedule.every)).astimezone(UTC)
    assert schedule.at is not None  # Schedule guarantees exactly one of the three
    at = datetime.fromisoformat(schedule.at)
    if at.tzinfo is None:
        # fold=0: an ambiguous wall-clock time means its first occurrence; one in a
        # spring-forward gap keeps the offset from before the gap (02:30 → 03:30 local).
        at = at.replace(tzinfo=zone)
    at = at.astimezone(UTC)
    return at if at > after else None


def _next_cron(expr: str, after: datetime, zone: ZoneInfo) -> datetime | None:
    # cronsim walks fixed-time jobs on naive wall-clock time. Started inside a repeated
    # (fall-back) hour it can hand back that hour's *first* occurrence, which lies before
    # ``after`` in real time: keep drawing until the result is really later. This is also
    # what makes a fixed-time job fire once, not twice, on the fall-back day.
    times = CronSim(expr, after.astimezone(zone))
    for candidate in times:
        result = candidate.astimezone(UTC)
        if result > after:
            return result
    return None  # cronsim found no match within its 50-year horizon


def jittered(at: datetime, jitter: float, rng: random.Random) -> datetime:
    """``at`` moved later by a uniform random 0..``jitter`` seconds (spreads many
    machines' identical schedules). With ``jitter <= 0``, ``at`` unchanged and ``rng``
    not drawn from."""
    _aware(at, "at")
    if jitter <= 0:
        return at.astimezone(UTC)
    return (at + timedelta(seconds=rng.uniform(0.0, jitter))).astimezone(UTC)


def catch_up(
    schedule: Schedule,
    due: datetime,
    now: datetime,
    default_zone: str = "UTC",
    grace: float = GRACE,
) -> tuple[bool, datetime | None]:
    """Decide a run that came due at ``due`` (``now >= due``): ``(fire, next_run)``.

    At most ``grace`` seconds late is an ordinary on-time run: fire. Later than that the
    machine slept through one or more runs: ``catch_up = "once"`` fires exactly once now,
    however many runs were missed; ``"skip"`` does not fire. In every case the schedule
    resumes at its first slot after ``now`` (``None``: a one-shot that is done). The caller
    must jitter that time, record the run and the next run in one transaction, and raise
    the interrupt only if ``fire``.
    """
    _aware(due, "due")
    _aware(now, "now")
    if now < due:
        raise ValueError(f"catch_up called before the run is due ({now} < {due})")
    following = next_run(schedule, now, default_zone)
    if (now - due).total_seconds() <= grace:
        return True, following
    return schedule.catch_up == "once", following


def cache_aware(ms: int) -> int:
    """Snap an interval (milliseconds) to a prompt-cache lifetime.

    Prompt caches live about 5 min or about 20 min, and an agent woken just after its
    cache expired pays for a cold cache. An interval between the two pays that on every
    tick: waking a little sooner would keep the cache warm, waking a little later would
    pay the same cold start less often. So intervals up to ``CACHE_SHORT_MS`` (270,000:
    4.5 min, inside the 5 min cache) and from ``CACHE_LONG_MS`` (1,200,000) on are kept;
    those in between go to the nearer of the two. The midpoint (735,000) goes down to
    270,000 — when in doubt, the warm cache — and 735,001 goes up to 1,200,000.
    """
    if ms <= CACHE_SHORT_MS or ms >= CACHE_LONG_MS:
        return ms
    return CACHE_SHORT_MS if ms - CACHE_SHORT_MS <= CACHE_LONG_MS - ms else CACHE_LONG_MS


def clamp_sleep(seconds: float) -> float:
    """An agent-requested sleep clamped into [``SLEEP_MIN``, ``SLEEP_MAX``] (1 min .. 24 h).
    ``NaN`` is refused (``ValueError``): there is no sensible sleep to give it."""
    if math.isnan(seconds):
        raise ValueError("a sleep of NaN seconds")
    return min(SLEEP_MAX, max(SLEEP_MIN, seconds))


def next_tick(watch: TickWatch, after: datetime, rng: random.Random) -> tuple[datetime, bool]:
    """The session's next tick after the one at ``after``: ``watch.every`` seconds, moved
    by a uniform random ±``watch.jitter_pct`` percent, then (with ``watch.cache_aware``)
    snapped by ``cache_aware``. Returns ``(when, snapped)``; the caller counts ``snapped``
    as ``cache_aware.snapped``. Snapping happens after jitter, so a snapped interval is
    exact (the jitter is absorbed)."""
    _aware(after, "after")
    spread = watch.every * watch.jitter_pct / 100.0
    interval = watch.every + (rng.uniform(-spread, spread) if spread > 0 else 0.0)
    snapped = False
    if watch.cache_aware:
        ms = round(interval * 1000)
        target = cache_aware(ms)
        if target != ms:
            interval, snapped = target / 1000.0, True
    return (after + timedelta(seconds=interval)).astimezone(UTC), snapped


def local_day(at: datetime, zone: str) -> str:
    """The ISO date (``YYYY-MM-DD``) of ``at`` in ``zone``: the key of daily budgets, which
    reset at local midnight."""
    _aware(at, "at")
    return at.astimezone(ZoneInfo(zone)).date().isoformat()


def _aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {value}")
