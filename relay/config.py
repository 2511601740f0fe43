"""The relay's one configuration object, built once by the CLI and passed down."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from relay.errors import ConfigInvalid
from shared.limits import BODY_MAX_BYTES
from shared.tokens import NAME_RE

DEFAULT_LISTEN = "127.0.0.1:7710"
#: In the data dir while a relay runs: where it listens, for the admin commands.
RUNTIME_FILE = "relay.json"


def relay_data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the relay keeps its embedded JetStream store and runtime files.
    ``MAILSLOT_HOME=DIR`` puts it under ``DIR/relay``."""
    home = environ.get("MAILSLOT_HOME")
    if home:
        return Path(home) / "relay"
    return Path(platformdirs.user_data_dir("mailslot")) / "relay"


def check_listen(value: str) -> str:
    """``HOST:PORT`` with a port 0-65535 (0: any free port); else ``ValueError``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be HOST:PORT with a port 0-65535, not {value!r}")
    return value


class StreamSettings(BaseModel):
    """How interrupts are kept in JetStream (see README, "Operations")."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    #: Pending interrupts per recipient and priority; beyond it producers get 429.
    max_per_recipient: int = Field(default=100_000, ge=1)
    #: Window in which a retried interrupt id is answered as a duplicate.
    duplicate_window: float = Field(default=600.0, gt=0)
    #: How long a delivered, unacknowledged interrupt waits before redelivery.
    ack_wait: float = Field(default=30.0, gt=0)
    #: Idle per-connection consumers are reaped by JetStream after this.
    consumer_idle: float = Field(default=300.0, gt=0)
    #: JetStream replicas for the interrupt stream and registry (3 on a cluster).
    replicas: int = Field(default=1, ge=1, le=5)
    #: Hard cap on interrupt age, whatever expires_at says (0 = none).
    max_age: float = Field(default=0.0, ge=0)
    #: Bytes the whole interrupt stream may hold (0 = no cap); beyond it new
    #: interrupts are refused ``507 storage_full`` and nothing stored is dropped.
    max_bytes: int = Field(default=0, ge=0, le=2**62)


class Plan(BaseModel):
    """One tier of limits an operator defines in the ``--config`` file (README,
    "Configuration"). A limit left out is no limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    #: Interrupts per second the whole account may publish (token bucket refill).
    account_rate: StrictFloat | None = Field(default=None, gt=0, le=1_000_000)
    #: Bucket size for ``account_rate`` (default: one second's worth, at least 1).
    account_burst: StrictInt | None = Field(default=None, ge=1, le=10_000_000)
    #: Interrupts per second one producer token may publish.
    token_rate: StrictFloat | None = Field(default=None, gt=0, le=1_000_000)
    token_burst: StrictInt | None = Field(default=None, ge=1, le=10_000_000)
    #: Identities the account may enroll.
    max_identities: StrictInt | None = Field(default=None, ge=1, le=1_000_000)
    #: Interrupts queued for the account's identities together (all priorities).
    max_pending: StrictInt | None = Field(default=None, ge=1, le=1_000_000_000)

    def burst(self, rate: float | None, burst: int | None) -> int:
        return burst if burst is not None else max(1, int(rate or 1))


#: The plan an account gets when the config defines none.
DEFAULT_PLAN = "default"


class RelayConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    #: Named plans (``--config``); every account runs under one of them.
    plans: dict[str, Plan] = {DEFAULT_PLAN: Plan()}
    #: The plan of an account created without ``plan`` (and of one whose plan is gone).
    default_plan: str = DEFAULT_PLAN
    listen: str = DEFAULT_LISTEN
    #: NATS servers to use. Empty: start the embedded nats-server.
    nats: tuple[str, ...] = ()
    data_dir: Path
    stream: StreamSettings = StreamSettings()
    #: Largest HTTP request body accepted.
    max_body_bytes: int = BODY_MAX_BYTES
    #: Embedded server: fsync every write ("always") or on an interval (e.g. "1s", "2m").
    embedded_sync: str = "always"
    #: Embedded server: how long the relay tries to restart a nats-server that exited
    #: before it gives up, fails /healthz and exits (code 7) for its supervisor.
    embedded_restart_timeout: float = Field(default=30.0, gt=0)
    #: Seconds an edge has to answer the link's challenge before it is closed (4408).
    auth_timeout: float = Field(default=10.0, gt=0)
    #: ``HOST:PORT`` serving ``GET /metrics`` alone; when set, the main port no longer
    #: answers /metrics (404), so that it can stay on a private network.
    metrics_listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return check_listen(value)

    @model_validator(mode="after")
    def _default_plan_defined(self) -> RelayConfig:
        if self.default_plan not in self.plans:
            raise ValueError(f"default_plan {self.default_plan!r} is not one of the plans")
        return self

    def plan_of(self, name: str | None) -> tuple[str, Plan]:
        """The plan called ``name``; the default plan if it is None or no longer defined."""
        if name is not None and name in self.plans:
            return name, self.plans[name]
        return self.default_plan, self.plans[self.default_plan]

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_host_port(cls, value: str | None) -> str | None:
        return None if value is None else check_listen(value)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class StreamLimits(BaseModel):
    """The ``[stream]`` table of the ``--config`` file."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_bytes: StrictInt = Field(default=0, ge=0, le=2**62)


class PlansFile(BaseModel):
    """The ``relay serve --config FILE`` document (TOML)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    stream: StreamLimits = StreamLimits()
    default_plan: str = DEFAULT_PLAN
    plans: dict[str, Plan] = Field(default_factory=lambda: {DEFAULT_PLAN: Plan()})

    @field_validator("plans")
    @classmethod
    def _names(cls, value: dict[str, Plan]) -> dict[str, Plan]:
        if not value:
            raise ValueError("define at least one plan")
        for name in value:
            if NAME_RE.fullmatch(name) is None:
                raise ValueError(f"plan name {name[:64]!r} must match {NAME_RE.pattern}")
        return value

    @model_validator(mode="after")
    def _default_defined(self) -> PlansFile:
        if self.default_plan not in self.plans:
            raise ValueError(f"default_plan {self.default_plan!r} is not one of the plans")
        return self


_TOML_LINE = re.compile(r"at line (\d+)")


def parse_plans(text: str, where: str) -> PlansFile:
    """The plans file's text (``where`` names it in errors); else ``ConfigInvalid``
    naming ``where``, the line, and what is wrong."""
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_LINE.search(str(exc))
        line = found[1] if found else str(text.count("\n") + 1)  # "at end of document"
        raise ConfigInvalid(f"{where}:{line}: {exc}", code="config_syntax") from None
    try:
        return PlansFile.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = [str(p) for p in first["loc"]]
        line = _line_of(text, loc)
        raise ConfigInvalid(
            f"{where}:{line}: {'.'.join(loc) or 'file'}: {first['msg']}", code="config_invalid"
        ) from None


def _line_of(text: str, loc: list[str]) -> int:
    """Best guess at the line a validation error is about: the key's line within its
    table (``[plans.NAME]``, ``[stream]``, or the top), else the table's header, else 1."""
    lines = text.splitlines()
    table, key = ".".join(loc[:-1]), (loc[-1] if loc else "")
    current, header = "", 0
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("["):
            current = stripped.strip("[]").strip().replace('"', "").replace(" ", "")
            if current == table:
                header = n
            continue
        name = stripped.split("=", 1)[0].strip().strip('"')
        if "=" in stripped and current == table and name == key:
            return n
    return header or 1


def load_plans(path: Path) -> PlansFile:
    """Read and parse the plans file at ``path`` (``ConfigInvalid`` if it cannot be)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigInvalid(f"{path}: cannot read: {exc}", code="config_unreadable") from None
    return parse_plans(text, str(path))
