"""Who holds a delivery claim, and whether they are still alive.

A claim on a delivery (``edge.store.deliveries``) is owned by a running *instance*: the edge
daemon's deliverer, or one ``mailslot mcp --channel`` process. Each instance makes a
fresh id when it starts (a ULID: unique across restarts, machines and pid reuse) and
holds an exclusive ``flock`` on ``data/instances/<id>.lock`` for as long as it runs.

Why a held lock rather than a pid and its start time: the kernel drops a flock the moment
its process dies, however it dies (``kill -9``, OOM killer, power loss then reboot), so
"can I take this lock?" is an exact liveness test with no pid-reuse window and no
``/proc`` parsing; it works the same on Linux and macOS. The lock is taken on a temporary
name and only then renamed into place, so a lock file under its final name is always
either held or left by a dead instance — never a live one that has not locked it yet.
Lock file descriptors are not inherited (Python opens them close-on-exec), so a runtime
an instance started cannot keep a dead instance looking alive.

Whoever finds an instance dead (``alive`` returns False) releases its claims at once,
stops the runtimes it left running (``stop_runner``: a runtime runs in its own session,
so a ``kill -9`` of the edge does not end it) and removes its lock file. The file holds
the instance's pid and owner name, for people.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import time
from pathlib import Path
from types import TracebackType

from ulid import ULID

from edge.errors import InboxError

#: What an instance id looks like (a ULID); anything else in a claim is nobody alive.
_ID_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
_SUFFIX = ".lock"
#: A temporary lock file younger than this may belong to an instance that is starting.
_STARTING = 60.0


class Instance:
    """This process as a claimer of deliveries. ``start`` it (or use it as a context
    manager) before claiming anything; ``stop`` it when the process is done claiming —
    its claims must have been finished or released first."""

    def __init__(self, folder: Path, owner: str, instance_id: str, fd: int | None) -> None:
        self.folder = folder
        #: A human name for logs and ``claim_owner`` ("daemon", the MCP server's owner…).
        self.owner = owner
        self.id = instance_id
        self._fd = fd

    @classmethod
    def start(cls, folder: Path, owner: str) -> Instance:
        """Make a new id and hold its lock until ``stop`` (or this process ends). Lock
        files of dead instances found on the way are removed."""
        instance_id = str(ULID())
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
            sweep(folder)
            temporary = folder / f".{instance_id}.tmp"
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.write(fd, json.dumps({"id": instance_id, "owner": owner, "pid": os.getpid(),
                                         "started": time.time()}).encode())
                os.rename(temporary, folder / f"{instance_id}{_SUFFIX}")
            except BaseException:
                os.close(fd)
                temporary.unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise InboxError(f"{folder}: cannot register this process as a deliverer "
                             f"({exc.strerror or exc}); check the data folder's permissions"
                             ) from exc
        return cls(folder, owner, instance_id, fd)

    def alive(self, instance_id: str) -> bool:
        """Is the instance ``instance_id`` running (this one always is)?"""
        if instance_id == self.id:
            return self._fd is not None
        return alive(self.folder, instance_id)

    def stop_runner(self, runner: str) -> bool:
        """Stop what a dead instance's runtime left running (see ``stop_runner``)."""
        return stop_runner(runner)

    def stop(self) -> None:
        """Remove the lock file, then let go of the lock. Idempotent."""
        if self._fd is None:
            return
        (self.folder / f"{self.id}{_SUFFIX}").unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def alive(folder: Path, instance_id: str) -> bool:
    """Whether ``instance_id`` holds its lock in ``folder``. A missing lock file, or one
    nobody holds, is a dead instance (its file is removed)."""
    if not _ID_RE.fullmatch(instance_id):
        return False  # a claim from before instances existed, or not ours to judge
    return _held(folder / f"{instance_id}{_SUFFIX}")


def runner_mark(pid: int) -> str:
    """``"<pid>:<start>"`` for a runtime process just started (in its own session, so its
    pid is its process group's id): enough to recognise that very process later. The
    start is its start time in clock ticks since boot (``/proc/<pid>/stat``); where there
    is no ``/proc`` it is empty and the runtime is never stopped by ``stop_runner``."""
    return f"{pid}:{_start_time(pid) or ''}"


def stop_runner(runner: str) -> bool:
    """Kill the process group of the runtime ``runner`` (a ``runner_mark``) if its leader
    is still that same process: after a ``kill -9`` of the edge, the runtime it had
    started keeps running in its own session; the delivery is about to run again and
    must not run twice at once. A pid that now belongs to another process (different
    start time), or a leader that is gone, is left alone: nothing else is ever killed."""
    pid_text, _, start = runner.partition(":")
    if not pid_text.isdigit() or not start:
        return False
    pid = int(pid_text)
    if pid <= 1 or _start_time(pid) != start:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
        return True
    return False


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; the fields after
    # the last ")" start at field 3, and the start time is field 22.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def sweep(folder: Path) -> int:
    """Remove the lock files of dead instances (and temporaries a crash left); returns
    how many."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.endswith(_SUFFIX):
                removed += not _held(Path(entry.path))
            elif entry.name.endswith(".tmp") and _stale(entry):
                # A crash between creating and renaming. A fresh one may be an instance
                # starting right now, not yet holding its lock: leave it be.
                removed += not _held(Path(entry.path))
    return removed


def _stale(entry: os.DirEntry[str]) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return time.time() - entry.stat().st_mtime > _STARTING
    return False


def _held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        # Nobody holds it: its instance is gone. Unlink while we hold the lock, so a
        # second checker racing us finds it gone or unlockable, never "alive".
        path.unlink(missing_ok=True)
        return False
    finally:
        os.close(fd)
