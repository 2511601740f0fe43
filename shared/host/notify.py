"""Telling a service manager how the process is doing: systemd's ``sd_notify`` protocol.

With ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (a Unix datagram socket; a name
starting with ``@`` is in the abstract namespace) and, with ``WatchdogSec=``,
``$WATCHDOG_USEC``. The process sends newline-separated ``KEY=VALUE`` datagrams there:
``READY=1`` once it really serves (systemd holds back units ordered after it until
then), ``WATCHDOG=1`` at least every ``WATCHDOG_USEC`` (else systemd kills and restarts
it: an event loop that hangs is noticed), ``STOPPING=1`` when it begins to shut down.
Without ``$NOTIFY_SOCKET`` (a terminal, launchd, a test) every call does nothing.

The protocol is a few lines on the ``socket`` module (``sd_notify(3)``): no dependency.
Used by the edge daemon and by ``relay serve`` (``mailslot up`` through the edge daemon,
once both are up), hence here, beside the other host helpers both import.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from shared.host.waiting import first_of

log = logging.getLogger("mailslot.notify")


@dataclass(frozen=True)
class ServiceNotifier:
    """Build with ``from_environ()``; call ``ready()`` once serving, run
    ``watchdog(stop)`` as a task while serving, call ``stopping()`` on the way out."""

    #: The socket address as ``sendto`` takes it ("\\0name" for an abstract one), or None.
    address: str | bytes | None = None
    #: Seconds between two ``WATCHDOG=1`` (half of ``$WATCHDOG_USEC``), or None.
    watchdog_interval: float | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> ServiceNotifier:
        """Read ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC`` (ignored when
        ``$WATCHDOG_PID`` names another process, as ``sd_watchdog_enabled`` does)."""
        raw = environ.get("NOTIFY_SOCKET", "")
        address: str | bytes | None = None
        if raw.startswith("@"):
            address = b"\0" + raw[1:].encode()
        elif raw.startswith("/"):
            address = raw
        interval = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if address is not None and usec.isdigit() and int(usec) > 0 and (
                not pid or pid == str(os.getpid())):
            interval = int(usec) / 2 / 1_000_000
        return cls(address, interval)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` fields; False if there is no socket or it
        failed (logged at DEBUG: a service manager gone away must not stop the process)."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            log.debug("sd_notify %s failed: %s", fields, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (and ``STATUS=…``, shown by ``systemctl status``)."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    async def watchdog(self, stop: asyncio.Event) -> None:
        """``WATCHDOG=1`` every ``watchdog_interval`` seconds from the event loop until
        ``stop`` is set (a timer: the loop sleeps in between). Returns at once without a
        watchdog."""
        if self.watchdog_interval is None:
            return
        while not stop.is_set():
            self.send("WATCHDOG=1")
            await first_of(stop.wait(), timeout=self.watchdog_interval)
