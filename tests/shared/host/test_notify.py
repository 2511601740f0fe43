"""``shared.host.notify``: sd_notify datagrams received on a real Unix datagram socket
(path and abstract names), the watchdog as a timer, and silence without
``$NOTIFY_SOCKET``. The daemons' own messages are tested on real processes in
``tests/edge/test_daemon_notify.py`` and ``tests/relay/test_commands_notify.py``."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

from shared.host.notify import ServiceNotifier


def receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = ServiceNotifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.ready() is False and notifier.stopping() is False


def test_the_environment_is_read_as_systemd_sets_it(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    assert ServiceNotifier.from_environ({"NOTIFY_SOCKET": path}).address == path
    assert ServiceNotifier.from_environ({"NOTIFY_SOCKET": "@name"}).address == b"\0name"
    assert ServiceNotifier.from_environ({"NOTIFY_SOCKET": "relative"}).address is None
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000"}
    assert ServiceNotifier.from_environ(env).watchdog_interval == 30.0  # half of it
    assert ServiceNotifier.from_environ(
        {**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval is None  # not ours
    assert ServiceNotifier.from_environ(
        {**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 30.0
    assert ServiceNotifier.from_environ({**env, "WATCHDOG_USEC": "x"}).watchdog_interval is None


def test_ready_and_stopping_reach_a_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with receiver(path) as sock:
        notifier = ServiceNotifier.from_environ({"NOTIFY_SOCKET": path})
        assert notifier.ready("serving") is True
        assert notifier.stopping() is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
        assert sock.recv(4096) == b"STOPPING=1"


def test_an_abstract_socket_is_reached_too() -> None:
    name = f"mailslot-test-{os.getpid()}-{time.monotonic_ns()}"
    with receiver(b"\0" + name.encode()) as sock:
        assert ServiceNotifier.from_environ({"NOTIFY_SOCKET": "@" + name}).ready() is True
        assert sock.recv(4096) == b"READY=1"


def test_a_socket_gone_away_is_not_an_error(tmp_path: Path) -> None:
    notifier = ServiceNotifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "none")})
    assert notifier.ready() is False  # logged at DEBUG, nothing raised


async def test_the_watchdog_pings_on_a_timer_until_stopped(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with receiver(path) as sock:
        sock.setblocking(False)
        notifier = ServiceNotifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        assert notifier.watchdog_interval == 0.1
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(notifier.watchdog(stop))
        await asyncio.sleep(0.55)
        stop.set()
        await asyncio.wait_for(task, 2)  # ends at once when stopped
        elapsed = time.monotonic() - started
        pings = []
        while True:
            try:
                pings.append(sock.recv(4096))
            except BlockingIOError:
                break
        assert set(pings) == {b"WATCHDOG=1"}
        # One at once, then one per 0.1 s: a timer, never a busy loop.
        assert 3 <= len(pings) <= elapsed / 0.1 + 1
