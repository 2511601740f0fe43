"""Where the edge keeps its state, and the one config model the edge daemon runs on.

Config flows one way (as in uvicorn): ``EdgePaths.resolve()`` → ``load_config(paths)`` →
one frozen ``EdgeConfig`` handed to the daemon and the CLI commands. ``edge.cli.main``
resolves the paths once per command and passes them down (the MCP server gets them in its
``McpConfig``); no other module calls ``resolve``. Nothing here is global; ``MAILSLOT_HOME``
is read once, from the environment mapping the caller passes.

Layout::

    config_dir/edge.json            EdgeConfig (0600)
    config_dir/keys/identity.key    private identity (0600, see ``edge.link.keystore``)
    data_dir/inbox.sqlite3          the inbox (0600, see ``edge.store.inbox``)
    data_dir/engine.sqlite3         the decision engine's state (see ``edge.store.enginestate``)
    data_dir/instances/ID.lock      one per running claimer of deliveries (see ``edge.store.instances``)
    data_dir/watches.sqlite3        the watches' runtime state (see ``edge.store.watchstate``)
    config_dir/intents.toml         the user's intents (see ``edge.intents.file``)
    data_dir/activity.log           hash-chained, HMAC-signed activity log (0600)
    data_dir/activity.log.NNN…      its rotated segments and retention record (see
                                    ``edge.store.activitysegments``)
    config_dir/keys/activity.key    the activity log's HMAC key (0600)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import platformdirs
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.errors import EdgeConfigError, NotInitialized
from shared.errors import InvalidIdentity
from shared.identity import PublicIdentity
from shared.tokens import check_identity

APP_NAME = "mailslot"
HOME_ENV = "MAILSLOT_HOME"
DIR_MODE = 0o700
FILE_MODE = 0o600


#: The name of ``EdgePaths.poke_file`` (in the data folder).
POKE_FILE = "watches.poke"


@dataclass(frozen=True)
class EdgePaths:
    """The edge's directories and files. Build with ``resolve``; call ``ensure`` before
    writing anything, so that directories exist and are private to the user."""

    config_dir: Path
    data_dir: Path

    @classmethod
    def resolve(cls, environ: Mapping[str, str] = os.environ) -> EdgePaths:
        """``$MAILSLOT_HOME/{config,data}`` if set (several edges on one machine), else
        the platform's per-user config and data directories."""
        home = environ.get(HOME_ENV)
        if home:
            root = Path(home).expanduser().absolute()
            return cls(config_dir=root / "config", data_dir=root / "data")
        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP_NAME)),
            data_dir=Path(platformdirs.user_data_dir(APP_NAME)),
        )

    @property
    def keys_dir(self) -> Path:
        return self.config_dir / "keys"

    @property
    def key_file(self) -> Path:
        return self.keys_dir / "identity.key"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "edge.json"

    @property
    def inbox_file(self) -> Path:
        return self.data_dir / "inbox.sqlite3"

    @property
    def watches_file(self) -> Path:
        return self.data_dir / "watches.sqlite3"

    @property
    def engine_file(self) -> Path:
        return self.data_dir / "engine.sqlite3"

    @property
    def instances_dir(self) -> Path:
        return self.data_dir / "instances"

    @property
    def intents_file(self) -> Path:
        return self.config_dir / "intents.toml"

    @property
    def activity_file(self) -> Path:
        return self.data_dir / "activity.log"

    @property
    def activity_key_file(self) -> Path:
        return self.keys_dir / "activity.key"

    @property
    def poke_file(self) -> Path:
        """Touched to wake the daemon's watch loop at once (a new sleep, a decided
        approval); the daemon watches it with inotify, never polls it."""
        return self.data_dir / POKE_FILE

    def require_initialized(self) -> None:
        """Raise ``NotInitialized`` unless ``mailslot edge init`` wrote the config here."""
        if not self.config_file.exists():
            raise NotInitialized("no edge here; run `mailslot edge init` first")

    def ensure(self) -> None:
        """Create the directories with mode 0700, tightening existing ones: they hold a
        private key and interrupts that may carry private context."""
        for directory in (self.config_dir, self.keys_dir, self.data_dir):
            private_dir(directory)


def private_dir(directory: Path) -> None:
    """Make ``directory`` (and missing parents) exist, and set it to mode 0700."""
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(directory, DIR_MODE)


def _check_relay_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry credentials, a query or a fragment")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _check_identity_doc(value: dict[str, str]) -> dict[str, str]:
    # InvalidIdentity is not a ValueError; re-raise as one so pydantic names the field.
    try:
        PublicIdentity.from_doc(value)
    except InvalidIdentity as exc:
        raise ValueError(exc.message) from None
    return value


class RetentionConfig(BaseModel):
    """How long the edge keeps what it is done with (``edge.json`` field ``retention``;
    see ``edge.store.prune``). Days may be fractional, up to 100 years; 0 keeps that kind
    forever."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inbox_days: float = Field(default=90.0, ge=0, le=36500, allow_inf_nan=False)
    deliveries_days: float = Field(default=90.0, ge=0, le=36500, allow_inf_nan=False)
    engine_days: float = Field(default=90.0, ge=0, le=36500, allow_inf_nan=False)
    log_segment_bytes: int = Field(default=16 << 20, ge=4096, le=1 << 40)
    log_segment_days: float = Field(default=7.0, gt=0, le=36500, allow_inf_nan=False)
    log_keep_days: float = Field(default=180.0, ge=0, le=36500, allow_inf_nan=False)
    log_max_bytes: int = Field(default=1 << 30, ge=0, le=1 << 50)
    check_every: float = Field(default=300.0, ge=0.05, le=86400, allow_inf_nan=False)

    @model_validator(mode="after")
    def _segments_fit(self) -> RetentionConfig:
        if self.log_max_bytes and self.log_max_bytes < 2 * self.log_segment_bytes:
            raise ValueError("log_max_bytes must be 0 (no cap) or at least twice "
                             "log_segment_bytes")
        return self


class EdgeConfig(BaseModel):
    """Everything the edge needs to reach its relay. Written by ``mailslot edge init``.

    ``relay_identity`` is pinned at enrollment: the edge trusts relay-attested interrupts
    and the relay's auth challenge only from that key, never from whatever key a relay
    presents later."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    relay_url: Annotated[str, AfterValidator(_check_relay_url)]
    identity: Annotated[str, AfterValidator(check_identity)]
    relay_identity: Annotated[dict[str, str], AfterValidator(_check_identity_doc)]
    initial_credit: int = Field(default=2048, ge=1, le=16384)
    # Finite only: ``Infinity`` or ``1e400`` in edge.json would be a keepalive that never
    # fires or a reconnect that never comes.
    reconnect_base: float = Field(default=0.5, gt=0, allow_inf_nan=False)
    reconnect_cap: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    keepalive: float = Field(default=20.0, gt=0, allow_inf_nan=False)
    retention: RetentionConfig = RetentionConfig()

    @model_validator(mode="after")
    def _backoff_rules(self) -> EdgeConfig:
        if self.reconnect_cap < self.reconnect_base:
            raise ValueError("reconnect_cap must be at least reconnect_base")
        return self

    def ws_url(self) -> str:
        """The relay's WebSocket endpoint: http→ws, https→wss, plus ``/v1/connect``."""
        parts = urlsplit(self.relay_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/v1/connect", "", ""))

    def relay_public(self) -> PublicIdentity:
        """The pinned relay identity, checked (self-certifying) on every call."""
        return PublicIdentity.from_doc(self.relay_identity)


def load_config(paths: EdgePaths) -> EdgeConfig:
    """Read ``edge.json``; raise ``EdgeConfigError`` naming the file and what is wrong."""
    path = paths.config_file
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise EdgeConfigError(f"{path}: no edge configuration; run `mailslot edge init`") from None
    except OSError as exc:
        raise EdgeConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EdgeConfigError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except UnicodeDecodeError:
        raise EdgeConfigError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise EdgeConfigError(f"{path}: not an edge configuration (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise EdgeConfigError(f"{path}: top level must be a JSON object")
    try:
        return EdgeConfig.model_validate(doc)
    except ValidationError as exc:
        raise EdgeConfigError(f"{path}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    """Each problem as ``field NAME: reason``, so the user knows which line to fix."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"])
        reason = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            reason = "unknown field"
        problems.append(f"field {where}: {reason}" if where else reason)
    return "; ".join(problems)


def save_config(paths: EdgePaths, config: EdgeConfig) -> None:
    """Write ``edge.json`` atomically (temp file in the same dir, fsync, rename), mode
    0600, so a crash leaves the old file or the new one, never half of one."""
    private_dir(paths.config_dir)
    write_atomic(paths.config_file, (config.model_dump_json(indent=2) + "\n").encode())


def write_atomic(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Temp file in the same folder, fsync, rename, fsync the folder; ``mode`` (0600
    unless told). A crash leaves the old file or the new one, never half of one, and a
    watcher only ever sees whole files."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or an unlink in ``directory`` durable: the directory entry must
    reach the disk too."""
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
