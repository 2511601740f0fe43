"""Deliver frames that queue up behind a commit still running (a busy CPU, a slow disk)
go into one commit (``edge.link.client``): one fsync, one Ack and one Credit for all of
them, every interrupt in the inbox once, the relay's credit whole again. With a real relay and a real edge daemon; the
edge's first commit is held on purpose until the relay has sent the rest; how frames are
merged (``take_batch``: never over ``MAX_BATCH``, never split, in order), on its own."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tests_support import post_drafts, running_edge, wait_until

from edge.link.client import take_batch
from shared.frames import MAX_BATCH, Deliver, DeliverItem


def _sent(relay: Any) -> float:
    """Interrupts the relay has written to edges so far (its own metric)."""
    return sum(s.value for m in relay.metrics.registry.collect()
               if m.name == "mailslot_relay_deliveries" for s in m.samples
               if s.name.endswith("_total"))


async def test_frames_queued_behind_a_commit_go_into_one_commit(relay, make_member):
    member = await make_member()
    async with running_edge(member) as daemon:
        await wait_until(lambda: relay.hub.sessions == 1, 10, "the edge linked")
        receiver = daemon.link.receiver
        real, calls, held = receiver.process, [], threading.Event()

        def process(items: list[Any]) -> Any:
            calls.append(len(items))
            if len(calls) == 1:
                held.wait(20)
            return real(items)

        receiver.process = process
        draft = {"to": member.id, "type": "t.batch", "priority": "now", "payload": {}}
        assert (await post_drafts(relay.url, member.token, [draft]))[0].status_code == 202
        await wait_until(lambda: calls == [1], 10, "the first commit started")
        for _ in range(5):  # one at a time: five separate deliver frames
            assert (await post_drafts(relay.url, member.token, [draft]))[0].status_code == 202
            await asyncio.sleep(0)
        await wait_until(lambda: _sent(relay) >= 6, 10, "the relay sent all six")
        await wait_until(lambda: daemon.link.backlog.qsize() >= 2, 10, "frames queued")
        held.set()
        inbox = member.inbox()
        try:
            await wait_until(lambda: inbox.total() == 6, 10, "all six stored")
        finally:
            inbox.close()
        # One Credit per commit, for every item in it: the relay's count is whole again.
        [session] = [s for per in relay.hub._links.values() for s in per.values()]
        initial = daemon.link.config.initial_credit
        await wait_until(lambda: session.link.credit == initial, 10, "all credit granted back")
    assert calls[0] == 1
    assert sum(calls) == 6, calls  # each interrupt committed once
    assert len(calls) < 6, calls   # frames that queued went into fewer commits


def _frame(first: int, n: int) -> Deliver:
    return Deliver(items=[DeliverItem(envelope=str(i), signature="s")
                          for i in range(first, first + n)])


def test_merged_frames_stay_within_one_ack_and_are_never_split() -> None:
    sizes = [600, 300, 200, MAX_BATCH - 200, 1]
    frames, first = [], 0
    for n in sizes:
        frames.append(_frame(first, n))
        first += n
    backlog: asyncio.Queue[Deliver] = asyncio.Queue()
    for frame in frames[1:]:
        backlog.put_nowait(frame)
    batches, carry = [], frames[0]
    while carry is not None or not backlog.empty():
        items, carry = take_batch(carry if carry is not None else backlog.get_nowait(),
                                  backlog)
        batches.append([int(item.envelope) for item in items])
    # 600 + 300 (+ 200 would be over), then 200 + 824 = MAX_BATCH exactly, then 1.
    assert [len(b) for b in batches] == [900, MAX_BATCH, 1]
    assert [i for b in batches for i in b] == list(range(sum(sizes)))  # once, in order
    lone, rest = take_batch(_frame(0, 3), asyncio.Queue())
    assert (len(lone), rest) == (3, None)
