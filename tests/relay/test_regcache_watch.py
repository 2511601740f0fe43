"""The registry cache against real relay processes on one real nats-server: a change
made through ``Registry`` (by an admin command, another relay) reaches every process's
cache within a second — a revoked token is refused, a new grant accepted, a withdrawn
grant refused — and the request path is answered from the cache, not from NATS."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from relay_support import SOON, draft, envelope, relay_config_fixture  # noqa: F401
from tests_support import Member, NatsServer, RelayProcess, enroll, relay_processes, wait_until

from relay.registry import Registry, public_id, token_hash
from shared.identity import Identity
from shared.signing import sign_envelope

WITHIN = 1.0  # seconds: the bound for a revocation to reach every process


@pytest.fixture
async def relays(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[list[RelayProcess]]:
    async with relay_processes(nats_server.url, tmp_path) as started:
        yield started


async def post_to(relay: RelayProcess, body: Any, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        return await client.post("/v1/interrupts", json=body, headers=headers)


async def everywhere(relays: list[RelayProcess], body: Any, token: str | None) -> set[int]:
    """The statuses the relays answer; ``body`` may be a function that makes a fresh one
    per post (so that none is a duplicate of another)."""
    return {(await post_to(relay, body() if callable(body) else body, token)).status_code
            for relay in relays}


async def within(relays: list[RelayProcess], body: Any, token: str | None, status: int,
                 what: str) -> float:
    """Seconds until every relay answers ``status`` (fails after ``WITHIN``)."""
    began = time.monotonic()

    async def settled() -> bool:
        return await everywhere(relays, body, token) == {status}

    await wait_until(settled, WITHIN, what)
    return time.monotonic() - began


async def test_a_revoked_token_is_refused_by_every_relay_within_a_second(relays):
    alice: Member = await enroll(relays[0], "acme")
    registry = Registry(relays[0].store)
    assert await everywhere(relays, lambda: draft(alice.id), alice.token) == {202}  # cached now
    await registry.revoke_producer_token("acme", public_id(token_hash(alice.token)))
    elapsed = await within(relays, lambda: draft(alice.id), alice.token, 401, "token revoked")
    assert elapsed < WITHIN


async def test_grants_made_and_withdrawn_reach_every_relay_within_a_second(relays):
    alice: Member = await enroll(relays[0], "acme")
    producer: Member = await enroll(relays[0], "producers")
    registry = Registry(relays[0].store)

    def signed() -> dict[str, str]:
        doc = sign_envelope(envelope(producer.identity, alice.id), producer.identity)
        return {"envelope": doc.envelope, "signature": doc.signature}

    assert await everywhere(relays, signed, None) == {403}
    await registry.grant(alice.id, producer.id)
    began = time.monotonic()

    async def accepted() -> bool:
        return await everywhere(relays, signed, None) == {202}

    await wait_until(accepted, WITHIN, "grant seen")
    assert time.monotonic() - began < WITHIN
    await registry.revoke(alice.id, producer.id)
    began = time.monotonic()

    async def refused_everywhere() -> bool:
        return await everywhere(relays, signed, None) == {403}

    await wait_until(refused_everywhere, WITHIN, "grant withdrawn")
    assert time.monotonic() - began < WITHIN


async def test_the_request_path_reads_the_registry_from_the_cache(relay, make_member):
    alice: Member = await make_member("acme", with_home=False)
    cache = relay.store.cache
    await wait_until(lambda: cache.live, SOON, "cache live")
    # the token, its account and the recipient arrive through the watch
    await wait_until(lambda: len(cache) >= 3, SOON, "registry in the cache")
    hits, misses = cache.hits, cache.misses
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        for _ in range(20):
            response = await client.post("/v1/interrupts", json=draft(alice.id),
                                         headers={"Authorization": f"Bearer {alice.token}"})
            assert response.status_code == 202, response.text
    assert cache.misses == misses  # not one registry read went to NATS
    assert cache.hits - hits >= 20 * 2  # token + recipient per post, at least


async def test_an_unknown_token_still_asks_nats_and_is_refused(relay, make_member):
    alice: Member = await make_member("acme", with_home=False)
    fresh = Identity.generate()
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        response = await client.post("/v1/interrupts", json=draft(alice.id),
                                     headers={"Authorization": "Bearer msp_" + "A" * 43})
        assert response.status_code == 401
        response = await client.get(f"/v1/identities/{fresh.id}")
        assert response.status_code == 404
