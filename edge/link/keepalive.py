"""The edge's keepalive: how it notices a link that died without a FIN (a laptop that
slept or changed networks, a black-holed route, a frozen relay) within ``keepalive``
seconds of the link's last sign of life, at as few pings as that allows.

A sign of life is any frame from the relay, or the pong to our ping. After
``interval`` seconds with none (three quarters of ``keepalive``: 15 s by default) the
edge sends one WebSocket ping and gives the relay ``timeout`` seconds (the last quarter,
5 s) to answer; with no answer (and no other frame meanwhile) the connection is aborted
at once, with no closing handshake to wait for on a link that is dead. So an idle link
costs the relay one ping every 15 s (10,000 idle edges: 667 a second, where a ping every
half keepalive made it 1,000), a link that receives deliveries costs it none, and a
dead link is still given up within ``keepalive`` of its last sign of life. That is on the
loop's clock (monotonic), which does not advance while the machine is suspended: a
laptop gives up a link that died in its sleep within ``keepalive`` of waking, not at
once. (A freeze, SIGSTOP or a blocked loop, does advance it: see ``watch`` for a pong
read together with the timer.)

``PingSchedule`` is the one source of truth for the numbers (``scripts/bench_edges.py``
pings on it too); ``Liveness`` is the clock the link's reader stamps and the loop that
pings, here rather than websockets' own ``ping_interval``, which pings on a fixed period
whatever arrives and counts only its pongs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from edge.errors import LinkClosed

#: The share of ``keepalive`` a link may be silent before the edge pings.
PING_SHARE = 0.75


@dataclass(frozen=True)
class PingSchedule:
    """After ``interval`` seconds without a sign of life a ping, ``timeout`` to answer
    it: ``interval + timeout`` is the edge's ``keepalive``."""

    interval: float
    timeout: float

    @classmethod
    def of(cls, keepalive: float) -> PingSchedule:
        return cls(interval=keepalive * PING_SHARE, timeout=keepalive * (1 - PING_SHARE))


class _Pinger(Protocol):
    """What ``Liveness.watch`` needs of a websockets connection."""

    async def ping(self) -> Awaitable[float]: ...

    @property
    def transport(self) -> asyncio.Transport: ...


class Liveness:
    """When the link last showed a sign of life (``seen`` on every frame read), and the
    loop that pings it when it has been silent for ``schedule.interval``."""

    def __init__(self, schedule: PingSchedule) -> None:
        self.schedule = schedule
        self._loop = asyncio.get_running_loop()
        self.last = self._loop.time()
        #: Pings sent on this link (for tests and benchmarks).
        self.pings = 0

    def seen(self) -> None:
        self.last = self._loop.time()

    async def watch(self, ws: _Pinger) -> None:
        """Run until the link is found dead: then abort its connection and raise
        ``LinkClosed``. Cancel it when the link ends otherwise."""
        interval, timeout = self.schedule.interval, self.schedule.timeout
        while True:
            silent = self._loop.time() - self.last
            if silent < interval:
                await asyncio.sleep(interval - silent)
                continue
            sent = self._loop.time()
            pong: Awaitable[float] | None = None
            self.pings += 1
            try:
                async with asyncio.timeout(timeout):  # the ping's write may block too
                    pong = await ws.ping()
                    await pong
                self.seen()
                continue
            except TimeoutError:
                # A pong (or another frame) that arrived together with the timer, as
                # after a freeze (SIGSTOP, a laptop's sleep), still counts.
                if _answered(pong) or self.last > sent:
                    self.seen()
                    continue
            ws.transport.abort()  # dead: no closing handshake to wait for
            raise LinkClosed(f"no answer to a keepalive ping within {timeout:g} s")


def _answered(pong: Awaitable[float] | None) -> bool:
    return (isinstance(pong, asyncio.Future) and pong.done() and not pong.cancelled()
            and pong.exception() is None)
