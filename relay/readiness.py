"""``GET /readyz``: whether this relay process can do its job now, for a load balancer.

Ready means connected to NATS with the stream and buckets set up *and* the interrupt
stream has a leader: on a cluster that lost its quorum (two of three nodes down) the
relay stays connected to the survivor, but every publish would fail, so it is taken out
of rotation. The leader is read with one ``STREAM.INFO`` without subject state
(``relay.drain.stream_leader``), at most once a second per process however many
balancers probe (``relay.coalesce`` with a 1 s ttl: probes share the answer), answered
within ``PROBE_TIMEOUT`` (a cluster without quorum does not answer: that is the answer).

Not ready is ``503 {"ready": false, "error", "message"}``, the code saying why:
``nats_disconnected`` (this process is not connected to NATS, or not set up yet) or
``no_stream_leader`` (NATS answers, JetStream cannot: no quorum, an election under way).
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.coalesce import Coalescer
from relay.drain import stream_leader
from relay.errors import StoreUnavailable
from relay.store import Store

#: Seconds one answer is given to every probe.
READY_TTL = 1.0
#: Seconds the stream's leader has to answer.
PROBE_TIMEOUT = 1.5


@dataclass(frozen=True)
class ReadyState:
    ready: bool
    code: str = ""
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        if self.ready:
            return {"ready": True}
        return {"ready": False, "error": self.code, "message": self.message}


class ReadyCheck:
    """``await check()``: this process's readiness, read at most once per ``ttl``."""

    def __init__(self, store: Store, ttl: float = READY_TTL,
                 timeout: float = PROBE_TIMEOUT) -> None:
        self.store = store
        self.timeout = timeout
        self._answers: Coalescer[ReadyState] = Coalescer(ttl=ttl)

    async def check(self) -> ReadyState:
        if not self.store.ready:
            return ReadyState(False, "nats_disconnected",
                             "this relay is not connected to NATS (reconnecting)")
        return await self._answers.run("ready", self._probe)

    @property
    def probes(self) -> int:
        """``STREAM.INFO`` requests made so far."""
        return self._answers.calls

    async def _probe(self) -> ReadyState:
        try:
            await stream_leader(self.store, self.timeout)
        except StoreUnavailable as exc:
            return ReadyState(False, "no_stream_leader", exc.message)
        return ReadyState(True)
