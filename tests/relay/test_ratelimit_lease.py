"""Leases and known refusals of ``relay.ratelimit``, on a real nats-server: a take moves
a lease of units from the one bucket in NATS to this process and spends them from memory
(no KV write per interrupt), what every process takes together stays within the bucket,
an unspent lease is dropped after ``LEASE_SECONDS``, and ``known_refusal`` refuses from
memory only what NATS would refuse too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests_support import NatsServer

from relay.config import Plan, StreamSettings
from relay.errors import RateLimited
from relay.ratelimit import LEASE_MAX, LEASE_SECONDS, RateLimiter, lease_size
from relay.store import Store


class CountingStore:
    """A real store whose bucket writes are counted."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.swaps = 0

    async def rate_get(self, key: str) -> Any:
        return await self.store.rate_get(key)

    async def rate_swap(self, key: str, state: dict[str, Any], revision: int | None) -> Any:
        self.swaps += 1
        return await self.store.rate_swap(key, state, revision)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(nats_server: NatsServer) -> AsyncIterator[Store]:
    connected = await Store.connect([nats_server.url], StreamSettings())
    await connected.ensure()
    yield connected
    await connected.close()


def test_a_lease_is_a_sliver_of_the_rate_and_the_burst_and_one_unit_for_a_small_plan():
    assert lease_size(20.0, 20) == 1  # the isolation test's flood plan: no lease at all
    assert lease_size(0.05, 6) == 1
    assert lease_size(1000.0, 1000) == 20  # 20 ms of the rate
    assert lease_size(5000.0, 40) == 2  # a twentieth of the burst
    assert lease_size(1e6, 10**6) == LEASE_MAX


async def test_a_lease_is_spent_from_memory_and_comes_out_of_the_shared_bucket(store: Store):
    plan = Plan(account_rate=1000.0, account_burst=1000)
    clock = Clock()
    counted = CountingStore(store)
    one = RateLimiter(counted, clock=clock)  # type: ignore[arg-type]
    other = RateLimiter(store, clock=clock)  # another relay process on the same NATS
    for _ in range(20):
        await one.take(plan, "acme", None)
    assert counted.swaps == 1  # one write for a lease of 20
    state, _ = await store.rate_get("account.acme")  # type: ignore[misc]
    assert state["t"] == 980.0  # the lease left the bucket at once
    await one.take(plan, "acme", None)
    assert counted.swaps == 2
    # The other process spends the rest; together never more than the bucket held.
    taken = 21
    while True:
        try:
            await other.take(plan, "acme", None)
        except RateLimited:
            break
        taken += 1
    assert taken <= 1000 + 20  # what one's lease still holds is not in the bucket
    spent = 0
    while True:
        try:
            await one.take(plan, "acme", None)
        except RateLimited as exc:
            assert exc.retry_after >= 1
            break
        spent += 1
    assert spent == 19  # its lease, then the empty bucket refuses
    assert taken + spent == 1000  # exactly the burst, across both processes


async def test_an_unspent_lease_is_dropped_after_its_time(store: Store):
    plan = Plan(account_rate=1000.0, account_burst=1000)
    clock = Clock()
    counted = CountingStore(store)
    limiter = RateLimiter(counted, clock=clock)  # type: ignore[arg-type]
    await limiter.take(plan, "acme", None)
    clock.now += LEASE_SECONDS + 0.001
    await limiter.take(plan, "acme", None)  # the lease is gone: NATS again
    assert counted.swaps == 2
    state, _ = await store.rate_get("account.acme")  # type: ignore[misc]
    # 1000 - 20, refilled to full by the second's rate, less a new lease of 20
    assert state["t"] == 980.0


async def test_a_known_refusal_needs_an_empty_bucket_and_no_lease(store: Store):
    plan = Plan(account_rate=0.05, account_burst=2, token_rate=0.05, token_burst=5)
    clock = Clock()
    limiter = RateLimiter(store, clock=clock)
    assert limiter.known_refusal(plan, "acme", "tok") is None  # never seen: NATS tells
    for _ in range(2):
        await limiter.take(plan, "acme", "tok")
    known = limiter.known_refusal(plan, "acme", "tok")
    assert isinstance(known, RateLimited) and known.code == "rate_limited"
    with pytest.raises(RateLimited) as taken:
        await limiter.take(plan, "acme", "tok")
    assert (known.retry_after, known.message) == (taken.value.retry_after, taken.value.message)
    clock.now += 20  # one unit back
    assert limiter.known_refusal(plan, "acme", "tok") is None
    # Another process's view only lags NATS: what it does not know, it does not refuse.
    assert RateLimiter(store, clock=clock).known_refusal(plan, "acme", "tok") is None
