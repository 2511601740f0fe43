"""``mailslot mcp`` as an agent uses it: the official MCP client starts ``python -m edge
mcp`` over stdio on a real edge home, calls every tool, and checks the files the tools
changed (intents.toml, the SQLite inbox, the watch state, the activity log). With
``--channel``, a wake queued in ``data/engine.sqlite3`` arrives as a
``notifications/claude/channel`` notification."""

from __future__ import annotations

import asyncio
import json
import sys
import tomllib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ulid
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.client.extension import NotificationBinding
from pydantic import BaseModel
from tests_support import REPO

from edge.config import EdgePaths
from edge.store.activity import ActivityLog, Event
from edge.store.deliveries import Delivery, DeliveryQueue
from edge.store.enginestate import EngineState
from edge.store.inbox import Accepted, Inbox
from edge.store.watchstate import WatchState
from shared.envelope import Envelope, Priority, Source
from shared.identity import Identity
from shared.signing import sign_envelope

TOOLS = {
    "status", "intents_list", "intent_add", "intent_pause", "intent_resume", "intent_remove",
    "watches_list", "watch_add", "watch_pause", "watch_resume", "watch_remove",
    "inbox_next", "inbox_ack", "inbox_nack", "sleep", "activity", "explain",
    "approve_request", "approval_get",
    "deliveries_list", "deliveries_show", "deliveries_retry", "deliveries_drop",
}
PRODUCER = Identity.generate()
#: Every ``home`` here is enrolled (keys, edge.json); no tool talks to the relay.
pytestmark = pytest.mark.usefixtures("enrolled_home")


def _paths(home: Path) -> EdgePaths:
    return EdgePaths(home / "config", home / "data")


def _commit(home: Path, type: str = "ci.failed", priority: str = "next") -> str:
    """Store one signed interrupt in the inbox, as the link does after verifying it."""
    now = datetime.now(UTC)
    with Inbox.open(_paths(home).inbox_file) as inbox:
        envelope = Envelope(
            id=str(ulid.ULID()), to=_identity(home), source=Source(kind="producer", name="ci"),
            type=type, priority=Priority(priority), created_at=now, payload={"run": 812},
            signer=PRODUCER.id,
        )
        inbox.commit_batch([Accepted(envelope, sign_envelope(envelope, PRODUCER), None, now)])
    return envelope.id


def _identity(home: Path) -> str:
    from edge.config import load_config

    return load_config(_paths(home)).identity


@asynccontextmanager
async def mcp_session(
    home: Path, *args: str, bindings: Sequence[NotificationBinding[Any]] = ()
) -> AsyncIterator[tuple[ClientSession, types.InitializeResult]]:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "edge", "mcp", *args], cwd=REPO,
        env={"MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"},
    )
    with home.with_name(f"{home.name}.mcp.stderr").open("a") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, notification_bindings=bindings) as session,
        ):
            result = await asyncio.wait_for(session.initialize(), 30)
            yield session, result


async def call(client: ClientSession, name: str, /, **arguments: Any) -> Any:
    """The structured result of a tool that must succeed."""
    result = await asyncio.wait_for(client.call_tool(name, arguments), 30)
    assert not result.is_error, result.content
    return result.structured_content


async def refused(client: ClientSession, name: str, /, **arguments: Any) -> str:
    """The error code of a tool call that must fail; the text says the same."""
    result = await asyncio.wait_for(client.call_tool(name, arguments), 30)
    assert result.is_error, result.structured_content
    code = str(result.structured_content["error"])
    text = result.content[0]
    assert isinstance(text, types.TextContent) and text.text.startswith(f"{code}: ")
    return code


def _intents_file(home: Path) -> dict[str, Any]:
    return tomllib.loads(_paths(home).intents_file.read_text())


async def test_every_tool_over_stdio(home: Path) -> None:
    paths = _paths(home)
    first, second = _commit(home, priority="now"), _commit(home, type="deploy.done")
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
        log.append([Event("received", datetime.now(UTC), first, None, "ci.failed",
                          {"priority": "now", "source": "producer ci"})])

    async with mcp_session(home) as (session, init):
        assert init.capabilities.experimental is None  # no --channel: not a channel
        listed = await session.list_tools()
        assert {tool.name for tool in listed.tools} == TOOLS

        status = await call(session, "status")
        assert status["identity"] == _identity(home)
        assert status["pending"] == {"now": 1, "next": 1, "later": 0}
        assert status["daemon_running"] is False

        # intents: what the tools write is what load_intents reads back
        assert await call(session, "intents_list") == {"intents": []}
        added = await call(session, "intent_add", intent={
            "id": "ci", "match": {"type": ["ci.*"]}, "policy": {"cooldown": "30m"}})
        assert added["policy"]["cooldown"] == 1800.0
        [intent] = _intents_file(home)["intent"]
        assert intent["id"] == "ci" and intent["policy"]["cooldown"] == "30m"
        await call(session, "intent_pause", id="ci")
        assert _intents_file(home)["intent"][0]["paused"] is True
        resumed = await call(session, "intent_resume", id="ci")
        assert resumed == {"id": "ci", "paused": False, "route_enabled": False}
        assert _intents_file(home)["intent"][0]["paused"] is False
        [row] = (await call(session, "intents_list"))["intents"]
        assert row["id"] == "ci" and row["summary"] == "type=ci.*"
        await call(session, "intent_remove", id="ci")
        assert "intent" not in _intents_file(home)

        # watches
        watch = {"id": "tick-main", "kind": "tick", "session": "main", "every": "30m"}
        assert (await call(session, "watch_add", watch=watch))["every"] == 1800.0
        assert _intents_file(home)["watch"][0]["every"] == "30m"
        await call(session, "watch_pause", id="tick-main")
        [row] = (await call(session, "watches_list"))["watches"]
        assert row["kind"] == "tick" and row["state"] == "paused"
        await call(session, "watch_resume", id="tick-main")
        assert _intents_file(home)["watch"][0]["paused"] is False
        await call(session, "watch_remove", id="tick-main")
        assert "watch" not in _intents_file(home)

        # the inbox: peek, claim, ack by the owner only, nack with a delay
        assert (await call(session, "inbox_next"))["item"]["id"] == first
        claimed = (await call(session, "inbox_next", claim=True, lease="2m", owner="agent-1"))
        assert claimed["item"]["id"] == first and claimed["item"]["claim_owner"] == "agent-1"
        assert (await call(session, "inbox_next"))["item"]["id"] == second  # first is leased
        assert await refused(session, "inbox_ack", id=first) == "claimed_by_other"
        assert await call(session, "inbox_ack", id=first, owner="agent-1") == {
            "id": first, "acked": True}
        await call(session, "inbox_nack", id=second, delay="1h")
        assert await call(session, "inbox_next") == {"item": None}
        with Inbox.open(paths.inbox_file) as inbox:
            acked, nacked = inbox.get(first), inbox.get(second)
        assert acked is not None and acked.state == "acked"
        assert nacked is not None and nacked.state == "pending" and nacked.nacks == 1
        assert nacked.not_before is not None
        assert nacked.not_before > datetime.now(UTC) + timedelta(minutes=59)

        # sleep and activity land where `mailslot sleep` and `mailslot activity` put them
        slept = await call(session, "sleep", duration="20m", reason="waiting for CI",
                           session="main")
        assert slept["seconds"] == 1200.0 and slept["session"] == "main"
        state = WatchState.open(paths.watches_file)
        try:
            sleep = state.active_sleep("main")
            assert sleep is not None and sleep.reason == "waiting for CI"
            assert state.counters()["sleep.entered"] == 1
        finally:
            state.close()
        reported = await call(session, "activity", session="main")
        engine = EngineState.open(paths.engine_file)
        try:
            assert engine.last_activity("main", datetime.now(UTC).timestamp()) is not None
        finally:
            engine.close()
        assert reported["session"] == "main"

        # approvals: the dial (level 1 by default) allows reads, leaves writes to the user
        assert (await call(session, "approve_request", action="repo:read",
                           summary="look"))["status"] == "allowed"
        asked = await call(session, "approve_request", action="repo:write",
                           summary="push a fix", session="main")
        assert asked["status"] == "pending"
        assert (await call(session, "approval_get", id=asked["id"]))["action"] == "repo:write"
        assert await refused(session, "approval_get", id=str(ulid.ULID())) == "unknown_approval"

        # explain: the plain-words trace is the text
        result = await session.call_tool("explain", {"id": first})
        assert not result.is_error
        text = result.content[0]
        assert isinstance(text, types.TextContent)
        assert text.text.startswith(f"interrupt {first} (ci.failed)")
        assert "received ci.failed" in text.text
        assert result.structured_content["trace"] == text.text

        # refusals carry our codes and change nothing
        before = paths.intents_file.read_text()
        assert await refused(session, "intent_add", intent={"id": "x", "polcy": {}}) == (
            "invalid_intent")
        assert await refused(session, "intent_add", intent={"id": "Bad Id"}) == "invalid_intent"
        assert await refused(session, "watch_add", watch={"id": "w", "kind": "timer"}) == (
            "invalid_watch")
        assert await refused(session, "watch_add", watch={
            "id": "w", "kind": "file", "paths": [str(home / "missing" / "*.py")]}) == (
            "invalid_watch")
        assert paths.intents_file.read_text() == before
        assert await refused(session, "intent_pause", id="nope") == "unknown_intent"
        assert await refused(session, "watch_remove", id="nope") == "unknown_watch"
        assert await refused(session, "inbox_ack", id=first) == "not_pending"
        assert await refused(session, "inbox_next", lease=60) == "invalid_arguments"
        assert await refused(session, "inbox_next", claim=True, lease="2d") == (
            "invalid_arguments")
        assert await refused(session, "sleep", duration="20m") == "invalid_arguments"
        assert await refused(session, "sleep", duration="soon", reason="x") == (
            "invalid_arguments")
        assert await refused(session, "activity", session="no spaces") == "invalid_arguments"
        assert await refused(session, "explain", id=str(ulid.ULID())) == "no_record"
        assert await refused(session, "status", verbose=True) == "invalid_arguments"


def _typed(schema: dict[str, Any], defs: dict[str, Any]) -> bool:
    """Whether a generic client can tell what to send for ``schema``: a ``type`` of its
    own, or a reference to / an ``anyOf`` of schemas that have one."""
    if "$ref" in schema:
        return _typed(defs[schema["$ref"].removeprefix("#/$defs/")], defs)
    if "type" in schema:
        return True
    return "anyOf" in schema and all(_typed(option, defs) for option in schema["anyOf"])


async def test_every_tool_has_an_object_schema_generic_clients_handle(home: Path) -> None:
    # The MCP Inspector builds a form from each inputSchema: an untyped argument (a bare
    # oneOf, as watch_add's was) is sent as a string, and the call fails.
    async with mcp_session(home) as (session, _):
        listed = (await session.list_tools()).tools
        assert {tool.name for tool in listed} == TOOLS
        for tool in listed:
            schema = tool.input_schema
            assert schema["type"] == "object", tool.name
            assert isinstance(schema["properties"], dict), tool.name
            jsonschema.Draft202012Validator.check_schema(schema)
            defs = schema.get("$defs", {})
            for name, prop in schema["properties"].items():
                assert _typed(prop, defs), (tool.name, name, prop)
            assert "discriminator" not in json.dumps(schema), tool.name
        schemas = {tool.name: tool.input_schema for tool in listed}

        # What an agent sends validates; the string the Inspector used to send does not,
        # and the server refuses it as bad arguments.
        watch = {"id": "tick-main", "kind": "tick", "session": "main", "every": "30m"}
        validate = jsonschema.Draft202012Validator(schemas["watch_add"]).is_valid
        assert validate({"watch": watch})
        assert not validate({"watch": json.dumps(watch)})
        assert not validate({"watch": {**watch, "kind": "nope"}})
        assert await refused(session, "watch_add", watch=json.dumps(watch)) == (
            "invalid_arguments")
        assert (await call(session, "watch_add", watch=watch))["id"] == "tick-main"
        intent = {"id": "ci", "match": {"type": ["ci.*"]}, "policy": {"cooldown": "30m"}}
        assert jsonschema.Draft202012Validator(schemas["intent_add"]).is_valid(
            {"intent": intent})
        assert jsonschema.Draft202012Validator(schemas["inbox_nack"]).is_valid(
            {"id": str(ulid.ULID()), "delay": "15m"})


async def test_tools_on_a_machine_without_an_edge(tmp_path: Path) -> None:
    async with mcp_session(tmp_path / "empty") as (session, _):
        assert await refused(session, "status") == "config_error"
        assert await refused(session, "inbox_next") == "not_initialized"
        assert await refused(session, "sleep", duration=600, reason="x") == "not_initialized"
        assert await call(session, "intents_list") == {"intents": []}


class ChannelEvent(BaseModel):
    content: str
    meta: dict[str, str]


def _enqueue(home: Path, interrupt: str, session: str) -> int:
    """Queue a wake for the ``mcp`` route, as the engine does when it wakes an intent."""
    now = datetime.now(UTC)
    queue = DeliveryQueue.open(_paths(home).engine_file)
    try:
        return queue.enqueue(
            wake=1, intent="ci", route={"kind": "mcp"}, session=session,
            interrupts=[interrupt], permissions={"intent": "ci", "actions": ["ci:rerun"]},
            wake_doc={"wake": {"intent": "ci", "description": "CI on main", "session": session,
                               "priority": "now", "events": 1, "at": now.isoformat()},
                      "interrupts": [{"id": interrupt, "type": "ci.failed", "priority": "now",
                                      "source": {"kind": "producer", "name": "ci"},
                                      "payload": {"run": 812}}],
                      "permissions": {"intent": "ci", "actions": ["ci:rerun"]}},
            at=now.timestamp(),
        )
    finally:
        queue.close()


def _delivery_rows(home: Path, status: str) -> list[Delivery]:
    queue = DeliveryQueue.open(_paths(home).engine_file)
    try:
        return queue.rows(status)
    finally:
        queue.close()


async def test_channel_pushes_wakes_routed_to_mcp(home: Path) -> None:
    before = _enqueue(home, "01JDQ8Z9X4AAAAAAAAAAAAAAAA", "main")  # queued while no session
    events: asyncio.Queue[ChannelEvent] = asyncio.Queue()
    binding = NotificationBinding(method="notifications/claude/channel",
                                  params_type=ChannelEvent, handler=events.put)

    async with mcp_session(home, "--channel", bindings=[binding]) as (session, init):
        assert init.capabilities.experimental == {"claude/channel": {},
                                                  "claude/channel/permission": {}}
        first = await asyncio.wait_for(events.get(), 30)
        (queued,) = [r for r in _delivery_rows(home, "done") + _delivery_rows(home, "claimed")
                     if r.seq == before]
        assert first.meta == {"interrupt": "01JDQ8Z9X4AAAAAAAAAAAAAAAA", "intent": "ci",
                              "type": "ci.failed", "session": "main", "delivery": queued.key}
        assert "intent ci (CI on main)" in first.content
        assert "Permitted actions: ci:rerun" in first.content
        assert '"run": 812' in first.content

        after = _enqueue(home, "01JDQ8Z9X4BBBBBBBBBBBBBBBB", "")  # arrives while connected
        second = await asyncio.wait_for(events.get(), 30)
        assert second.meta["interrupt"] == "01JDQ8Z9X4BBBBBBBBBBBBBBBB"
        assert second.meta["session"] == ""
        assert (await session.list_tools()).tools  # the tools still answer meanwhile

    done = {row.seq: row for row in _delivery_rows(home, "done")}
    assert set(done) == {before, after}
    assert _delivery_rows(home, "pending") == [] and _delivery_rows(home, "claimed") == []
    paths = _paths(home)
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
        delivered = [e for e in log.trace("01JDQ8Z9X4AAAAAAAAAAAAAAAA") if e.step == "delivered"]
    assert [e.detail["route"] for e in delivered] == ["mcp"]


async def test_without_channel_mcp_wakes_stay_queued(home: Path) -> None:
    seq = _enqueue(home, "01JDQ8Z9X4CCCCCCCCCCCCCCCC", "main")
    async with mcp_session(home) as (session, _):
        await call(session, "status")
    assert [row.seq for row in _delivery_rows(home, "pending")] == [seq]


_DYING_CLAIMER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from edge.store.deliveries import DeliveryQueue
from edge.store.instances import Instance
instance = Instance.start(Path(sys.argv[1]), "channel-that-dies")
queue = DeliveryQueue.open(sys.argv[2])
print(len(queue.claim("mcp", instance, 3600, datetime.now(UTC))), flush=True)
sys.stdin.read()  # holds the claim (an hour's lease) until killed
"""


async def test_a_wake_held_by_a_channel_that_died_is_pushed_at_once(home: Path) -> None:
    """A claimer of mcp wakes killed -9 while holding one: the next channel takes it back
    as it starts (not after the lease) and pushes it, with the same delivery key."""
    import subprocess

    from tests_support import wait_until

    seq = _enqueue(home, "01JDQ8Z9X4DDDDDDDDDDDDDDDD", "main")
    paths = _paths(home)
    with subprocess.Popen(
        [sys.executable, "-c", _DYING_CLAIMER, str(paths.instances_dir), str(paths.engine_file)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as dying:
        assert dying.stdout is not None and dying.stdout.readline().strip() == "1"
        dying.kill()
        dying.wait(10)
    (held,) = _delivery_rows(home, "claimed")
    events: asyncio.Queue[ChannelEvent] = asyncio.Queue()
    binding = NotificationBinding(method="notifications/claude/channel",
                                  params_type=ChannelEvent, handler=events.put)
    async with mcp_session(home, "--channel", bindings=[binding]):
        event = await asyncio.wait_for(events.get(), 30)
        await wait_until(lambda: _delivery_rows(home, "done"), 10, "the push recorded")
    assert event.meta["delivery"] == held.key
    assert event.meta["interrupt"] == "01JDQ8Z9X4DDDDDDDDDDDDDDDD"
    (done,) = _delivery_rows(home, "done")
    assert (done.seq, done.attempts, done.key) == (seq, 2, held.key)
