"""Process lifecycle, with real processes: one owner per relay data folder and per edge
home, an embedded nats-server that never outlives its relay and is brought back when it
dies, one-line start-up errors with documented exit codes, and a CLI that ends quietly.

Processes are found the way an operator would find them: in ``/proc``, by command line
(a nats-server whose ``-c`` is this store's config)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests_support import EdgeProcess, free_port, mailslot, wait_until
from ulid import ULID

from edge.cli.main import main
from edge.config import EdgePaths
from edge.store.inbox import Inbox
from relay.natsserver import nats_server_binary

EXIT_USAGE, EXIT_ALREADY_RUNNING, EXIT_STARTUP_FAILED, EXIT_STORE_LOST = 2, 5, 6, 7


# -- helpers ----------------------------------------------------------------------------


def nats_servers(conf: Path) -> list[int]:
    """Live (not zombie) nats-server processes whose config is ``conf``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and argv and Path(argv[0].decode()).name == "nats-server" \
                and str(conf).encode() in argv:
            found.append(int(entry.name))
    return found


def conf_of(data_dir: Path) -> Path:
    return data_dir / "nats-run" / "nats.conf"


class Serve:
    """``mailslot relay serve --json`` with an embedded nats-server, in its own process."""

    def __init__(
        self, home: Path, data_dir: Path, *extra: str, port: int | None = None,
        json_output: bool = True,
    ) -> None:
        self.home, self.data_dir = home, data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge", "relay", "serve", "--data-dir", str(data_dir),
             "--listen", f"127.0.0.1:{self.port}", *(["--json"] if json_output else []),
             *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def banner(self) -> dict[str, Any]:
        """The line it prints once listening (a blocking read: it prints or exits)."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"exited {self.process.wait(10)}: {self.stderr()}")
        return dict(json.loads(line))

    def runtime(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / "relay.json").read_text()))

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def kill9(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    """Every ``Serve`` a test starts is stopped after it, whatever happened."""
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.close()


def started(serves: list[Serve], home: Path, data_dir: Path, *extra: str,
            port: int | None = None) -> Serve:
    """A ``Serve`` that is listening (its banner read), stopped after the test."""
    serve = Serve(home, data_dir, *extra, port=port)
    serves.append(serve)
    serve.banner()
    return serve


async def ready(url: str) -> int:
    async with httpx.AsyncClient() as client:
        try:
            return (await client.get(url + "/readyz")).status_code
        except httpx.HTTPError:
            return 0


async def is_ready(url: str) -> bool:
    return await ready(url) == 200


def one_line_error(stderr: str, code: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mailslot: {code}: "), stderr
    return lines[0]


# -- the CLI's top level ----------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = mailslot(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mailslot {version('mailslot')}"


def test_a_closed_stdout_ends_quietly(home: Path) -> None:
    """``mailslot inbox list | head -c1``: the reader is gone before the output is
    written; no BrokenPipeError traceback, just an exit."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone away
    try:
        env = {**os.environ, "MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"}
        result = subprocess.run(
            [sys.executable, "-m", "edge", "inbox", "list"], env=env, stdout=write_end,
            stderr=subprocess.PIPE, text=True, timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ("relay", "serve", "--listen", "nowhere"),
        ("relay", "serve", "--sync", "sometimes"),
        ("relay", "serve", "--replicas", "9"),
        ("relay", "serve", "--nats-restart-timeout", "-1"),
        ("up", "--listen", "nowhere"),
        ("inbox", "next", "--lease", "5m"),  # --lease needs --claim
        ("inbox", "list", "--no-such-flag"),
    ],
    ids=lambda argv: " ".join(argv),
)
def test_usage_errors_are_one_line_or_json_and_exit_2(
    tmp_path: Path, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILSLOT_HOME", str(tmp_path))  # the real CLI, in this process
    with pytest.raises(SystemExit) as text:
        main(list(argv))
    out, err = capsys.readouterr()
    assert text.value.code == EXIT_USAGE and out == ""
    one_line_error(err, "usage")
    with pytest.raises(SystemExit) as as_json:
        main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert as_json.value.code == EXIT_USAGE and err == ""
    error = json.loads(out)
    assert error["error"] == "usage" and error["message"]
    assert list(tmp_path.iterdir()) == [], "nothing may start or be written on bad flags"


def test_admin_commands_need_a_running_relay(tmp_path: Path) -> None:
    """No relay running: an admin command says so (``relay_not_running``, exit 1) and
    opens no store: no nats-server, nothing created under the data folder."""
    data = tmp_path / "relay"
    result = subprocess.run(
        [sys.executable, "-m", "edge", "relay", "account", "create", "acme", "--json",
         "--data-dir", str(data)],
        env={**os.environ, "MAILSLOT_HOME": str(tmp_path), "MAILSLOT_LOG": "INFO"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["error"] == "relay_not_running"
    assert not data.exists()
    assert nats_servers(conf_of(data)) == []


# -- one owner per folder -----------------------------------------------------------------


async def test_port_in_use_is_one_line_and_leaves_nothing_running(
    tmp_path: Path, serves: list[Serve]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = Serve(tmp_path, tmp_path / "relay", port=port, json_output=False)
        serves.append(serve)
        code = serve.process.wait(60)
        stderr = serve.stderr()
    assert code == EXIT_STARTUP_FAILED
    assert str(port) in one_line_error(stderr, "port_in_use")
    assert nats_servers(conf_of(tmp_path / "relay")) == []
    assert not (tmp_path / "relay" / "relay.json").exists()


async def test_relay_kill9_then_restart_leaves_exactly_one_nats_server(
    tmp_path: Path, serves: list[Serve]
) -> None:
    data = tmp_path / "relay"
    first = started(serves, tmp_path, data)
    (old,) = nats_servers(conf_of(data))
    first.kill9()
    # Nothing orphaned: the nats-server goes with its relay, without anyone's help.
    await wait_until(lambda: nats_servers(conf_of(data)) == [], 20, "nats-server gone")

    second = started(serves, tmp_path, data, port=first.port)
    assert await ready(second.url) == 200
    servers = nats_servers(conf_of(data))
    assert len(servers) == 1 and servers != [old]
    assert second.runtime()["nats_pid"] == servers[0]


async def test_a_stale_nats_server_on_the_store_is_stopped_first(
    tmp_path: Path, serves: list[Serve]
) -> None:
    """A nats-server left on the store (by a crash the wrapper could not see) is stopped
    before the new one starts: never two servers on one store."""
    data = tmp_path / "relay"
    first = started(serves, tmp_path, data)
    first.close()
    await wait_until(lambda: nats_servers(conf_of(data)) == [], 20, "clean stop")
    stale = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf_of(data))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    # Not a nats-server, though its command line names the config: never signalled.
    decoy = subprocess.Popen(["sh", "-c", "sleep 60", "sh", "-c", str(conf_of(data))])
    try:
        await wait_until(lambda: nats_servers(conf_of(data)) == [stale.pid], 20, "stale one up")
        started(serves, tmp_path, data)
        assert stale.wait(20) is not None  # stopped by the new relay
        servers = nats_servers(conf_of(data))
        assert len(servers) == 1 and stale.pid not in servers
        assert decoy.poll() is None
    finally:
        for process in (stale, decoy):
            if process.poll() is None:
                process.kill()
                process.wait(10)


def _watchers(conf: Path) -> list[int]:
    """The ``relay.natswatch`` wrappers running nats-server on ``conf``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"relay.natswatch" in argv and str(conf).encode() in argv:
                found.append(int(entry.name))
    return found


async def test_a_killed_watcher_takes_its_nats_server_along(
    tmp_path: Path, serves: list[Serve]
) -> None:
    """kill -9 of the wrapper between the relay and nats-server: nats-server gets its
    parent-death signal and exits, and the relay starts exactly one new pair."""
    data = tmp_path / "relay"
    serve = started(serves, tmp_path, data)
    (server,) = nats_servers(conf_of(data))
    (watcher,) = _watchers(conf_of(data))
    os.kill(watcher, signal.SIGKILL)
    await wait_until(lambda: server not in nats_servers(conf_of(data)), 20, "old server gone")
    await wait_until(lambda: len(nats_servers(conf_of(data))) == 1, 20, "a new server")
    await wait_until(lambda: _watchers(conf_of(data)) not in ([], [watcher]), 20, "new watcher")
    await wait_until(lambda: is_ready(serve.url), 20, "ready again")
    assert serve.process.poll() is None


def _child_of(pid: int) -> int | None:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else None


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("how", ["relay gone", "watcher killed", "server died"])
async def test_the_watcher_never_lets_nats_server_outlive_it(how: str) -> None:
    """``relay.natswatch`` on its own: the pipe's far end closing (the relay died, however)
    stops nats-server; kill -9 of the watcher itself stops it through the parent-death
    signal; nats-server dying ends the watcher with its status (the relay restarts it)."""
    read_end, write_end = os.pipe()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "relay.natswatch", str(read_end), "--",
         nats_server_binary(), "-a", "127.0.0.1", "-p", str(free_port())],
        pass_fds=(read_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(read_end)
    try:
        server = await wait_until(lambda: _child_of(watcher.pid), 20, "nats-server started")
        if how == "relay gone":
            os.close(write_end)
            write_end = -1
            assert watcher.wait(20) == 0
        elif how == "watcher killed":
            watcher.kill()
            watcher.wait(10)
        else:
            os.kill(server, signal.SIGKILL)
            assert watcher.wait(20) == 128 + signal.SIGKILL
        await wait_until(lambda: _gone(server), 20, "nats-server stopped")
    finally:
        if write_end >= 0:
            os.close(write_end)
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(10)


async def test_a_second_relay_on_the_folder_is_refused(tmp_path: Path, serves: list[Serve]) -> None:
    data = tmp_path / "relay"
    first = started(serves, tmp_path, data)
    runtime = (data / "relay.json").read_bytes()
    (server,) = nats_servers(conf_of(data))

    second = Serve(tmp_path, data, json_output=False)
    serves.append(second)
    assert second.process.wait(60) == EXIT_ALREADY_RUNNING
    line = one_line_error(second.stderr(), "already_running")
    assert f"(pid {first.process.pid})" in line
    assert nats_servers(conf_of(data)) == [server]
    assert (data / "relay.json").read_bytes() == runtime
    assert await ready(first.url) == 200

    # Admin commands use the running relay's server instead of starting a second one.
    made = mailslot(tmp_path, "relay", "account", "create", "acme", "--json",
                    "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    assert "WARNING" not in made.stderr, made.stderr
    assert nats_servers(conf_of(data)) == [server]


async def test_one_mailslot_up_and_one_edge_per_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"}
    up = subprocess.Popen(
        [sys.executable, "-m", "edge", "up", "--json", "--listen", f"127.0.0.1:{free_port()}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert up.stdout is not None
        announced = json.loads(up.stdout.readline())["identity"]
        edge_json = home / "config" / "edge.json"
        assert announced == json.loads(edge_json.read_text())["identity"]  # the home's edge
        before = (edge_json.read_bytes(), edge_json.stat().st_mtime_ns)

        for argv in (("up", "--listen", f"127.0.0.1:{free_port()}"), ("edge", "run")):
            result = mailslot(home, *argv)
            assert result.returncode == EXIT_ALREADY_RUNNING, result.stderr
            assert f"(pid {up.pid})" in one_line_error(result.stderr, "already_running")
        as_json = mailslot(home, "edge", "run", "--json")
        assert json.loads(as_json.stdout)["error"] == "already_running"
        assert (edge_json.read_bytes(), edge_json.stat().st_mtime_ns) == before
        assert len(nats_servers(conf_of(home / "relay"))) == 1

        up.send_signal(signal.SIGINT)  # Ctrl-C: an ordered stop, nothing left behind
        assert up.wait(30) == 0
        assert nats_servers(conf_of(home / "relay")) == []
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
        for stream in (up.stdout, up.stderr):
            if stream is not None:
                stream.close()


async def test_a_second_edge_run_is_refused(tmp_path: Path, relay: Any, make_member: Any) -> None:
    member = await make_member()
    edge = EdgeProcess(member.home)
    edge.start()
    try:
        assert edge.process is not None
        lock = member.paths().data_dir / "edge.lock"
        await wait_until(lambda: lock.exists() and lock.read_text().strip(), 30, "lock taken")
        edge_json = member.paths().config_file.read_bytes()
        result = mailslot(member.home, "edge", "run")
        assert result.returncode == EXIT_ALREADY_RUNNING
        assert f"(pid {edge.process.pid})" in one_line_error(result.stderr, "already_running")
        assert member.paths().config_file.read_bytes() == edge_json
        assert edge.process.poll() is None
    finally:
        edge.kill9()
    # The kernel drops a dead holder's lock: the next start is not refused.
    edge.start()
    try:
        assert edge.process is not None
        pid = edge.process.pid

        def running() -> bool:
            with member.inbox() as inbox:
                status = inbox.status()
            return bool(status.get("connected")) and status.get("pid") == pid

        await wait_until(running, 30, "restarted edge connected")
        assert lock.read_text().strip() == str(pid)
    finally:
        assert edge.stop() == 0


# -- supervision of the embedded nats-server ----------------------------------------------


def _enroll_edge(home: Path, serve: Serve) -> tuple[str, str]:
    """Through the CLI, as a user would: account, edge init, producer token."""
    data = ["--data-dir", str(serve.data_dir), "--json"]
    account = mailslot(home, "relay", "account", "create", "acme", *data)
    enrollment = json.loads(account.stdout)["enrollment_token"]
    init = mailslot(home, "edge", "init", "--relay", serve.url, "--token", enrollment, "--json")
    identity = json.loads(init.stdout)["identity"]
    made = mailslot(home, "relay", "token", "create", "--account", "acme", "--to", identity,
                    *data)
    return identity, json.loads(made.stdout)["token"]


async def _post_until_stored(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """A producer that retries with the same id until the relay answers 2xx."""
    async with httpx.AsyncClient(timeout=10) as client:

        async def attempt() -> dict[str, Any] | None:
            try:
                response = await client.post(
                    url + "/v1/interrupts", json=body, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.HTTPError:
                return None
            if response.status_code in (200, 202):  # 200: a duplicate of a stored one
                return dict(response.json())
            assert response.status_code == 503, response.text
            return None

        return dict(await wait_until(attempt, 30, "stored"))


def _inbox_ids(home: Path) -> list[str]:
    paths = EdgePaths(home / "config", home / "data")
    with Inbox.open(paths.inbox_file) as inbox:
        return [item.id for item in inbox.list(state=None, limit=100)]


async def test_a_killed_nats_server_is_restarted_and_nothing_is_lost_or_doubled(
    tmp_path: Path, serves: list[Serve]
) -> None:
    data = tmp_path / "relay"
    serve = started(serves, tmp_path, data)
    edge_home = tmp_path / "edge"
    identity, token = _enroll_edge(edge_home, serve)
    edge = EdgeProcess(edge_home)
    edge.start()
    try:
        before = await _post_until_stored(serve.url, token, {"to": identity, "type": "t.before"})
        await wait_until(lambda: _inbox_ids(edge_home) == [before["id"]], 30, "first delivery")

        (old,) = nats_servers(conf_of(data))
        os.kill(old, signal.SIGKILL)
        retried = {"id": str(ULID()), "to": identity, "type": "t.after", "priority": "now"}
        stored = await _post_until_stored(serve.url, token, retried)
        assert stored["id"] == retried["id"]
        assert await ready(serve.url) == 200
        (new,) = nats_servers(conf_of(data))
        assert new != old
        await wait_until(lambda: serve.runtime().get("nats_pid") == new, 10, "relay.json")
        again = await _post_until_stored(serve.url, token, retried)
        assert again["duplicate"] is True

        # The edge connected before the crash receives what was stored after it, once.
        await wait_until(lambda: len(_inbox_ids(edge_home)) >= 2, 30, "delivery after restart")
        assert sorted(_inbox_ids(edge_home)) == sorted([before["id"], retried["id"]])
        assert serve.process.poll() is None
    finally:
        edge.kill9()


async def test_a_store_that_cannot_come_back_fails_health_and_exits(
    tmp_path: Path, serves: list[Serve]
) -> None:
    data = tmp_path / "relay"
    serve = started(serves, tmp_path, data, "--nats-restart-timeout", "2")
    (server,) = nats_servers(conf_of(data))
    # The store folder becomes a file: no nats-server can start on it again.
    (data / "jetstream").rename(data / "jetstream.moved")
    (data / "jetstream").write_text("not a folder")
    os.kill(server, signal.SIGKILL)
    assert serve.process.wait(60) == EXIT_STORE_LOST
    assert json.loads(serve.process.stdout.read())["error"] == "store_lost"  # type: ignore[union-attr]
    assert nats_servers(conf_of(data)) == []
    assert not (data / "relay.json").exists()
