"""``mailslot deliveries`` against the real daemon: a webhook that refuses (503) until the
delivery gives up, then accepts; ``deliveries retry`` (the real CLI, another process)
puts it back, the running daemon is woken through its poke file, and the wake arrives
exactly once, with the same delivery key. A wake skipped while its route was disabled
(410) is kept, refused as ``route_disabled`` until the intent is resumed, then sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests_support import json_out, mailslot, post_drafts, running_edge, wait_until

from edge.cli.main import main
from edge.store.activity import ActivityLog
from edge.store.deliveries import DeliveryQueue


@dataclass
class Receiver:
    url: str = ""
    status: int = 503
    requests: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)

    def answered(self, status: int) -> list[tuple[int, dict[str, str], bytes]]:
        return [r for r in self.requests if r[0] == status]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = state.status
            state.requests.append((status, {k.lower(): v for k, v in self.headers.items()},
                                   body))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
async def member(make_member: Callable[..., Any]) -> Any:
    member = await make_member()
    assert member.home is not None
    return member


@pytest.fixture
def cli(member: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, Any]]:
    """The CLI's entry point in this process (quicker than a subprocess, same code),
    run against ``member``'s home: its exit code and the JSON it printed."""
    monkeypatch.setenv("MAILSLOT_HOME", str(member.home))

    def run(*argv: str) -> tuple[int, Any]:
        with pytest.raises(SystemExit) as exited:
            main([*argv, "--json"])
        return int(exited.value.code or 0), json.loads(capsys.readouterr().out)
    return run


def _deliveries(home: Path) -> list[Any]:
    queue = DeliveryQueue.open(home / "data" / "engine.sqlite3")
    try:
        return queue.rows()
    finally:
        queue.close()


def _outcomes(home: Path, interrupt: str) -> list[str]:
    with ActivityLog.open(home / "data" / "activity.log",
                          home / "config" / "keys" / "activity.key") as log:
        return [e.detail.get("outcome") for e in log.trace(interrupt) if e.step == "outcome"]


async def test_a_failed_webhook_delivery_retried_arrives_once(
        relay, member, receiver: Receiver, cli: Callable[..., tuple[int, Any]]) -> None:
    home = member.home
    added = mailslot(home, "intent", "add", "ci", "--type", "ci.*", "--route",
                     f"webhook:{receiver.url}", "--max-attempts", "2", "--template",
                     '{"message": "{summary}", "name": "mailslot", "sessionKey": "{session}"}')
    assert added.returncode == 0, added.stderr
    async with running_edge(member):
        (response,) = await post_drafts(relay.url, member.token, [
            {"to": member.id, "type": "ci.failed", "priority": "now", "session": "api"}])
        interrupt = response.json()["id"]
        # two refusals (1 s apart), then it gives up
        await wait_until(lambda: [d.status for d in _deliveries(home)] == ["failed"], 30,
                         "the delivery gave up")
        assert len(receiver.answered(503)) == 2
        code, failed = cli("deliveries", "list", "--failed")
        assert code == 0
        assert [(d["status"], d["attempts"], d["retryable"]) for d in failed] == [
            ("failed", 2, True)]
        key = failed[0]["key"]
        assert "HTTP 503" in failed[0]["error"]

        receiver.status = 200
        retried = json_out(mailslot(home, "deliveries", "retry", key, "--json"))
        assert retried["status"] == "pending" and retried["attempts"] == 0
        await wait_until(lambda: receiver.answered(200), 20, "the retried wake arrived")
        await wait_until(lambda: [d.status for d in _deliveries(home)] == ["done"], 20,
                         "the delivery is done")
        await wait_until(lambda: _outcomes(home, interrupt)[-1:] == ["ok"], 20, "outcome ok")
        # a second retry of a delivered one is refused, with its code
        assert cli("deliveries", "retry", key)[1]["error"] == "not_retryable"
    (arrived,) = receiver.answered(200)  # once
    _, headers, body = arrived
    assert headers["webhook-id"] == key  # the same key on every attempt, retry included
    assert headers["user-agent"].startswith("mailslot/")
    assert json.loads(body) == {"message": "mailslot: intent ci woke you for ci.failed",
                                "name": "mailslot", "sessionKey": "api"}
    assert _outcomes(home, interrupt) == ["error", "ok"]
    shown = cli("deliveries", "show", key)[1]
    assert shown["status"] == "done" and shown["outcome"] == "ok" and not shown["retryable"]


async def test_a_wake_skipped_while_the_route_was_disabled_is_retried_after_resume(
        relay, member, receiver: Receiver, cli: Callable[..., tuple[int, Any]]) -> None:
    home = member.home
    receiver.status = 410
    added = mailslot(home, "intent", "add", "ci", "--type", "ci.*", "--route",
                     f"webhook:{receiver.url}")
    assert added.returncode == 0, added.stderr
    async with running_edge(member):
        for n in range(2):
            await post_drafts(relay.url, member.token, [
                {"to": member.id, "type": "ci.failed", "priority": "now",
                 "payload": {"n": n}}])
            await wait_until(lambda n=n: len(_deliveries(home)) == n + 1 and all(
                d.status != "pending" and d.status != "claimed" for d in _deliveries(home)),
                20, "decided")
        first, skipped = _deliveries(home)
        assert (first.status, first.outcome) == ("done", "error")  # the 410
        assert (skipped.status, skipped.outcome) == ("failed", "skipped")
        assert len(receiver.requests) == 1  # the skipped one was never sent
        assert cli("deliveries", "retry", skipped.key) == (1, {
            "error": "route_disabled", "message": "the route of intent ci is disabled (the"
            f" runtime answered 410 Gone at {first.finished.isoformat()}); run `mailslot"
            " intent resume ci` first"})

        receiver.status = 200
        assert cli("intent", "resume", "ci")[1]["route_enabled"] is True
        json_out(mailslot(home, "deliveries", "retry", str(skipped.seq), "--json"))
        await wait_until(lambda: receiver.answered(200), 20, "the skipped wake arrived")
        await wait_until(lambda: _deliveries(home)[1].status == "done", 20, "done")
        # the 410'd one can be dropped (it ended in error); a delivered one cannot
        assert cli("deliveries", "drop", first.key)[1]["dropped"] is True
        assert cli("deliveries", "drop", skipped.key)[1]["error"] == "not_droppable"
        assert cli("deliveries", "show", "99")[1]["error"] == "unknown_delivery"
    assert [d.key for d in _deliveries(home)] == [skipped.key]
    assert len(receiver.answered(200)) == 1
    assert json.loads(receiver.answered(200)[0][2])["interrupts"][0]["payload"] == {"n": 1}
