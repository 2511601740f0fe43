"""The plan's ``max_pending`` (``relay.quota``) and the stream's ``max_bytes``, against
real relays on a real nats-server: a full account is refused ``429 quota_exceeded``
(counted from JetStream, so a second relay process refuses it too) while another account
is served; the whole stream past ``max_bytes`` is ``507 storage_full``; nothing accepted
is lost either way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from relay_support import SOON, draft, pending, planned_relays, refused, stored_total
from tests_support import NatsServer, enroll, wait_until

from relay.config import RelayConfig, StreamSettings, parse_plans
from relay.registry import Registry
from relay.server import RelayServer

PLANS = """
default_plan = "open"
[plans.open]
[plans.capped]
max_pending = 5
[plans.narrow]
max_pending_per_identity = 3
"""


def config(data_dir: Path, nats_url: str, **stream: int) -> RelayConfig:
    found = parse_plans(PLANS, "plans.toml")
    return RelayConfig(listen="127.0.0.1:0", nats=(nats_url,), data_dir=data_dir,
                       plans=found.plans, default_plan=found.default_plan,
                       stream=StreamSettings(**stream))


@pytest.fixture
def relay_config(tmp_path: Path, nats_server: NatsServer) -> RelayConfig:
    return config(tmp_path / "relay", nats_server.url)


async def post_to(url: str, to: str, token: str, **fields: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=SOON) as client:
        return await client.post("/v1/interrupts", json=draft(to, **fields),
                                 headers={"Authorization": f"Bearer {token}"})


async def test_a_full_account_is_refused_and_another_is_not(relay: RelayServer, relay_config):
    registry = Registry(relay.store, relay_config)
    await registry.create_account("small", "capped")
    alice, bob = await enroll(relay, "small"), await enroll(relay, "big")
    carol = await enroll(relay, "small")  # the cap is the account's, both identities
    statuses = [(await post_to(relay.url, who.id, who.token)).status_code
                for who in (alice, carol, alice, carol, alice)]
    assert statuses == [202] * 5
    for who in (alice, carol):
        refusal = await post_to(relay.url, who.id, who.token)
        refused(refusal, 429, "quota_exceeded")
        assert "5 pending" in refusal.json()["message"]
    for _ in range(10):
        assert (await post_to(relay.url, bob.id, bob.token)).status_code == 202
    assert sum((await pending(relay, alice.id)).values()) == 3  # nothing accepted lost
    assert sum((await pending(relay, carol.id)).values()) == 2

    # Drained (here: purged), the account is accepted again once the count is re-read.
    assert relay.store is not None
    await relay.store.purge_identity(alice.id)

    async def accepted() -> bool:
        return (await post_to(relay.url, alice.id, alice.token)).status_code == 202

    await wait_until(accepted, SOON, "accepted again once its queue has room")


async def test_the_per_identity_cap_refuses_that_identity_only(relay: RelayServer,
                                                               relay_config):
    await Registry(relay.store, relay_config).create_account("small", "narrow")
    alice, carol = await enroll(relay, "small"), await enroll(relay, "small")
    bob = await enroll(relay, "big")
    for _ in range(3):
        assert (await post_to(relay.url, alice.id, alice.token)).status_code == 202
    refusal = await post_to(relay.url, alice.id, alice.token)
    refused(refusal, 429, "quota_exceeded")
    assert "max_pending_per_identity" in refusal.json()["message"]
    # The cap is per identity: carol, in the same account, and bob are still served.
    for who in (carol, carol, carol, bob, bob, bob, bob):
        assert (await post_to(relay.url, who.id, who.token)).status_code == 202
    refused(await post_to(relay.url, carol.id, carol.token), 429, "quota_exceeded")
    assert sum((await pending(relay, alice.id)).values()) == 3  # nothing accepted lost
    assert relay.store is not None
    await relay.store.purge_identity(alice.id)

    async def accepted() -> bool:
        return (await post_to(relay.url, alice.id, alice.token)).status_code == 202

    await wait_until(accepted, SOON, "accepted again once its queue has room")


async def test_the_cap_is_counted_from_jetstream_by_every_relay_process(
    nats_server: NatsServer, tmp_path: Path
):
    async with planned_relays(nats_server.url, tmp_path, PLANS, "small", "capped") as relays:
        alice = await enroll(relays[0], "small")
        for _ in range(5):
            assert (await post_to(relays[0].url, alice.id, alice.token)).status_code == 202
        refused(await post_to(relays[1].url, alice.id, alice.token), 429, "quota_exceeded")
        refused(await post_to(relays[0].url, alice.id, alice.token), 429, "quota_exceeded")
        assert sum((await pending(relays[0], alice.id)).values()) == 5


@pytest.fixture
async def small_stream(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[RelayServer]:
    server = RelayServer(config(tmp_path / "small", nats_server.url, max_bytes=40_000))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_the_stream_byte_cap_refuses_507_and_drops_nothing(small_stream: RelayServer):
    alice, bob = await enroll(small_stream, "acme"), await enroll(small_stream, "globex")
    accepted = 0
    while True:
        response = await post_to(small_stream.url, alice.id, alice.token,
                                 payload={"text": "x" * 2000})
        if response.status_code != 202:
            break
        accepted += 1
        assert accepted < 100, "max_bytes never refused"
    refused(response, 507, "storage_full")
    assert 5 <= accepted < 20
    # The cap is the whole stream's (it keeps the disk for everyone): another account's
    # interrupt of that size does not fit either.
    refused(await post_to(small_stream.url, bob.id, bob.token, payload={"text": "x" * 2000}),
            507, "storage_full")
    assert await stored_total(small_stream) == accepted  # nothing stored was dropped
