"""Shared JetStream reads (``relay.coalesce``): one read in flight per key, callers never
get an answer that predates their call, failures and cancellations shared correctly; and
on a real relay, a storm of pending-count reads of one identity makes two requests."""

from __future__ import annotations

import asyncio

import pytest
from relay_support import alice_fixture, relay_config_fixture, send_drafts  # noqa: F401

from relay.coalesce import Coalescer
from relay.errors import StoreUnavailable


class Source:
    """A read that counts its calls, answers the version current when it started, and
    finishes only when released."""

    def __init__(self) -> None:
        self.version = 0
        self.started = 0
        self.release = asyncio.Event()

    async def read(self) -> int:
        self.started += 1
        seen = self.version
        await self.release.wait()
        return seen


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_callers_during_a_read_share_the_next_one_and_never_get_an_older_answer():
    shared: Coalescer[int] = Coalescer()
    source = Source()
    first = asyncio.create_task(shared.run("k", source.read))
    await settle()
    source.version = 1  # what the next callers must see at least
    later = [asyncio.create_task(shared.run("k", source.read)) for _ in range(100)]
    await settle()
    assert source.started == 1
    source.release.set()
    assert await first == 0
    assert await asyncio.gather(*later) == [1] * 100
    assert source.started == shared.calls == 2


async def test_keys_are_independent_and_a_lone_caller_reads_at_once():
    shared: Coalescer[int] = Coalescer()
    source = Source()
    source.release.set()
    assert await asyncio.gather(shared.run("a", source.read), shared.run("b", source.read)) \
        == [0, 0]
    assert source.started == 2
    assert await shared.run("a", source.read) == 0
    assert source.started == 3  # nothing kept without a ttl


async def test_a_failed_read_fails_its_sharers_and_the_next_call_reads_again():
    shared: Coalescer[int] = Coalescer()
    gate = asyncio.Event()
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        if calls <= 2:
            raise StoreUnavailable("down")
        return calls

    first = asyncio.create_task(shared.run("k", failing))
    await settle()
    sharers = [asyncio.create_task(shared.run("k", failing)) for _ in range(3)]
    await settle()
    gate.set()
    for task in (first, *sharers):
        with pytest.raises(StoreUnavailable):
            await task
    assert calls == 2
    assert await shared.run("k", failing) == 3


async def test_a_cancelled_reader_does_not_cancel_those_who_shared_its_flight():
    shared: Coalescer[int] = Coalescer()
    source = Source()
    first = asyncio.create_task(shared.run("k", source.read))
    await settle()
    one, two = (asyncio.create_task(shared.run("k", source.read)) for _ in range(2))
    await settle()
    first.cancel()  # the next flight is then flown by one of the two
    await settle()
    assert source.started == 2
    source.version = 7
    one.cancel()  # if it flew that flight, the other reads again
    await settle()
    source.release.set()
    assert (await two, source.started) in ((0, 2), (7, 3))
    with pytest.raises(asyncio.CancelledError):
        await one
    assert not shared._running and not shared._next


async def test_with_a_ttl_an_answer_is_kept_for_that_long():
    now = [0.0]
    shared: Coalescer[int] = Coalescer(ttl=1.0, clock=lambda: now[0])
    source = Source()
    source.release.set()
    assert await shared.run("k", source.read) == 0
    source.version = 1
    assert await shared.run("k", source.read) == 0  # kept
    now[0] = 1.5
    assert await shared.run("k", source.read) == 1
    shared.forget("k")
    source.version = 2
    assert await shared.run("k", source.read) == 2
    assert source.started == 3


async def test_a_storm_of_pending_reads_of_one_identity_makes_two_requests(relay, alice):
    await send_drafts(relay, alice, 3)
    store = relay.store
    before = store._counts.calls
    counts = await asyncio.gather(*(store.pending(alice.id) for _ in range(200)))
    assert all(sum(c.values()) == 3 for c in counts)
    assert store._counts.calls - before <= 2
