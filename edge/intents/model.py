"""Intents: the user's durable statement of what matters, to whom, and when.

An intent is data, not code: a deterministic ``match`` over the interrupt, an optional
``judge`` command asked only when the match passed and every deterministic policy check
let it through, a ``policy`` (when and how often to wake), a ``route`` (who receives the
wake) and a ``grant`` (the most a woken runtime may do because of it).

The models here are the single source of truth for both ways intents come in: the
declarative ``intents.toml`` (``edge.intents.file``) and ``mailslot intent add``. No I/O.
"""

from __future__ import annotations

import re
from datetime import time as clock_time
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from edge.intents.template import check_template
from shared.envelope import Priority
from shared.match import Predicate, any_glob, unmet
from shared.tokens import check_name

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"26h"``, ``"500ms"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '15m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (e.g. 90, '90s', '15m', '2h', '1d')")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name like 'Europe/Berlin')") from exc
    return value


def _check_hhmm(value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError(f"{value!r} is not a time of day HH:MM")
    return value


#: What a duration is in JSON Schema (MCP tools and other generic clients read it): a
#: number of seconds or a string ``parse_duration`` reads. Without it a client that
#: validates would refuse the ``"30m"`` the documentation shows.
DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
    "description": "seconds, or a duration like '90s', '15m', '2h', '1d'",
}
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(DURATION_SCHEMA)]
#: A webhook body template in JSON Schema: any JSON value (strings may hold {paths}).
TEMPLATE_SCHEMA: dict[str, Any] = {
    "description": "the request body: any JSON value; strings may hold {path} placeholders"
                   " into the wake document, e.g. {\"message\": \"{summary}\"}",
}
Zone = Annotated[str, AfterValidator(check_zone)]
IntentId = Annotated[str, AfterValidator(lambda v: check_name(v, "intent id"))]
HHMM = Annotated[str, AfterValidator(_check_hhmm)]
Strings = Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: TOML has real types: ``critical = "yes"`` or ``max_reminders = 2.0`` is a mistake.
StrictBool = Annotated[bool, Field(strict=True)]
StrictInt = Annotated[int, Field(strict=True)]


class Match(Strict):
    """All given criteria must hold (absent ones match anything). ``type`` and
    ``source_name`` are globs; ``all`` predicates must all hold, and if ``any`` is given at
    least one of them must."""

    source_kind: Strings | None = None
    source_name: Strings | None = None
    type: Strings | None = None
    session: Strings | None = None
    priority: Annotated[list[Priority], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] | None = None
    all: list[Predicate] = []
    any: list[Predicate] = []


class Judge(Strict):
    """A command asked "should this wake?" with the minimal interrupt JSON on stdin; it
    answers ``{"wake": true|false, "reason": "..."}`` on stdout."""

    command: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    timeout: Duration = 10.0
    #: What a crash, a timeout or a garbage answer means: wake anyway, or skip.
    on_failure: Literal["wake", "skip"] = "skip"
    #: Answers are cached by dedupe key (or interrupt id) for this long.
    cache: Duration = 3600.0


class ActiveHours(Strict):
    """A daily window in a time zone; ``start`` > ``end`` crosses midnight and
    ``start`` == ``end`` means all day (on the listed ``days``)."""

    start: HHMM
    end: HHMM
    timezone: Zone | None = None
    #: Weekdays the window is open (0 = Monday); empty = every day.
    days: list[Annotated[int, Field(strict=True, ge=0, le=6)]] = []

    def start_time(self) -> clock_time:
        return clock_time.fromisoformat(self.start)

    def end_time(self) -> clock_time:
        return clock_time.fromisoformat(self.end)


class Policy(Strict):
    """Applied in this order, first refusal wins: dedupe → user active → max reminders →
    cooldown → condition → active hours (defer) → budget → judge → coalesce → wake."""

    #: Drop an interrupt whose ``dedupe_key`` this intent saw within the window.
    dedupe: Duration = 0.0
    #: Do not wake while the user reports activity (``mailslot activity``) in the session.
    suppress_when_active: StrictBool = False
    #: How long a ``mailslot activity`` report counts as "active".
    active_for: Duration = 300.0
    #: Wakes per (session, intent) until the user is active again; 0 = unlimited.
    max_reminders: StrictInt = Field(default=0, ge=0)
    #: Minimum time between two wakes of this intent for one session.
    cooldown: Duration = 0.0
    #: Extra predicates that must all hold (same language as ``match.all``).
    condition: list[Predicate] = []
    active_hours: ActiveHours | None = None
    #: Matching events within this window become one wake listing them all.
    coalesce: Duration = 0.0


class RecordRoute(Strict):
    """The wake is recorded; agents pull it (``mailslot inbox next --claim``)."""

    kind: Literal["record"] = "record"


def _check_env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


EnvName = Annotated[str, AfterValidator(_check_env_name)]


class ExecRoute(Strict):
    """Run a command (an argv, never a shell) with the wake as JSON on stdin."""

    kind: Literal["exec"]
    argv: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    timeout: Annotated[Duration, Field(gt=0)] = 600.0
    #: Working directory (absolute); default: the user's home.
    cwd: str | None = None
    #: Extra environment for the command (on top of the edge's and the MAILSLOT_* ones).
    env: dict[EnvName, str] = {}


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ValueError("put credentials in bearer_env or secret_env, not in the URL")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError("plain http only to this machine (127.0.0.1, ::1, localhost):"
                         " a bearer token must not cross a network unencrypted; use https")
    return value


class WebhookRoute(Strict):
    """POST the wake to a local URL, signed with Standard Webhooks headers. Secrets are
    never in the file: they are read from the environment variables named here."""

    kind: Literal["webhook"]
    url: Annotated[str, AfterValidator(_check_url)]
    #: Environment variable holding the ``whsec_…`` signing secret.
    secret_env: EnvName | None = None
    #: Environment variable holding a bearer token (e.g. an OpenClaw gateway's).
    bearer_env: EnvName | None = None
    timeout: Annotated[Duration, Field(gt=0)] = 10.0
    #: Attempts before the delivery is given up (backoff doubles from 1 s to 5 min).
    max_attempts: StrictInt = Field(default=10, ge=1, le=100)
    #: The request body, shaped from the wake with JSON paths (``edge.intents.template``);
    #: default: the wake document itself.
    template: Annotated[Any, AfterValidator(check_template), WithJsonSchema(TEMPLATE_SCHEMA)
                        ] | None = None


class McpRoute(Strict):
    """Push the wake to a ``mailslot mcp --channel`` session (Claude Code channel)."""

    kind: Literal["mcp"]


Route = Annotated[
    RecordRoute | ExecRoute | WebhookRoute | McpRoute, Field(discriminator="kind")
]


class Intent(Strict):
    id: IntentId
    description: str = ""
    match: Match = Match()
    judge: Judge | None = None
    policy: Policy = Policy()
    route: Route = RecordRoute()
    #: Actions a woken runtime may take (intersected with what the interrupt requests).
    grant: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:*/-]{1,128}$")]] = []
    #: How long the permission envelope handed to a runtime stays valid.
    grant_ttl: Duration = 3600.0
    #: Critical intents wake outside active hours and beyond the daily budget.
    critical: StrictBool = False
    paused: StrictBool = False


class Settings(Strict):
    """Engine-wide settings (``[settings]`` in ``intents.toml``)."""

    timezone: Zone = "UTC"
    #: Wakes per local day (reset at midnight in ``timezone``); 0 = unlimited.
    wakes_per_day: StrictInt = Field(default=0, ge=0)
    #: Model tokens per local day, as reported by runtimes and judges; 0 = unlimited.
    tokens_per_day: StrictInt = Field(default=0, ge=0)


class IntentSet(Strict):
    settings: Settings = Settings()
    intents: list[Intent] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> IntentSet:
        seen: set[str] = set()
        for intent in self.intents:
            if intent.id in seen:
                raise ValueError(f"duplicate intent id {intent.id!r}")
            seen.add(intent.id)
        return self

    def get(self, intent_id: str) -> Intent | None:
        return next((i for i in self.intents if i.id == intent_id), None)


# -- matching (pure; the predicate language is shared.match) -------------------------


def matches(match: Match, doc: dict[str, Any]) -> str | None:
    """``None`` if ``doc`` (an envelope as a dict) matches, else why not, in words."""
    source = doc.get("source") or {}
    checks: list[tuple[list[str] | None, Any, str]] = [
        (match.source_kind, source.get("kind"), "source kind"),
        (match.source_name, source.get("name"), "source name"),
        (match.type, doc.get("type"), "type"),
        (match.session, doc.get("session"), "session"),
    ]
    for patterns, value, what in checks:
        if patterns is not None and not any_glob(value, patterns):
            return f"{what} {value!r} not in {patterns}"
    if match.priority is not None and doc.get("priority") not in match.priority:
        return f"priority {doc.get('priority')!r} not in {[str(p) for p in match.priority]}"
    return unmet(match.all, match.any, doc)
