"""What the tests of ``edge.service`` share: a strict reader of systemd unit files, and
recording stand-ins for the service managers (``systemctl``, ``launchctl``, …) put first
on ``PATH``, so that no test ever touches the machine's real service manager."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edge.cli.main import main

#: The directives a mailslot unit may use, per section, and those that may repeat.
KNOWN = {
    "Unit": {"Description", "Wants", "After", "Documentation"},
    "Service": {
        "Type", "NotifyAccess", "ExecStart", "Environment", "Restart", "RestartSec",
        "RestartPreventExitStatus", "WatchdogSec", "TimeoutStopSec", "KillMode", "User",
        "Group", "StateDirectory", "StateDirectoryMode", "WorkingDirectory", "UMask",
        "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
        "ProtectKernelTunables", "ProtectControlGroups", "LimitNOFILE",
    },
    "Install": {"WantedBy"},
}
REPEATABLE = {"Environment"}
ORDER = ["Unit", "Service", "Install"]


@dataclass
class Unit:
    """A unit file read strictly: ``sections[name][key]`` is the list of its values."""

    sections: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def one(self, section: str, key: str) -> str:
        values = self.sections[section][key]
        assert len(values) == 1, f"{key} given {len(values)} times"
        return values[0]

    def get(self, section: str, key: str) -> str | None:
        values = self.sections.get(section, {}).get(key)
        return None if values is None else self.one(section, key)

    def exec_start(self) -> list[str]:
        """``ExecStart=`` split as systemd does for what mailslot writes: quotes and
        backslashes as a shell's, then ``%%`` → ``%`` and ``$$`` → ``$``."""
        words = shlex.split(self.one("Service", "ExecStart"))
        return [w.replace("%%", "%").replace("$$", "$") for w in words]

    def environment(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for value in self.sections["Service"].get("Environment", []):
            (pair,) = shlex.split(value)
            name, _, val = pair.partition("=")
            assert name not in found, f"Environment {name} twice"
            found[name] = val.replace("%%", "%")
        return found


def parse_unit(text: str) -> Unit:
    """Every line is a comment, blank, a known ``[Section]`` (each once, in order) or a
    ``Key=Value`` of a directive known in its section (repeated only where systemd
    allows: ``Environment``); no continuation lines, no trailing spaces."""
    unit = Unit()
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        where = f"line {number}: {line!r}"
        assert line == line.rstrip(), f"trailing space, {where}"
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), where
            current = line[1:-1]
            assert current in KNOWN, f"unknown section, {where}"
            assert current not in unit.sections, f"section twice, {where}"
            assert ORDER.index(current) == len(unit.sections), f"section out of order, {where}"
            unit.sections[current] = {}
            continue
        assert current is not None, f"a directive outside a section, {where}"
        key, sep, value = line.partition("=")
        assert sep and key == key.strip() and value, f"not Key=Value, {where}"
        assert key in KNOWN[current], f"unknown directive in [{current}], {where}"
        assert not value.endswith("\\"), f"continuation line, {where}"
        values = unit.sections[current].setdefault(key, [])
        assert not values or key in REPEATABLE, f"{key} repeated, {where}"
        values.append(value)
    assert list(unit.sections) == ORDER, f"sections {list(unit.sections)}"
    exe = unit.exec_start()[0]
    assert Path(exe).is_absolute() and os.access(exe, os.X_OK), f"ExecStart {exe}"
    for name, value in unit.environment().items():
        if name == "MAILSLOT_HOME":
            assert Path(value).is_absolute(), value
    directory = unit.get("Service", "WorkingDirectory")
    assert directory is None or Path(directory).is_absolute()
    return unit


def systemd_verify(path: Path, user: bool, runtime_dir: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze [--user] verify PATH`` (a user manager's check needs a runtime
    folder; none is running here)."""
    tool = shutil.which("systemd-analyze")
    assert tool is not None
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir), "SYSTEMD_LOG_LEVEL": "notice"}
    return subprocess.run([tool, *(["--user"] if user else []), "verify", str(path)],
                          capture_output=True, text=True, env=env, timeout=60, cwd=path.parent)


FAKE = r"""#!/bin/sh
# A recording stand-in for a service manager: one line per call in $FAKE_CALLS.
printf '%s\n' "$(basename "$0") $*" >> "$FAKE_CALLS"
case "$*" in
  *is-enabled*) echo "${FAKE_ENABLED:-enabled}"; [ "${FAKE_ENABLED:-enabled}" = enabled ]; exit $?;;
  *is-active*) echo "${FAKE_ACTIVE:-active}"; [ "${FAKE_ACTIVE:-active}" = active ]; exit $?;;
  *print*) [ "${FAKE_ACTIVE:-active}" = active ] && echo "state = running"; exit 0;;
esac
case "$(basename "$0") $*" in
  "${FAKE_FAIL:-none}"*) echo "refused by the test" >&2; exit 1;;
esac
exit 0
"""
MANAGERS = ("systemctl", "launchctl", "loginctl", "useradd", "journalctl", "tail")


@dataclass
class FakeHost:
    """A temporary user home, a root prefix and recording service managers: the
    environment a ``mailslot service`` command runs in."""

    base: Path

    def __post_init__(self) -> None:
        self.outer = dict(os.environ)  # the test process's own, before any run
        self.bin.mkdir(parents=True, exist_ok=True)
        for name in MANAGERS:
            script = self.bin / name
            script.write_text(FAKE)
            script.chmod(0o755)
        self.home.mkdir(exist_ok=True)
        self.root.mkdir(exist_ok=True)

    @property
    def bin(self) -> Path:
        return self.base / "bin"

    @property
    def home(self) -> Path:
        return self.base / "home"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def calls_file(self) -> Path:
        return self.base / "calls"

    @property
    def mailslot_home(self) -> Path:
        return self.base / "mailslot"

    def env(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in self.outer.items()
               if not k.startswith(("XDG_", "MAILSLOT_", "NOTIFY_SOCKET", "WATCHDOG_"))}
        env.update(HOME=str(self.home), PATH=f"{self.bin}:{self.outer['PATH']}",
                   MAILSLOT_SERVICE_ROOT=str(self.root), MAILSLOT_HOME=str(self.mailslot_home),
                   FAKE_CALLS=str(self.calls_file), MAILSLOT_LOG="WARNING")
        env.update(more)
        return env

    def calls(self) -> list[str]:
        if not self.calls_file.exists():
            return []
        return self.calls_file.read_text().splitlines()

    def forget_calls(self) -> None:
        self.calls_file.unlink(missing_ok=True)

    def files(self) -> set[Path]:
        """Every file and folder under the home and the root (what a command left)."""
        tops = (self.home, self.root, self.mailslot_home)
        return {p for top in tops if top.exists() for p in top.rglob("*")}

    def run(self, monkeypatch: Any, capsys: Any, *args: str, **env: str) -> tuple[int, str, str]:
        """``mailslot ARGS`` in this process, in this host's environment: (exit code,
        stdout, stderr)."""
        wanted = self.env(**env)
        for name in list(os.environ):
            monkeypatch.delenv(name)
        for name, value in wanted.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        out, err = capsys.readouterr()
        return int(exit_.value.code or 0), out, err

    def make_edge(self) -> None:
        """Enough of an edge home for ``service install --role edge`` (its edge.json)."""
        config = self.mailslot_home / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "edge.json").write_text("{}")
