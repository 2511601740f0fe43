"""``edge.delivery.exec``: real subprocesses and process groups, the wake on stdin, the
outcome a runtime reports on stdout."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from channel_support import WAKE, is_json
from process_support import all_dead, shell_traps
from tests_support import wait_until

from edge.delivery.exec import deliver_exec
from edge.delivery.outcome import STDOUT_MAX_BYTES, ChannelResult, wake_bytes
from edge.intents.model import ExecRoute
from edge.store.deliveries import OUTCOMES

PY = sys.executable

MAILSLOT_ENV = {
    "MAILSLOT_ID": "01JINT",
    "MAILSLOT_TYPE": "ci.failed",
    "MAILSLOT_INTENT": "ci-red",
    "MAILSLOT_SESSION": "main",
    "MAILSLOT_PERMISSIONS": "/tmp/mailslot-permissions.json",
    "MAILSLOT_DELIVERY": "msg_01JDQ8Z9X4DDDDDDDDDDDDDDDD",
}
#: A delivery key as the queue makes them (``edge.store.enginestate.new_delivery_key``).

# -- exec helpers ---------------------------------------------------------------------


def route(argv: list[str], **options: Any) -> ExecRoute:
    return ExecRoute(kind="exec", argv=argv, **options)


def python(code: str, **options: Any) -> ExecRoute:
    return route([PY, "-c", code], **options)


def prints(document: Any, exit_code: int = 0) -> ExecRoute:
    """A runtime that prints ``document`` (JSON, or a string as is) and exits."""
    text = document if isinstance(document, str) else json.dumps(document)
    return python(f"import sys; sys.stdout.write({text!r}); sys.exit({exit_code})")


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
    victim, traps = shell_traps(tmp_path)
    nasty = [*traps, "'\"\\ $HOME ~ * > out.txt\n"]
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
