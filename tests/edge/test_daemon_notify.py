"""A real ``mailslot edge run`` process under a stand-in for systemd's notify socket (a
real Unix datagram socket given as ``$NOTIFY_SOCKET``): ``READY=1`` once it serves, then
``WATCHDOG=1`` from its event loop at half of ``$WATCHDOG_USEC``, then ``STOPPING=1`` on
SIGTERM — in that order, and nothing after."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests_support import enroll, wait_until

from edge.status import edge_status


async def test_ready_then_watchdog_then_stopping(relay, tmp_path: Path) -> None:
    member = await enroll(relay, "acme", tmp_path / "edge")
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    env = {**os.environ, "MAILSLOT_HOME": str(member.home), "MAILSLOT_LOG": "WARNING",
           "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}  # a ping every 0.2 s
    with (tmp_path / "edge.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "edge", "edge", "run"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=log)
    received: list[tuple[float, str]] = []

    async def next_message(timeout: float = 20) -> str:
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
        received.append((time.monotonic(), data.decode()))
        return data.decode()

    try:
        first = await next_message()
        assert first.split("\n")[0] == "READY=1", first
        assert f"STATUS=edge {member.id}" in first
        # Ready means serving: the inbox is open and the link is dialling (it connects).
        await wait_until(lambda: edge_status(member.paths())["connected"], 20, "connected")
        pings = [await next_message() for _ in range(3)]
        assert pings == ["WATCHDOG=1"] * 3
        process.send_signal(signal.SIGTERM)
        while (last := await next_message()) == "WATCHDOG=1":
            pass
        assert last == "STOPPING=1"
        # Not process.wait(): the relay runs on this event loop and must answer the close.
        await wait_until(lambda: process.poll() is not None, 20, "the edge to exit")
        assert process.returncode == 0, (tmp_path / "edge.log").read_text()
        assert "cancelled" not in (tmp_path / "edge.log").read_text()  # all stopped cleanly
        await asyncio.sleep(0)
        with_none_after = []
        with contextlib.suppress(BlockingIOError):
            with_none_after.append(sock.recv(4096))
        assert with_none_after == []  # STOPPING=1 was the last word
        times = [t for t, m in received if m == "WATCHDOG=1"]
        # A timer at 0.2 s, not a busy loop: at most one ping per 0.2 s (and one at once).
        assert len(times) <= (times[-1] - received[0][0]) / 0.2 + 2, received
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        sock.close()
