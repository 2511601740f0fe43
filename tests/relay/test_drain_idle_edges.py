"""Idle edges cost no JetStream consumer and no NATS subscription (``relay.drain``).

More idle, authenticated edges than the old 300-edge wall (three consumers each, 1,000
in all) on one relay process, each a real link (challenge, auth, welcome, credit) from a
lightweight client: the stream has no consumer for any of them and the relay's NATS
connection no subscription per edge. Interrupts sent to a few of them are delivered at
once, and once acked no consumer remains. A connect storm waits for the JetStream API
throttle instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator, Iterator
from typing import Any

from link_support import authenticate, dial
from relay_support import (  # noqa: F401  (fixture: relay_config)
    SOON,
    item_id,
    relay_config_fixture,
    send_drafts,
    ws_url,
)
from tests_support import Member, wait_until
from websockets.asyncio.client import ClientConnection

from relay.drain import consumer_name
from relay.registry import Registry
from relay.server import RelayServer
from relay.store import STREAM
from shared.envelope import PRIORITIES
from shared.frames import Ack, Credit, Deliver, DeliverItem, Welcome
from shared.identity import Identity
from shared.link import Link, Role

#: Past the old wall (300 connected edges), and enough to show nothing grows per edge.
EDGES = 400
#: Handshakes in flight at once from the test's side.
CONNECTING = 64


def _raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        top = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


class IdleEdge:
    """A real link from the edge's side without an edge daemon: one WebSocket, a
    ``shared.link.Link`` that checks every frame the relay sends (credit included)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.link = Link(Role.EDGE)
        self.ws: ClientConnection | None = None
        self.welcome: Welcome | None = None

    async def connect(self, url: str, credit: int = 8) -> None:
        self.ws = await dial(url, SOON)
        done = await authenticate(self.ws, self.identity, SOON)
        self.link, self.welcome = done.link, done.welcome
        await self.ws.send(self.link.send(Credit(n=credit)))

    async def items(self, n: int) -> list[DeliverItem]:
        assert self.ws is not None
        got: list[DeliverItem] = []
        async with asyncio.timeout(SOON):
            while len(got) < n:
                frame = self.link.receive(await self.ws.recv())
                assert isinstance(frame, Deliver), frame
                got.extend(frame.items)
        return got

    async def ack(self, ids: list[str]) -> None:
        assert self.ws is not None
        await self.ws.send(self.link.send(Ack(ids=ids)))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def enroll_many(relay: RelayServer, n: int, account: str = "fleet") -> list[Identity]:
    """``n`` identities enrolled in ``account`` through the registry (as ``POST
    /v1/enroll`` does), concurrently."""
    assert relay.store is not None
    registry = Registry(relay.store)
    await registry.create_account(account)
    identities = [Identity.generate() for _ in range(n)]
    slots = asyncio.Semaphore(32)

    async def one(identity: Identity) -> None:
        async with slots:
            await registry.enroll(await registry.enrollment_token(account), identity.public)

    await asyncio.gather(*(one(identity) for identity in identities))
    return identities


@contextlib.asynccontextmanager
async def connected(relay: RelayServer, identities: list[Identity]) -> AsyncIterator[
        list[IdleEdge]]:
    _raise_open_files(4 * len(identities) + 256)  # both ends of each link, plus slack
    edges = [IdleEdge(identity) for identity in identities]
    slots = asyncio.Semaphore(CONNECTING)

    async def one(edge: IdleEdge) -> None:
        async with slots:
            await edge.connect(ws_url(relay))

    try:
        await asyncio.gather(*(one(edge) for edge in edges))
        yield edges
    finally:
        await asyncio.gather(*(edge.close() for edge in edges), return_exceptions=True)


async def consumers(relay: RelayServer) -> list[str]:
    """The names of every consumer on the interrupt stream (the JetStream API's list)."""
    assert relay.store is not None
    return sorted(c.name for c in await relay.store.js.consumers_info(STREAM))


def relay_subscriptions(relay: RelayServer) -> int:
    """Subscriptions on the relay's own NATS connection (nats-py keeps them by sid)."""
    assert relay.store is not None
    return len(relay.store.nc._subs)


async def test_idle_edges_past_the_old_wall_cost_no_consumer(relay: RelayServer) -> None:
    assert relay.hub is not None and relay.store is not None
    identities = await enroll_many(relay, EDGES)
    subscriptions = relay_subscriptions(relay)
    async with connected(relay, identities) as edges:
        assert relay.hub.sessions == EDGES
        assert all(edge.welcome is not None for edge in edges)
        assert await consumers(relay) == []
        info = await relay.store.js.stream_info(STREAM)
        assert info.state.consumer_count == 0
        # The notifications and takeovers of all of them arrive on two subscriptions
        # the process had before any edge connected.
        assert relay_subscriptions(relay) == subscriptions

        # A few of them get interrupts: delivered at once, then no consumer is left.
        registry = Registry(relay.store)
        chosen = edges[::97]
        sent: dict[str, list[str]] = {}
        for edge in chosen:
            token = await registry.create_producer_token("fleet", edge.identity.id)
            member = Member(edge.identity, token, "fleet")
            sent[edge.identity.id] = await send_drafts(relay, member, 2)
        for edge in chosen:
            got = [item_id(item) for item in await edge.items(2)]
            assert got == sent[edge.identity.id]
        # While one is being drained its three consumers exist; only its own.
        names = set(await consumers(relay))
        assert names <= {consumer_name(e.identity.id, p) for e in chosen for p in PRIORITIES}
        for edge in chosen:
            await edge.ack(sent[edge.identity.id])

        async def drained() -> bool:
            return await consumers(relay) == []

        await wait_until(drained, SOON, "no consumer once everything is acked")
        for edge in chosen:
            assert await relay.store.pending(edge.identity.id) == {
                "now": 0, "next": 0, "later": 0}
        assert relay_subscriptions(relay) == subscriptions
    await wait_until(lambda: relay.hub is not None and relay.hub.sessions == 0, SOON,
                     "every link closed")
    assert await consumers(relay) == []


#: The links' JetStream API requests (``relay.drain``'s throttle): the interrupt stream's
#: info (pending counts), consumer create and delete.
LINK_API = (f"$JS.API.STREAM.INFO.{STREAM}", "$JS.API.CONSUMER.CREATE.",
            "$JS.API.CONSUMER.DELETE.")


@contextlib.contextmanager
def api_requests(relay: RelayServer) -> Iterator[dict[str, int]]:
    """Count the links' JetStream API requests in the relay's own process, where they are
    made: every one goes through its NATS connection's ``request`` (nats-py's JetStream
    context calls it), wrapped here, unchanged, until the block ends. Yields ``most`` (the
    largest number in flight at once: sent, not yet answered) and ``total``."""
    assert relay.store is not None
    nc = relay.store.nc
    real = nc.request
    seen = {"open": 0, "most": 0, "total": 0}

    async def counted(subject: str, *args: Any, **kwargs: Any) -> Any:
        if not (subject == LINK_API[0] or subject.startswith(LINK_API[1:])):
            return await real(subject, *args, **kwargs)
        seen["open"] += 1
        seen["total"] += 1
        seen["most"] = max(seen["most"], seen["open"])
        try:
            return await real(subject, *args, **kwargs)
        finally:
            seen["open"] -= 1

    nc.request = counted  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del nc.request  # the class's again


async def test_a_connect_storm_waits_for_the_api_throttle(relay: RelayServer) -> None:
    """Every link's JetStream API requests wait for a slot of the process's throttle: with
    two slots, 150 edges connecting 64 at a time (each reads its counts; the one with
    something pending also creates its consumers) never have more than two requests in
    flight — counted where they are sent, in the relay's process (unthrottled, about
    ``CONNECTING`` are) — and every one of them connects and is served."""
    assert relay.hub is not None and relay.store is not None
    slots = 2
    relay.hub.api = asyncio.Semaphore(slots)
    identities = await enroll_many(relay, 150, account="storm")
    registry = Registry(relay.store)
    token = await registry.create_producer_token("storm", identities[0].id)
    [first] = await send_drafts(relay, Member(identities[0], token, "storm"), 1)
    with api_requests(relay) as seen:
        async with connected(relay, identities) as edges:
            assert [item_id(item) for item in await edges[0].items(1)] == [first]
            assert relay.hub.sessions == len(identities)
    assert seen["total"] >= len(identities)  # at least one count per link
    assert 1 <= seen["most"] <= slots, seen
