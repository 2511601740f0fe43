"""The relay's one configuration object, built once by the CLI and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.limits import BODY_MAX_BYTES

DEFAULT_LISTEN = "127.0.0.1:7710"


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


class RelayConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
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
