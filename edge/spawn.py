"""Child programs: the one place the edge starts a program, feeds it and makes sure it ends.

Command watches (``edge.watches.commands``), judges (``edge.engine.judge``) and exec
routes (``edge.delivery.exec``) all run a program the user named, on text that may come
from anywhere (a payload, a file name). ``run_child`` runs it with these guarantees:

* **No shell.** The program is an argv handed to ``exec``: nothing in an argument, the
  input or the environment is ever interpreted.
* **Its own session and process group.** The child's pid is its group's id, so everything
  it starts can be killed with it, and the edge's terminal signals (Ctrl-C) do not reach
  it. ``edge.store.instances.runner_mark`` relies on this: after a ``kill -9`` of the edge,
  whoever takes a delivery over recognises the group by its leader's pid and start time.
* **The whole group is killed** at ``timeout``, when the caller is cancelled (also while
  the program is still starting: the start is let finish, then killed), and once the
  program has exited (whatever it left running in its group goes too). A child never
  outlives the call; a program that wants to leave something behind must detach it into
  a session of its own.
* **Bounded output.** stdin is ``/dev/null`` or the bytes given (written while stdout is
  read, so a program that prints before it has read all its input cannot deadlock us);
  stderr is discarded; stdout is read in chunks to its end, the first ``keep`` bytes are
  kept, all of it is counted and hashed, the rest is dropped as it comes: a program
  printing gigabytes costs time, never memory. With ``kill_past_keep`` the group is
  killed the moment stdout passes ``keep`` instead.

What the caller must do: catch what starting can raise (``OSError`` — no such program,
a bad ``cwd`` — and ``ValueError`` for a NUL byte in the argv or environment) and read
``ChildExit``: ``timed_out`` and ``overflowed`` say the group was killed early, else
``returncode`` is the program's (negative: killed by that signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

#: Read size; the pipe hands over at most this much at a time anyway.
CHUNK_BYTES = 64 * 1024


class Capture:
    """A stream's head kept (the first ``keep`` bytes), all of it counted and hashed."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.head = bytearray()
        self.size = 0
        self.hash = hashlib.sha256()

    def feed(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        self.size += len(chunk)
        room = self.keep - len(self.head)
        if room > 0:
            self.head += chunk[:room]

    @property
    def truncated(self) -> bool:
        """More came than was kept."""
        return self.size > self.keep


@dataclass(frozen=True)
class ChildExit:
    """How a child ended. ``returncode`` is its exit status (negative: the signal that
    killed it, ``-9`` when the group was killed here); ``timed_out``: killed at the
    timeout; ``overflowed``: killed because stdout passed ``keep`` (``kill_past_keep``).
    ``stdout`` holds what was read, up to the end or the kill."""

    returncode: int
    stdout: Capture
    timed_out: bool = False
    overflowed: bool = False


async def run_child(
    argv: Sequence[str],
    *,
    timeout: float,
    keep: int,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    kill_past_keep: bool = False,
    on_start: Callable[[int], None] | None = None,
) -> ChildExit:
    """Run ``argv`` once (see the module docstring for the guarantees) and return how it
    ended. ``cwd`` and ``env`` default to the edge's own; ``stdin`` None is ``/dev/null``.
    ``timeout`` runs from the moment the program has started. ``on_start`` gets the
    child's pid (its process group's id) as soon as it runs, before it is fed.

    Raises what starting raises (``OSError``, ``ValueError``); for anything the program
    does, never. If cancelled, the group is killed and reaped before the cancel goes on."""
    proc = await _start(argv, cwd, env, piped=stdin is not None)
    capture = Capture(keep)
    try:
        if on_start is not None:
            on_start(proc.pid)
        overflowed = await asyncio.wait_for(
            _exchange(proc, stdin, capture, kill_past_keep), timeout)
    except TimeoutError:
        return ChildExit(await _killed(proc), capture, timed_out=True)
    except BaseException:  # cancelled: leave nothing running, and reap it
        with contextlib.suppress(asyncio.CancelledError):  # a second cancel: still re-raise
            await asyncio.shield(_killed(proc))
        raise
    _kill_group(proc.pid)  # whatever it left behind in its group
    return ChildExit(await proc.wait(), capture, overflowed=overflowed)


async def _killed(proc: asyncio.subprocess.Process) -> int:
    """Kill the group and reap the child. What it printed meanwhile is read and dropped:
    asyncio reports the exit only once stdout is closed, and a pipe nobody reads any more
    stops being read (the reader's buffer full), so waiting without reading could hang."""
    _kill_group(proc.pid)
    assert proc.stdout is not None
    while await proc.stdout.read(CHUNK_BYTES):
        pass
    return await proc.wait()


def _kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (a child of ``run_child``), if it lives.
    The group outlives its leader while any member lives, and the kernel does not reuse
    the leader's pid while the group exists: this kills only what the child started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _start(argv: Sequence[str], cwd: str | None, env: Mapping[str, str] | None, *,
                 piped: bool) -> asyncio.subprocess.Process:
    spawning = asyncio.ensure_future(asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if piped else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=cwd,
        env=env,
        start_new_session=True,
    ))
    try:
        return await asyncio.shield(spawning)
    except asyncio.CancelledError:
        # Cancelled while starting: asyncio would kill the process but not its group
        # (it may have started others already). Let the start finish, then kill that.
        spawning.add_done_callback(_kill_started)
        raise


def _kill_started(spawning: asyncio.Future[asyncio.subprocess.Process]) -> None:
    if not spawning.cancelled() and spawning.exception() is None:
        _kill_group(spawning.result().pid)


async def _exchange(proc: asyncio.subprocess.Process, stdin: bytes | None, capture: Capture,
                    kill_past_keep: bool) -> bool:
    """Feed and drain at once, then wait for the exit; True if stdout overflowed."""
    drained = _drain(proc, capture, kill_past_keep)
    if stdin is None:
        return await drained
    _fed, overflowed = await asyncio.gather(_feed(proc, stdin), drained)
    return overflowed


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    # A program that exits without reading its stdin is its own business, not a failure.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        try:
            proc.stdin.write(data)
            await proc.stdin.drain()
        finally:
            proc.stdin.close()


async def _drain(proc: asyncio.subprocess.Process, capture: Capture,
                 kill_past_keep: bool) -> bool:
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(CHUNK_BYTES):
        capture.feed(chunk)
        if kill_past_keep and capture.truncated:
            await _killed(proc)
            return True
    await proc.wait()
    return False
