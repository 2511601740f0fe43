"""Per-recipient caps: a full queue answers 429 queue_full for that recipient and
priority only; nobody else is affected, and the queue accepts again once drained."""

from __future__ import annotations

from pathlib import Path

import pytest
from relay_support import (  # noqa: F401  (fixtures: alice, bob)
    ACK_WAIT,
    SOON,
    alice_fixture,
    bob_fixture,
    draft,
    edge_link,
    item_id,
    pending,
    post,
    refused,
    send_drafts,
    stored_total,
)
from tests_support import NatsServer, wait_until
from ulid import ULID

from relay.config import RelayConfig, StreamSettings
from shared.frames import Ack

CAP = 2


@pytest.fixture
def relay_config(tmp_path: Path, nats_server: NatsServer) -> RelayConfig:
    return RelayConfig(
        listen="127.0.0.1:0",
        nats=(nats_server.url,),
        data_dir=tmp_path / "relay",
        stream=StreamSettings(ack_wait=ACK_WAIT, max_per_recipient=CAP),
    )


async def _next_count_is(relay, identity, n):
    return (await pending(relay, identity))["next"] == n


async def test_full_queue_refuses_that_recipient_and_priority_only(relay, alice, bob):
    stored = await send_drafts(relay, alice, CAP)
    refused(await post(relay, draft(alice.id), token=alice.token), 429, "queue_full")
    # A retry of an interrupt already stored is still answered as a duplicate.
    retry = await post(relay, draft(alice.id, id=stored[0]), token=alice.token)
    assert (retry.status_code, retry.json()["duplicate"]) == (200, True), retry.text
    assert await pending(relay, alice.id) == {"now": 0, "next": CAP, "later": 0}
    # Other priorities of the same recipient, and other recipients, are not affected.
    for priority in ("now", "later"):
        ok = await post(relay, draft(alice.id, priority=priority), token=alice.token)
        assert ok.status_code == 202, ok.text
    await send_drafts(relay, bob, CAP)
    refused(await post(relay, draft(bob.id), token=bob.token), 429, "queue_full")
    assert await stored_total(relay) == 2 * CAP + 2
    # Draining one makes room for one.
    async with edge_link(relay, alice, credit=1) as link:
        [item] = await link.items(1)  # the `now` one first
        await link.send(Ack(ids=[item_id(item)]))
        await link.credit(1)
        [oldest] = await link.items(1)
        assert item_id(oldest) == stored[0]
        await link.send(Ack(ids=[stored[0]]))
        await wait_until(lambda: _next_count_is(relay, alice.id, CAP - 1), SOON, "acked")
    again = await post(relay, draft(alice.id, id=str(ULID())), token=alice.token)
    assert again.status_code == 202, again.text
    refused(await post(relay, draft(alice.id), token=alice.token), 429, "queue_full")
