"""One session, one channel: two real ``mailslot mcp --channel --session S`` servers on
one edge, each driven by the official MCP client over stdio, each get only the wakes of
their own session (and, with ``--include-unsessioned``, those of no session)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.extension import NotificationBinding
from pydantic import BaseModel
from tests_support import REPO, wait_until

from edge.config import EdgePaths
from edge.store.deliveries import Delivery, DeliveryQueue


class ChannelEvent(BaseModel):
    content: str
    meta: dict[str, str]


@pytest.fixture
def paths(enrolled_home: Path) -> EdgePaths:
    """The paths of an enrolled edge home; no relay is needed."""
    return EdgePaths.resolve({"MAILSLOT_HOME": str(enrolled_home)})


def enqueue(paths: EdgePaths, interrupt: str, session: str) -> None:
    """A wake for the ``mcp`` route, as the engine queues it."""
    queue = DeliveryQueue.open(paths.engine_file)
    try:
        queue.enqueue(wake=1, intent="ci", route={"kind": "mcp"}, session=session,
                      interrupts=[interrupt], permissions={"intent": "ci", "actions": []},
                      wake_doc={"wake": {"intent": "ci", "session": session},
                                "interrupts": [{"id": interrupt, "type": "ci.failed"}]},
                      at=datetime.now(UTC).timestamp())
    finally:
        queue.close()


def done(paths: EdgePaths) -> list[Delivery]:
    queue = DeliveryQueue.open(paths.engine_file)
    try:
        return queue.rows("done")
    finally:
        queue.close()


@asynccontextmanager
async def channel(paths: EdgePaths, *args: str) -> AsyncIterator[asyncio.Queue[ChannelEvent]]:
    """A channel server for one session; yields the events it pushes."""
    home = paths.config_dir.parent
    events: asyncio.Queue[ChannelEvent] = asyncio.Queue()
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "edge", "mcp", "--channel", *args], cwd=REPO,
        env={"MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"},
    )
    binding = NotificationBinding(method="notifications/claude/channel",
                                  params_type=ChannelEvent, handler=events.put)
    with home.with_name(f"mcp{'-'.join(args)}.stderr").open("a") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, notification_bindings=[binding]) as session,
        ):
            await asyncio.wait_for(session.initialize(), 30)
            yield events


def interrupts(events: asyncio.Queue[ChannelEvent]) -> list[str]:
    seen: list[str] = []
    while not events.empty():
        seen.append(events.get_nowait().meta["interrupt"])
    return seen


async def serve(paths: EdgePaths, args: list[str], ready: asyncio.Event,
                finished: asyncio.Event, queues: list[asyncio.Queue[ChannelEvent]]) -> list[str]:
    """Run one channel (in its own task: the stdio client's scopes stay in it) until
    ``finished``; return the interrupts it was pushed (its queue joins ``queues``)."""
    async with channel(paths, *args) as events:
        queues.append(events)
        ready.set()
        await finished.wait()
        return interrupts(events)


async def test_each_session_channel_gets_only_its_own_wakes(paths: EdgePaths) -> None:
    enqueue(paths, "01JDQ8Z9X4A1AAAAAAAAAAAAAA", "alpha")  # queued before anyone listens
    finished = asyncio.Event()
    ready = [asyncio.Event(), asyncio.Event()]
    queues: list[asyncio.Queue[ChannelEvent]] = []
    servers = [  # started side by side
        asyncio.create_task(serve(paths, ["--session", "alpha"], ready[0], finished, queues)),
        asyncio.create_task(serve(paths, ["--session", "beta", "--include-unsessioned"],
                                  ready[1], finished, queues)),
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 60)
        enqueue(paths, "01JDQ8Z9X4B1BBBBBBBBBBBBBB", "beta")
        enqueue(paths, "01JDQ8Z9X4N1NNNNNNNNNNNNNN", "")
        enqueue(paths, "01JDQ8Z9X4A2AAAAAAAAAAAAAA", "alpha")
        enqueue(paths, "01JDQ8Z9X4G1GGGGGGGGGGGGGG", "gamma")  # nobody's: stays queued
        await wait_until(lambda: len(done(paths)) == 4, 20, "four wakes pushed")
        # A wake is done once written to the channel's stdout: the client reads it after.
        await wait_until(lambda: all(q.qsize() >= 2 for q in queues), 20,
                         "both clients got their two")
    finally:
        finished.set()
        alpha, beta = await asyncio.wait_for(asyncio.gather(*servers), 30)
    assert alpha == ["01JDQ8Z9X4A1AAAAAAAAAAAAAA", "01JDQ8Z9X4A2AAAAAAAAAAAAAA"]
    assert beta == ["01JDQ8Z9X4B1BBBBBBBBBBBBBB", "01JDQ8Z9X4N1NNNNNNNNNNNNNN"]
    assert {d.session for d in done(paths)} == {"alpha", "beta", ""}
    queue = DeliveryQueue.open(paths.engine_file)
    try:
        assert [d.session for d in queue.rows("pending")] == ["gamma"]
    finally:
        queue.close()
