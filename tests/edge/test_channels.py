"""``edge.delivery.channels``: real subprocesses and process groups for exec, a real HTTP server
on a real socket for webhooks (no mocks of httpx), verified with the official Standard
Webhooks library."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, wait_until
from standardwebhooks.webhooks import Webhook

from edge.delivery.channels import (
    OUTCOMES,
    STDOUT_MAX_BYTES,
    ChannelResult,
    deliver_exec,
    deliver_webhook,
    wake_bytes,
)
from edge.intents.model import ExecRoute, WebhookRoute

PY = sys.executable

WAKE: dict[str, Any] = {
    "wake": {"id": "01JWAKE", "intent": "ci-red", "session": "main", "priority": "high",
             "reason": "build failed on main — café"},
    "interrupts": [{"id": "01JINT", "type": "ci.failed", "payload": {"branch": "main"}}],
    "permissions": {"allow": ["git:read"], "expires": "2030-01-01T00:00:00Z"},
}
MAILSLOT_ENV = {
    "MAILSLOT_ID": "01JINT",
    "MAILSLOT_TYPE": "ci.failed",
    "MAILSLOT_INTENT": "ci-red",
    "MAILSLOT_SESSION": "main",
    "MAILSLOT_PERMISSIONS": "/tmp/mailslot-permissions.json",
    "MAILSLOT_DELIVERY": "msg_01JDQ8Z9X4DDDDDDDDDDDDDDDD",
}
#: A delivery key as the queue makes them (``edge.store.enginestate.new_delivery_key``).
KEY = "msg_01JDQ8Z9X4EEEEEEEEEEEEEEEE"


def is_json(result: ChannelResult) -> None:
    assert json.loads(json.dumps(result.detail)) == result.detail
    assert result.outcome in OUTCOMES


# -- exec helpers ---------------------------------------------------------------------


def route(argv: list[str], **options: Any) -> ExecRoute:
    return ExecRoute(kind="exec", argv=argv, **options)


def python(code: str, **options: Any) -> ExecRoute:
    return route([PY, "-c", code], **options)


def prints(document: Any, exit_code: int = 0) -> ExecRoute:
    """A runtime that prints ``document`` (JSON, or a string as is) and exits."""
    text = document if isinstance(document, str) else json.dumps(document)
    return python(f"import sys; sys.stdout.write({text!r}); sys.exit({exit_code})")


def alive(pid: int) -> bool:
    """Running (or stopped), not gone and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def all_dead(*pids: int) -> None:
    await wait_until(lambda: not any(alive(pid) for pid in pids), timeout=5,
                     what=f"processes {pids} to die")


# -- exec: outcome mapping ------------------------------------------------------------


async def test_exit_0_is_ok_and_the_wake_arrives_on_stdin_as_compact_utf8_json(
    tmp_path: Path,
) -> None:
    received = tmp_path / "stdin"
    result = await deliver_exec(
        python(f"import sys; open({str(received)!r}, 'wb').write(sys.stdin.buffer.read())"),
        WAKE, MAILSLOT_ENV)

    assert result == ChannelResult(outcome="ok", detail=result.detail)
    assert result.tokens == 0 and not result.retry and not result.disable
    assert result.detail["exit_code"] == 0 and result.detail["stdout_bytes"] == 0
    assert "error" not in result.detail and "stdout_ignored" not in result.detail
    assert received.read_bytes() == wake_bytes(WAKE)
    assert "café".encode() in received.read_bytes()  # UTF-8, not \u escapes
    assert json.loads(received.read_bytes()) == WAKE
    is_json(result)


@pytest.mark.parametrize("outcome", OUTCOMES)
async def test_a_json_outcome_and_tokens_on_stdout_win(outcome: str) -> None:
    result = await deliver_exec(prints({"outcome": outcome, "tokens": 1234, "note": "x"}),
                                WAKE, MAILSLOT_ENV)
    assert result.outcome == outcome and result.tokens == 1234
    assert not result.retry and "stdout_ignored" not in result.detail
    is_json(result)


async def test_tokens_alone_and_empty_stdout() -> None:
    tokens_only = await deliver_exec(prints({"tokens": 7}), WAKE, MAILSLOT_ENV)
    assert tokens_only.outcome == "ok" and tokens_only.tokens == 7
    silent = await deliver_exec(route(["true"]), WAKE, MAILSLOT_ENV)
    assert silent.outcome == "ok" and "stdout_ignored" not in silent.detail


async def test_a_non_zero_exit_is_an_error_that_is_not_retried() -> None:
    result = await deliver_exec(prints({"outcome": "action-taken", "tokens": 50}, exit_code=3),
                                WAKE, MAILSLOT_ENV)
    assert result.outcome == "error" and not result.retry and not result.disable
    assert result.detail["exit_code"] == 3
    assert result.detail["error"] == "exited with status 3"
    assert result.tokens == 50  # what it spent before failing still counts
    is_json(result)

    killed = await deliver_exec(route(["sh", "-c", "kill -9 $$"]), WAKE, MAILSLOT_ENV)
    assert killed.outcome == "error" and killed.detail["exit_code"] == -9
    assert killed.detail["error"] == "killed by signal 9" and not killed.retry


@pytest.mark.parametrize(
    ("stdout", "why"),
    [
        ("all done, see you\n", "not JSON"),
        ("[1, 2, 3]", "not a JSON object"),
        ("\xff\xfe{", "not JSON"),
        (json.dumps({"outcome": "done"}), "outcome 'done' is not one of"),
        (json.dumps({"outcome": "ok", "tokens": -5}), "tokens is not a whole number"),
        (json.dumps({"tokens": True}), "tokens is not a whole number"),
        (json.dumps({"tokens": 1.5}), "tokens is not a whole number"),
    ],
)
async def test_garbage_stdout_with_exit_0_is_ok_and_noted(stdout: str, why: str) -> None:
    result = await deliver_exec(prints(stdout), WAKE, MAILSLOT_ENV)
    assert result.outcome == "ok" and result.tokens == 0 and not result.retry
    assert why in result.detail["stdout_ignored"]
    is_json(result)


async def test_deeply_nested_stdout_is_garbage_not_a_crash() -> None:
    deep = python("import sys; sys.stdout.write('[' * 30000 + ']' * 30000)")
    result = await deliver_exec(deep, WAKE, MAILSLOT_ENV)
    assert result.outcome == "ok" and result.detail["stdout_ignored"] == "not JSON"


async def test_stdout_is_capped_at_64_kib_and_read_to_its_end() -> None:
    code = ("import json, sys; sys.stdout.write(json.dumps("
            "{'outcome': 'skipped', 'pad': 'x' * 200000})); sys.stdout.flush()")
    result = await deliver_exec(python(code), WAKE, MAILSLOT_ENV)
    assert result.outcome == "ok"  # a cut-off answer is not believed
    assert result.detail["stdout_ignored"] == f"larger than {STDOUT_MAX_BYTES} bytes"
    assert result.detail["stdout_bytes"] > 200_000


async def test_a_hanging_runtime_is_killed_at_the_timeout_with_all_it_started(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    hang = route(["sh", "-c", f'sleep 30 & echo $$ $! > "{pids}"; echo working; wait'],
                 timeout=0.5)
    began = time.monotonic()
    result = await deliver_exec(hang, WAKE, MAILSLOT_ENV)
    elapsed = time.monotonic() - began

    assert 0.5 <= elapsed < 3.0
    assert result.outcome == "error" and not result.retry and not result.disable
    assert result.detail["error"] == "timed out" and result.detail["timeout_s"] == 0.5
    assert result.detail["exit_code"] is None
    is_json(result)
    leader, child = (int(p) for p in pids.read_text().split())
    await all_dead(leader, child)


async def test_what_a_runtime_leaves_in_its_group_is_killed_when_it_exits() -> None:
    result = await deliver_exec(
        python("import subprocess, json; p = subprocess.Popen(['sleep', '30'], "
               "stdout=subprocess.DEVNULL); print(json.dumps({'pid': p.pid}))"),
        WAKE, MAILSLOT_ENV)
    assert result.outcome == "ok"
    # The answer is a JSON object without "outcome": fine, nothing ignored.
    assert "stdout_ignored" not in result.detail


async def test_the_caller_learns_the_runtimes_pid_and_its_key_is_passed_on() -> None:
    started: list[int] = []
    result = await deliver_exec(
        python("import json, os; print(json.dumps({'outcome': 'ok', 'tokens': os.getpid()"
               " if os.environ['MAILSLOT_DELIVERY'] == " + repr(MAILSLOT_ENV["MAILSLOT_DELIVERY"])
               + " else 0}))"),
        WAKE, MAILSLOT_ENV, on_start=started.append)
    assert result.outcome == "ok" and started == [result.tokens] and result.tokens > 0


async def test_cancelling_a_delivery_kills_the_runtime(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    task = asyncio.create_task(deliver_exec(
        route(["sh", "-c", f'sleep 30 & echo $$ $! > "{pids}"; wait'], timeout=60),
        WAKE, MAILSLOT_ENV))
    await wait_until(lambda: pids.exists() and pids.read_text().strip(), timeout=10,
                     what="the runtime to start")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    leader, child = (int(p) for p in pids.read_text().split())
    await all_dead(leader, child)


async def test_a_large_wake_neither_deadlocks_nor_breaks_a_runtime_that_ignores_stdin(
    tmp_path: Path,
) -> None:
    big = {**WAKE, "interrupts": [{"id": str(i), "pad": "y" * 1000} for i in range(2000)]}
    size = len(wake_bytes(big))
    assert size > 1_000_000

    # Prints a lot before reading anything: needs stdin fed while stdout is drained.
    chatty = python("import sys; sys.stdout.write('z' * 300000); sys.stdout.flush(); "
                    "print(len(sys.stdin.buffer.read()), file=open(sys.argv[1], 'w'))",
                    timeout=20)
    chatty = chatty.model_copy(update={"argv": [*chatty.argv, str(tmp_path / "n")]})
    result = await deliver_exec(chatty, big, MAILSLOT_ENV)
    assert result.outcome == "ok" and (tmp_path / "n").read_text().strip() == str(size)

    deaf = await deliver_exec(route(["true"], timeout=20), big, MAILSLOT_ENV)
    assert deaf.outcome == "ok" and deaf.detail["exit_code"] == 0


async def test_a_runtime_that_cannot_start_is_an_error(tmp_path: Path) -> None:
    missing = await deliver_exec(route([str(tmp_path / "no-such-runtime")]), WAKE, MAILSLOT_ENV)
    assert missing.outcome == "error" and not missing.retry
    assert missing.detail["error"].startswith("cannot start: ")
    assert "no-such-runtime" in missing.detail["error"]
    is_json(missing)

    nowhere = await deliver_exec(route(["true"], cwd=str(tmp_path / "gone")), WAKE, MAILSLOT_ENV)
    assert nowhere.outcome == "error" and nowhere.detail["error"].startswith("cannot start: ")

    relative = await deliver_exec(route(["true"], cwd="relative/dir"), WAKE, MAILSLOT_ENV)
    assert "not absolute" in relative.detail["error"]

    nul = await deliver_exec(route(["true"]), WAKE, {**MAILSLOT_ENV, "MAILSLOT_TYPE": "a\0b"})
    assert nul.outcome == "error" and "null byte" in nul.detail["error"]


# -- exec: no shell, environment, cwd -------------------------------------------------


async def test_shell_metacharacters_in_the_wake_never_reach_a_shell(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    nasty = [
        f"$(touch {tmp_path / 'pwned-subst'})",
        f"; touch {tmp_path / 'pwned-semicolon'}; rm -rf {victim}",
        f"`touch {tmp_path / 'pwned-backtick'}`",
        f"| touch {tmp_path / 'pwned-pipe'}",
        f"&& touch {tmp_path / 'pwned-and'}",
        "'\"\\ $HOME ~ * > out.txt\n",
    ]
    wake = {**WAKE, "wake": {**WAKE["wake"], "reason": nasty[0]},
            "interrupts": [{"id": "01JINT", "payload": {"title": t}} for t in nasty]}
    env = {**MAILSLOT_ENV, "MAILSLOT_SESSION": nasty[1], "MAILSLOT_TYPE": nasty[2]}
    received = tmp_path / "received"
    received.mkdir()
    code = ("import os, sys; d = sys.argv[1]; "
            "open(os.path.join(d, 'stdin'), 'wb').write(sys.stdin.buffer.read()); "
            "open(os.path.join(d, 'session'), 'w').write(os.environ['MAILSLOT_SESSION']); "
            "open(os.path.join(d, 'type'), 'w').write(os.environ['MAILSLOT_TYPE'])")
    result = await deliver_exec(route([PY, "-c", code, str(received)], cwd=str(tmp_path)),
                                wake, env)

    assert result.outcome == "ok", result.detail
    assert (received / "stdin").read_bytes() == wake_bytes(wake)  # verbatim
    assert json.loads((received / "stdin").read_bytes()) == wake
    assert (received / "session").read_text() == nasty[1]
    assert (received / "type").read_text() == nasty[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["received", "victim"]
    assert (victim / "keep.txt").read_text() == "keep"


async def test_the_runtime_gets_the_edge_env_route_env_and_mailslot_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGE_ONLY", "from the edge")
    monkeypatch.setenv("OVERRIDDEN", "by nobody")
    out = tmp_path / "env.json"
    names = [*MAILSLOT_ENV, "EDGE_ONLY", "OVERRIDDEN", "ROUTE_ONLY"]
    code = (f"import json, os; json.dump({{k: os.environ.get(k) for k in {names!r}}}, "
            f"open({str(out)!r}, 'w'))")
    result = await deliver_exec(
        python(code, env={"ROUTE_ONLY": "from the route", "OVERRIDDEN": "by the route",
                          "MAILSLOT_INTENT": "the route cannot fake this"}),
        WAKE, MAILSLOT_ENV)

    assert result.outcome == "ok"
    seen = json.loads(out.read_text())
    assert {k: seen[k] for k in MAILSLOT_ENV} == MAILSLOT_ENV  # the caller's win
    assert seen["EDGE_ONLY"] == "from the edge"
    assert seen["ROUTE_ONLY"] == "from the route" and seen["OVERRIDDEN"] == "by the route"
    assert os.environ.get("ROUTE_ONLY") is None  # the edge's own environment is untouched


async def test_cwd_defaults_to_home_and_can_be_set(tmp_path: Path) -> None:
    out = tmp_path / "cwd"
    code = f"import os; open({str(out)!r}, 'w').write(os.getcwd())"
    await deliver_exec(python(code), WAKE, MAILSLOT_ENV)
    assert out.read_text() == os.path.realpath(Path.home())
    await deliver_exec(python(code, cwd=str(tmp_path)), WAKE, MAILSLOT_ENV)
    assert out.read_text() == os.path.realpath(tmp_path)


# -- webhook: a real HTTP server ------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1. ``reply`` decides the answer to each request;
    ``"reset"`` closes the connection without one, ``"hang"`` never answers."""

    url: str
    requests: list[Received] = field(default_factory=list)
    reply: Callable[[Received], Reply | str] = lambda _r: (200, {}, b"")
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            request = Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                               self.rfile.read(length))
            state.requests.append(request)
            answer = state.reply(request)
            if answer == "reset":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if answer == "hang":
                state.release.wait(10)
                self.close_connection = True
                return
            assert not isinstance(answer, str)
            status, headers, body = answer
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/wake"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def hook(url: str, **options: Any) -> WebhookRoute:
    return WebhookRoute(kind="webhook", url=url, **options)


def json_reply(status: int, document: Any) -> Callable[[Received], Reply]:
    return lambda _r: (status, {"content-type": "application/json"},
                       json.dumps(document).encode())


# -- webhook: signing and headers -----------------------------------------------------


async def test_the_signature_verifies_with_the_standard_webhooks_library(
    receiver: Receiver,
) -> None:
    secret = new_secret()
    result = await deliver_webhook(hook(receiver.url, secret_env="HOOK_SECRET"), WAKE,
                                   KEY, {"HOOK_SECRET": secret})

    assert result == ChannelResult(outcome="ok", detail=result.detail)
    assert result.detail["status"] == 200 and "error" not in result.detail
    is_json(result)
    [request] = receiver.requests
    assert request.path == "/hooks/wake"
    assert Webhook(secret).verify(request.body, request.headers) == WAKE
    assert request.body == wake_bytes(WAKE) and "café".encode() in request.body
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == KEY
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 5
    assert request.headers["webhook-signature"].startswith("v1,")
    assert "authorization" not in request.headers

    # Any change to the body, the id or the timestamp breaks it.
    tampered = request.body.replace(b"ci-red", b"ci-rex")
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(secret).verify(tampered, request.headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(new_secret()).verify(request.body, request.headers)


async def test_the_bearer_token_is_sent(receiver: Receiver) -> None:
    environ = {"HOOK_SECRET": new_secret(), "GATEWAY_TOKEN": "tok-3f9a.b_c~d"}
    result = await deliver_webhook(
        hook(receiver.url, secret_env="HOOK_SECRET", bearer_env="GATEWAY_TOKEN"),
        WAKE, "msg_1", environ)
    assert result.outcome == "ok"
    [request] = receiver.requests
    assert request.headers["authorization"] == "Bearer tok-3f9a.b_c~d"
    Webhook(environ["HOOK_SECRET"]).verify(request.body, request.headers)


async def test_a_route_without_secret_env_is_sent_unsigned(receiver: Receiver) -> None:
    result = await deliver_webhook(hook(receiver.url, bearer_env="GATEWAY_TOKEN"), WAKE,
                                   "msg_2", {"GATEWAY_TOKEN": "t0k"})
    assert result.outcome == "ok"
    [request] = receiver.requests
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] == "msg_2"
    assert request.headers["authorization"] == "Bearer t0k"


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({}, ["HOOK_SECRET", "secret_env", "not set"]),
        ({"HOOK_SECRET": ""}, ["HOOK_SECRET", "not set"]),
        ({"HOOK_SECRET": "hunter2-not-whsec"}, ["HOOK_SECRET", "whsec_"]),
        ({"HOOK_SECRET": "whsec_"}, ["HOOK_SECRET", "unusable"]),
        ({"HOOK_SECRET": "whsec_A"}, ["HOOK_SECRET", "unusable"]),
        ({"HOOK_SECRET": "whsec_!!!"}, ["HOOK_SECRET", "unusable"]),
    ],
)
async def test_a_missing_or_unusable_secret_is_an_error_not_retried(
    receiver: Receiver, environ: dict[str, str], words: list[str],
) -> None:
    result = await deliver_webhook(hook(receiver.url, secret_env="HOOK_SECRET"), WAKE,
                                   "msg_3", environ)
    assert result.outcome == "error" and not result.retry and not result.disable
    for word in words:
        assert word in result.detail["error"]
    assert receiver.requests == []  # nothing went out unsigned
    for value in environ.values():
        if value:
            assert value not in json.dumps(result.detail)
    is_json(result)


@pytest.mark.parametrize("token", [None, "", "two words", "line\nbreak", "tök"])
async def test_a_missing_or_unusable_bearer_token_is_an_error_not_retried(
    receiver: Receiver, token: str | None,
) -> None:
    environ = {} if token is None else {"GATEWAY_TOKEN": token}
    result = await deliver_webhook(hook(receiver.url, bearer_env="GATEWAY_TOKEN"), WAKE,
                                   "msg_4", environ)
    assert result.outcome == "error" and not result.retry
    assert "GATEWAY_TOKEN" in result.detail["error"]
    assert receiver.requests == []
    if token:
        assert token not in json.dumps(result.detail)


# -- webhook: statuses ----------------------------------------------------------------


async def test_a_2xx_json_body_is_honoured_like_exec_stdout(receiver: Receiver) -> None:
    target = hook(receiver.url)
    receiver.reply = json_reply(200, {"outcome": "action-taken", "tokens": 900})
    reported = await deliver_webhook(target, WAKE, "msg_5")
    assert reported.outcome == "action-taken" and reported.tokens == 900

    receiver.reply = json_reply(202, {"status": "accepted", "delivery_id": "msg_5"})
    accepted = await deliver_webhook(target, WAKE, "msg_5")
    assert accepted.outcome == "ok" and accepted.detail["status"] == 202
    assert "body_ignored" not in accepted.detail

    receiver.reply = lambda _r: (204, {}, b"")
    empty = await deliver_webhook(target, WAKE, "msg_5")
    assert empty.outcome == "ok" and "body_ignored" not in empty.detail

    receiver.reply = lambda _r: (200, {"content-type": "text/plain"}, b"OK")
    text = await deliver_webhook(target, WAKE, "msg_5")
    assert text.outcome == "ok" and text.detail["body_ignored"] == "not JSON"

    receiver.reply = lambda _r: (200, {}, b'{"outcome": "ok", "pad": "' + b"x" * 100_000 + b'"}')
    huge = await deliver_webhook(target, WAKE, "msg_5")
    assert huge.outcome == "ok" and "larger than" in huge.detail["body_ignored"]


@pytest.mark.parametrize(("status", "retry_after"), [
    (500, None), (502, None), (503, "30"), (408, None), (429, "120"),
])
async def test_server_errors_and_throttling_are_retried(
    receiver: Receiver, status: int, retry_after: str | None,
) -> None:
    headers = {"retry-after": retry_after} if retry_after else {}
    receiver.reply = lambda _r: (status, headers, b"try later")
    result = await deliver_webhook(hook(receiver.url), WAKE, "msg_6")
    assert result.outcome == "error" and result.retry and not result.disable
    assert result.detail["status"] == status
    assert result.detail["error"].startswith(f"HTTP {status}")
    assert result.detail["error"].endswith(": try later")
    if retry_after:
        assert result.detail["retry_after_s"] == int(retry_after)
    else:
        assert "retry_after_s" not in result.detail
    is_json(result)


async def test_410_disables_the_route(receiver: Receiver) -> None:
    receiver.reply = lambda _r: (410, {}, b"")
    result = await deliver_webhook(hook(receiver.url), WAKE, "msg_7")
    assert result.outcome == "error" and result.disable and not result.retry
    assert result.detail == {"status": 410, "error": "HTTP 410 Gone",
                             "duration_ms": result.detail["duration_ms"]}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_other_4xx_are_errors_not_retried(receiver: Receiver, status: int) -> None:
    receiver.reply = json_reply(status, {"ok": False, "error": "text required"})
    result = await deliver_webhook(hook(receiver.url), WAKE, "msg_8")
    assert result.outcome == "error" and not result.retry and not result.disable
    assert result.detail["status"] == status
    assert '"error": "text required"' in result.detail["error"]


async def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.reply = lambda r: ((302, {"location": "/elsewhere"}, b"") if r.path == "/hooks/wake"
                                else (200, {}, b""))
    result = await deliver_webhook(hook(receiver.url, bearer_env="T"), WAKE, "msg_9",
                                   {"T": "secret-token"})
    assert result.outcome == "error" and not result.retry
    assert "redirects are not followed" in result.detail["error"]
    assert [r.path for r in receiver.requests] == ["/hooks/wake"]


# -- webhook: transport failures ------------------------------------------------------


async def test_a_server_that_is_down_is_retried() -> None:
    result = await deliver_webhook(hook(f"http://127.0.0.1:{free_port()}/hooks/wake"), WAKE,
                                   "msg_10")
    assert result.outcome == "error" and result.retry and not result.disable
    assert result.detail["status"] is None
    assert result.detail["error"].startswith("connection failed: ")
    is_json(result)


async def test_a_connection_reset_is_retried(receiver: Receiver) -> None:
    receiver.reply = lambda _r: "reset"
    result = await deliver_webhook(hook(receiver.url), WAKE, "msg_11")
    assert result.outcome == "error" and result.retry
    assert result.detail["error"].startswith("connection failed: ")


async def test_a_server_that_never_answers_is_retried_after_the_timeout(
    receiver: Receiver,
) -> None:
    receiver.reply = lambda _r: "hang"
    began = time.monotonic()
    result = await deliver_webhook(hook(receiver.url, timeout=0.5), WAKE, "msg_12")
    assert 0.4 <= time.monotonic() - began < 3.0
    assert result.outcome == "error" and result.retry
    assert result.detail["error"] == "timed out after 0.5s"


# -- webhook: secrets -----------------------------------------------------------------


async def test_secrets_never_appear_in_detail_even_when_the_receiver_echoes_them(
    receiver: Receiver,
) -> None:
    environ = {"HOOK_SECRET": new_secret(), "GATEWAY_TOKEN": "gw-token-5e1f2a"}
    target = hook(receiver.url, secret_env="HOOK_SECRET", bearer_env="GATEWAY_TOKEN")

    def echo(status: int) -> Callable[[Received], Reply]:
        # A careless receiver: puts our headers, and the secret it was configured with,
        # into its answer.
        return lambda r: (status, {}, json.dumps(
            {"configured": environ["HOOK_SECRET"], "headers": r.headers}).encode())

    seen = []
    for status in (200, 400, 410, 500):
        receiver.reply = echo(status)
        result = await deliver_webhook(target, WAKE, "msg_13", environ)
        seen.append(result)
        text = json.dumps(result.detail)
        assert environ["GATEWAY_TOKEN"] not in text
        assert environ["HOOK_SECRET"] not in text
        assert environ["HOOK_SECRET"].removeprefix("whsec_") not in text
        is_json(result)
    assert [r.outcome for r in seen] == ["ok", "error", "error", "error"]
    assert "[redacted]" in seen[1].detail["error"]
    assert seen[0].detail.get("body_ignored") is None  # a JSON object without "outcome"
