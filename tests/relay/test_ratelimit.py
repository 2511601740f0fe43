"""Publish rates per account and per producer token (``relay.ratelimit``), against real
relay processes on one real nats-server and an in-process relay on a real socket: an
empty bucket refuses with ``429 rate_limited`` and an integer ``Retry-After``, another
account is never refused, everything accepted is stored, and the buckets are shared by
every relay process on the NATS."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from relay_support import SOON, draft, pending, refused, signed_doc
from tests_support import Member, NatsServer, RelayProcess, enroll, relay_processes

from relay.config import RelayConfig, parse_plans
from relay.registry import Registry
from relay.server import RelayServer

#: The plans of these tests. Rates are slow enough that a bucket does not refill
#: noticeably while a test runs (one unit per 20 s), so counts are exact.
PLANS = """
default_plan = "open"

[plans.open]

[plans.tight]
account_rate = 0.05
account_burst = 6

[plans.per_token]
token_rate = 0.05
token_burst = 3
"""


def plans_config(data_dir: Path, nats_url: str) -> RelayConfig:
    found = parse_plans(PLANS, "plans.toml")
    return RelayConfig(listen="127.0.0.1:0", nats=(nats_url,), data_dir=data_dir,
                       plans=found.plans, default_plan=found.default_plan)


async def member_on(relay: Any, config: RelayConfig, account: str, plan: str) -> Member:
    """A fresh identity (and producer token) in ``account``, created under ``plan``."""
    registry = Registry(relay.store, config)
    if account not in await registry.accounts():
        await registry.create_account(account, plan)
    return await enroll(relay, account)


async def post_to(url: str, body: Any, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, timeout=SOON) as client:
        return await client.post("/v1/interrupts", json=body, headers=headers)


def rate_limited(response: httpx.Response) -> int:
    """The refusal is ``429 rate_limited`` with matching Retry-After; return it."""
    refused(response, 429, "rate_limited")
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and int(retry_after) >= 1, retry_after
    assert response.json()["retry_after"] == int(retry_after)
    return int(retry_after)


@pytest.fixture
async def relays(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[list[RelayProcess]]:
    config_file = tmp_path / "plans.toml"
    config_file.write_text(PLANS)
    async with relay_processes(nats_server.url, tmp_path, "--config", str(config_file)) as started:
        yield started


@pytest.fixture
def relay_config(tmp_path: Path, nats_server: NatsServer) -> RelayConfig:
    return plans_config(tmp_path / "relay", nats_server.url)


async def test_an_account_rate_holds_across_two_relay_processes(relays, tmp_path):
    config = plans_config(tmp_path / "unused", relays[0].nats_url)
    alice = await member_on(relays[0], config, "small", "tight")
    bob = await member_on(relays[0], config, "big", "open")
    accepted, limited, bob_statuses = 0, 0, set()
    for n in range(16):  # alternate the relay processes: one bucket for both
        url = relays[n % 2].url
        response = await post_to(url, draft(alice.id), alice.token)
        if response.status_code == 202:
            accepted += 1
        else:
            assert rate_limited(response) <= 20
            limited += 1
        bob_statuses.add((await post_to(url, draft(bob.id), bob.token)).status_code)
    assert (accepted, limited) == (6, 10)  # the burst, shared by both processes
    assert bob_statuses == {202}  # the other account is never refused
    assert await pending(relays[0], alice.id) == {"now": 0, "next": 6, "later": 0}
    assert await pending(relays[0], bob.id) == {"now": 0, "next": 16, "later": 0}


async def test_a_token_rate_is_per_token_and_counts_signed_envelopes_too(
    relay: RelayServer, relay_config: RelayConfig
):
    alice = await member_on(relay, relay_config, "acme", "per_token")
    second = await Registry(relay.store).create_producer_token("acme", alice.id)
    statuses = [(await post_to(relay.url, draft(alice.id), alice.token)).status_code
                for _ in range(5)]
    assert statuses == [202, 202, 202, 429, 429]
    assert (await post_to(relay.url, draft(alice.id), second)).status_code == 202
    rate_limited(await post_to(relay.url, draft(alice.id), alice.token))
    # A signed envelope sent with the spent token is refused like a draft; without a
    # token it spends no token bucket (this plan has no account rate).
    member = await member_on(relay, relay_config, "producers", "open")
    await Registry(relay.store).grant(alice.id, member.id)
    signed = signed_doc(member.identity, alice.id)
    rate_limited(await post_to(relay.url, signed, alice.token))
    assert (await post_to(relay.url, signed, None)).status_code == 202
    assert await pending(relay, alice.id) == {"now": 0, "next": 5, "later": 0}


async def test_batch_items_beyond_the_rate_get_their_own_refusal(
    relay: RelayServer, relay_config: RelayConfig
):
    alice = await member_on(relay, relay_config, "acme", "tight")
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        response = await client.post(
            "/v1/interrupts/batch", json={"items": [draft(alice.id) for _ in range(10)]},
            headers={"Authorization": f"Bearer {alice.token}"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202] * 6 + [429] * 4
    assert all(r["error"] == "rate_limited" and r["retry_after"] >= 1 for r in results[6:])
    assert await pending(relay, alice.id) == {"now": 0, "next": 6, "later": 0}


async def test_retry_after_is_when_a_unit_is_back(relay: RelayServer, tmp_path, nats_server):
    # A bucket at 0 units with rate 0.05/s has its next unit in 20 s.
    alice = await member_on(relay, relay.config, "acme", "tight")
    for _ in range(6):
        assert (await post_to(relay.url, draft(alice.id), alice.token)).status_code == 202
    began = time.monotonic()
    wait = rate_limited(await post_to(relay.url, draft(alice.id), alice.token))
    assert 19 <= wait <= 20 + (time.monotonic() - began)


async def test_an_account_on_the_default_plan_has_no_rate(relay: RelayServer):
    member = await enroll(relay, "plain")  # created without a plan: the default one
    for _ in range(30):
        assert (await post_to(relay.url, draft(member.id), member.token)).status_code == 202
