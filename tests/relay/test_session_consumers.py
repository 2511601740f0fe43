"""A link's consumers exist only while its identity has work (``relay.session`` with
``relay.drain``): opened when something is pending or arrives, deleted once the queue is
empty and nothing is in flight, deleted at once when the link ends; kept while a nak
delay runs; and an idle link whose notification was lost still gets its interrupt after
a NATS reconnect, or from the relay process's recheck (one request for all its links).

The relays here run with ack_wait = ``ACK_WAIT`` (minutes): every redelivery seen within
``SOON`` comes from the mechanism under test.
"""

from __future__ import annotations

import time

import nats
from relay_support import (  # noqa: F401  (fixtures: alice, bob, relay_config)
    EMPTY,
    SOON,
    alice_fixture,
    bob_fixture,
    closed,
    edge_link,
    item_id,
    pending,
    relay_config_fixture,
    send_drafts,
)
from tests_support import Member, NatsServer, wait_until

from relay.drain import consumer_name
from relay.server import RelayServer
from relay.store import STREAM, interrupt_subject
from shared.envelope import PRIORITIES, Priority
from shared.frames import Ack, Nak


async def consumers(relay: RelayServer) -> list[str]:
    assert relay.store is not None
    return sorted(c.name for c in await relay.store.js.consumers_info(STREAM))


def consumers_of(member: Member) -> list[str]:
    return sorted(consumer_name(member.id, p) for p in PRIORITIES)


async def no_consumers(relay: RelayServer) -> bool:
    return await consumers(relay) == []


async def test_consumers_come_with_work_and_go_when_it_is_done(relay, alice):
    async with edge_link(relay, alice, credit=10) as link:
        assert link.welcome.pending.model_dump() == EMPTY
        assert await consumers(relay) == []  # connected and idle: none
        for _round in range(2):  # and again: opened anew for the next interrupt
            ids = await send_drafts(relay, alice, 2)
            got = [item_id(i) for i in await link.items(2)]
            assert got == ids
            assert await consumers(relay) == consumers_of(alice)
            await link.send(Ack(ids=ids))
            await link.credit(2)
            await wait_until(lambda: no_consumers(relay), SOON, "consumers deleted")
            assert await pending(relay, alice.id) == EMPTY


async def test_connecting_with_a_backlog_opens_them_and_priority_order_holds(relay, alice):
    later = await send_drafts(relay, alice, 2, priority="later")
    now = await send_drafts(relay, alice, 2, priority="now")
    async with edge_link(relay, alice) as link:
        assert link.welcome.pending.model_dump() == {"now": 2, "next": 0, "later": 2}
        assert await consumers(relay) == consumers_of(alice)  # before any credit
        await link.credit(4)
        got = [item_id(i) for i in await link.items(4)]
        assert got == now + later
        await link.send(Ack(ids=got))
        await wait_until(lambda: no_consumers(relay), SOON, "consumers deleted")


async def test_a_link_that_ends_deletes_them_at_once(relay, alice):
    ids = await send_drafts(relay, alice, 2)
    async with edge_link(relay, alice, credit=2) as first:
        assert [item_id(i) for i in await first.items(2)] == ids
    # Not after consumer_idle: the link's end deletes them, releasing what was in flight.
    await wait_until(lambda: no_consumers(relay), SOON, "consumers deleted on close")
    assert await pending(relay, alice.id) == {"now": 0, "next": 2, "later": 0}
    async with edge_link(relay, alice, credit=2) as second:
        assert [item_id(i) for i in await second.items(2)] == ids
        await second.send(Ack(ids=ids))
        await wait_until(lambda: no_consumers(relay), SOON, "consumers deleted")


async def test_a_nak_delay_keeps_them_and_is_honoured(relay, alice):
    [only] = await send_drafts(relay, alice, 1)
    async with edge_link(relay, alice, credit=2) as link:
        [_first] = await link.items(1)
        naked = time.monotonic()
        await link.send(Nak(id=only, delay=1.5))
        [again] = await link.items(1, timeout=SOON)
        assert time.monotonic() - naked >= 1.4  # not before the delay
        assert item_id(again) == only
        assert await consumers(relay) == consumers_of(alice)
        await link.send(Ack(ids=[only]))
        await wait_until(lambda: no_consumers(relay), SOON, "consumers deleted")


async def test_a_takeover_of_an_idle_link_closes_it_and_serves_the_new_one(relay, alice):
    async with edge_link(relay, alice, credit=1) as first, \
            edge_link(relay, alice, credit=1) as second:
        end = await closed(first.ws)
        assert (end.code, end.reason) == (4409, "replaced")
        [sent] = await send_drafts(relay, alice, 1)
        [got] = await second.items(1)
        assert item_id(got) == sent
        await second.send(Ack(ids=[sent]))
        await wait_until(lambda: no_consumers(relay), SOON, "consumers deleted")
    assert relay.hub is not None
    await wait_until(lambda: relay.hub.sessions == 0, SOON, "both links gone")


async def test_an_idle_link_gets_what_arrived_unannounced_after_a_nats_reconnect(
        relay, alice, nats_server: NatsServer):
    """A notification can be lost while the relay is cut off from NATS. Stored behind the
    relay's back here (no notification at all), the interrupt still reaches the idle
    link once NATS is back: every idle link re-reads its counts after a reconnect."""
    [sent] = await send_drafts(relay, alice, 1)
    # Credit from the start: nothing but the reconnect may wake the idle link.
    async with edge_link(relay, alice, credit=2) as link:
        [got] = await link.items(1)
        # Take the stored form of the interrupt the relay just delivered and store it
        # again under another id, from a connection of the test's own: no notification.
        await link.send(Ack(ids=[sent]))
        await wait_until(lambda: no_consumers(relay), SOON, "idle again")
        nc = await nats.connect(nats_server.url)
        try:
            await nc.jetstream().publish(interrupt_subject(alice.id, Priority.next),
                                         got.model_dump_json().encode(),
                                         headers={"Nats-Msg-Id": f"{alice.id}.again"})
        finally:
            await nc.close()
        assert await pending(relay, alice.id) == {"now": 0, "next": 1, "later": 0}
        nats_server.restart()
        [again] = await link.items(1, timeout=SOON)
        assert item_id(again) == sent


async def test_an_idle_link_gets_what_arrived_unannounced_from_the_hubs_recheck(
        relay, alice, bob, nats_server: NatsServer):
    """The safety net without a reconnect: one ``STREAM.INFO`` per relay process names
    the identities with anything stored, and only their idle links open consumers."""
    [sent] = await send_drafts(relay, alice, 1)
    # Credit for both from the start: nothing but the recheck may wake the idle link.
    async with edge_link(relay, alice, credit=2) as link, edge_link(relay, bob, credit=1):
        [got] = await link.items(1)
        await link.send(Ack(ids=[sent]))
        await wait_until(lambda: no_consumers(relay), SOON, "idle again")
        nc = await nats.connect(nats_server.url)
        try:  # stored behind the relay's back: no notification
            await nc.jetstream().publish(interrupt_subject(alice.id, Priority.next),
                                         got.model_dump_json().encode(),
                                         headers={"Nats-Msg-Id": f"{alice.id}.again"})
        finally:
            await nc.close()
        assert relay.store is not None and relay.hub is not None
        assert await relay.store.pending_identities() == {alice.id}
        await relay.hub.recheck()
        [again] = await link.items(1, timeout=SOON)
        assert item_id(again) == sent
        assert {c.split("_")[1] for c in await consumers(relay)} == {alice.id}  # not bob's
