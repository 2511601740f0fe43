"""Graceful stop on SIGINT/SIGTERM, shared by every long-running mailslot command.

The first signal asks for a clean stop (in-flight deliveries released, stores closed,
the embedded nats-server stopped); a second Ctrl-C forces the process out at once, with
exit code 130 (``shared.errors.ExitCode.INTERRUPTED``). Even then nothing is left behind:
the embedded nats-server's watcher sees its relay gone and stops it (``relay.natswatch``),
and the kernel drops the folder locks (``shared.host.lockfile``).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """While inside, SIGINT/SIGTERM set ``stop``; a second SIGINT exits with 130."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set() and sig is signal.SIGINT:
            os._exit(130)
        stop.set()

    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
