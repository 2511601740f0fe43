"""``python -m relay.natswatch FD -- nats-server ARGS``: keep the embedded nats-server from
outliving the relay, however the relay dies.

The relay starts this wrapper with the read end of a pipe (descriptor ``FD``) whose write
end only the relay holds. The kernel closes that write end when the relay exits for any
reason, ``kill -9`` included, so the wrapper sees end-of-file and stops nats-server
(SIGTERM, which flushes the store; SIGKILL if it does not exit in time). That works on any
POSIX system. On Linux nats-server is also started with ``PR_SET_PDEATHSIG`` set to
SIGTERM, so that killing the wrapper itself takes nats-server with it. (PDEATHSIG fires
when the *thread* that forked the child dies; this wrapper is single-threaded.)

The wrapper exits with nats-server's status when nats-server exits on its own, which is
how the relay's supervisor learns that it must restart it. It ignores SIGINT: a Ctrl-C in
a terminal reaches the relay, which stops nats-server itself, in order.

Standard library only, so that it starts in milliseconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
STOP_TIMEOUT = 10.0


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to send ``sig`` to the child when its parent dies,
    or None where that does not exist (the pipe is then the only mechanism)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            os._exit(127)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m relay.natswatch FD -- COMMAND ...", file=sys.stderr)
        return 2
    pipe_fd = int(argv[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The child's exit must wake the select below: SIGCHLD writes to a self-pipe.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    child = subprocess.Popen(argv[2:], preexec_fn=die_with_parent())

    def stop_child(*_args: object) -> None:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop_child)
    while True:
        status = child.poll()
        if status is not None:
            return status if status >= 0 else 128 - status
        readable, _, _ = select.select([pipe_fd, wake_r], [], [])  # no timeout: both wake us
        if wake_r in readable:
            os.read(wake_r, 512)
        if pipe_fd in readable and not os.read(pipe_fd, 1):
            stop_child()

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
