"""The mailbox promise end to end: interrupts sent while the edge is offline arrive
exactly once, every ``now`` before any ``next`` before any ``later``, FIFO within a class."""

from __future__ import annotations

import random

from tests_support import ids_in_arrival_order, post_drafts, running_edge, wait_until

PRIORITIES = ("now", "next", "later")


async def test_offline_backlog_arrives_once_in_priority_order(relay, make_member):
    member = await make_member()
    rng = random.Random(7)
    drafts = [
        {"to": member.id, "type": "test.backlog", "priority": rng.choice(PRIORITIES),
         "payload": {"n": n}}
        for n in range(1000)
    ]
    # Sequential per priority class would hide FIFO bugs; send with concurrency 1 so the
    # stored order is the send order, which FIFO-within-class must preserve.
    responses = await post_drafts(relay.url, member.token, drafts, concurrency=1)
    assert [r.status_code for r in responses] == [202] * 1000
    sent_ids = [r.json()["id"] for r in responses]
    assert len(set(sent_ids)) == 1000

    async with running_edge(member):
        with member.inbox() as inbox:
            await wait_until(lambda: inbox.total() == 1000, what="1000 in the inbox")

    with member.inbox() as inbox:
        rows = inbox.list(state=None, limit=2000)
        assert inbox.total() == 1000
    arrived = ids_in_arrival_order(rows)
    assert sorted(arrived) == sorted(sent_ids)  # exactly once: none lost, none twice
    by_id = dict(zip(sent_ids, drafts, strict=True))
    ranks = [PRIORITIES.index(by_id[i]["priority"]) for i in arrived]
    assert ranks == sorted(ranks), "a lower priority arrived before a higher one"
    for priority in PRIORITIES:
        sent_order = [i for i in sent_ids if by_id[i]["priority"] == priority]
        arrival_order = [i for i in arrived if by_id[i]["priority"] == priority]
        assert arrival_order == sent_order, f"{priority} not FIFO"
    # and the relay forgot them once acked (work-queue retention)
    assert await relay.store.pending(member.id) == {"now": 0, "next": 0, "later": 0}
