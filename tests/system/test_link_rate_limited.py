"""A real edge daemon whose relay refuses its link's handshake with ``429 rate_limited``
(the per-address limit on unauthenticated endpoints, loopback not exempt here): the
edge treats it as a link that is down — it stays up, and dials again once the refusal's
``Retry-After`` has passed (its own jittered backoff alone would dial again within
0.5 s, into the same empty bucket), not in a tight loop."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import websockets
from relay_support import SOON, raw_socket
from tests_support import NatsServer, running_edge, wait_until

from relay.config import RelayConfig, UnauthenticatedLimits

#: The bucket's refill: one request every 2 s, so a refusal says ``Retry-After: 2``.
RATE = 0.5


@pytest.fixture
def relay_config(tmp_path: Path, nats_server: NatsServer) -> RelayConfig:
    """Two requests from loopback (the enrollment and one handshake), then one per 2 s."""
    return RelayConfig(
        listen="127.0.0.1:0", nats=(nats_server.url,), data_dir=tmp_path / "relay",
        unauthenticated=UnauthenticatedLimits(rate=RATE, burst=2, exempt=()),
    )


async def test_a_rate_limited_handshake_makes_the_edge_back_off(relay, make_member, caplog):
    member = await make_member()  # POST /v1/enroll: the first unit
    async with raw_socket(relay):  # the second
        pass
    with pytest.raises(websockets.InvalidStatus) as refused:  # the bucket is empty now
        async with raw_socket(relay):
            pass
    assert refused.value.response.headers["Retry-After"] == "2"
    caplog.set_level(logging.INFO, logger="mailslot.edge.link")

    def refusals() -> list[logging.LogRecord]:
        return [r for r in caplog.records
                if r.name == "mailslot.edge.link" and "HTTP 429" in r.getMessage()]

    async with running_edge(member) as daemon:
        await wait_until(lambda: refusals(), SOON, "the edge refused")
        assert daemon.link is not None
        await wait_until(daemon.link.connected.is_set, SOON, "the edge linked")
        # It waited the 2 s it was told once or twice (a refill may fall just after its
        # retry); with its 0.05 to 0.5 s backoff alone it would have been refused 4+ times.
        assert 1 <= len(refusals()) <= 2
