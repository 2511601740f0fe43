"""A real ``mailslot relay serve`` process under a stand-in for systemd's notify socket (an
abstract Unix datagram socket, as systemd itself uses): ``READY=1`` only once NATS is up
and the port answers, ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC``, ``STOPPING=1`` on
SIGTERM, in that order."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests_support import free_port, wait_until


async def test_relay_serve_says_ready_once_listening_then_watchdog_then_stopping(
        nats_server, tmp_path: Path) -> None:
    name = f"mailslot-relay-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    port = free_port()
    env = {**os.environ, "MAILSLOT_LOG": "WARNING", "NOTIFY_SOCKET": "@" + name,
           "WATCHDOG_USEC": "400000"}
    with (tmp_path / "relay.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge", "relay", "serve", "--listen", f"127.0.0.1:{port}",
             "--nats", nats_server.url, "--data-dir", str(tmp_path / "relay")],
            env=env, stdout=subprocess.DEVNULL, stderr=log)

    async def next_message(timeout: float = 30) -> str:
        return (await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)).decode()

    try:
        first = await next_message()
        assert first.split("\n")[0] == "READY=1", first
        assert f"STATUS=relay listening on http://127.0.0.1:{port}" in first
        async with httpx.AsyncClient(timeout=5) as client:  # ready means serving, already
            health = await client.get(f"http://127.0.0.1:{port}/healthz")
            ready = await client.get(f"http://127.0.0.1:{port}/readyz")
        assert (health.status_code, ready.status_code) == (200, 200)
        assert [await next_message() for _ in range(2)] == ["WATCHDOG=1"] * 2
        process.send_signal(signal.SIGTERM)
        while (last := await next_message()) == "WATCHDOG=1":
            pass
        assert last == "STOPPING=1"
        await wait_until(lambda: process.poll() is not None, 30, "the relay to exit")
        assert process.returncode == 0, (tmp_path / "relay.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        sock.close()
