"""``mailslot service install|uninstall|status|logs`` round trips in a temporary home, with
recording stand-ins for systemctl/launchctl/loginctl/useradd/journalctl on PATH (no real
service manager is touched): what is written, what is run, and that uninstall leaves
exactly what was there before."""

from __future__ import annotations

import json
import os
import plistlib
import pwd
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from service_support import FakeHost, parse_unit, systemd_verify

from edge.service.install import user_exists

UNIT = "mailslot-edge.service"


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


def run(host: FakeHost, mp: Any, capsys: Any, *args: str, **env: str) -> tuple[int, str, str]:
    return host.run(mp, capsys, "service", *args, **env)


def user_unit(host: FakeHost, name: str = UNIT) -> Path:
    return host.home / ".config" / "systemd" / "user" / name


def test_dry_run_prints_the_unit_and_commands_and_touches_nothing(host, monkeypatch, capsys):
    host.make_edge()
    before = host.files()
    code, out, _ = run(host, monkeypatch, capsys, "install", "--dry-run", "--platform", "linux")
    assert code == 0
    assert f"# {user_unit(host)}" in out
    assert "ExecStart=" in out and "WantedBy=default.target" in out
    assert "systemctl --user enable --now mailslot-edge.service" in out
    assert "loginctl enable-linger" in out  # said, not run
    assert host.files() == before and host.calls() == []
    code, out, _ = run(host, monkeypatch, capsys, "install", "--dry-run", "--platform", "linux",
                       "--json")
    doc = json.loads(out)
    assert doc["dry_run"] is True and doc["ran"] == []
    parse_unit(doc["content"])
    assert host.files() == before and host.calls() == []


def test_user_install_is_idempotent_and_uninstall_removes_exactly_what_it_wrote(
        host, monkeypatch, capsys):
    host.make_edge()
    before = host.files()
    code, out, err = run(host, monkeypatch, capsys, "install", "--platform", "linux")
    assert code == 0, err
    unit = parse_unit(user_unit(host).read_text())
    assert unit.environment()["MAILSLOT_HOME"] == str(host.mailslot_home)
    assert unit.environment()["PATH"].startswith(str(host.bin))  # runtimes found the same way
    assert unit.exec_start()[1:] == ["edge", "run"]
    assert host.calls() == ["systemctl --user daemon-reload",
                            f"systemctl --user enable --now {UNIT}"]
    manifest = host.mailslot_home / "config" / "service.json"
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o600
    assert str(user_unit(host)) in json.loads(manifest.read_text())["services"]["user:mailslot-edge"]["files"]
    assert "loginctl enable-linger" in out
    written = user_unit(host).stat().st_mtime_ns

    host.forget_calls()
    code, out, _ = run(host, monkeypatch, capsys, "install", "--platform", "linux")
    assert code == 0 and out.startswith("unchanged ")
    assert user_unit(host).stat().st_mtime_ns == written  # not rewritten
    assert host.calls() == ["systemctl --user daemon-reload",
                            f"systemctl --user enable --now {UNIT}"]

    host.forget_calls()  # a changed unit: the running service is restarted on it
    code, out, _ = run(host, monkeypatch, capsys, "install", "--platform", "linux", "--",
                       "--json")
    assert code == 0
    assert host.calls() == ["systemctl --user daemon-reload", f"systemctl --user enable {UNIT}",
                            f"systemctl --user restart {UNIT}"]

    host.forget_calls()
    code, out, _ = run(host, monkeypatch, capsys, "uninstall", "--json")
    assert code == 0
    assert host.calls() == [f"systemctl --user disable --now {UNIT}",
                            "systemctl --user daemon-reload"]
    assert host.files() == before  # the unit, its folders and the manifest: all gone
    code, out, _ = run(host, monkeypatch, capsys, "uninstall")
    assert code == 0 and "nothing to do" in out


def test_linger_is_run_only_when_asked(host, monkeypatch, capsys):
    host.make_edge()
    code, out, _ = run(host, monkeypatch, capsys, "install", "--platform", "linux", "--linger")
    assert code == 0
    user = pwd.getpwuid(os.getuid()).pw_name
    assert host.calls()[0] == f"loginctl enable-linger {user}"
    linger = host.root / "var/lib/systemd/linger" / user
    linger.parent.mkdir(parents=True)
    linger.touch()
    code, out, _ = run(host, monkeypatch, capsys, "install", "--platform", "linux")
    assert code == 0 and "enable-linger" not in out


def test_an_edge_service_without_an_edge_is_refused(host, monkeypatch, capsys):
    before = host.files()
    code, _, err = run(host, monkeypatch, capsys, "install", "--platform", "linux")
    assert code == 1 and err.startswith("mailslot: not_initialized: ")
    assert "mailslot edge init" in err
    assert host.files() == before and host.calls() == []
    code, out, _ = run(host, monkeypatch, capsys, "install", "--platform", "linux", "--dry-run")
    assert code == 0 and "note: no edge here yet" in out
    code, _, _ = run(host, monkeypatch, capsys, "install", "--platform", "linux", "--role",
                     "relay")  # a relay needs nothing beforehand
    assert code == 0


def test_system_relay_install_and_uninstall(host, monkeypatch, capsys, tmp_path):
    before = host.files()
    code, out, err = run(host, monkeypatch, capsys, "install", "--system", "--role", "relay",
                         "--platform", "linux", "--", "--listen", "0.0.0.0:7710")
    assert code == 0, err
    path = host.root / "etc/systemd/system/mailslot-relay.service"
    unit = parse_unit(path.read_text())
    assert unit.exec_start()[1:] == ["relay", "serve", "--listen", "0.0.0.0:7710"]
    assert unit.one("Service", "User") == "mailslot"
    assert unit.environment() == {"MAILSLOT_HOME": "/var/lib/mailslot"}  # no PATH carried
    created = [] if user_exists("mailslot") else [
        "useradd --system --user-group --home-dir /var/lib/mailslot --no-create-home "
        "--shell /usr/sbin/nologin mailslot"]
    assert host.calls() == [*created, "systemctl daemon-reload",
                            "systemctl enable --now mailslot-relay.service"]
    manifest = host.root / "etc/mailslot/service.json"
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o600
    if shutil.which("systemd-analyze"):
        done = systemd_verify(path, user=False, runtime_dir=tmp_path / "run")
        assert done.returncode == 0 and path.name not in done.stderr, done.stderr
    host.forget_calls()
    code, out, _ = run(host, monkeypatch, capsys, "uninstall", "--system")
    assert code == 0
    assert host.calls() == ["systemctl disable --now mailslot-relay.service",
                            "systemctl daemon-reload"]
    assert host.files() == before
    if created:
        assert "the user mailslot" in out  # kept, and said so


def test_macos_agent_install_and_uninstall(host, monkeypatch, capsys):
    host.make_edge()
    before = host.files()
    code, out, err = run(host, monkeypatch, capsys, "install", "--platform", "macos")
    assert code == 0, err
    path = host.home / "Library/LaunchAgents/org.mailslot.edge.plist"
    doc = plistlib.loads(path.read_bytes())
    assert doc["ProgramArguments"][1:] == ["edge", "run"]
    assert doc["EnvironmentVariables"]["MAILSLOT_HOME"] == str(host.mailslot_home)
    assert Path(doc["StandardErrorPath"]).parent == host.home / "Library/Logs/mailslot"
    assert Path(doc["StandardErrorPath"]).parent.is_dir()  # launchd does not make it
    uid = os.getuid()
    assert host.calls() == [f"launchctl enable gui/{uid}/org.mailslot.edge",
                            f"launchctl bootout gui/{uid}/org.mailslot.edge",
                            f"launchctl bootstrap gui/{uid} {path}"]
    code, out, _ = run(host, monkeypatch, capsys, "status", "--platform", "macos", "--json")
    assert json.loads(out)["state"] == "running"
    host.forget_calls()
    code, out, _ = run(host, monkeypatch, capsys, "logs", "-n", "5")
    assert code == 0
    assert host.calls() == [f"tail -n 5 {doc['StandardOutPath']} {doc['StandardErrorPath']}"]
    host.forget_calls()
    code, _, _ = run(host, monkeypatch, capsys, "uninstall")
    assert code == 0
    assert host.calls() == [f"launchctl bootout gui/{uid}/org.mailslot.edge"]
    assert host.files() == before


def test_status_and_logs_ask_the_service_manager(host, monkeypatch, capsys):
    host.make_edge()
    code, out, _ = run(host, monkeypatch, capsys, "status")
    assert code == 0 and "no user service of mailslot is installed" in out
    code, _, err = run(host, monkeypatch, capsys, "logs")
    assert code == 1 and err.startswith("mailslot: not_installed: ")
    run(host, monkeypatch, capsys, "install", "--platform", "linux")
    code, out, _ = run(host, monkeypatch, capsys, "status", "--json")
    doc = json.loads(out)
    assert (doc["installed"], doc["enabled"], doc["active"]) == (True, True, True)
    code, out, _ = run(host, monkeypatch, capsys, "status", FAKE_ENABLED="disabled",
                       FAKE_ACTIVE="failed")
    assert "not enabled, failed" in out
    host.forget_calls()
    code, _, _ = run(host, monkeypatch, capsys, "logs", "-f")
    assert code == 0
    assert host.calls() == [f"journalctl --user -u {UNIT} -n 100 --no-pager -f"]


def test_a_refusing_service_manager_is_reported_and_the_file_stays_listed(
        host, monkeypatch, capsys):
    host.make_edge()
    before = host.files()
    code, out, _ = run(host, monkeypatch, capsys, "install", "--platform", "linux", "--json",
                       FAKE_FAIL="systemctl --user enable")
    assert code == 1
    assert json.loads(out)["error"] == "service_manager_failed"
    assert "refused by the test" in json.loads(out)["message"]
    assert user_unit(host).exists()
    code, _, _ = run(host, monkeypatch, capsys, "uninstall")
    assert code == 0 and host.files() == before


def test_an_edited_unit_is_left_in_place_on_uninstall(host, monkeypatch, capsys):
    host.make_edge()
    run(host, monkeypatch, capsys, "install", "--platform", "linux")
    user_unit(host).write_text(user_unit(host).read_text() + "# my change\n")
    code, out, _ = run(host, monkeypatch, capsys, "uninstall")
    assert code == 0 and "edited since it was installed" in out
    assert user_unit(host).exists()


def test_system_on_macos_is_a_usage_error(host, monkeypatch, capsys):
    code, _, err = run(host, monkeypatch, capsys, "install", "--system", "--platform", "macos",
                       "--role", "relay")
    assert code == 2 and err.startswith("mailslot: usage: ")


