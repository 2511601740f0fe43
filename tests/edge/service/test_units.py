"""The systemd units and launchd plists ``edge.service.units`` builds: read back by a strict
parser (sections, known directives, absolute paths), by ``systemd-analyze verify`` (the
real systemd's own check) and by ``plistlib``."""

from __future__ import annotations

import plistlib
import shutil
import sys
from pathlib import Path

import pytest
from service_support import parse_unit, systemd_verify

from edge.service.units import (
    LIMIT_NOFILE,
    ROLE_COMMANDS,
    ServiceSpec,
    launchd_plist,
    plist_bytes,
    systemd_unit,
)

EXE = str(Path(sys.executable).parent / "mailslot")  # the venv's real, executable script


def spec(**kw: object) -> ServiceSpec:
    args: dict[str, object] = {"role": "edge", "scope": "user", "platform": "linux",
                               "executable": EXE, "home": "/srv/mailslot home"}
    args.update(kw)
    return ServiceSpec(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("role", ["edge", "relay", "up"])
def test_a_user_unit_runs_the_roles_foreground_command_under_the_user_manager(role: str) -> None:
    unit = parse_unit(systemd_unit(spec(role=role, environment=(("PATH", "/usr/bin:/bin"),))))
    assert unit.exec_start() == [EXE, *ROLE_COMMANDS[role]]  # type: ignore[index]
    assert unit.one("Install", "WantedBy") == "default.target"  # not multi-user.target
    assert unit.one("Service", "Type") == "notify"
    assert unit.one("Service", "Restart") == "on-failure"
    assert int(unit.one("Service", "RestartSec")) > 0
    assert int(unit.one("Service", "WatchdogSec")) > 0
    assert unit.environment() == {"MAILSLOT_HOME": "/srv/mailslot home", "PATH": "/usr/bin:/bin"}
    assert unit.get("Service", "User") is None  # the user manager runs it as this user
    assert "After" not in unit.sections["Unit"]  # no network-online.target up there


def test_a_system_unit_runs_as_a_dedicated_user_with_hardening() -> None:
    unit = parse_unit(systemd_unit(spec(role="relay", scope="system", home="/var/lib/mailslot",
                                        args=("--listen", "0.0.0.0:7710"))))
    assert unit.exec_start() == [EXE, "relay", "serve", "--listen", "0.0.0.0:7710"]
    service = {key: unit.one("Service", key) for key in unit.sections["Service"]
               if key != "Environment"}
    assert service["User"] == service["Group"] == "mailslot"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "mailslot"  # /var/lib/mailslot, writable
    assert service["ProtectHome"] == "yes" and service["PrivateTmp"] == "yes"
    assert int(service["LimitNOFILE"]) == LIMIT_NOFILE >= 65536  # many edges, one fd each
    assert unit.environment()["MAILSLOT_HOME"] == "/var/lib/mailslot"
    assert unit.one("Install", "WantedBy") == "multi-user.target"
    assert unit.one("Unit", "After") == "network-online.target"


def test_values_systemd_would_expand_or_split_are_escaped() -> None:
    odd = ("--config", "/etc/my conf/%h$HOME\"q\\.toml")
    unit = parse_unit(systemd_unit(spec(role="relay", args=odd, home="/h/100%")))
    assert unit.exec_start()[-2:] == list(odd)
    assert unit.environment()["MAILSLOT_HOME"] == "/h/100%"
    for bad in ("a\nExecStartPre=/bin/rm -rf /", "nul\0"):
        with pytest.raises(ValueError, match="newline or NUL"):
            spec(args=(bad,))
    with pytest.raises(ValueError, match="absolute"):
        spec(executable="mailslot")
    with pytest.raises(ValueError, match="absolute"):
        spec(home="relative/home")


def test_the_strict_parser_refuses_what_systemd_would_misread() -> None:
    good = systemd_unit(spec())
    for broken in (good.replace("RestartSec=", "RestartSecs="),  # unknown directive
                   good.replace("[Install]", "[Instal]"),
                   good + "[Service]\n",  # a section twice
                   good.replace("Type=notify", "Type=notify\nType=simple"),  # repeated
                   good.replace(EXE, "mailslot")):  # not absolute
        with pytest.raises(AssertionError):
            parse_unit(broken)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd)")
@pytest.mark.parametrize(("role", "scope"), [("edge", "user"), ("relay", "system"),
                                             ("up", "user"), ("edge", "system")])
def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path, role: str, scope: str) -> None:
    s = spec(role=role, scope=scope,
             home="/var/lib/mailslot" if scope == "system" else str(tmp_path / "h"))
    path = tmp_path / s.unit_name
    path.write_text(systemd_unit(s))
    done = systemd_verify(path, user=scope == "user", runtime_dir=tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert s.unit_name not in done.stderr, done.stderr  # no warning about our unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd)")
def test_systemd_analyze_verify_can_fail(tmp_path: Path) -> None:
    s = spec()
    path = tmp_path / s.unit_name
    path.write_text(systemd_unit(s).replace(EXE, "/nowhere/mailslot"))
    done = systemd_verify(path, user=True, runtime_dir=tmp_path / "run")
    assert done.returncode != 0 and "/nowhere/mailslot" in done.stderr


def test_the_launchd_agent_has_the_keys_launchd_needs() -> None:
    s = spec(platform="macos", role="relay", log_dir="/Users/me/Library/Logs/mailslot",
             home="/Users/me/ms", environment=(("PATH", "/opt/homebrew/bin:/usr/bin"),))
    doc = plistlib.loads(plist_bytes(launchd_plist(s)))
    assert doc["Label"] == "org.mailslot.relay" == s.label
    assert doc["ProgramArguments"] == [EXE, "relay", "serve"]
    assert doc["EnvironmentVariables"] == {"MAILSLOT_HOME": "/Users/me/ms",
                                           "PATH": "/opt/homebrew/bin:/usr/bin"}
    assert doc["KeepAlive"] == {"SuccessfulExit": False}  # restarted unless it exits cleanly
    assert doc["RunAtLoad"] is True
    assert doc["ProcessType"] == "Background"
    assert doc["StandardOutPath"] == "/Users/me/Library/Logs/mailslot/mailslot-relay.out.log"
    assert doc["StandardErrorPath"] == "/Users/me/Library/Logs/mailslot/mailslot-relay.err.log"
    assert doc["ThrottleInterval"] > 0
    assert all(Path(p).is_absolute() for p in (doc["ProgramArguments"][0],
                                               doc["StandardOutPath"]))
