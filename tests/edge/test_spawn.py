"""``edge.spawn.run_child``: real processes and process groups. What it guarantees — no shell,
the whole group killed at the timeout, on cancel and after the exit, output capped — is
what the watch, judge and exec tests rely on; here each guarantee on its own."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path

import pytest
from process_support import all_dead
from tests_support import wait_until

from edge.spawn import ChildExit, run_child

PY = sys.executable


def leaves_a_sleeper(pidfile: Path, then: str = "") -> list[str]:
    """A program that starts ``sleep 60`` in its own group, notes its pid, then ``then``."""
    code = ("import subprocess, sys; p = subprocess.Popen(['sleep', '60']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); sys.stdout.flush(); {then}")
    return [PY, "-c", code]


async def test_argv_is_never_a_shell_and_stdin_arrives_verbatim(tmp_path: Path) -> None:
    hostile = "$(touch pwned); `touch pwned2`; echo hi > pwned3"
    code = "import sys; sys.stdout.write(sys.argv[1] + '|' + sys.stdin.read())"
    ended = await run_child([PY, "-c", code, hostile], timeout=10, keep=1024, cwd=str(tmp_path),
                            stdin=b"caf\xc3\xa9")
    assert ended == ChildExit(0, ended.stdout)
    assert bytes(ended.stdout.head) == hostile.encode() + b"|caf\xc3\xa9"
    assert list(tmp_path.iterdir()) == []


async def test_no_stdin_is_dev_null_and_the_exit_status_is_kept() -> None:
    ended = await run_child([PY, "-c", "import sys; sys.exit(len(sys.stdin.read()) + 3)"],
                            timeout=10, keep=10)
    assert ended.returncode == 3 and not ended.timed_out and not ended.overflowed


async def test_output_past_keep_is_counted_and_hashed_not_kept() -> None:
    code = "import sys; sys.stdout.write('x' * 300000)"
    ended = await run_child([PY, "-c", code], timeout=10, keep=100)
    assert ended.returncode == 0 and not ended.overflowed
    assert bytes(ended.stdout.head) == b"x" * 100
    assert ended.stdout.size == 300000 and ended.stdout.truncated
    assert ended.stdout.hash.hexdigest() == hashlib.sha256(b"x" * 300000).hexdigest()


async def test_kill_past_keep_kills_the_group_at_once(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    forever = leaves_a_sleeper(pidfile, "import time\nwhile True: sys.stdout.write('y' * 4096)")
    ended = await asyncio.wait_for(
        run_child(forever, timeout=60, keep=1000, kill_past_keep=True), 20)
    assert ended.overflowed and not ended.timed_out and ended.returncode == -9
    assert len(ended.stdout.head) == 1000
    await all_dead(int(pidfile.read_text()))


async def test_the_group_is_killed_at_the_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    ended = await run_child(leaves_a_sleeper(pidfile, "print('partial'); import time; "
                                             "time.sleep(60)"), timeout=0.5, keep=100)
    assert ended.timed_out and ended.returncode == -9
    assert bytes(ended.stdout.head) == b"partial\n"
    await all_dead(int(pidfile.read_text()))


async def test_a_child_flooding_stdout_past_its_timeout_never_hangs_us() -> None:
    """asyncio reports an exit once stdout is closed: what a killed child left in the pipe
    must still be read, or the wait would never end."""
    flood = [PY, "-c", "import sys\nwhile True: sys.stdout.write('x' * 65536)"]
    for _ in range(10):
        ended = await asyncio.wait_for(run_child(flood, timeout=0.2, keep=10), 10)
        assert ended.timed_out and ended.returncode == -9 and ended.stdout.size > 10


async def test_what_the_child_leaves_in_its_group_is_killed_when_it_exits(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # the sleeper holds stdout open: reading to the end would wait for it, so close it
    code = ("import os, subprocess; p = subprocess.Popen(['sleep', '60'], "
            "stdout=subprocess.DEVNULL); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid))")
    ended = await run_child([PY, "-c", code], timeout=10, keep=10)
    assert ended.returncode == 0
    await all_dead(int(pidfile.read_text()))


async def test_a_cancel_kills_and_reaps_the_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started: list[int] = []
    task = asyncio.create_task(run_child(
        leaves_a_sleeper(pidfile, "sys.stdin.read()"), timeout=60, keep=10, stdin=b"",
        on_start=started.append))
    await wait_until(pidfile.exists, 20, "the child running")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(started) == 1
    await all_dead(started[0], int(pidfile.read_text()))


async def test_a_large_input_to_a_child_that_prints_first_does_not_deadlock() -> None:
    code = ("import sys; sys.stdout.write('z' * 200000); sys.stdout.flush(); "
            "sys.stdout.write(str(len(sys.stdin.buffer.read())))")
    ended = await asyncio.wait_for(
        run_child([PY, "-c", code], timeout=20, keep=300000, stdin=b"w" * 2_000_000), 30)
    assert ended.returncode == 0 and bytes(ended.stdout.head).endswith(b"2000000")


async def test_a_child_that_ignores_its_input_is_not_a_failure() -> None:
    ended = await run_child(["true"], timeout=10, keep=10, stdin=b"w" * 2_000_000)
    assert ended.returncode == 0


async def test_what_cannot_start_raises_for_the_caller(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await run_child([str(tmp_path / "missing")], timeout=10, keep=10)
    with pytest.raises(OSError):
        await run_child(["true"], timeout=10, keep=10, cwd=str(tmp_path / "gone"))
    with pytest.raises(ValueError):
        await run_child(["true"], timeout=10, keep=10, env={"A": "a\0b"})
