"""Requests per client address to the unauthenticated endpoints (``relay.ratelimit.
AddressLimiter``, ``relay.clientaddr``), against real relay processes on one real
nats-server and an in-process relay on a real socket: ``POST /v1/enroll`` spammed from
one address gets ``429 rate_limited`` with ``Retry-After`` (and spends no token), the
link's handshake gets an HTTP 429 instead of the upgrade, another address is not
refused, the bucket is shared by every relay process on the NATS, ``X-Forwarded-For``
counts only from a trusted proxy, and loopback is exempt by default."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from relay_support import SOON, refused
from tests_support import NatsServer, RelayProcess, relay_processes

from relay.config import RelayConfig, UnauthenticatedLimits
from relay.registry import Registry
from relay.server import RelayServer
from shared.auth import enroll_message, sign_b64
from shared.frames import SUBPROTOCOL
from shared.identity import Identity

#: One unit per 20 s: the buckets do not refill noticeably while a test runs.
BEHIND_A_PROXY = """
[unauthenticated]
rate = 0.05
burst = 3
exempt = []

[proxy]
trusted = ["127.0.0.1"]
"""


@pytest.fixture
async def relays(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[list[RelayProcess]]:
    config_file = tmp_path / "relay.toml"
    config_file.write_text(BEHIND_A_PROXY)
    async with relay_processes(nats_server.url, tmp_path, "--config", str(config_file)) as started:
        yield started


async def enroll_body(relay: Any) -> dict[str, Any]:
    """A good enrollment request for a fresh identity in account ``acme``."""
    registry = Registry(relay.store)
    if "acme" in await registry.accounts():
        token = await registry.enrollment_token("acme")
    else:
        token = await registry.create_account("acme")
    identity = Identity.generate()
    return {"token": token, "identity": identity.public.to_doc(),
            "proof": sign_b64(identity, enroll_message(token, identity.id))}


async def enroll_from(url: str, body: dict[str, Any], forwarded: str | None) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    async with httpx.AsyncClient(base_url=url, timeout=SOON) as client:
        return await client.post("/v1/enroll", json=body, headers=headers)


def rate_limited(response: httpx.Response, within: int = 20) -> None:
    refused(response, 429, "rate_limited")
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= within, retry_after
    assert response.json()["retry_after"] == int(retry_after)


async def handshake(url: str, forwarded: str | None) -> int:
    """Open the link from ``forwarded`` (through the relay's trusted proxy, 127.0.0.1):
    the upgrade's status (101 when the relay's challenge came)."""
    ws_url = url.replace("http://", "ws://", 1) + "/v1/connect"
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    try:
        async with websockets.connect(
            ws_url, subprotocols=[websockets.Subprotocol(SUBPROTOCOL)],
            additional_headers=headers, open_timeout=SOON,
        ) as ws:
            assert '"challenge"' in str(await ws.recv(decode=True))
            return 101
    except websockets.InvalidStatus as exc:
        response = exc.response
        assert response.status_code == 429, response
        retry_after = response.headers["Retry-After"]
        assert retry_after.isdigit() and int(retry_after) >= 1
        assert b'"error":"rate_limited"' in response.body
        return response.status_code


async def test_one_address_is_refused_across_two_relays_while_others_are_not(relays):
    spammer, other = "203.0.113.7", "198.51.100.20"
    statuses, kept = [], None
    for n in range(5):  # alternate the processes: one bucket for both
        body = await enroll_body(relays[0])
        response = await enroll_from(relays[n % 2].url, body, spammer)
        statuses.append(response.status_code)
        if response.status_code == 429:
            rate_limited(response)
            kept = body
    assert statuses == [201, 201, 201, 429, 429]
    # Another client behind the same (trusted) proxy is not refused, and the refused
    # request spent nothing: its enrollment token still works.
    assert kept is not None
    assert (await enroll_from(relays[1].url, kept, other)).status_code == 201
    # The client wrote its own X-Forwarded-For; the proxy appended what it saw: the
    # spammer is still the spammer, whatever it claims.
    rate_limited(await enroll_from(relays[0].url, await enroll_body(relays[0]),
                                   f"{other}, {spammer}"))
    # The link's handshake is counted in the same bucket: HTTP 429 instead of the upgrade.
    assert await handshake(relays[1].url, spammer) == 429
    assert await handshake(relays[0].url, other) == 101


async def test_an_ipv6_client_is_counted_by_its_64(nats_server: NatsServer, tmp_path: Path):
    config = RelayConfig(
        listen="127.0.0.1:0", nats=(nats_server.url,), data_dir=tmp_path / "v6",
        unauthenticated=UnauthenticatedLimits(rate=0.05, burst=3, exempt=()),
        trusted_proxies=("127.0.0.1",),
    )
    server = RelayServer(config)
    await server.start()
    try:
        url = server.url
        for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "[2001:db8:1:2:ffff::3]:4242"):
            assert (await enroll_from(url, {}, host)).status_code == 400
        rate_limited(await enroll_from(url, {}, "2001:db8:1:2:abcd::99"))
        assert (await enroll_from(url, {}, "2001:db8:1:3::1")).status_code == 400
        # An IPv4-mapped address is its IPv4 address.
        for _ in range(3):
            assert (await enroll_from(url, {}, "::ffff:192.0.2.9")).status_code == 400
        rate_limited(await enroll_from(url, {}, "192.0.2.9"))
    finally:
        await server.stop()


@pytest.fixture
def relay_config(tmp_path: Path, nats_server: NatsServer) -> RelayConfig:
    """No trusted proxy (not even loopback, the default): X-Forwarded-For means nothing.
    Loopback not exempt."""
    return RelayConfig(
        listen="127.0.0.1:0", nats=(nats_server.url,), data_dir=tmp_path / "relay",
        unauthenticated=UnauthenticatedLimits(rate=0.05, burst=3, exempt=()),
        trusted_proxies=(),
    )


async def test_without_a_trusted_proxy_x_forwarded_for_does_not_dodge_the_limit(
    relay: RelayServer
):
    statuses = []
    for n in range(5):
        response = await enroll_from(relay.url, await enroll_body(relay), f"192.0.2.{n}")
        statuses.append(response.status_code)
    assert statuses == [201, 201, 201, 429, 429]
    rate_limited(await enroll_from(relay.url, {}, None))  # before the body is looked at
    assert await handshake(relay.url, "192.0.2.200") == 429
    # The other unauthenticated-but-signed routes and the probes are not counted.
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/v1/identities/" + "a" * 32)).status_code == 404


async def test_loopback_is_exempt_and_a_local_proxy_trusted_by_default(nats_server: NatsServer, tmp_path: Path):
    config = RelayConfig(listen="127.0.0.1:0", nats=(nats_server.url,),
                         data_dir=tmp_path / "default")
    assert config.unauthenticated == UnauthenticatedLimits(rate=10.0, burst=30)
    assert config.unauthenticated.exempt == ("127.0.0.0/8", "::1/128")
    server = RelayServer(config)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=SOON) as client:
            for _ in range(40):  # beyond the default burst (30) at once
                response = await client.post("/v1/enroll", json={})
                assert response.status_code == 400, response.text
        assert await handshake(server.url, None) == 101
        # …while the clients of a proxy on this host (loopback: trusted by default) are
        # counted by their own address, not exempt as loopback.
        async with httpx.AsyncClient(base_url=server.url, timeout=SOON) as client:
            answers = await asyncio.gather(*(
                client.post("/v1/enroll", json={}, headers={"X-Forwarded-For": "192.0.2.9"})
                for _ in range(80)))  # at once: far beyond the burst, little refill
        statuses = [a.status_code for a in answers]
        assert set(statuses) == {400, 429} and statuses.count(400) < 60, statuses
        rate_limited(next(a for a in answers if a.status_code == 429))
    finally:
        await server.stop()
