"""``edge.engine.judge.ask_judge``: a real judge process asked once; every way it can fail is a
``Judgment`` with ``failure`` set (the engine's handling of ``on_failure`` is tested in
test_decide.py)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from process_support import all_dead
from tests_support import wait_until

from edge.engine.judge import ANSWER_MAX_BYTES, Judgment, ask_judge
from edge.intents.model import Judge

PY = sys.executable
DOC = {"id": "01JINT", "type": "ci.failed", "payload": {"branch": "main — café"}}


def judge(code: str, timeout: float = 10) -> Judge:
    return Judge(command=[PY, "-c", code], timeout=timeout)


async def test_the_interrupt_arrives_on_stdin_and_the_answer_is_read_to_its_end() -> None:
    # the answer in two writes with a pause between: all of it is the answer
    code = ("import json, sys, time; d = json.load(sys.stdin); "
            "sys.stdout.write('{\"wake\": true, '); sys.stdout.flush(); time.sleep(0.2); "
            "print(json.dumps({'reason': d['payload']['branch'], 'tokens': 5})[1:])")
    answer = await ask_judge(judge(code), DOC)
    assert answer.failure is None and answer.wake is True
    assert answer.reason == "main — café" and answer.tokens == 5 and answer.elapsed > 0


async def test_a_judge_that_prints_too_much_is_stopped_at_once() -> None:
    code = "import sys\nwhile True: sys.stdout.write('x' * 4096)"
    began = time.monotonic()
    answer = await ask_judge(judge(code, timeout=30), DOC)
    assert time.monotonic() - began < 10  # not left to run into the timeout
    assert answer == Judgment(wake=None, reason=answer.reason, failure=answer.reason,
                              elapsed=answer.elapsed)
    assert answer.failure == f"answer larger than {ANSWER_MAX_BYTES} bytes"


@pytest.mark.parametrize(("code", "failure"), [
    ("import sys; sys.exit(3)", "exited with status 3"),
    ("import time; time.sleep(60)", "timed out after 0.5s"),
    ("print('not json')", "garbage answer (not JSON)"),
])
async def test_failures_are_judgments(code: str, failure: str) -> None:
    answer = await ask_judge(judge(code, timeout=0.5), DOC)
    assert answer.wake is None and answer.failure == failure


async def test_a_judge_that_cannot_start_is_a_failure(tmp_path: Path) -> None:
    answer = await ask_judge(Judge(command=[str(tmp_path / "no-such-judge")]), DOC)
    assert answer.failure is not None and answer.failure.startswith("cannot start judge: ")


async def test_cancelling_kills_the_judge_and_what_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    code = ("import os, subprocess, sys, time; p = subprocess.Popen(['sleep', '60']); "
            f"open({str(pidfile)!r}, 'w').write(f'{{os.getpid()}} {{p.pid}}'); time.sleep(60)")
    task = asyncio.create_task(ask_judge(judge(code, timeout=60), DOC))
    text = await wait_until(lambda: pidfile.exists() and pidfile.read_text(), 20,
                            "the judge running")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await all_dead(*(int(pid) for pid in text.split()))
