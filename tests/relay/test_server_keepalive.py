"""The relay's keepalive is an idle timeout (``relay.server._LinkProtocol``): it pings a
link only after ``LINK_IDLE_PING`` seconds in which the link sent nothing, so a link whose
edge pings (every 15 s by default) is never pinged by the relay; a silent link is pinged
and kept if it answers; one whose edge vanished without a close (the route black-holed)
is closed within ``LINK_IDLE_PING + LINK_PONG_TIMEOUT`` of its last frame. A real relay
and NATS, shortened timers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from blackhole_support import BlackHoleProxy
from link_support import linked
from relay_support import relay_config_fixture, ws_url  # noqa: F401
from test_drain_idle_edges import enroll_many
from tests_support import wait_until
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

import relay.server
from relay.config import RelayConfig
from relay.server import RelayServer

IDLE_PING, PONG_TIMEOUT = 1.0, 0.5
#: What a loaded machine may add to a timer-driven bound.
MARGIN = 2.0


@pytest.fixture(name="pinged")
def pinged_fixture(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The links (their uvicorn protocols) the relay sent a keepalive ping to, in order."""
    sent: list[Any] = []
    real = WebSocketsSansIOProtocol.send_keepalive_ping

    def counting(self: WebSocketsSansIOProtocol) -> None:
        sent.append(self)
        real(self)

    monkeypatch.setattr(WebSocketsSansIOProtocol, "send_keepalive_ping", counting)
    monkeypatch.setattr(relay.server, "LINK_IDLE_PING", IDLE_PING)
    monkeypatch.setattr(relay.server, "LINK_PONG_TIMEOUT", PONG_TIMEOUT)
    return sent


@pytest.fixture(name="quick_relay")
async def quick_relay_fixture(relay_config: RelayConfig,
                              pinged: list[Any]) -> AsyncIterator[RelayServer]:
    server = RelayServer(relay_config)
    await server.start()
    yield server
    await server.stop()


async def test_a_link_that_pings_is_never_pinged_and_a_silent_one_is_and_stays(
        quick_relay: RelayServer, pinged: list[Any]) -> None:
    talker, quiet = await enroll_many(quick_relay, 2, account="keepalive")
    async with linked(ws_url(quick_relay), talker, ping_interval=IDLE_PING / 3) as chatty, \
            linked(ws_url(quick_relay), quiet) as silent:  # no pings of its own
        await asyncio.sleep(3 * IDLE_PING + 0.3)
        # The silent one was pinged about once a second and answered each time.
        assert 2 <= len(pinged) <= 4, pinged
        assert silent.ws.close_code is None and chatty.ws.close_code is None
        assert quick_relay.hub is not None and quick_relay.hub.sessions == 2
        # Every ping went to the silent link (the relay's end of it: its client port).
        assert {p.client[1] for p in pinged} == {silent.ws.local_address[1]}


async def test_a_vanished_edge_is_closed_within_the_idle_ping_and_its_timeout(
        quick_relay: RelayServer, pinged: list[Any]) -> None:
    [edge] = await enroll_many(quick_relay, 1, account="keepalive")
    host, port = quick_relay.url.removeprefix("http://").rsplit(":", 1)
    assert quick_relay.hub is not None
    hub = quick_relay.hub
    async with BlackHoleProxy(host, int(port)) as proxy:
        url = proxy.url.replace("http://", "ws://", 1) + "/v1/connect"
        async with linked(url, edge):
            last_frame = time.monotonic()  # the welcome's credit-less end: nothing after
            assert hub.sessions == 1
            proxy.black_hole()
            await wait_until(lambda: hub.sessions == 0,
                             IDLE_PING + PONG_TIMEOUT + MARGIN, "the relay closed the link")
            took = time.monotonic() - last_frame
            proxy.restore()
    assert len(pinged) == 1
    assert IDLE_PING + PONG_TIMEOUT - 0.2 <= took <= IDLE_PING + PONG_TIMEOUT + MARGIN
