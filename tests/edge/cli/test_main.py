"""The command line as a person uses it: ``scripts/up`` on one machine, and a relay plus
an edge in two MAILSLOT_HOME folders. Real processes, real sockets, real files."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests_support import REPO, EdgeProcess, free_port, json_out, mailslot, wait_until


def _spawn(home: Path, *argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"}
    return subprocess.Popen(
        list(argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _first_json_line(process: subprocess.Popen[str]) -> dict[str, Any]:
    """The ``--json`` banner a server prints once it is ready (blocking read: the
    process either prints it or exits, which ends the read)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise AssertionError(f"exited {process.wait(10)}: {process.stderr.read()}")  # type: ignore[union-attr]
    return dict(json.loads(line))


def _interrupt(process_home: Path) -> list[dict[str, Any]]:
    return list(json_out(mailslot(process_home, "inbox", "list", "--all", "--json")))


def _stop(process: subprocess.Popen[str], sig: int = signal.SIGINT) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _curl_parts(curl: str) -> tuple[str, str, dict[str, Any]]:
    """URL, bearer token and body of the curl line ``mailslot up`` prints."""
    words = curl.split(" ")
    url = next(w for w in words if w.startswith("http"))
    token = curl.split("Authorization: Bearer ", 1)[1].split("'", 1)[0]
    body = json.loads(curl.split("-d '", 1)[1].rsplit("'", 1)[0])
    return url, token, body


async def test_scripts_up_end_to_end(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    up = _spawn(home, str(REPO / "scripts" / "up"), "--json", "--listen", f"127.0.0.1:{port}")
    try:
        banner = _first_json_line(up)
        assert banner["relay"] == f"http://127.0.0.1:{port}"
        url, token, body = _curl_parts(banner["curl"])
        assert body["to"] == banner["identity"]
        nats_children = _children_of(up.pid)
        assert nats_children, "the embedded nats-server runs as a child of `mailslot up`"

        async with httpx.AsyncClient() as client:
            response = await client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 202, response.text
        first = response.json()["id"]
        await wait_until(lambda: [i["id"] for i in _interrupt(home)] == [first], 30, "delivery")
        status = json_out(mailslot(home, "status", "--json"))
        assert status["connected"] is True and status["identity"] == banner["identity"]
        assert status["pending"]["now"] == 1

        assert up.stderr is not None
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0, up.stderr.read()
        _stop(up)
        for child in nats_children:
            assert not Path(f"/proc/{child}").exists() or _zombie(child), "nats-server left running"
        for secret in (
            home / "config" / "up.json",
            home / "config" / "edge.json",
            home / "config" / "keys" / "identity.key",
            home / "data" / "inbox.sqlite3",
        ):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        assert stat.S_IMODE((home / "config" / "keys").stat().st_mode) == 0o700

        # Restart: same identity, same token, the inbox is kept, new sends still arrive.
        up = _spawn(home, str(REPO / "scripts" / "up"), "--json", "--listen", f"127.0.0.1:{port}")
        again = _first_json_line(up)
        assert again["identity"] == banner["identity"]
        assert _curl_parts(again["curl"])[1] == token
        async with httpx.AsyncClient() as client:
            response = await client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 202
        second = response.json()["id"]
        await wait_until(
            lambda: {i["id"] for i in _interrupt(home)} == {first, second}, 30, "second delivery"
        )
    finally:
        _stop(up)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


async def test_two_homes_offline_backlog_then_drain(tmp_path: Path) -> None:
    """The README's two-folder walkthrough: relay in one home, edge in another; send
    while the edge is offline; start it; every interrupt arrives once, `now` first."""
    relay_home, edge_home = tmp_path / "relay", tmp_path / "edge"
    port = free_port()
    relay = _spawn(
        relay_home, sys.executable, "-m", "edge", "relay", "serve", "--json",
        "--listen", f"127.0.0.1:{port}",
    )
    edge: EdgeProcess | None = None
    try:
        url = _first_json_line(relay)["url"]
        enrollment = json_out(mailslot(relay_home, "relay", "account", "create", "acme", "--json"))
        enrolled = json_out(
            mailslot(edge_home, "edge", "init", "--relay", url,
                     "--token", enrollment["enrollment_token"], "--json")
        )
        me = enrolled["identity"]
        reused = mailslot(edge_home, "edge", "init", "--relay", url,
                          "--token", enrollment["enrollment_token"])
        assert reused.returncode != 0
        producer = json_out(
            mailslot(relay_home, "relay", "token", "create", "--account", "acme", "--to", me,
                     "--json")
        )["token"]

        sent: dict[str, str] = {}
        for priority in ("later", "next", "now", "later", "now"):
            result = json_out(
                mailslot(edge_home, "send", "--to", me, "--type", "ci.finished",
                         "--priority", priority, "--data", json.dumps({"p": priority}),
                         "--token", producer, "--json")
            )
            sent[result["id"]] = priority
        assert json_out(mailslot(edge_home, "inbox", "list", "--json")) == []
        status = json_out(mailslot(edge_home, "status", "--json"))
        assert status["connected"] is False and status["daemon_running"] is False

        edge = EdgeProcess(edge_home)
        edge.start()
        await wait_until(lambda: len(_interrupt(edge_home)) == len(sent), 30, "backlog drained")
        items = _interrupt(edge_home)
        assert {i["id"] for i in items} == set(sent)
        arrival = [i["priority"] for i in sorted(items, key=lambda i: i["seq"])]
        assert arrival == ["now", "now", "next", "later", "later"]

        following = json_out(mailslot(edge_home, "inbox", "next", "--json"))
        assert following["priority"] == "now"
        assert json_out(mailslot(edge_home, "inbox", "ack", following["id"], "--json"))["acked"]
        assert mailslot(edge_home, "inbox", "ack", following["id"]).returncode == 1
        status = json_out(mailslot(edge_home, "status", "--json"))
        assert status["pending"] == {"now": 1, "next": 1, "later": 2}
        assert status["last_delivery"] is not None
        assert edge.stop() == 0
    finally:
        if edge is not None and edge.process is not None:
            edge.kill9()
        _stop(relay, signal.SIGTERM)


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (("send", "--to", "a.b", "--type", "x", "--relay", "http://127.0.0.1:9"), "invalid_identity"),
        (("send", "--to", "a" * 32, "--type", "x", "--data", "{nope",
          "--relay", "http://127.0.0.1:9"), "malformed_json"),
        (("inbox", "list"), "not_initialized"),
    ],
)
def test_cli_errors_are_clear_and_machine_readable(tmp_path: Path, argv: tuple[str, ...], code: str) -> None:
    result = mailslot(tmp_path, *argv, "--json")
    assert result.returncode != 0
    assert json.loads(result.stdout)["error"] == code
    assert "Traceback" not in result.stderr
