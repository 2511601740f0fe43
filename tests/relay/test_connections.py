"""The plan's ``max_connected_edges`` (``relay.connections``) on real relays and a real
nats-server: one link too many is refused at auth (an ``error`` frame
``edges_exceeded`` with a retry hint, then close 4429) while another account's edges
connect; a takeover counts once; a closed link frees its slot at once; the cap holds
across two relay processes, and the links of one killed with ``kill -9`` stop counting
within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from relay_support import (
    SOON,
    auth_frame,
    closed,
    edge_link,
    planned_relays,
    raw_socket,
    read_challenge,
)
from tests_support import Member, NatsServer, enroll, wait_until

from relay.config import RelayConfig, parse_plans
from relay.registry import Registry
from relay.server import RelayServer
from relay.store import LINK_TTL_SECONDS

PLANS = """
default_plan = "open"
[plans.open]
[plans.pair]
max_connected_edges = 2
"""


@pytest.fixture
def relay_config(tmp_path: Path, nats_server: NatsServer) -> RelayConfig:
    found = parse_plans(PLANS, "plans.toml")
    return RelayConfig(listen="127.0.0.1:0", nats=(nats_server.url,),
                       data_dir=tmp_path / "relay", plans=found.plans,
                       default_plan=found.default_plan)


async def refused_link(relay: object, member: Member) -> tuple[int | None, list[str], str]:
    """Authenticate ``member`` and read how the relay ends the link."""
    async with raw_socket(relay) as ws:  # type: ignore[arg-type]
        challenge = await read_challenge(ws)
        await ws.send(auth_frame(member.identity, challenge))
        end = await closed(ws)
    messages = [f.get("message", "") for f in end.frames if f.get("type") == "error"]
    return end.code, end.error_codes, " ".join(messages)


async def welcomed(relay: object, member: Member) -> bool:
    """Whether ``member``'s link is let in (``welcome``) rather than refused."""
    async with raw_socket(relay) as ws:  # type: ignore[arg-type]
        challenge = await read_challenge(ws)
        await ws.send(auth_frame(member.identity, challenge))
        first = json.loads(await asyncio.wait_for(ws.recv(), SOON))
    return bool(first["type"] == "welcome")


@contextlib.asynccontextmanager
async def links(relay: object, *members: Member) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for member in members:
            await stack.enter_async_context(edge_link(relay, member))  # type: ignore[arg-type]
        yield


async def test_one_edge_too_many_is_refused_4429_and_another_account_is_not(
    relay: RelayServer, relay_config: RelayConfig
):
    assert relay.store is not None
    await Registry(relay.store, relay_config).create_account("small", "pair")
    alice, carol, dave = [await enroll(relay, "small") for _ in range(3)]
    others = [await enroll(relay, "big") for _ in range(3)]
    async with links(relay, alice, carol):
        code, codes, message = await refused_link(relay, dave)
        assert (code, codes) == (4429, ["edges_exceeded"])
        assert "2 connected edges" in message and "retry in 30 s" in message
        async with links(relay, *others):  # no cap on that plan: all three connect,
            assert await relay.store.link_identities("big") == set()  # and write nothing
            assert await relay.store.link_identities("small") == {alice.id, carol.id}
        # alice connecting again (a takeover of her own link) is the same edge.
        async with edge_link(relay, alice) as again:
            assert again.welcome.session
    # Both links closed: their slots are free at once, in NATS.
    async with links(relay, dave, carol):
        pass


async def test_the_cap_holds_across_processes_and_a_killed_one_stops_counting(
    nats_server: NatsServer, tmp_path: Path
):
    async with planned_relays(nats_server.url, tmp_path, PLANS, "small", "pair") as relays:
        alice, carol, dave = [await enroll(relays[0], "small") for _ in range(3)]
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(edge_link(relays[0], alice))
            await stack.enter_async_context(edge_link(relays[0], carol))
            code, codes, _ = await refused_link(relays[1], dave)
            assert (code, codes) == (4429, ["edges_exceeded"])
            relays[0].kill9()  # its links are never closed cleanly: they expire
            killed = time.monotonic()

            async def admitted() -> bool:
                return await welcomed(relays[1], dave)

            await wait_until(admitted, LINK_TTL_SECONDS + SOON, "the dead links expired")
            assert time.monotonic() - killed < LINK_TTL_SECONDS + 5


async def test_a_burst_of_handshakes_of_one_account_never_lets_more_than_its_cap_in(
    relay: RelayServer, relay_config: RelayConfig
):
    """Twelve links of a 2-edge account authenticate at once: their counts are shared
    (``relay.coalesce``), but each is read after that link's own beat, so the cap still
    holds: at most two get a ``welcome``, the others ``edges_exceeded``."""
    assert relay.store is not None
    await Registry(relay.store, relay_config).create_account("burst", "pair")
    members = [await enroll(relay, "burst") for _ in range(12)]
    decided, hold = asyncio.Event(), []

    async def one(member: Member) -> str:
        async with raw_socket(relay) as ws:
            challenge = await read_challenge(ws)
            await ws.send(auth_frame(member.identity, challenge))
            first = json.loads(await asyncio.wait_for(ws.recv(), SOON))
            hold.append(first["type"])
            if len(hold) == len(members):
                decided.set()
            await asyncio.wait_for(decided.wait(), SOON)  # every link open meanwhile
            return str(first.get("code") or first["type"])

    outcomes = await asyncio.gather(*(one(m) for m in members))
    assert outcomes.count("welcome") <= 2
    assert set(outcomes) <= {"welcome", "edges_exceeded"}
