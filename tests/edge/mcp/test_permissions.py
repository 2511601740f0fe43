"""Claude Code's permission relay (``edge.mcp.permissions``) as Claude Code drives it: the
official MCP client starts a real ``mailslot mcp --channel --session s1`` over stdio, on
a real enrolled edge with a real daemon running (a real relay and nats-server), and sends
``notifications/claude/channel/permission_request`` the way Claude Code does.

The SDK's typed client API cannot send a notification outside the MCP spec
(``ClientSession.send_notification`` takes only ``types.ClientNotification``, a closed
union), so the request is written as a raw JSON-RPC notification on the session's write
stream; the answers (``notifications/claude/channel/permission``) are read through the
SDK's ``NotificationBinding``."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.extension import NotificationBinding
from mcp.shared.message import SessionMessage
from mcp.types import JSONRPCNotification
from pydantic import BaseModel
from tests_support import REPO, json_out, mailslot, running_edge, wait_until

from edge.config import EdgePaths
from edge.store.activity import ActivityLog
from edge.store.approvals import Approval, ApprovalStore

REQUEST = "notifications/claude/channel/permission_request"
ANSWER = "notifications/claude/channel/permission"
#: How long an answer may take on a loaded machine (it takes milliseconds).
WITHIN = 20.0

DIAL = """\
# approval.pending goes where the user is: here, an intent that wakes (records) "phone"
[[intent]]
id = "phone"
[intent.match]
type = "approval.pending"

[approvals]
level = {level}
expires = "{expires}"
read_only = ["*:read", "claude:WebSearch"]
rules = [
  {{ pattern = "claude:Bash:rm:*", decision = "deny" }},
  {{ pattern = "claude:Bash:npm:test", decision = "allow" }},
]
"""


class Answer(BaseModel):
    request_id: str
    behavior: str


class Claude:
    """One Claude Code session as far as permissions go: send a prompt, read the answer."""

    def __init__(self, write: Any, answers: asyncio.Queue[Answer]) -> None:
        self.write = write
        self.answers = answers

    async def ask(self, params: dict[str, Any]) -> None:
        await self.write.send(SessionMessage(JSONRPCNotification(
            jsonrpc="2.0", method=REQUEST, params=params)))

    async def answer(self) -> Answer:
        return await asyncio.wait_for(self.answers.get(), WITHIN)


def prompt(request_id: str, tool: str, **tool_input: str) -> dict[str, Any]:
    return {"request_id": request_id, "tool_name": tool,
            "description": f"{tool} something", "input_preview": json.dumps(tool_input)}


@asynccontextmanager
async def claude_session(home: Path, *args: str) -> AsyncIterator[tuple[ClientSession, Claude]]:
    answers: asyncio.Queue[Answer] = asyncio.Queue()
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "edge", "mcp", "--channel", *args], cwd=REPO,
        env={"MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "DEBUG"},
    )
    binding = NotificationBinding(method=ANSWER, params_type=Answer, handler=answers.put)
    with home.with_name(f"{home.name}.mcp.stderr").open("a") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, notification_bindings=[binding]) as session,
        ):
            init = await asyncio.wait_for(session.initialize(), 30)
            assert init.capabilities.experimental == {
                "claude/channel": {}, "claude/channel/permission": {}}
            yield session, Claude(write, answers)


def rows(paths: EdgePaths) -> list[Approval]:
    """Every approval row as stored (no expiry applied by reading)."""
    store = ApprovalStore.open(paths.engine_file)
    try:
        return store.rows(pending_only=False)
    finally:
        store.close()


def row_for(paths: EdgePaths, request_id: str) -> Approval | None:
    return next((a for a in rows(paths) if (a.permission or {}).get("request_id") == request_id),
                None)


async def pending(paths: EdgePaths, request_id: str) -> Approval:
    found = await wait_until(lambda: (a := row_for(paths, request_id)) and a, WITHIN,
                             f"request {request_id} recorded")
    assert isinstance(found, Approval) and found.status == "pending", found
    return found


async def test_the_dial_or_the_user_answers_claude_codes_permission_prompts(
    make_member: Callable[..., Any],
) -> None:
    member = await make_member()
    home, paths = member.home, member.paths()
    dial = paths.intents_file

    def level(n: int, expires: str = "1h") -> None:
        dial.write_text(DIAL.format(level=n, expires=expires))

    level(0)
    async with running_edge(member), claude_session(home, "--session", "s1") as (session, claude):
        # level 0 asks for everything: no answer until the user approves it
        await claude.ask(prompt("aaaaa", "Bash", command="npm test"))
        asked = await pending(paths, "aaaaa")
        assert (asked.action, asked.session) == ("claude:Bash:npm:test", "s1")
        assert asked.permission is not None and asked.permission["tool_name"] == "Bash"
        listed = json_out(mailslot(home, "approvals", "list", "--json"))
        assert [a["permission"]["request_id"] for a in listed] == ["aaaaa"]
        assert claude.answers.empty()
        approved = mailslot(home, "approvals", "approve", asked.id)
        assert approved.returncode == 0, approved.stderr
        assert await claude.answer() == Answer(request_id="aaaaa", behavior="allow")

        # level 1: read-only actions at once (only claude: patterns allow claude: actions)
        level(1)
        await claude.ask(prompt("bbbbb", "WebSearch", query="mailslot"))
        assert await claude.answer() == Answer(request_id="bbbbb", behavior="allow")
        await claude.ask(prompt("bbbbc", "Bash", command="cat notes read"))  # not '*:read'
        assert (await pending(paths, "bbbbc")).action == "claude:Bash:cat:notes:read"

        # level 2: the rules, at once, both ways
        level(2)
        await claude.ask(prompt("ccccc", "Bash", command="npm test"))
        assert await claude.answer() == Answer(request_id="ccccc", behavior="allow")
        await claude.ask(prompt("ccccd", "Bash", command="rm -rf /"))
        assert await claude.answer() == Answer(request_id="ccccd", behavior="deny")

        # level 3: edits at once, shell commands asked (claude:Bash:* is irreversible);
        # this one the user rejects
        level(3)
        await claude.ask(prompt("ddddd", "Edit", file_path="/home/u/proj/a.py"))
        assert await claude.answer() == Answer(request_id="ddddd", behavior="allow")
        await claude.ask(prompt("dddde", "Bash", command="git push --force"))
        rejected = mailslot(home, "approvals", "reject", (await pending(paths, "dddde")).id)
        assert rejected.returncode == 0, rejected.stderr
        assert await claude.answer() == Answer(request_id="dddde", behavior="deny")

        # one nobody decides: denied when it expires
        level(0, expires="2s")
        await claude.ask(prompt("eeeee", "Bash", command="make deploy"))
        expiring = await pending(paths, "eeeee")
        assert await claude.answer() == Answer(request_id="eeeee", behavior="deny")
        assert (expired := row_for(paths, "eeeee")) is not None
        assert expired.status == "expired" and expired.decided == expiring.expires

        # params that cannot be read: denied if they name a request, else dropped;
        # the session goes on
        await claude.ask({"request_id": "fffff", "tool_name": "rm -rf /"})
        assert await claude.answer() == Answer(request_id="fffff", behavior="deny")
        await claude.ask({"tool_name": "Bash", "input_preview": "{}"})
        await claude.ask({"request_id": ["x"], "description": {"a": 1}})
        await claude.ask({"request_id": "ggggg", "tool_name": "Bash", "input_preview": 5})
        assert await claude.answer() == Answer(request_id="ggggg", behavior="deny")
        assert (await session.list_tools()).tools

        # bbbbc, left pending, is still waiting; nothing else was answered
        assert claude.answers.empty()
        assert (still := row_for(paths, "bbbbc")) is not None and still.status == "pending"

    # every request and every answer is in the activity log
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
        entries = list(log.entries())
    requested = [e.detail["permission"]["request_id"] for e in entries
                 if e.step == "approval_requested" and "permission" in e.detail]
    assert requested == ["aaaaa", "bbbbb", "bbbbc", "ccccc", "ccccd", "ddddd", "dddde",
                         "eeeee", "fffff", "ggggg"]
    answered = {e.detail["answer"]["request_id"]: e.detail["answer"]["behavior"]
                for e in entries if e.step == "approval_decided" and "answer" in e.detail}
    assert answered == {"aaaaa": "allow", "bbbbb": "allow", "ccccc": "allow", "ccccd": "deny",
                        "ddddd": "allow", "dddde": "deny", "eeeee": "deny", "fffff": "deny",
                        "ggggg": "deny"}
    # the pending ones were routed by intents like any approval notice
    woken = [e for e in entries if e.step == "woken" and e.intent == "phone"]
    assert len(woken) >= 1
    # a look at the pending prompts changes nothing on disk, so it does not wake the
    # channel again: a dozen looks in this test (one per change), not one every 50 ms
    looks = home.with_name(f"{home.name}.mcp.stderr").read_text().count("looking at")
    assert 0 < looks < 60, looks
