"""A real edge daemon whose relay refuses its link's handshake with ``429 rate_limited``
(the per-address limit on unauthenticated endpoints, loopback not exempt here): the
edge treats it as a link that is down — it stays up, and dials again with its jittered
exponential backoff, not in a tight loop."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import websockets
from relay_support import SOON, raw_socket
from tests_support import NatsServer, running_edge, wait_until

from relay.config import RelayConfig, UnauthenticatedLimits

#: Refusals the edge must have made before they are timed.
ATTEMPTS = 6


@pytest.fixture
def relay_config(tmp_path: Path, nats_server: NatsServer) -> RelayConfig:
    """Two requests from loopback (the enrollment and one handshake), then none for 20 s."""
    return RelayConfig(
        listen="127.0.0.1:0", nats=(nats_server.url,), data_dir=tmp_path / "relay",
        unauthenticated=UnauthenticatedLimits(rate=0.05, burst=2, exempt=()),
    )


async def test_a_rate_limited_handshake_makes_the_edge_back_off(relay, make_member, caplog):
    member = await make_member()  # POST /v1/enroll: the first unit
    async with raw_socket(relay):  # the second
        pass
    with pytest.raises(websockets.InvalidStatus):  # the bucket is empty now
        async with raw_socket(relay):
            pass
    caplog.set_level(logging.INFO, logger="mailslot.edge.link")

    def refusals() -> list[logging.LogRecord]:
        return [r for r in caplog.records
                if r.name == "mailslot.edge.link" and "HTTP 429" in r.getMessage()]

    async with running_edge(member) as daemon:
        await wait_until(lambda: len(refusals()) >= ATTEMPTS, SOON, "the edge dialled again")
        assert daemon.link is not None and not daemon.link.connected.is_set()
        seen = refusals()
    # Backoff 0.05 s doubling to 0.5 s (this edge's config), full jitter: the five waits
    # between six attempts average 0.85 s, and are below 0.1 s together once in ~25,000
    # runs; a client that dialled again at once would take a few milliseconds.
    assert seen[ATTEMPTS - 1].created - seen[0].created >= 0.1
