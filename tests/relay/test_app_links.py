"""A relay process past its ``--max-links``: a new handshake is refused with HTTP 503
``relay_full`` and a jittered ``Retry-After`` instead of the upgrade (and instead of the
process running out of file descriptors), the links it holds carry on, and a slot freed
is taken by the next edge. Real relay, real nats-server, real WebSockets."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest
import websockets
from relay_support import SOON, edge_link, raw_socket
from tests_support import NatsServer, wait_until

from relay.app import FULL_RETRY_SECONDS
from relay.config import RelayConfig, StreamSettings
from relay.server import default_max_links


@pytest.fixture
def relay_config(tmp_path: Path, nats_server: NatsServer) -> RelayConfig:
    return RelayConfig(listen="127.0.0.1:0", nats=(nats_server.url,),
                       data_dir=tmp_path / "relay", stream=StreamSettings(ack_wait=5.0),
                       max_links=2)


async def refused_full(relay) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with raw_socket(relay):
            pass
    response = refused.value.response
    assert response.status_code == 503
    low, high = FULL_RETRY_SECONDS
    assert low <= int(response.headers["Retry-After"]) <= high
    body = json.loads(response.body)
    assert body["error"] == "relay_full" and body["retry_after"] == int(
        response.headers["Retry-After"])


async def test_past_its_links_a_relay_refuses_the_handshake_with_a_retry_hint(
    relay, make_member
):
    alice, bob = await make_member(with_home=False), await make_member(with_home=False)
    async with edge_link(relay, alice) as first:
        async with edge_link(relay, bob):
            await refused_full(relay)  # the third, before any frame
            await first.credit(1)  # the two held links still work
        # bob's slot is free again: the next handshake is served
        async def served() -> bool:
            try:
                async with raw_socket(relay) as ws:
                    return '"challenge"' in str(await ws.recv(decode=True))
            except websockets.InvalidStatus:
                return False

        await wait_until(served, SOON, "a freed slot taken by the next edge")


def test_the_default_cap_is_the_open_file_limit_less_a_reserve():
    links = default_max_links()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)  # raised to the hard limit
    assert links == max(64, soft - 1024) or soft == resource.RLIM_INFINITY
