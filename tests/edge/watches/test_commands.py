"""``edge.watches.commands``: real subprocesses, real process groups, real pipes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from process_support import all_dead, group_members, shell_traps
from tests_support import wait_until

from edge.intents.declarations import CommandWatch, Schedule
from edge.watches.commands import CommandResult, run_command
from shared.match import Predicate

PY = sys.executable


def command(argv: list[str], **options: Any) -> CommandWatch:
    return CommandWatch(id="cmd", kind="command", argv=argv, schedule=Schedule(every=60),
                        **options)


def python(code: str, **options: Any) -> CommandWatch:
    return command([PY, "-c", code], **options)


def is_json(result: CommandResult) -> None:
    assert json.loads(json.dumps(result.payload())) == result.payload()


# -- change ---------------------------------------------------------------------------


async def test_first_run_is_a_baseline_then_a_change_fires_once(tmp_path: Path) -> None:
    source = tmp_path / "status.txt"
    source.write_text("green\n")
    watch = command(["cat", str(source)])

    first = await run_command(watch, None)
    assert first.error is None and first.exit_code == 0
    assert not first.fire and "baseline" in first.reason and first.changed is None
    assert first.output == "green\n" and not first.truncated
    assert first.output_hash == hashlib.sha256(b"green\n").hexdigest()
    assert "changed" not in first.payload()

    same = await run_command(watch, first.output_hash)
    assert not same.fire and same.changed is False and same.reason == "output unchanged"

    source.write_text("red\n")
    changed = await run_command(watch, same.output_hash)
    assert changed.fire and changed.changed is True and changed.reason == "output changed"
    assert changed.output == "red\n" and changed.payload()["changed"] is True
    is_json(changed)

    again = await run_command(watch, changed.output_hash)
    assert not again.fire  # fired once for the change, not again


async def test_unchanged_output_never_fires() -> None:
    watch = python("print('same every time')")
    previous = None
    results = []
    for _ in range(3):
        result = await run_command(watch, previous)
        results.append(result)
        previous = result.output_hash
    assert [r.fire for r in results] == [False, False, False]
    assert len({r.output_hash for r in results}) == 1


async def test_stderr_is_discarded_and_the_exit_code_does_not_count_for_change() -> None:
    watch = python("import sys; print('out'); print('noise', file=sys.stderr); sys.exit(4)")
    result = await run_command(watch, hashlib.sha256(b"out\n").hexdigest())
    assert result.output == "out\n" and result.exit_code == 4 and not result.fire


# -- exit_code ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "exit_codes", "fires", "code"),
    [
        ("exit 0", [], False, 0),
        ("exit 3", [], True, 3),
        ("kill -9 $$", [], True, -9),  # killed by a signal: not 0
        ("exit 3", [2], False, 3),
        ("exit 2", [2, 5], True, 2),
        ("exit 0", [0], True, 0),
    ],
)
async def test_exit_code_rules(script: str, exit_codes: list[int], fires: bool, code: int) -> None:
    watch = command(["sh", "-c", script], fire_on="exit_code", exit_codes=exit_codes)
    result = await run_command(watch, None)  # no baseline needed for exit codes
    assert result.error is None and result.exit_code == code
    assert result.fire is fires, result.reason
    assert str(code) in result.reason
    is_json(result)


# -- condition ------------------------------------------------------------------------


def status(value: str) -> Predicate:
    return Predicate(field="output.status", op="eq", value=value)


async def test_condition_on_a_json_path() -> None:
    down = python('import json; print(json.dumps({"status": "down", "checks": {"db": 3}}))',
                  fire_on="condition", condition=[status("down")])
    fired = await run_command(down, None)
    assert fired.fire and fired.reason == "every condition holds"

    both = down.model_copy(update={"condition": [
        status("down"), Predicate(field="output.checks.db", op="ge", value=3),
        Predicate(field="exit_code", op="eq", value=0)]})
    assert (await run_command(both, None)).fire

    up = down.model_copy(update={"condition": [status("up")]})
    held = await run_command(up, None)
    assert not held.fire and held.reason == "output.status eq 'up' does not hold"


async def test_condition_on_output_that_is_not_json() -> None:
    watch = python("print('status: down')", fire_on="condition", condition=[status("down")])
    result = await run_command(watch, None)
    assert not result.fire and result.reason == "output is not JSON" and result.error is None

    deep = python("print('[' * 100000 + ']' * 100000)", fire_on="condition",
                  condition=[status("down")])
    assert (await run_command(deep, None)).reason == "output is not JSON"

    invalid_utf8 = python(r"import sys; sys.stdout.buffer.write(b'\xff\xfe{')",
                          fire_on="condition", condition=[status("down")])
    result = await run_command(invalid_utf8, None)
    assert result.reason == "output is not JSON" and "\ufffd" in result.output


async def test_condition_parses_json_longer_than_output_max() -> None:
    code = 'import json; print(json.dumps({"pad": "x" * 50000, "status": "down"}))'
    watch = python(code, fire_on="condition", condition=[status("down")], output_max=100)
    result = await run_command(watch, None)
    assert result.fire and result.truncated and len(result.output) == 100


# -- limits ---------------------------------------------------------------------------


async def test_a_hanging_command_is_killed_at_the_timeout_with_all_it_started(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    watch = command(["sh", "-c", f'sleep 30 & echo $$ $! > "{pids}"; echo started; wait'],
                    timeout=0.5)
    began = time.monotonic()
    result = await run_command(watch, None)
    elapsed = time.monotonic() - began

    assert 0.5 <= elapsed < 2.0
    assert result.error == "timed out after 0.5s" and result.reason == result.error
    assert not result.fire and result.exit_code is None
    assert result.output == "started\n"
    assert result.payload()["error"] == "timed out after 0.5s"
    is_json(result)

    leader, child = (int(p) for p in pids.read_text().split())
    await all_dead(leader, child)
    assert group_members(leader) == []


async def test_cancelling_a_run_kills_the_command(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    watch = command(["sh", "-c", f'sleep 30 & echo $$ $! > "{pids}"; echo go; wait'],
                    timeout=60)
    run = asyncio.create_task(run_command(watch, None))
    await wait_until(lambda: pids.exists() and pids.read_text().strip(), timeout=10,
                     what="the command to start")
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    leader, child = (int(p) for p in pids.read_text().split())
    await all_dead(leader, child)


async def test_what_a_command_leaves_in_its_group_is_killed_when_it_exits() -> None:
    watch = command(["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
    result = await run_command(watch, None)
    assert result.error is None and result.exit_code == 0
    await all_dead(int(result.output))


async def test_a_command_printing_100_mb_is_capped_and_costs_no_memory() -> None:
    watch = python("import sys; sys.stdout.buffer.write(b'x' * 100_000_000)", output_max=4096)
    tracemalloc.start()
    try:
        began = time.monotonic()
        result = await run_command(watch, None)
        elapsed = time.monotonic() - began
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.error is None and result.exit_code == 0
    assert result.output == "x" * 4096 and result.truncated
    assert len(result.payload()["output"]) == 4096
    expected = hashlib.sha256()
    block = b"x" * 1_000_000
    for _ in range(100):
        expected.update(block)
    assert result.output_hash == expected.hexdigest()  # the whole output, not the head
    assert elapsed < 5.0, f"took {elapsed:.2f}s"
    assert peak < 4 * 1024 * 1024, f"peak Python memory {peak / 1e6:.1f} MB"


async def test_shell_metacharacters_in_argv_are_never_interpreted(tmp_path: Path) -> None:
    victim, traps = shell_traps(tmp_path)
    args = [*traps, "$HOME ~ * > out.txt"]
    watch = command([PY, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *args],
                    cwd=str(tmp_path), output_max=8192)
    result = await run_command(watch, None)

    assert result.error is None and json.loads(result.output) == args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"]
    assert (victim / "keep.txt").read_text() == "keep"


async def test_a_command_that_cannot_start_is_an_error(tmp_path: Path) -> None:
    missing = await run_command(command([str(tmp_path / "no-such-program")]), None)
    assert missing.error is not None and missing.error.startswith("cannot start: ")
    assert "no-such-program" in missing.error and "No such file" in missing.error
    assert not missing.fire and missing.exit_code is None and missing.output == ""
    assert missing.payload()["error"] == missing.error
    is_json(missing)

    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    denied = await run_command(command([str(script)]), None)
    assert denied.error is not None and "Permission denied" in denied.error

    nowhere = await run_command(command(["true"], cwd=str(tmp_path / "gone")), None)
    assert nowhere.error is not None and nowhere.error.startswith("cannot start: ")

    relative = await run_command(command(["true"], cwd="relative/dir"), None)
    assert relative.error is not None and "not absolute" in relative.error


async def test_cwd_defaults_to_home_and_can_be_set(tmp_path: Path) -> None:
    home = await run_command(python("import os; print(os.getcwd())"), None)
    assert home.output.strip() == os.path.realpath(Path.home())
    there = await run_command(python("import os; print(os.getcwd())", cwd=str(tmp_path)), None)
    assert there.output.strip() == os.path.realpath(tmp_path)


async def test_stdin_is_empty() -> None:
    result = await run_command(python("import sys; print(repr(sys.stdin.read()))"), None)
    assert result.output == "''\n"
