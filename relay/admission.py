"""How many link handshakes one relay process works on at once, and what the ones it
turns away are told.

A handshake (from the WebSocket upgrade to the ``welcome``) costs the relay two Ed25519
verifies, a registry read and a ``STREAM.INFO``, and its edge has ``auth_timeout`` to
answer the challenge. When thousands of edges reconnect at once to a relay on a starved
CPU, taking them all at once makes every one of them slow: the relay gets to each
answer after its deadline (``4408 auth_timeout``), the edge dials again, and the storm
feeds itself. So a process works on at most ``cap`` handshakes at a time; beyond it a
handshake is answered at once, before the upgrade and before any crypto, HTTP
``503 relay_full`` with a ``Retry-After`` in whole seconds: the first second from now
that still has room at the rate the relay completes handshakes (``cap`` over their
recent mean duration, or ``GROWTH`` times the welcomes of the last seconds if that is
less; ``FIRST_RATE`` until it knows; ``BOOKED_SHARE`` of it), each refusal booking
its place. The refused edges come back spread over the time the relay needs for them,
and one that comes back when told finds a slot (or is told again, with a later second).
At most ``RETRY_MAX_SECONDS``.

The cap bounds the relay's own backlog: 512 handshakes of about 2 to 4 ms of relay
CPU each are 1 to 2 s of work, inside the 10 s deadline even at a part of a core; a
lower cap sheds sooner, and each refusal costs its edge a connection (measured with
``scripts/bench --only edges``, 10,000 links from one client process).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

#: Handshakes one process works on at once by default.
MAX_HANDSHAKES = 512
#: Seconds of welcomes the recent rate is measured over.
WINDOW_SECONDS = 5.0
#: How much more than the recent rate is booked (so that a rate held down by the hints
#: themselves grows back), and the least booked.
GROWTH, MIN_RATE = 1.5, 10.0
#: The share of each second's handshakes booked for refused edges coming back (the
#: rest is room for new ones, and for returns that bunch up within the second).
BOOKED_SHARE = 1.0
#: Weight of the latest handshake in the mean duration.
SMOOTHING = 0.1
#: Handshakes a second the process is guessed to complete before it has seen any: about
#: what one relay process does on a busy 2-core machine (a guess too high makes edges
#: come back too soon and be refused again; each refusal costs the edge a connection).
FIRST_RATE = 200.0
#: The largest ``Retry-After`` of a busy relay.
RETRY_MAX_SECONDS = 30


class HandshakeGate:
    """``enter`` before working on a handshake (None: refuse it, telling it
    ``retry_after``); ``leave`` with what ``enter`` returned once it is over."""

    def __init__(self, cap: int | None = MAX_HANDSHAKES, retry_max: int = RETRY_MAX_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = cap
        self.retry_max = retry_max
        self.clock = clock
        #: Handshakes being worked on now.
        self.active = 0
        #: Handshakes refused since the process started (for tests and benchmarks).
        self.refused = 0
        #: Mean seconds from ``enter`` to a welcome (moving average); None: none yet.
        self.mean_seconds: float | None = None
        #: When the handshakes of the last ``WINDOW_SECONDS`` were welcomed.
        self._welcomes: deque[float] = deque()
        #: Whole second (of ``clock``) → refused edges told to come back then.
        self._booked: dict[int, int] = {}

    def enter(self) -> float | None:
        """When this handshake started (give it to ``leave``), or None: refuse it."""
        if self.cap is not None and self.active >= self.cap:
            self.refused += 1
            return None
        self.active += 1
        return self.clock()

    def leave(self, started: float, welcomed: bool) -> None:
        self.active -= 1
        if welcomed:
            now = self.clock()
            self._welcomes.append(now)
            self._forget(now)
            took = max(now - started, 1e-3)
            mean = self.mean_seconds
            self.mean_seconds = took if mean is None else mean + SMOOTHING * (took - mean)

    def rate(self) -> float:
        """Handshakes a second this process completes when every slot is busy."""
        if self.mean_seconds is None:
            return FIRST_RATE
        capacity = float(self.cap or 1) / self.mean_seconds
        now = self.clock()
        self._forget(now)
        span = now - self._welcomes[0] if self._welcomes else 0.0
        if span >= 1.0:
            # What it did lately, a little more: the edges' side (or the CPU) may be
            # slower than the slots suggest, and an edge refused again pays a connection.
            capacity = min(capacity, GROWTH * len(self._welcomes) / span)
        return max(MIN_RATE, capacity)

    def _forget(self, now: float) -> None:
        """Drop the welcomes older than ``WINDOW_SECONDS``."""
        while self._welcomes and self._welcomes[0] < now - WINDOW_SECONDS:
            self._welcomes.popleft()

    def retry_after(self) -> int:
        """Whole seconds for a refused edge to wait: the first second with room."""
        now = int(self.clock())
        for second in [s for s in self._booked if s <= now]:
            del self._booked[second]
        room = max(1, round(self.rate() * BOOKED_SHARE))
        for wait in range(1, self.retry_max + 1):
            if self._booked.get(now + wait, 0) < room:
                self._booked[now + wait] = self._booked.get(now + wait, 0) + 1
                return wait
        # Booked up to the longest hint: spread the rest over its second half rather
        # than send them all back in the same second.
        return random.randint((self.retry_max + 1) // 2, self.retry_max)
