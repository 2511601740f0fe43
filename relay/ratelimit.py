"""Publish rates per account and per producer token, and request rates per client
address on the unauthenticated endpoints (``AddressLimiter``): token buckets whose state
lives in NATS (the store's in-memory ``mailslot_rates`` KV bucket: keys ``account.NAME``,
``token.ID``, ``addr.…``), so that every relay process on one NATS spends from the same
buckets.

A bucket holds up to ``burst`` units and refills at ``rate`` per second; each accepted
interrupt takes one. Its state is ``{"t": units left, "at": unix time}``; taking reads
it, refills it for the time since, and writes it back only if nobody else wrote it in
between (a compare-and-set on the KV revision; on a lost race it reads again). A refusal
writes nothing. An empty bucket answers ``429 rate_limited`` with ``Retry-After``: the
whole seconds until one unit is back (at least 1).

Cost: nothing when the account's plan sets no rate; else, per bucket and accepted
interrupt, one KV write (in memory on the NATS server) when this process wrote the
bucket last, and a read before it when another process did (the compare-and-set on
the revision it remembers failed) — the token's bucket first, then the account's. Within one process, takes from one bucket wait their
turn on a lock (so they do not lose compare-and-set races to each other); only takes
from different processes can race in NATS.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from relay.clientaddr import Networks, bucket_key, scope_client, shown
from relay.config import Plan, UnauthenticatedLimits
from relay.errors import RateLimited, StoreUnavailable
from relay.store import Store

#: Lost compare-and-set races before a take gives up (503 store_unavailable).
_MAX_RACES = 50
#: Buckets whose last state one process remembers (then it forgets them all).
_SEEN_MAX = 10_000


class RateLimiter:
    """Takes one unit per interrupt from the buckets the account's plan defines."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        #: One lock per bucket key while someone takes from it: takes from one process
        #: queue here instead of racing each other's compare-and-set in NATS (which,
        #: with 20 concurrent producers on one account, would mostly lose).
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        #: The state and revision this process last wrote or read per bucket: the next
        #: take tries its compare-and-set on it straight away (one round trip, not two)
        #: and reads NATS only when that fails. It can only be behind NATS (others only
        #: take units), so a refusal it gives is one NATS would give too.
        self._seen: dict[str, tuple[dict[str, Any], int]] = {}

    async def take(self, plan: Plan, account: str, token_id: str | None) -> None:
        """Spend one unit of ``token_id``'s bucket (if given and ``plan`` limits tokens)
        and of ``account``'s; raise ``RateLimited`` if either is empty."""
        if token_id and plan.token_rate is not None:
            await self._take(f"token.{token_id}", plan.token_rate,
                             plan.burst(plan.token_rate, plan.token_burst), "token")
        if plan.account_rate is not None:
            await self._take(f"account.{account}", plan.account_rate,
                             plan.burst(plan.account_rate, plan.account_burst),
                             f"account {account}")

    async def _take(self, key: str, rate: float, burst: int, what: str,
                    kind: str = "publish rate") -> None:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                await self._take_locked(key, rate, burst, what, kind)
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]  # nobody else holds or waits: no growth per key

    async def _take_locked(self, key: str, rate: float, burst: int, what: str,
                           kind: str) -> None:
        found = self._seen.pop(key, None)
        for _ in range(_MAX_RACES):
            now = self.clock()
            if found is None:
                found = await self.store.rate_get(key)
            if found is None:
                units, revision = float(burst), None
            else:
                state, revision = found
                elapsed = max(0.0, now - float(state.get("at", now)))
                units = min(float(burst), float(state.get("t", burst)) + elapsed * rate)
            if units < 1.0:
                if found is not None:
                    self._seen[key] = found  # unchanged: still the latest we know
                wait = math.ceil((1.0 - units) / rate)
                raise RateLimited(
                    f"{what} is over its {kind} ({rate:g}/s, burst {burst}); retry "
                    f"in {max(1, wait)} s", retry_after=wait)
            state = {"t": units - 1.0, "at": now}
            written = await self.store.rate_swap(key, state, revision)
            if written is not None:
                if len(self._seen) >= _SEEN_MAX:
                    self._seen.clear()
                self._seen[key] = (state, written)
                return
            found = None  # someone else wrote it: read it again
        raise StoreUnavailable(f"rate bucket {key} is contended; retry")


class AddressLimiter:
    """Requests per client address to the endpoints that come before any credential:
    ``POST /v1/enroll`` and the link's handshake (``GET /v1/connect``) — and any route
    added later that a stranger may call (webhook URLs): one ``await check(scope)``
    first thing, after the body is read. Each request takes one unit from its address's
    bucket (``relay.clientaddr``: the socket's peer, or the ``X-Forwarded-For`` client
    when the peer is a trusted proxy; an IPv6 client by its /64), key ``addr.…`` in the
    same ``mailslot_rates`` KV bucket as the publish rates, so every relay process on
    the NATS counts the same address together. Cost, measured on the test machine
    against a local nats-server: one KV write per request (~0.35 ms) when this process
    wrote that address's bucket last; a read before it (~0.6 to 0.9 ms in all) for an
    address it has not seen or that another process wrote last; nothing for an exempt
    address or a refusal it already knows the answer to."""

    def __init__(self, limiter: RateLimiter, limits: UnauthenticatedLimits,
                 trusted: Networks) -> None:
        self.limiter = limiter
        self.limits = limits
        self.trusted = trusted
        self.exempt = Networks.parse(limits.exempt)

    async def check(self, scope: Mapping[str, Any]) -> None:
        """Take a unit for the ASGI ``scope``'s client; ``RateLimited`` (429, Retry-After)
        if its bucket is empty, ``StoreUnavailable`` if NATS does not answer. Nothing
        for an exempt client (loopback by default) or with ``rate = 0``."""
        rate = float(self.limits.rate)
        if rate <= 0:
            return
        address = scope_client(scope, self.trusted)
        if address is not None and address in self.exempt:
            return
        await self.limiter._take(bucket_key(address), rate, self.limits.burst,
                                 f"client address {shown(address)}", "request rate")
