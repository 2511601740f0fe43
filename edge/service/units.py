"""What a service manager is given to run mailslot: a systemd unit (text) or a launchd
property list (a dict), built from one ``ServiceSpec``. Pure: no file, no process, no
environment is read here (``edge.service.install`` decides the values and writes them).

Rules this module keeps:

- the command a service runs is one that stays in the foreground and stops cleanly on
  SIGTERM: ``mailslot edge run``, ``mailslot relay serve``, ``mailslot up``
  (``ROLE_COMMANDS``); a service manager, not mailslot, keeps it running;
- the executable and the home are absolute paths, taken as given: the unit runs the
  same ``mailslot`` and the same ``MAILSLOT_HOME`` the installing user has;
- a value that systemd would read differently (``%`` specifiers, ``$`` expansion,
  quotes, spaces) is escaped; one with a newline or a NUL is refused (``ValueError``);
- ``Type=notify``: the process says ``READY=1`` once it serves and ``WATCHDOG=1`` from its
  event loop (``shared.host.notify``), so ``systemctl start`` returns when mailslot really
  runs and a hung loop is restarted.
"""

from __future__ import annotations

import plistlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

Role = Literal["edge", "relay", "up"]
Scope = Literal["user", "system"]
Platform = Literal["linux", "macos"]
ROLES: tuple[Role, ...] = ("edge", "relay", "up")
PLATFORMS: tuple[Platform, ...] = ("linux", "macos")

#: The foreground command each role runs (after the ``mailslot`` executable).
ROLE_COMMANDS: dict[Role, tuple[str, ...]] = {
    "edge": ("edge", "run"),
    "relay": ("relay", "serve"),
    "up": ("up",),
}
ROLE_DESCRIPTIONS: dict[Role, str] = {
    "edge": "mailslot edge daemon",
    "relay": "mailslot relay",
    "up": "mailslot (relay and edge in one process)",
}

#: A system unit's dedicated user and its state folder (``StateDirectory=``, under
#: ``/var/lib``): the service's ``MAILSLOT_HOME``.
SYSTEM_USER = "mailslot"
STATE_DIRECTORY = "mailslot"
SYSTEM_HOME = f"/var/lib/{STATE_DIRECTORY}"
#: Seconds systemd (``RestartSec``) and launchd (``ThrottleInterval``) wait before a
#: restart: a crash loop costs one start every five seconds, not a spinning CPU.
RESTART_SEC = 5
#: systemd kills and restarts a process whose event loop sent no ``WATCHDOG=1`` for this
#: long (it sends one every half of it). Generous: a loaded home server is not a hang.
WATCHDOG_SEC = 60
#: Seconds a stop may take before SIGKILL (the edge gives its parts 5, the relay its
#: links and nats-server about 20).
STOP_TIMEOUT_SEC = 30
#: Open files of a system unit: a relay holds one per connected edge
#: (``relay serve --max-links`` defaults to this less 1,024: 64,512 edges).
LIMIT_NOFILE = 65536
#: ``mailslot relay serve`` and ``up`` exit 2 on a bad command line or ``--config`` file:
#: restarting them would fail the same way every five seconds.
NO_RESTART_EXIT = (2,)


@dataclass(frozen=True)
class ServiceSpec:
    """One service: which role, for whom, run how. Build it with absolute paths."""

    role: Role
    scope: Scope
    platform: Platform
    #: The absolute path of the ``mailslot`` executable the service runs.
    executable: str
    #: ``MAILSLOT_HOME`` for the service, or None: the platform's per-user folders.
    home: str | None = None
    #: More environment for the service (``PATH``, ``XDG_*_HOME``), in order.
    environment: tuple[tuple[str, str], ...] = ()
    #: More arguments after the role's command (``--listen 0.0.0.0:7710``).
    args: tuple[str, ...] = ()
    #: A system unit's user (and group).
    user: str = SYSTEM_USER
    #: The folder launchd writes the service's stdout and stderr to (macOS).
    log_dir: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES or self.platform not in PLATFORMS:
            raise ValueError(f"unknown role or platform: {self.role}, {self.platform}")
        if not PurePosixPath(self.executable).is_absolute():
            raise ValueError(f"the executable must be an absolute path, not {self.executable!r}")
        if self.home is not None and not PurePosixPath(self.home).is_absolute():
            raise ValueError(f"MAILSLOT_HOME must be an absolute path, not {self.home!r}")
        for value in (self.executable, self.home or "", self.user, self.log_dir, *self.args,
                      *(part for pair in self.environment for part in pair)):
            if "\n" in value or "\0" in value or "\r" in value:
                raise ValueError(f"a newline or NUL cannot go into a service file: {value!r}")
        for name, _ in self.environment:
            if not name.replace("_", "A").isalnum() or name[:1].isdigit():
                raise ValueError(f"not an environment variable name: {name!r}")

    @property
    def name(self) -> str:
        """``mailslot-edge``: the unit's name without ``.service``, the logs' name."""
        return f"mailslot-{self.role}"

    @property
    def unit_name(self) -> str:
        return f"{self.name}.service"

    @property
    def label(self) -> str:
        """The launchd label (reverse-DNS, as launchd wants)."""
        return f"org.mailslot.{self.role}"

    @property
    def plist_name(self) -> str:
        return f"{self.label}.plist"

    @property
    def argv(self) -> tuple[str, ...]:
        return (self.executable, *ROLE_COMMANDS[self.role], *self.args)

    def env(self) -> list[tuple[str, str]]:
        """The service's environment: ``MAILSLOT_HOME`` first, then the rest."""
        pairs = [("MAILSLOT_HOME", self.home)] if self.home is not None else []
        return pairs + [pair for pair in self.environment if pair[0] != "MAILSLOT_HOME"]


# -- systemd --------------------------------------------------------------------------


def systemd_unit(spec: ServiceSpec) -> str:
    """The unit file's text: ``[Unit]``, ``[Service]``, ``[Install]``."""
    return "".join(f"{line}\n" for line in _unit_lines(spec))


def _unit_lines(spec: ServiceSpec) -> Iterator[str]:
    system = spec.scope == "system"
    yield "# Written by `mailslot service install`; `mailslot service uninstall` removes it."
    yield "[Unit]"
    yield f"Description={_escape_specifiers(ROLE_DESCRIPTIONS[spec.role])}"
    if system:  # the user manager has no network targets: the link reconnects by itself
        yield "Wants=network-online.target"
        yield "After=network-online.target"
    yield ""
    yield "[Service]"
    yield "Type=notify"
    yield "NotifyAccess=main"
    yield "ExecStart=" + " ".join(exec_word(word) for word in spec.argv)
    for name, value in spec.env():
        yield "Environment=" + _quote(f"{name}={value}", dollar=False)
    yield "Restart=on-failure"
    yield f"RestartSec={RESTART_SEC}"
    yield "RestartPreventExitStatus=" + " ".join(str(c) for c in NO_RESTART_EXIT)
    yield f"WatchdogSec={WATCHDOG_SEC}"
    yield f"TimeoutStopSec={STOP_TIMEOUT_SEC}"
    yield "KillMode=mixed"  # SIGTERM to mailslot, which stops its nats-server itself
    if system:
        yield f"User={spec.user}"
        yield f"Group={spec.user}"
        yield f"StateDirectory={STATE_DIRECTORY}"
        yield "StateDirectoryMode=0700"
        yield f"WorkingDirectory={SYSTEM_HOME}"
        yield "UMask=0077"
        yield "NoNewPrivileges=yes"
        yield "ProtectSystem=strict"
        yield "ProtectHome=yes"
        yield "PrivateTmp=yes"
        yield "PrivateDevices=yes"
        yield "ProtectKernelTunables=yes"
        yield "ProtectControlGroups=yes"
        yield f"LimitNOFILE={LIMIT_NOFILE}"
    yield ""
    yield "[Install]"
    # A user manager has no multi-user.target: default.target is what it starts.
    yield "WantedBy=" + ("multi-user.target" if system else "default.target")


def exec_word(word: str) -> str:
    """One word of ``ExecStart=``: ``%`` and ``$`` doubled (no specifier, no variable is
    expanded), quoted with backslash escapes when it holds a space or a quote."""
    return _quote(word, dollar=True)


def _quote(value: str, dollar: bool) -> str:
    escaped = _escape_specifiers(value)
    if dollar:
        escaped = escaped.replace("$", "$$")
    if value and not any(c in value for c in " \t\"'\\;"):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _escape_specifiers(value: str) -> str:
    return value.replace("%", "%%")


# -- launchd --------------------------------------------------------------------------


def launchd_plist(spec: ServiceSpec) -> dict[str, Any]:
    """A launchd agent: started at login (``RunAtLoad``), restarted when it did not exit
    cleanly (``KeepAlive`` ``SuccessfulExit: false``, after ``ThrottleInterval``), run as
    background work (``ProcessType``), stdout and stderr to files in ``log_dir``."""
    if not spec.log_dir:
        raise ValueError("a launchd agent needs a log folder")
    out, err = log_paths(spec.log_dir, spec.name)
    return {
        "Label": spec.label,
        "ProgramArguments": list(spec.argv),
        "EnvironmentVariables": dict(spec.env()),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": RESTART_SEC,
        "ExitTimeOut": STOP_TIMEOUT_SEC,
        "ProcessType": "Background",
        "StandardOutPath": out,
        "StandardErrorPath": err,
    }


def log_paths(log_dir: str, name: str) -> tuple[str, str]:
    """Where launchd writes the stdout and stderr of the service ``name``
    (``ServiceSpec.name``) in ``log_dir``."""
    base = PurePosixPath(log_dir)
    return str(base / f"{name}.out.log"), str(base / f"{name}.err.log")


def plist_bytes(doc: dict[str, Any]) -> bytes:
    """The XML property list launchd reads."""
    return plistlib.dumps(doc, fmt=plistlib.FMT_XML, sort_keys=False)
