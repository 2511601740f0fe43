"""The relay's one configuration object, built once by the CLI and passed down."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from relay.clientaddr import parse_networks
from relay.errors import ConfigInvalid, StartupFailed
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


def nats_credentials(servers: Sequence[str]) -> dict[str, str]:
    """The token or user and password all ``servers`` share, as nats-py options. nats-py
    sends a URL's credentials only to that URL, and the nodes it learns of from the
    cluster come without any: failing over to one of them would be refused for good."""
    found = {(url.username, url.password) for url in map(urlsplit, servers)}
    user, password = found.pop() if len(found) == 1 else (None, None)
    if user is None:
        return {}
    return {"token": user} if password is None else {"user": user, "password": password}


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

    def stream_limits(self) -> dict[str, Any]:
        """These settings as the interrupt stream's JetStream configuration fields (the
        one place that maps them; ``Store.ensure`` applies them, nothing else does)."""
        return {"max_msgs_per_subject": self.max_per_recipient,
                "duplicate_window": self.duplicate_window, "max_age": self.max_age or None,
                "max_bytes": self.max_bytes or -1, "num_replicas": self.replicas}

    def changes(self, have: Mapping[str, Any] | None, limits: bool) -> str:
        """What applying these settings changes in an existing stream's configuration
        ``have`` ("" for nothing): with ``limits`` every field of ``stream_limits``, else
        (a KV bucket) only replicas below ``replicas``. Never a scale-down: see
        ``check_replicas``."""
        if have is None:
            return ""
        unset = {"max_msgs_per_subject": -1, "duplicate_window": 0, "max_age": 0,
                 "max_bytes": -1, "num_replicas": 1}
        wanted = self.stream_limits() if limits else {"num_replicas": self.replicas}
        out = []
        for name, new in wanted.items():
            old = have.get(name)
            old, new = unset[name] if old is None else old, unset[name] if new is None else new
            if abs(float(old) - float(new)) > 1e-6:
                out.append(f"{name} {old:g} -> {new:g}")
        return ", ".join(out)

    def check_replicas(self, stream: str, have: int) -> None:
        """Refuse to start (``StartupFailed`` ``replicas_conflict``, exit 6) when an
        existing ``stream`` has more replicas than configured: a relay started without
        ``--replicas 3`` on a cluster must not turn a replicated stream into one copy."""
        if have > self.replicas:
            raise StartupFailed(
                f"stream {stream} has {have} replicas and this relay is configured for "
                f"{self.replicas}: start it with --replicas {have} (a relay never scales "
                f"a stream down; to do so on purpose: nats stream edit {stream} "
                f"--replicas {self.replicas})",
                code="replicas_conflict",
            )


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
    #: Interrupts queued for any one identity of the account (all priorities).
    max_pending_per_identity: StrictInt | None = Field(default=None, ge=1, le=1_000_000_000)
    #: Bytes queued for the account's identities together, and for any one of them
    #: (``relay.usage``'s ledger; beyond it ``507 quota_bytes_exceeded``).
    max_pending_bytes: StrictInt | None = Field(default=None, ge=1, le=2**62)
    max_pending_bytes_per_identity: StrictInt | None = Field(default=None, ge=1, le=2**62)
    #: Edges of the account connected at once, across every relay process on the NATS.
    max_connected_edges: StrictInt | None = Field(default=None, ge=1, le=1_000_000)

    def burst(self, rate: float | None, burst: int | None) -> int:
        return burst if burst is not None else max(1, int(rate or 1))


#: The plan an account gets when the config defines none.
DEFAULT_PLAN = "default"


#: 127.0.0.0/8 and ::1: the relay's own host (``mailslot up``'s edge, local tools).
LOOPBACK = ("127.0.0.0/8", "::1/128")


def check_networks(value: Any) -> tuple[str, ...]:
    """CIDRs (or single addresses), normalised (``ValueError`` naming a bad one)."""
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list of CIDRs like [\"10.0.0.0/8\"]")
    return tuple(str(network) for network in parse_networks(value))


#: A config field holding CIDRs: checked and normalised by ``check_networks``.
NetworkList = Annotated[tuple[str, ...], BeforeValidator(check_networks)]


class UnauthenticatedLimits(BaseModel):
    """The ``[unauthenticated]`` table of the ``--config`` file: requests per client
    address (``relay.clientaddr``) to the endpoints that come before any credential —
    ``POST /v1/enroll`` and the link's handshake — a token bucket in NATS shared by
    every relay process (``relay.ratelimit.AddressLimiter``). On by default."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    #: Requests per second per client address (bucket refill); 0 turns the limit off.
    rate: StrictFloat = Field(default=10.0, ge=0, le=1_000_000)
    #: Bucket size: requests one address may make at once.
    burst: StrictInt = Field(default=30, ge=1, le=10_000_000)
    #: Client addresses never limited (CIDRs). Default: loopback, this host's own.
    exempt: NetworkList = LOOPBACK


class ProxySettings(BaseModel):
    """The ``[proxy]`` table: the peers (load balancers, reverse proxies) whose
    ``X-Forwarded-For`` names the client. Empty: the header is never believed.

    Default: loopback. A reverse proxy on the relay's own host (the usual TLS set-up) then
    gets each of its clients limited by their own address, where an untrusted local proxy
    would make every client look like loopback (exempt by default: nothing limited). Only
    a process on this host can send from loopback, so nobody else can spoof the header."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    trusted: NetworkList = LOOPBACK


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
    #: Links (connected edges) this process holds at most (``--max-links``); None: what
    #: its open-file limit allows (``relay.server.default_max_links``).
    max_links: int | None = Field(default=None, ge=1)
    #: ``HOST:PORT`` serving ``GET /metrics`` alone; when set, the main port no longer
    #: answers /metrics (404), so that it can stay on a private network.
    metrics_listen: str | None = None
    #: Requests per client address to the unauthenticated endpoints (``[unauthenticated]``).
    unauthenticated: UnauthenticatedLimits = UnauthenticatedLimits()
    #: CIDRs whose ``X-Forwarded-For`` is believed (``[proxy] trusted``, ``--trusted-proxy``).
    trusted_proxies: NetworkList = LOOPBACK

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
    unauthenticated: UnauthenticatedLimits = UnauthenticatedLimits()
    proxy: ProxySettings = ProxySettings()
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
