"""The plans' byte caps (``relay.usage``'s ledger) against real relays on a real
nats-server: an identity or an account at its cap is refused ``507 quota_bytes_exceeded``
while another account is served; the ledger holds exactly the bytes JetStream stores,
goes down as the edge acks, heals by itself when interrupts expire unacked, is reset by
a purge, and is shared by two relay processes; nothing accepted is lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats.js.errors
import pytest
from relay_support import SOON, draft, edge_link, item_id, planned_relays, refused
from tests_support import NatsServer, enroll, wait_until

from relay import usage
from relay.config import RelayConfig, StreamSettings, parse_plans
from relay.registry import Registry
from relay.server import RelayServer
from relay.store import STREAM, Store, usage_subject
from relay.usage import unpack
from shared.frames import Ack

PLANS = """
default_plan = "open"
[plans.open]
[plans.bytes]
max_pending_bytes_per_identity = 5000
max_pending_bytes = 8000
"""
TEXT = {"text": "x" * 1000}  # about 1.5 kB stored: three fit under 5000


@pytest.fixture
def relay_config(tmp_path: Path, nats_server: NatsServer) -> RelayConfig:
    found = parse_plans(PLANS, "plans.toml")
    return RelayConfig(listen="127.0.0.1:0", nats=(nats_server.url,),
                       data_dir=tmp_path / "relay", plans=found.plans,
                       default_plan=found.default_plan,
                       stream=StreamSettings(ack_wait=120.0))


async def post_to(url: str, to: str, token: str, **fields: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=SOON) as client:
        return await client.post("/v1/interrupts", json=draft(to, payload=TEXT, **fields),
                                 headers={"Authorization": f"Bearer {token}"})


async def fill(url: str, to: str, token: str, **fields: object) -> tuple[list[str], httpx.Response]:
    """Post until refused: the ids accepted, and the refusal."""
    ids: list[str] = []
    while True:
        response = await post_to(url, to, token, **fields)
        if response.status_code != 202:
            return ids, response
        ids.append(response.json()["id"])
        assert len(ids) < 20, "the byte cap never refused"


async def stored_bytes(store: Store, identity: str) -> tuple[int, int]:
    """What JetStream holds for ``identity``, read message by message: (bytes, count)."""
    seq = size = count = 0
    while True:
        try:
            msg = await store.js.get_msg(STREAM, seq + 1, subject=f"ms.in.{identity}.>",
                                         next=True)
        except nats.js.errors.NotFoundError:
            return size, count
        size, count, seq = size + len(msg.data or b""), count + 1, int(msg.seq or 0)


async def ledger(store: Store, account: str, identity: str | None = None) -> tuple[int, int]:
    return unpack((await store.usage_get(usage_subject(account, identity)))[0])


async def test_byte_caps_refuse_507_for_that_account_only_and_the_ledger_is_exact(
    relay: RelayServer, relay_config: RelayConfig
):
    assert relay.store is not None
    await Registry(relay.store, relay_config).create_account("small", "bytes")
    alice, carol = await enroll(relay, "small"), await enroll(relay, "small")
    bob = await enroll(relay, "big")

    accepted, refusal = await fill(relay.url, alice.id, alice.token)
    refused(refusal, 507, "quota_bytes_exceeded")
    assert f"identity {alice.id}" in refusal.json()["message"]
    assert 2 <= len(accepted) <= 4
    exact = await stored_bytes(relay.store, alice.id)
    assert await ledger(relay.store, "small", alice.id) == exact  # every byte, nothing more
    assert exact[0] <= 5000 < exact[0] + exact[0] // exact[1]
    # The account's cap (8000) is reached by carol, short of her own cap.
    more, refusal = await fill(relay.url, carol.id, carol.token)
    refused(refusal, 507, "quota_bytes_exceeded")
    assert "account of account small" in refusal.json()["message"]
    total = exact[0] + (await stored_bytes(relay.store, carol.id))[0]
    assert await ledger(relay.store, "small") == (total, len(accepted) + len(more))
    # Another account is not affected, and is not even counted (its plan has no cap).
    for _ in range(8):
        assert (await post_to(relay.url, bob.id, bob.token)).status_code == 202
    assert await ledger(relay.store, "big", bob.id) == (0, 0)

    # The edge drains alice: everything accepted arrives once, and each ack takes its
    # bytes off the ledger, so alice is accepted again.
    async with edge_link(relay, alice, credit=len(accepted)) as link:
        items = await link.items(len(accepted))
        assert [item_id(i) for i in items] == accepted
        await link.send(Ack(ids=accepted))

        async def drained() -> bool:
            return (await ledger(relay.store, "small", alice.id) == (0, 0)
                    and await ledger(relay.store, "small") == (
                        total - exact[0], len(more)))

        await wait_until(drained, SOON, "the acks taken off the ledger")
    assert (await post_to(relay.url, alice.id, alice.token)).status_code == 202


async def test_the_ledger_heals_when_interrupts_expire_and_is_reset_by_a_purge(
    relay: RelayServer, relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch
):
    # A counter is recounted once nobody wrote it for QUIET_SECONDS (10 s: no publish
    # can still be on its way); 2 s here keeps the test short, as no publish is.
    monkeypatch.setattr(usage, "QUIET_SECONDS", 2.0)
    assert relay.store is not None
    await Registry(relay.store, relay_config).create_account("small", "bytes")
    alice = await enroll(relay, "small")
    kept, _ = await fill(relay.url, alice.id, alice.token)
    assert await ledger(relay.store, "small", alice.id) == await stored_bytes(relay.store, alice.id)
    assert relay.store is not None
    await relay.store.purge_identity(alice.id)  # as a revoke or an account delete does
    assert await ledger(relay.store, "small", alice.id) == (0, 0)
    assert await ledger(relay.store, "small") == (0, 0)  # taken off the account too

    # Interrupts that expire in JetStream are never acked: the ledger stays high until
    # the refusal path recounts it against JetStream's exact count. One that stays and
    # two that expire: the ledger is scaled to the one left (same size, give or take).
    # (This process repeats its last refusal for up to a second without asking NATS.)
    staying: list[str] = []

    async def first() -> bool:
        response = await post_to(relay.url, alice.id, alice.token)
        staying.extend([response.json()["id"]] if response.status_code == 202 else [])
        return bool(staying)

    await wait_until(first, SOON, "accepted once purged")
    expiring = {"expires_at": (datetime.now(UTC) + timedelta(seconds=2)).isoformat()}
    gone, refusal = await fill(relay.url, alice.id, alice.token, **expiring)
    refused(refusal, 507, "quota_bytes_exceeded")
    assert len(staying + gone) == len(kept)

    async def expired() -> bool:
        return (await stored_bytes(relay.store, alice.id))[1] == 1

    async def accepted_again() -> bool:
        return (await post_to(relay.url, alice.id, alice.token)).status_code == 202

    await wait_until(expired, SOON, "JetStream dropped the expired ones")
    await wait_until(accepted_again, 15, "accepted once the expired ones were recounted")
    (size, count), (exact, stored) = (await ledger(relay.store, "small", alice.id),
                                      await stored_bytes(relay.store, alice.id))
    assert count == stored == 2
    assert abs(size - exact) < exact // 50, (size, exact)  # the one left, estimated


async def test_two_relay_processes_share_the_ledger(nats_server: NatsServer, tmp_path: Path):
    async with planned_relays(nats_server.url, tmp_path, PLANS, "small", "bytes") as relays:
        alice = await enroll(relays[0], "small")
        # A burst into both processes at once: add-then-check lets no race pass the cap.
        burst = await asyncio.gather(*(post_to(relays[n % 2].url, alice.id, alice.token)
                                       for n in range(12)))
        accepted = [r.json()["id"] for r in burst if r.status_code == 202]
        for response in burst:
            if response.status_code != 202:
                refused(response, 507, "quota_bytes_exceeded")
        assert len(accepted) <= 3  # (under the race all may be refused: never too many)
        store = relays[0].store
        assert (await stored_bytes(store, alice.id))[0] <= 5000
        assert await ledger(store, "small", alice.id) == await stored_bytes(store, alice.id)
        more, refusal = await fill(relays[0].url, alice.id, alice.token)
        accepted += more
        refused(refusal, 507, "quota_bytes_exceeded")
        refused(await post_to(relays[1].url, alice.id, alice.token), 507,
                "quota_bytes_exceeded")
        # Drained and acked through the other process: the first accepts again.
        async with edge_link(relays[1], alice, credit=len(accepted)) as link:
            got = [item_id(i) for i in await link.items(len(accepted))]
            assert sorted(got) == sorted(accepted)  # each accepted one, once
            await link.send(Ack(ids=accepted))

            async def accepted_again() -> bool:
                response = await post_to(relays[0].url, alice.id, alice.token)
                return response.status_code == 202

            await wait_until(accepted_again, SOON, "accepted once the edge acked")
