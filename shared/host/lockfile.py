"""One owner per folder: an exclusive ``flock`` on a lock file, held for the process's life.

Two relays on one JetStream store start two nats-servers on the same files; two edge
daemons on one home deliver every wake twice and rewrite each other's ``edge.json``. So
``relay serve``, ``edge run`` and ``mailslot up`` each take the lock of the folder they
own *before they change anything*, and a second instance fails at once with
``already_running`` naming the pid that holds it.

Why ``flock`` and not a pid file alone: the kernel drops the lock when the holder dies,
however it dies (``kill -9`` included), so a crash never leaves a stale lock behind and
nobody has to guess whether a pid in a file is still ours. The pid written into the file
is only there to be named in the error. The file is never deleted (deleting a lock file
while another process opens it is how two owners happen); its descriptor is not inherited
by children (Python opens it close-on-exec), so a nats-server or a delivered runtime never
keeps the lock alive after its parent is gone.

Lives in ``shared.host`` (the one part of ``shared`` that touches the host) because both
the relay and the edge use it; its refusal, ``shared.errors.AlreadyRunning``, is pure.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from shared.errors import AlreadyRunning

RELAY_LOCK = "relay.lock"
EDGE_LOCK = "edge.lock"


class FolderLock:
    """The exclusive lock on ``folder/name``. ``acquire`` (raises ``AlreadyRunning``),
    then ``release`` when the owner stops (or just exit: the kernel releases it).
    ``what`` names the owner in the error: "the relay on /srv/relay"."""

    def __init__(self, folder: Path, name: str, what: str) -> None:
        self.path = folder / name
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock or raise ``AlreadyRunning`` at once (never waits). Creates the
        folder (0700) if needed, and nothing else."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            pid = f"pid {holder}" if holder else "pid unknown"
            error = AlreadyRunning(
                f"{self.what} is already running ({pid}); stop it first "
                f"(lock {self.path})"
            )
            error.pid = holder
            raise error from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (idempotent). The file stays; only the pid is cleared."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()


def relay_lock(data_dir: Path) -> FolderLock:
    """The lock of a relay data folder (its JetStream store and ``relay.json``)."""
    return FolderLock(data_dir, RELAY_LOCK, f"the relay on {data_dir}")


def edge_lock(data_dir: Path) -> FolderLock:
    """The lock of an edge home (taken in its data folder, next to the inbox)."""
    return FolderLock(data_dir, EDGE_LOCK, f"the edge daemon on {data_dir}")


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    return None


def pid_alive(pid: object) -> bool:
    """Whether ``pid`` (as read from a file: anything) is a running process, not a
    zombie (a zombie holds no port, no lock and no store files)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
