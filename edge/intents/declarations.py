"""The root model of ``intents.toml`` (``Declarations``), and the watches it declares.

``Declarations`` is everything the file declares: ``[settings]`` and ``[[intent]]``
(``edge.intents.model``, inherited from ``IntentSet``), ``[[watch]]`` (here) and
``[approvals]`` (``edge.intents.approvalrules``). Reading and writing the file is
``edge.intents.file`` and ``edge.intents.edit``; this module is the data only. No I/O.

Watches are local sources of interrupts at the edge — files, commands, time, absence,
and per-session ticks. Each raises the same signed envelope as a remote producer (source
kind ``file``, ``command``, ``timer``, ``absence``, ``sleep`` or ``tick``) into the same
inbox and decision engine. Their definitions are data, declared as ``[[watch]]`` tables
next to the intents (or with ``mailslot watch add``); their runtime state (last run, next
run, last result, counters) lives in ``data/watches.sqlite3`` (``edge.store.watchstate``)
and they run in ``edge.watches``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from cronsim import CronSim, CronSimError
from pydantic import AfterValidator, Field, model_validator

from edge.intents.approvalrules import ApprovalSettings
from edge.intents.model import (
    Duration,
    IntentSet,
    Match,
    Strict,
    StrictBool,
    StrictInt,
    Zone,
    check_zone,
)
from shared.envelope import Priority
from shared.match import Predicate
from shared.tokens import check_name, check_session, check_type

#: Ignored by default by file watches: VCS folders, editor swap, backup and temp files.
DEFAULT_IGNORES = (
    ".git", ".hg", ".svn", "__pycache__", "node_modules",
    "*.swp", "*.swo", "*.swx", "*~", ".#*", "#*#", "*.tmp", "*.part", "4913",
    ".DS_Store",
)
#: Agent-requested sleeps are clamped to this range (seconds).
SLEEP_MIN, SLEEP_MAX = 60.0, 24 * 3600.0
#: Largest output a command watch keeps (the rest is read and dropped): it must fit an
#: interrupt payload (16 KiB) with room for the rest of the payload.
OUTPUT_MAX_BYTES = 8 * 1024

WatchId = Annotated[str, AfterValidator(lambda v: check_name(v, "watch id"))]
TypeName = Annotated[str, AfterValidator(check_type)]
SessionName = Annotated[str, AfterValidator(check_session)]
PositiveDuration = Annotated[Duration, Field(gt=0)]


def _check_cron(value: str) -> str:
    try:
        CronSim(value, datetime(2026, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(f"bad cron expression {value!r}: {exc}") from exc
    return value


def _check_glob(value: str) -> str:
    if not value or "\x00" in value:
        raise ValueError("a path or glob cannot be empty or contain NUL")
    if value.count("[") != value.count("]"):
        raise ValueError(f"bad glob {value!r}: unbalanced [ ]")
    return value


Cron = Annotated[str, AfterValidator(_check_cron)]
Glob = Annotated[str, AfterValidator(_check_glob)]


class Schedule(Strict):
    """Exactly one of ``cron`` (5 fields, in ``timezone``), ``every`` or ``at``."""

    cron: Cron | None = None
    every: PositiveDuration | None = None
    #: One-shot: an ISO 8601 time (with an offset, or local to ``timezone``).
    at: str | None = None
    timezone: Zone | None = None
    #: Random delay added to each run, up to this.
    jitter: Duration = 0.0
    #: After the machine slept through runs: fire ``once`` on wake, or ``skip``.
    catch_up: Literal["once", "skip"] = "once"

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        given = [name for name in ("cron", "every", "at") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of cron, every or at")
        if self.at is not None:
            try:
                datetime.fromisoformat(self.at)
            except ValueError as exc:
                raise ValueError(f"at: {self.at!r} is not an ISO 8601 time") from exc
        if self.timezone is not None:
            check_zone(self.timezone)
        return self


class WatchBase(Strict):
    id: WatchId
    description: str = ""
    #: Interrupt type raised; default ``<kind>.<event>`` (e.g. ``file.modified``).
    type: TypeName | None = None
    priority: Priority = Priority.next
    session: SessionName | None = None
    paused: StrictBool = False


class FileWatch(WatchBase):
    kind: Literal["file"]
    #: Absolute paths or globs (``~`` expanded). The folder each one lives in must exist.
    paths: Annotated[list[Glob], Field(min_length=1)]
    #: Names or globs ignored anywhere in the path (on top of ``DEFAULT_IGNORES``).
    ignore: list[Glob] = []
    default_ignores: StrictBool = True
    changes: Annotated[list[Literal["created", "modified", "deleted"]], Field(min_length=1)] = [
        "created", "modified", "deleted"]
    #: Changes within this window are merged into one interrupt.
    debounce: Duration = 0.02
    #: Put the changed file's text in the payload, capped at ``content_max`` bytes.
    include_content: StrictBool = False
    content_max: StrictInt = Field(default=4096, ge=0, le=16384 - 1024)


class CommandWatch(WatchBase):
    kind: Literal["command"]
    #: Run as an argv, never through a shell.
    argv: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    schedule: Schedule
    timeout: PositiveDuration = 30.0
    #: ``change``: the output differs from the last run; ``exit_code``: the exit code is
    #: in ``exit_codes`` (default: not 0); ``condition``: predicates over the JSON output
    #: (fields as ``output.<path>``) hold.
    fire_on: Literal["change", "exit_code", "condition"] = "change"
    exit_codes: list[StrictInt] = []
    condition: list[Predicate] = []
    output_max: StrictInt = Field(default=4096, ge=0, le=OUTPUT_MAX_BYTES)
    #: Working directory (absolute); default: the user's home.
    cwd: str | None = None

    @model_validator(mode="after")
    def _condition_given(self) -> CommandWatch:
        if self.fire_on == "condition" and not self.condition:
            raise ValueError("fire_on = 'condition' needs a condition")
        return self


class TimerWatch(WatchBase):
    kind: Literal["timer"]
    schedule: Schedule


class AbsenceWatch(WatchBase):
    """Fire when no event matching ``match`` arrived within ``within``; re-armed by each
    matching event. Follow-ups go through the decision engine like any interrupt."""

    kind: Literal["absence"]
    match: Match
    within: PositiveDuration


class TickWatch(WatchBase):
    """Proactive ticks for one session: every ``every`` (± ``jitter_pct``), while the
    session was active within ``max_idle``, at most ``daily_budget`` a day."""

    kind: Literal["tick"]
    session: SessionName
    every: PositiveDuration
    jitter_pct: Annotated[float, Field(ge=0, le=50)] = 10.0
    #: Stop ticking once the session has been idle this long (0 = never stop).
    max_idle: Duration = 0.0
    #: Ticks per local day (0 = unlimited); exhausted: suppressed, re-armed next interval.
    daily_budget: StrictInt = Field(default=0, ge=0)
    #: Snap intervals to prompt-cache lifetimes (see ``edge.watches.timing.cache_aware``).
    cache_aware: StrictBool = False


Watch = Annotated[
    FileWatch | CommandWatch | TimerWatch | AbsenceWatch | TickWatch,
    Field(discriminator="kind"),
]
WATCH_KINDS = ("file", "command", "timer", "absence", "tick")


class Declarations(IntentSet):
    """Everything ``intents.toml`` declares: settings, intents, watches and the autonomy
    dial for approvals."""

    watches: list[Watch] = []
    approvals: ApprovalSettings = ApprovalSettings()

    @model_validator(mode="after")
    def _unique_watch_ids(self) -> Declarations:
        seen: set[str] = set()
        for watch in self.watches:
            if watch.id in seen:
                raise ValueError(f"duplicate watch id {watch.id!r}")
            seen.add(watch.id)
        return self

    def watch(
        self, watch_id: str
    ) -> FileWatch | CommandWatch | TimerWatch | AbsenceWatch | TickWatch | None:
        return next((w for w in self.watches if w.id == watch_id), None)
