"""Delivery on the link when things go wrong: takeover, nak, disconnect without ack,
acks for ids never delivered, and credit as a hard limit.

The relays here run with ack_wait = ``ACK_WAIT`` (minutes), so every redelivery these
tests see within ``SOON`` came from the mechanism under test, never from ack_wait.
Links grant exactly the credit they expect to use, so that the relay's pump is parked on
credit (not inside a JetStream pull) when a link closes; see ``relay_support``.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from relay_support import (  # noqa: F401  (fixtures: alice, relay_config)
    ACK_WAIT,
    EMPTY,
    SOON,
    alice_fixture,
    closed,
    edge_link,
    item_id,
    pending,
    pulls_answered,
    relay_config_fixture,
    send_drafts,
    unacked,
)
from tests_support import wait_until
from ulid import ULID

from relay.server import RelayServer
from shared.frames import Ack, Deliver, Nak, Reject


async def _pending_is(relay, identity, expected):
    return await pending(relay, identity) == expected


async def test_takeover_closes_old_link_4409_and_redelivers_at_once(relay, alice):
    ids = await send_drafts(relay, alice, 3)
    async with edge_link(relay, alice, credit=3) as first:
        assert [item_id(i) for i in await first.items(3)] == ids
        assert await unacked(relay, alice.id) == 3
        started = time.monotonic()
        async with edge_link(relay, alice) as second:
            end = await closed(first.ws)
            assert (end.code, end.reason) == (4409, "replaced")
            assert second.welcome.pending.model_dump() == {"now": 0, "next": 3, "later": 0}
            await second.credit(3)
            again = await second.items(3)
            assert time.monotonic() - started < ACK_WAIT / 2
            assert [item_id(i) for i in again] == ids
            # The exact bytes travel again, signature included.
            await second.send(Ack(ids=ids))
            await wait_until(lambda: _pending_is(relay, alice.id, EMPTY), SOON, "acked")


async def test_takeover_across_relay_processes(relay, relay_config, alice, tmp_path):
    """Two relay processes on one NATS: a link opened on the second takes over the one
    on the first (ms.ctl.<id>), which releases its in-flight deliveries at once."""
    other = RelayServer(relay_config.model_copy(update={"data_dir": tmp_path / "relay-b"}))
    await other.start()
    try:
        assert other.identity.id == relay.identity.id  # one relay key, shared in KV
        ids = await send_drafts(relay, alice, 2)
        async with edge_link(relay, alice, credit=2) as first:
            assert [item_id(i) for i in await first.items(2)] == ids
            async with edge_link(other, alice, credit=2) as second:
                end = await closed(first.ws)
                assert (end.code, end.reason) == (4409, "replaced")
                assert [item_id(i) for i in await second.items(2)] == ids
                await second.send(Ack(ids=ids))
                await wait_until(lambda: _pending_is(relay, alice.id, EMPTY), SOON, "acked")
    finally:
        await other.stop()


async def test_nak_redelivers_at_once(relay, alice):
    [only] = await send_drafts(relay, alice, 1)
    async with edge_link(relay, alice, credit=1) as link:
        [first] = await link.items(1)
        await link.send(Nak(id=only))
        await link.credit(1)
        [again] = await link.items(1)
        assert item_id(again) == only
        assert again == first
        await link.send(Ack(ids=[only]))
        await wait_until(lambda: _pending_is(relay, alice.id, EMPTY), SOON, "acked")


async def test_nak_redelivers_at_once_with_spare_credit(relay, nats_server, alice):
    [only] = await send_drafts(relay, alice, 1)
    async with pulls_answered(nats_server.url, alice.id) as answered, \
            edge_link(relay, alice, credit=1) as link:
        [_first] = await link.items(1)
        await link.credit(1)  # spare credit: the relay looks for more, finds nothing
        await asyncio.wait_for(answered.get(), SOON)
        await unacked(relay, alice.id)  # one more round trip on the relay's connection
        await link.send(Nak(id=only))
        [again] = await link.items(1, timeout=3)
        assert item_id(again) == only


async def test_reject_is_never_redelivered(relay, alice):
    rejected, kept = await send_drafts(relay, alice, 2)
    async with edge_link(relay, alice, credit=1) as link:
        [first] = await link.items(1)
        assert item_id(first) == rejected
        await link.send(Reject(id=rejected, code="bad_signature"))
        await wait_until(lambda: _pending_is(relay, alice.id, {"now": 0, "next": 1, "later": 0}),
                         SOON, "rejected one removed")
        await link.credit(1)
        [second] = await link.items(1)
        assert item_id(second) == kept


@pytest.mark.parametrize("how", ["close", "drop"])
async def test_disconnect_without_ack_redelivers_on_reconnect(relay, alice, how):
    ids = await send_drafts(relay, alice, 3)
    async with edge_link(relay, alice, credit=3) as first:
        assert [item_id(i) for i in await first.items(3)] == ids
        if how == "drop":
            first.ws.transport.abort()  # no close frame: the TCP connection just ends
    assert await pending(relay, alice.id) == {"now": 0, "next": 3, "later": 0}
    async with edge_link(relay, alice) as second:
        assert second.welcome.pending.model_dump() == {"now": 0, "next": 3, "later": 0}
        await second.credit(3)
        assert [item_id(i) for i in await second.items(3)] == ids
        await second.send(Ack(ids=ids))
        await wait_until(lambda: _pending_is(relay, alice.id, EMPTY), SOON, "acked")


async def test_ack_for_ids_never_delivered_is_ignored(relay, alice):
    """Acks only apply to deliveries in flight on this link: an unknown id, or the id of
    an interrupt that is stored but was not delivered here, changes nothing and does not
    close the link."""
    delivered, not_yet = await send_drafts(relay, alice, 2)
    async with edge_link(relay, alice, credit=1) as link:
        [item] = await link.items(1)
        assert item_id(item) == delivered
        await link.send(Ack(ids=[str(ULID()), not_yet]))
        await link.send(Nak(id=str(ULID())))
        await link.send(Reject(id=not_yet, code="never_delivered"))
        # Frames are applied in order: once the real ack took effect, the ones before it
        # have been applied too.
        await link.send(Ack(ids=[delivered]))
        await wait_until(lambda: _pending_is(relay, alice.id, {"now": 0, "next": 1, "later": 0}),
                         SOON, "real ack applied")
        await link.credit(1)
        [second] = await link.items(1)
        assert item_id(second) == not_yet
        await link.send(Ack(ids=[not_yet]))
        await wait_until(lambda: _pending_is(relay, alice.id, EMPTY), SOON, "acked")


async def test_relay_never_delivers_beyond_credit(relay, alice):
    """``EdgeLink`` runs a real ``shared.link.Link`` on the edge side, which raises
    ``credit_exceeded`` for any deliver frame beyond the credit granted so far; in
    addition the consumer's own count shows the relay took no more than it sent."""
    ids = await send_drafts(relay, alice, 10)
    async with edge_link(relay, alice) as link:
        await link.credit(3)
        got = await link.items(3)
        assert await unacked(relay, alice.id) == 3  # taken from JetStream: 3, no more
        await link.send(Ack(ids=[item_id(i) for i in got]))
        await wait_until(lambda: _pending_is(relay, alice.id, {"now": 0, "next": 7, "later": 0}),
                         SOON, "3 acked")
        assert await unacked(relay, alice.id) == 0  # no credit: nothing more taken
        assert link.link.credit == 0
        await link.credit(4)
        got += await link.items(4)
        assert await unacked(relay, alice.id) == 4
        await link.credit(3)
        got += await link.items(3)
        assert [item_id(i) for i in got] == ids  # FIFO, each once
        # Zero credit left: a new interrupt waits for credit.
        [late] = await send_drafts(relay, alice, 1)
        await link.send(Ack(ids=ids))
        await wait_until(lambda: _pending_is(relay, alice.id, {"now": 0, "next": 1, "later": 0}),
                         SOON, "10 acked")
        assert await unacked(relay, alice.id) == 0
        await link.credit(1)
        [last] = await link.items(1)
        assert item_id(last) == late


async def test_deliver_frames_carry_whole_signed_envelopes(relay, alice):
    """What the link delivers is the stored wire form, unchanged: parseable, addressed
    to the link's identity, signed by the relay for a draft."""
    [sent] = await send_drafts(relay, alice, 1)
    async with edge_link(relay, alice, credit=1) as link:
        frame = await link.recv()
        assert isinstance(frame, Deliver) and len(frame.items) == 1
        envelope = json.loads(frame.items[0].envelope)
        assert (envelope["id"], envelope["to"], envelope["signer"]) == (
            sent, alice.id, relay.identity.id)
