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

Cost: nothing when the account's plan sets no rate. A take writes the bucket in NATS
(one KV write, in memory on the NATS server, when this process wrote the bucket last; a
read before it when another process did: the compare-and-set on the revision it
remembers failed) — but not for every unit: a process takes a *lease* of several units
at once (``lease_size``: 20 ms of the rate and a twentieth of the burst, at most
``LEASE_MAX``; 1 unit for a small plan, i.e. no lease at all) and spends them from
memory, for at most ``LEASE_SECONDS``; what is left then is dropped, never given back.
Leased units come out of the one bucket in NATS, so what all processes accept together
stays within burst + rate x time, exactly; a lease only moves units from the bucket to
one process a little early (a process may be refused while another holds up to one
lease of unspent units). Within one process, takes from one bucket that need NATS wait
their turn on a lock (so they do not lose compare-and-set races to each other); only
takes from different processes can race in NATS.

``known_refusal`` answers, from memory alone, whether a take would be refused now: the
bucket as this process last wrote or read it, refilled to now, holds less than a unit
and no lease is left. It can only be behind NATS (other processes only take units), so
a refusal it gives is one NATS would give too; the ingest path uses it to refuse a
flooding producer from its request's head, before its body is parsed
(``Ingest.refuse_early``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from relay.clientaddr import Address, Networks, bucket_key, scope_client, shown
from relay.config import Plan, UnauthenticatedLimits
from relay.errors import RateLimited, StoreUnavailable
from relay.store import Store

#: Lost compare-and-set races before a take gives up (503 store_unavailable).
_MAX_RACES = 50
#: Buckets whose last state one process remembers (then it forgets them all).
_SEEN_MAX = 10_000
#: A lease: at most this many units, this many seconds of the rate, this share of the
#: burst; spent within ``LEASE_SECONDS`` or dropped.
LEASE_MAX = 100
LEASE_RATE_SECONDS = 0.02
LEASE_BURST_SHARE = 0.05
LEASE_SECONDS = 1.0


def lease_size(rate: float, burst: int) -> int:
    """Units one take moves from the bucket in NATS to this process (at least 1)."""
    return max(1, min(LEASE_MAX, int(rate * LEASE_RATE_SECONDS), int(burst * LEASE_BURST_SHARE)))


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
        #: bucket key → [units leased and not yet spent, until when they may be spent]
        self._leases: dict[str, list[float]] = {}

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

    def known_refusal(self, plan: Plan, account: str, token_id: str | None
                      ) -> RateLimited | None:
        """The refusal ``take`` would give now, if this process knows it without asking
        NATS (see the module docstring); else None (``take`` will tell)."""
        if token_id and plan.token_rate is not None:
            refusal = self._known(f"token.{token_id}", plan.token_rate,
                                  plan.burst(plan.token_rate, plan.token_burst), "token")
            if refusal is not None:
                return refusal
        if plan.account_rate is not None:
            return self._known(f"account.{account}", plan.account_rate,
                               plan.burst(plan.account_rate, plan.account_burst),
                               f"account {account}")
        return None

    def knows(self, account: str, token_id: str | None) -> bool:
        """Whether this process holds any state of ``account``'s or the token's bucket
        (else ``known_refusal`` has nothing to say about them)."""
        return f"account.{account}" in self._seen or (
            token_id is not None and f"token.{token_id}" in self._seen)

    def _known(self, key: str, rate: float, burst: int, what: str) -> RateLimited | None:
        now = self.clock()
        if self._spend_lease(key, now, spend=False):
            return None
        found = self._seen.get(key)
        if found is None:
            return None
        units = self._units(found[0], now, rate, burst)
        return None if units >= 1.0 else self._refusal(units, rate, burst, what, "publish rate")

    def _spend_lease(self, key: str, now: float, spend: bool = True) -> bool:
        """Spend one leased unit of ``key`` (or, ``spend`` False, tell if one is left)."""
        lease = self._leases.get(key)
        if lease is None:
            return False
        if lease[1] <= now or lease[0] < 1.0:
            del self._leases[key]
            return False
        if spend:
            lease[0] -= 1.0
        return True

    async def take_bucket(self, key: str, rate: float, burst: int, what: str,
                          kind: str = "publish rate") -> None:
        """Spend one unit of the bucket ``key`` (``rate`` per second, up to ``burst``) in
        the same KV bucket as the plans' (e.g. a hook's own delivery rate, key
        ``hook.ID``); ``RateLimited`` if it is empty. ``what`` and ``kind`` name it in
        the refusal ("hook NAME is over its delivery rate …")."""
        await self._take(key, rate, burst, what, kind)

    async def _take(self, key: str, rate: float, burst: int, what: str,
                    kind: str = "publish rate") -> None:
        if self._spend_lease(key, self.clock()):
            return  # from memory: no lock, no NATS
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                if not self._spend_lease(key, self.clock()):  # one may have come meanwhile
                    await self._take_locked(key, rate, burst, what, kind)
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]  # nobody else holds or waits: no growth per key

    @staticmethod
    def _units(state: dict[str, Any], now: float, rate: float, burst: int) -> float:
        elapsed = max(0.0, now - float(state.get("at", now)))
        return min(float(burst), float(state.get("t", burst)) + elapsed * rate)

    @staticmethod
    def _refusal(units: float, rate: float, burst: int, what: str, kind: str) -> RateLimited:
        wait = math.ceil((1.0 - units) / rate)
        return RateLimited(
            f"{what} is over its {kind} ({rate:g}/s, burst {burst}); retry "
            f"in {max(1, wait)} s", retry_after=wait)

    async def _take_locked(self, key: str, rate: float, burst: int, what: str,
                           kind: str) -> None:
        found = self._seen.pop(key, None)
        lease = lease_size(rate, burst)
        for _ in range(_MAX_RACES):
            now = self.clock()
            if found is None:
                found = await self.store.rate_get(key)
            if found is None:
                units, revision = float(burst), None
            else:
                state, revision = found
                units = self._units(state, now, rate, burst)
            if units < 1.0:
                if found is not None:
                    self._seen[key] = found  # unchanged: still the latest we know
                raise self._refusal(units, rate, burst, what, kind)
            taken = float(min(lease, math.floor(units)))  # this one, and a lease of the rest
            state = {"t": units - taken, "at": now}
            written = await self.store.rate_swap(key, state, revision)
            if written is not None:
                if len(self._seen) >= _SEEN_MAX:
                    self._seen.clear()
                    self._leases.clear()
                self._seen[key] = (state, written)
                if taken > 1.0:
                    self._leases[key] = [taken - 1.0, self.clock() + LEASE_SECONDS]
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
        self._exempt_seen: dict[Address, bool] = {}

    def _exempt(self, address: Address) -> bool:
        """Whether ``address`` is in ``exempt``, remembered for the last few thousand
        addresses (the same peers ask on every request)."""
        found = self._exempt_seen.get(address)
        if found is None:
            if len(self._exempt_seen) >= 4096:
                self._exempt_seen.clear()
            found = self._exempt_seen[address] = address in self.exempt
        return found

    async def check(self, scope: Mapping[str, Any]) -> None:
        """Take a unit for the ASGI ``scope``'s client; ``RateLimited`` (429, Retry-After)
        if its bucket is empty, ``StoreUnavailable`` if NATS does not answer. Nothing
        for an exempt client (loopback by default) or with ``rate = 0``."""
        rate = float(self.limits.rate)
        if rate <= 0:
            return
        address = scope_client(scope, self.trusted)
        if address is not None and self._exempt(address):
            return
        await self.limiter._take(bucket_key(address), rate, self.limits.burst,
                                 f"client address {shown(address)}", "request rate")
