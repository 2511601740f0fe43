"""``mailslot doctor``: a real edge home against a real relay is all well; each broken
setup it claims to detect is broken here for real (modes, key, edge.json, intents, a relay
down, TLS, a skewed clock, the daemon stopped, a service disabled or failed, a relay
store gone, a full disk) and reported as one failed check with a fix."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from service_support import FakeHost
from tests_support import free_port, running_edge, wait_until

from edge.config import EdgePaths
from edge.service.doctor import Check, Setup, run_checks, tls_check
from edge.service.install import Host
from edge.status import edge_status


@pytest.fixture
def fake(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "host")


def checks(paths: EdgePaths, fake: FakeHost, **kw: Any) -> dict[str, Check]:
    env = kw.pop("env", {})
    setup = Setup(paths=paths, host=Host.from_environ(fake.env(**env)), **kw)
    found = run_checks(setup)
    return _named(found)


async def checks_beside_relay(paths: EdgePaths, fake: FakeHost, **kw: Any) -> dict[str, Check]:
    """``checks`` in a thread: the test's relay answers on this event loop meanwhile."""
    return await asyncio.to_thread(checks, paths, fake, **kw)


def _named(found: list[Check]) -> dict[str, Check]:
    assert len({c.name for c in found}) == len(found), found
    for check in found:
        assert check.ok or check.fix, check  # every problem says what to do
    return {c.name: c for c in found}


def failed(found: dict[str, Check]) -> set[str]:
    return {name for name, check in found.items() if not check.ok}


async def test_a_running_edge_is_all_well_and_a_stopped_one_is_not(make_member, fake):
    member = await make_member()
    paths = member.paths()
    async with running_edge(member):
        await wait_until(lambda: edge_status(paths)["connected"], 20, "connected")
        found = await checks_beside_relay(paths, fake)
        assert failed(found) == set(), found
        assert set(found) >= {"folders", "file_modes", "key", "edge_json", "intents", "relay",
                              "tls", "clock", "daemon", "service", "disk"}
        assert found["daemon"].detail == "running, connected to the relay"
    found = await checks_beside_relay(paths, fake)
    assert failed(found) == {"daemon"}
    assert "mailslot service install" in found["daemon"].fix


async def test_modes_key_config_and_intents_problems(make_member, fake):
    member = await make_member()
    paths = member.paths()
    os.chmod(paths.data_dir, 0o755)
    os.chmod(paths.key_file, 0o644)
    found = await checks_beside_relay(paths, fake)
    assert {"folders", "file_modes", "key"} <= failed(found)
    assert found["folders"].fix == f"chmod 700 {paths.data_dir}"
    assert str(paths.key_file) in found["file_modes"].fix
    assert found["key"].fix == f"chmod 600 {paths.key_file}"
    os.chmod(paths.data_dir, 0o700)
    os.chmod(paths.key_file, 0o600)

    paths.intents_file.write_text('[[intent]]\nid = "a"\nmatch = {type = "x"\n')
    assert "line" in (await checks_beside_relay(paths, fake))["intents"].detail
    paths.intents_file.unlink()

    good = paths.config_file.read_text()
    paths.config_file.write_text(good[:-5])
    found = await checks_beside_relay(paths, fake)
    assert "edge_json" in failed(found) and "not valid JSON" in found["edge_json"].detail
    assert "relay" not in found  # nothing to probe without a config
    paths.config_file.write_text(good)


async def test_relay_down_tls_and_clock(make_member, fake, relay):
    member = await make_member()
    paths = member.paths()
    doc = json.loads(paths.config_file.read_text())
    port = relay.url.rsplit(":", 1)[1]

    def relay_url(url: str) -> None:
        paths.config_file.write_text(json.dumps({**doc, "relay_url": url}))

    relay_url(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    found = await checks_beside_relay(paths, fake)
    assert "connection refused" in found["relay"].detail and "relay" in failed(found)

    relay_url(f"https://127.0.0.1:{port}")  # the relay speaks plain HTTP: no TLS there
    found = await checks_beside_relay(paths, fake)
    assert "tls" in failed(found) and "TLS" in found["tls"].detail

    relay_url(relay.url)
    # our clock 2 min ahead of the relay's
    found = await checks_beside_relay(paths, fake, now=lambda: time.time() + 120)
    assert "clock" in failed(found)
    assert "behind" in found["clock"].detail and "timedatectl" in found["clock"].fix
    found = await checks_beside_relay(paths, fake, now=lambda: time.time() - 120)
    assert "ahead of" in found["clock"].detail
    assert (await checks_beside_relay(paths, fake))["clock"].ok


async def test_a_daemon_that_runs_but_cannot_reach_its_relay(make_member, fake):
    member = await make_member()
    paths = member.paths()
    doc = json.loads(paths.config_file.read_text())
    paths.config_file.write_text(json.dumps({**doc, "relay_url": f"http://127.0.0.1:{free_port()}"}))
    async with running_edge(member):
        await wait_until(lambda: edge_status(paths)["daemon_running"], 20, "running")
        found = await checks_beside_relay(paths, fake)
    assert failed(found) == {"relay", "daemon"}
    assert found["daemon"].detail == "the daemon runs but is not connected to the relay"


def test_plain_http_leaving_the_machine_is_a_problem() -> None:
    assert not tls_check("http://relay.example.org:7710").ok
    assert not tls_check("http://192.0.2.7:7710").ok
    assert tls_check("http://127.0.0.1:7710").ok and tls_check("http://localhost:7710").ok
    assert tls_check("https://relay.example.org").ok


async def test_a_service_disabled_failed_or_gone(make_member, fake, monkeypatch, capsys):
    member = await make_member()
    assert member.home is not None
    paths = member.paths()
    env = {"MAILSLOT_HOME": str(member.home)}
    code, _, err = fake.run(monkeypatch, capsys, "service", "install", "--platform", "linux",
                            **env)
    assert code == 0, err
    async with running_edge(member):
        await wait_until(lambda: edge_status(paths)["connected"], 20, "connected")
        assert (await checks_beside_relay(paths, fake))["service"].ok
        found = await checks_beside_relay(paths, fake, env={"FAKE_ENABLED": "disabled"})
        assert "not enabled" in found["service"].detail
        assert "mailslot service install --user --role edge" in found["service"].fix
        found = await checks_beside_relay(paths, fake, env={"FAKE_ACTIVE": "failed"})
        assert "enabled but failed" in found["service"].detail
        (fake.home / ".config/systemd/user/mailslot-edge.service").unlink()
        found = await checks_beside_relay(paths, fake)
        assert failed(found) == {"service"} and "missing" in found["service"].detail


def test_a_relay_home_store_and_disk(tmp_path, fake):
    paths = EdgePaths(tmp_path / "home" / "config", tmp_path / "home" / "data")
    relay_dir = tmp_path / "home" / "relay"
    relay_dir.mkdir(parents=True, mode=0o700)
    found = checks(paths, fake, relay_dir=relay_dir)
    assert "no relay is running" in found["relay_store"].detail
    assert "key" not in found  # a relay-only home has no edge to check

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    runtime = relay_dir / "relay.json"
    runtime.touch(mode=0o600)  # as the relay writes it
    runtime.write_text(json.dumps({"pid": int(dead.stdout), "url": "http://127.0.0.1:1"}))
    assert "gone" in checks(paths, fake, relay_dir=relay_dir)["relay_store"].detail

    runtime.write_text(json.dumps({"pid": os.getpid(), "nats_pid": int(dead.stdout),
                                   "nats": "nats://SECRET@127.0.0.1:1"}))
    found = checks(paths, fake, relay_dir=relay_dir)
    assert "nats-server" in found["relay_store"].detail and not found["relay_store"].ok
    assert all("SECRET" not in c.detail + c.fix for c in found.values())

    runtime.write_text(json.dumps({"pid": os.getpid(), "nats_pid": os.getpid()}))
    found = checks(paths, fake, relay_dir=relay_dir)
    assert "missing or not writable" in found["relay_store"].detail  # no jetstream/ yet
    (relay_dir / "jetstream").mkdir()
    found = checks(paths, fake, relay_dir=relay_dir)
    assert failed(found) == set(), found

    runtime.write_text(json.dumps({"pid": os.getpid(), "nats_pid": os.getpid(),
                                   "url": f"http://127.0.0.1:{free_port()}"}))
    found = checks(paths, fake, relay_dir=relay_dir)  # alive, but its port does not answer
    assert "connection refused" in found["relay_store"].detail and not found["relay_store"].ok

    runtime.write_text(json.dumps({"pid": os.getpid(), "nats_pid": os.getpid()}))
    found = checks(paths, fake, relay_dir=relay_dir, min_free=1 << 60)
    assert failed(found) == {"disk"} and "GiB free" in found["disk"].detail


async def test_a_running_relay_home_is_well(relay, tmp_path, fake):
    paths = EdgePaths(tmp_path / "none" / "config", tmp_path / "none" / "data")
    found = await checks_beside_relay(paths, fake, relay_dir=relay.config.data_dir)
    assert failed(found) == set(), found
    assert found["relay_store"].detail.endswith("running on an outside NATS (check that "
                                                "server's own health)")


def test_the_command_exits_1_on_a_problem_with_json_checks(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(MAILSLOT_HOME=str(tmp_path / "nothing"), HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "edge", "doctor", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    found = json.loads(done.stdout)
    assert all(set(c) == {"name", "ok", "detail", "fix"} for c in found)
    assert found[0]["name"] == "home" and found[0]["ok"] is False
    done = subprocess.run([sys.executable, "-m", "edge", "doctor"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.splitlines()[0].startswith("FAIL  home")
    assert "      fix: `mailslot edge init" in done.stdout
    assert not (tmp_path / "nothing").exists()  # doctor only reads
