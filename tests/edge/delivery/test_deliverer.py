"""The deliverer: wakes handed to exec and webhook runtimes from the durable queue, with
claims renewed while a runtime runs and given back on stop — real subprocesses, a real local
HTTP server, real SQLite; time in the test's hands where retries are concerned."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from engine_support import Harness, at, intent_set
from process_support import all_dead
from standardwebhooks.webhooks import Webhook
from tests_support import wait_until

from edge.delivery.deliverer import Deliverer
from edge.store.deliveries import DeliveryQueue
from edge.store.instances import Instance

T = at("2026-11-24 10:00")
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY_RE = r"msg_[0-9A-HJKMNP-TV-Z]{26}"


class Hook(BaseHTTPRequestHandler):
    """A runtime's webhook endpoint: answers what the test tells it, keeps what it got."""

    answers: list[int] = []
    received: list[tuple[bytes, dict[str, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append((body, {k.lower(): v for k, v in self.headers.items()}))
        code = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"outcome": "action-taken", "tokens": 30}' if code == 200 else b"{}")

    def log_message(self, *_args: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, port: int) -> None:
        self.port = port
        self.httpd: ThreadingHTTPServer | None = None

    def start(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Hook)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


@pytest.fixture
def hook():
    Hook.answers, Hook.received = [], []
    server = Server(free_port())
    yield server
    server.stop()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def rig(tmp_path: Path, route: dict[str, Any], grant: list[str] | None = None):
    h = Harness(tmp_path / "h", intent_set({"id": "i", "match": {"type": "ci.*"},
                                            "route": route, "grant": grant or []},
                                           tokens_per_day=1000))
    clock = Clock(T)
    spent: list[int] = []
    deliverer = Deliverer(
        h.engine.deliveries, h.events.extend, tmp_path / "permissions",
        Instance.start(tmp_path / "instances", "daemon"),
        spend_tokens=lambda tokens, when: h.engine.state.spend(
            h.engine.day_of(when.timestamp()), tokens=tokens) or spent.append(tokens),
        clock=clock, environ={"HOOK_SECRET": SECRET, "HOOK_TOKEN": "tok-123"},
    )
    return h, deliverer, clock


def outcomes(h: Harness, interrupt: str) -> list[str]:
    return [e.detail.get("outcome") for e in h.events
            if e.interrupt == interrupt and e.step == "outcome"]


async def test_exec_route_gets_the_wake_env_and_envelope(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    script = (
        "import json, os, sys, stat\n"
        "wake = json.load(sys.stdin)\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith('MAILSLOT_')}\n"
        "perm = os.environ['MAILSLOT_PERMISSIONS']\n"
        f"open({str(seen)!r}, 'w').write(json.dumps({{'wake': wake, 'env': env,"
        " 'mode': stat.S_IMODE(os.stat(perm).st_mode), 'perm': json.load(open(perm))}))\n"
        "print(json.dumps({'outcome': 'action-taken', 'tokens': 42}))\n"
    )
    h, deliverer, clock = rig(tmp_path, {"kind": "exec", "argv": [sys.executable, "-c", script]},
                              grant=["ci:rerun", "repo:read"])
    hostile = "$(touch /tmp/mailslot-pwned) ; rm -rf / `id`"
    interrupt = await h.send(T, payload={"text": hostile}, session="api",
                             permissions={"actions": ["ci:rerun", "deploy:prod"]})
    h.engine.dispatch_due(T)
    woken = next(e for e in h.events if e.step == "woken")
    assert woken.detail["permissions"]["actions"] == ["ci:rerun"]
    assert woken.detail["permissions"]["denied"] == ["deploy:prod"]
    assert outcomes(h, interrupt) == []  # not delivered yet: queued
    assert await deliverer.run_due(clock()) == 1
    got = json.loads(seen.read_text())
    assert got["wake"]["interrupts"][0]["payload"]["text"] == hostile
    assert not Path("/tmp/mailslot-pwned").exists()
    assert got["env"]["MAILSLOT_ID"] == interrupt and got["env"]["MAILSLOT_INTENT"] == "i"
    assert got["env"]["MAILSLOT_SESSION"] == "api" and got["env"]["MAILSLOT_TYPE"] == "ci.failed"
    (row,) = h.engine.deliveries.rows()
    assert got["env"]["MAILSLOT_DELIVERY"] == row.key
    assert got["mode"] == 0o600 and got["perm"]["actions"] == ["ci:rerun"]
    assert outcomes(h, interrupt) == ["action-taken"]
    assert h.engine.state.budget("2026-11-24")[1] == 42
    assert [d.status for d in h.engine.deliveries.rows()] == ["done"]


async def test_exec_error_and_timeout_are_outcomes_not_retries(tmp_path: Path) -> None:
    h, deliverer, clock = rig(tmp_path, {"kind": "exec", "timeout": "0.5s", "argv": [
        sys.executable, "-c", "import sys, time; sys.stdin.read(); time.sleep(30)"]})
    interrupt = await h.send(T)
    h.engine.dispatch_due(T)
    await deliverer.run_due(clock())
    assert outcomes(h, interrupt) == ["error"]
    assert [d.status for d in h.engine.deliveries.rows()] == ["done"]


async def test_webhook_signed_retried_while_down_and_delivered_after_restart(
    tmp_path: Path, hook: Server
) -> None:
    route = {"kind": "webhook", "url": f"http://127.0.0.1:{hook.port}/hooks/wake",
             "secret_env": "HOOK_SECRET", "bearer_env": "HOOK_TOKEN", "max_attempts": 5}
    h, deliverer, clock = rig(tmp_path, route)
    interrupt = await h.send(T)
    h.engine.dispatch_due(T)
    await deliverer.run_due(clock())  # the runtime is down: refused
    await deliverer.run_due(clock())  # not due again yet
    (row,) = h.engine.deliveries.rows()
    assert row.status == "pending" and row.attempts == 1
    assert row.next_attempt == T + timedelta(seconds=1)
    # the edge restarts: a new engine and queue on the same files; the runtime is back
    h.restart()
    deliverer.queue = h.engine.deliveries
    hook.start()
    clock.now = T + timedelta(seconds=1)
    assert await deliverer.run_due(clock()) == 1
    assert outcomes(h, interrupt) == ["action-taken"]
    ((body, headers),) = Hook.received
    Webhook(SECRET).verify(body, headers)  # the reference library accepts the signature
    assert headers["authorization"] == "Bearer tok-123"
    assert json.loads(body)["interrupts"][0]["id"] == interrupt
    assert SECRET not in json.dumps([e.detail for e in h.events])


async def test_webhook_gives_up_after_max_attempts(tmp_path: Path) -> None:
    route = {"kind": "webhook", "url": f"http://127.0.0.1:{free_port()}/x",
             "secret_env": "HOOK_SECRET", "max_attempts": 3}
    h, deliverer, clock = rig(tmp_path, route)
    interrupt = await h.send(T)
    h.engine.dispatch_due(T)
    for _ in range(6):
        await deliverer.run_due(clock())
        clock.now += timedelta(minutes=10)
    (row,) = h.engine.deliveries.rows()
    assert row.status == "failed" and row.attempts == 3
    assert outcomes(h, interrupt) == ["error"]


async def test_410_disables_the_route(tmp_path: Path, hook: Server) -> None:
    hook.start()
    Hook.answers = [410]
    route = {"kind": "webhook", "url": f"http://127.0.0.1:{hook.port}/x", "secret_env": "HOOK_SECRET"}
    h, deliverer, clock = rig(tmp_path, route)
    first = await h.send(T)
    h.engine.dispatch_due(T)
    await deliverer.run_due(clock())
    assert outcomes(h, first) == ["error"]
    assert "410" in (h.engine.deliveries.disabled("i") or "")
    second = await h.send(T + timedelta(minutes=1))
    h.engine.dispatch_due(T + timedelta(minutes=1))
    assert outcomes(h, second) == ["skipped"]
    assert h.rule(second) == "route_disabled"
    assert h.engine.deliveries.enable_route("i")  # what `mailslot intent resume i` does
    third = await h.send(T + timedelta(minutes=2))
    h.engine.dispatch_due(T + timedelta(minutes=2))
    clock.now = T + timedelta(minutes=2)
    await deliverer.run_due(clock())
    assert outcomes(h, third) == ["action-taken"]


def blocking_exec(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """An exec route whose runtime blocks until the test opens ``go`` for writing."""
    go, started = tmp_path / "go", tmp_path / "started"
    os.mkfifo(go)
    script = (f"import sys; sys.stdin.read(); open({str(started)!r}, 'w').close();"
              f" open({str(go)!r}).read()")
    return {"kind": "exec", "timeout": "60s", "argv": [sys.executable, "-c", script]}, go


def release(go: Path) -> None:
    with open(go, "w"):
        pass


async def test_a_running_delivery_keeps_its_claim(tmp_path: Path) -> None:
    """The lease is renewed while the runtime runs: past the first lease's end, nobody
    else can claim it, and it finishes once."""
    route, go = blocking_exec(tmp_path)
    h, _, _ = rig(tmp_path, route)
    deliverer = Deliverer(h.engine.deliveries, h.events.extend, tmp_path / "permissions",
                          Instance.start(tmp_path / "instances", "daemon"),
                          lease=lambda _route: 0.6, renew_every=0.1)
    interrupt = await h.send(T)
    h.engine.dispatch_due(T)
    running = asyncio.create_task(deliverer.run_due(datetime.now(UTC)))
    rival_queue = DeliveryQueue.open(h.root / "engine.sqlite3")
    rival = Instance.start(tmp_path / "instances", "rival")
    try:
        def claimed() -> Any:
            rows = rival_queue.rows("claimed")
            return rows[0].claim_until if rows else None

        first_end = await wait_until(claimed, 20, "the delivery claimed")
        await wait_until(lambda: datetime.now(UTC) > first_end + timedelta(seconds=0.3), 5,
                         "the first lease over")
        assert rival_queue.release_dead(rival, datetime.now(UTC)) == []
        assert rival_queue.claim("exec", rival, 60, datetime.now(UTC)) == []
        (row,) = rival_queue.rows("claimed")
        assert row.claim_until is not None and row.claim_until > datetime.now(UTC)
        assert not running.done()
        await asyncio.to_thread(release, go)
        assert await asyncio.wait_for(running, 20) == 1
    finally:
        rival_queue.close()
        rival.stop()
    (row,) = h.engine.deliveries.rows()
    assert row.status == "done" and row.attempts == 1
    assert outcomes(h, interrupt) == ["ok"]


async def test_a_stopping_deliverer_gives_its_claim_back(tmp_path: Path) -> None:
    route, _go = blocking_exec(tmp_path)
    h, deliverer, _ = rig(tmp_path, route)
    deliverer.clock = lambda: datetime.now(UTC)
    await h.send(T)
    h.engine.dispatch_due(T)
    running = asyncio.create_task(deliverer.run_due(datetime.now(UTC)))
    await wait_until((tmp_path / "started").exists, 20, "the runtime running")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    (row,) = h.engine.deliveries.rows()
    assert row.status == "pending" and row.attempts == 1 and row.instance is None
    assert row.next_attempt <= datetime.now(UTC)


async def test_stop_cuts_a_running_delivery_short_at_once(tmp_path: Path) -> None:
    """``stop`` while a runtime runs: ``run`` returns within a second (not after the
    runtime, not after the daemon's stop timeout), the runtime's process is gone and the
    delivery is back in the queue, due now."""
    route, _go = blocking_exec(tmp_path)
    h, deliverer, _ = rig(tmp_path, route)
    deliverer.clock = lambda: datetime.now(UTC)
    await h.send(T)
    h.engine.dispatch_due(T)
    stop = asyncio.Event()
    running = asyncio.create_task(deliverer.run(asyncio.Event(), stop))
    await wait_until((tmp_path / "started").exists, 20, "the runtime running")
    (claimed,) = await wait_until(
        lambda: [r for r in h.engine.deliveries.rows("claimed") if r.runner], 20,
        "the runtime's pid noted")
    pid = int(claimed.runner.split(":")[0])
    stop.set()
    await asyncio.wait_for(running, 1.0)
    (row,) = h.engine.deliveries.rows()
    assert row.status == "pending" and row.instance is None
    assert row.next_attempt <= datetime.now(UTC)
    await all_dead(pid)


async def test_the_key_is_stable_across_retries_and_unique(tmp_path: Path, hook: Server) -> None:
    hook.start()
    Hook.answers = [503, 200]
    route = {"kind": "webhook", "url": f"http://127.0.0.1:{hook.port}/x",
             "secret_env": "HOOK_SECRET", "max_attempts": 3}
    h, deliverer, clock = rig(tmp_path, route)
    await h.send(T)
    await h.send(T, type="ci.other")
    h.engine.dispatch_due(T)
    assert await deliverer.run_due(clock()) == 2  # the first: 503, retried; the second: 200
    clock.now = T + timedelta(seconds=1)
    assert await deliverer.run_due(clock()) == 1
    rows = h.engine.deliveries.rows()
    assert [(r.status, r.attempts) for r in rows] == [("done", 2), ("done", 1)]
    ids = [headers["webhook-id"] for _body, headers in Hook.received]
    assert ids == [rows[0].key, rows[1].key, rows[0].key]
    assert all(re.fullmatch(KEY_RE, key) for key in ids) and rows[0].key != rows[1].key
    delivered = [e.detail["delivery"] for e in h.events if e.step == "delivered"]
    assert delivered == ids
    assert [e.detail["delivery"] for e in h.events if e.step == "woken"] == [r.key for r in rows]
