"""One JetStream read in flight per question, whoever asks: a reconnect storm or an
ingest flood asks the same ``STREAM.INFO`` (an identity's pending counts, an account's
live links) many times at once, and nats-server drops API requests beyond its queue
limit. ``Coalescer.run(key, read)`` makes the callers of one key share one request.

A caller never gets an answer older than its own call: while a read of ``key`` is in
flight, a new caller does not join it (it may have started before what the caller must
see, e.g. its own link's beat, or an interrupt just stored), but waits for it and joins
the *next* one, which every caller that arrived meanwhile shares. So one key has at
most one read in flight and one waiting, however many ask. A read that fails fails for
everyone who shared it (each caller handles the error as it would its own).

``Coalescer(ttl=…)`` additionally keeps each answer ``ttl`` seconds after it was read:
for callers that accept an answer that old (``relay.readiness``: every probe of one
second shares one); then "older than its call" no longer holds, by the caller's choice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Answers a ``ttl`` coalescer keeps at most (then it forgets them all).
_KEPT_MAX = 10_000


class _Flight(Generic[T]):
    """One read of a key: its future, and whether it has started (callers of a flight
    that started wait for it and then share the next one)."""

    def __init__(self) -> None:
        self.future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.started = False


class Coalescer(Generic[T]):
    """Shared reads per key (see the module doc). ``calls`` counts the reads made, for
    tests and benchmarks."""

    def __init__(self, ttl: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self.calls = 0
        #: key → the flight in progress (started), and the one callers wait to share.
        self._running: dict[Hashable, _Flight[T]] = {}
        self._next: dict[Hashable, _Flight[T]] = {}
        #: key → (answer, until when it may be given again) when ``ttl`` > 0.
        self._kept: dict[Hashable, tuple[T, float]] = {}

    async def run(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """``read()``'s answer for ``key``, shared with every caller of the same flight."""
        while True:
            if self.ttl > 0:
                kept = self._kept.get(key)
                if kept is not None and kept[1] > self.clock():
                    return kept[0]
            running = self._running.get(key)
            if running is None:
                waiting = self._next.pop(key, None)
                return await self._fly(key, waiting or _Flight(), read)
            flight = self._next.get(key)
            if flight is None:
                flight = self._next[key] = _Flight()
            # Wait for the read in flight to end: its answer may predate this call.
            await asyncio.wait([running.future])
            if not flight.started:
                if self._running.get(key) is None and self._next.get(key) is flight:
                    del self._next[key]
                    return await self._fly(key, flight, read)
                continue
            try:
                return await asyncio.shield(flight.future)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if flight.future.cancelled() and (task is None or not task.cancelling()):
                    continue  # its caller was cancelled, not this one: read again
                raise

    async def _fly(self, key: Hashable, flight: _Flight[T], read: Callable[[], Awaitable[T]]
                   ) -> T:
        flight.started = True
        self._running[key] = flight
        self.calls += 1
        try:
            value = await read()
        except BaseException as exc:
            if not flight.future.done():
                if isinstance(exc, asyncio.CancelledError):
                    flight.future.cancel()
                else:
                    flight.future.set_exception(exc)
                    flight.future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            if self.ttl > 0:
                if len(self._kept) >= _KEPT_MAX:
                    self._kept.clear()
                self._kept[key] = (value, self.clock() + self.ttl)
            flight.future.set_result(value)
            return value
        finally:
            if self._running.get(key) is flight:
                del self._running[key]

    def forget(self, key: Hashable) -> None:
        """Drop a kept answer (the caller knows it changed)."""
        self._kept.pop(key, None)
