"""Claude Code permission requests (``notifications/claude/channel/permission_request``)
with any JSON as params: the relay (``edge.mcp.permissions``) refuses them cleanly (no
answer: nothing names a request) or answers ``deny`` (here every readable request is
denied by a ``claude:*`` deny rule), never raises, never answers anything else, and the
action it names is always one the dial can judge. The relay runs on a real edge home
(SQLite, activity log, inbox); only the MCP session is replaced by a list of answers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.approvals.claude import claude_action, parse_permission_request
from edge.config import EdgePaths
from edge.errors import InvalidPermissionRequest
from edge.intents.approvalrules import ACTION_RE, ClaudeActions
from edge.mcp.permissions import PERMISSION_METHOD, PermissionRelay
from fuzz.strategies import any_text, json_values

FIELDS = ["request_id", "tool_name", "description", "input_preview"]
request_ids = st.one_of(st.sampled_from(["abcde", "x", "a" * 64, "a" * 65, "", "a b"]),
                        any_text, json_values)
tools = st.one_of(st.sampled_from(["Bash", "Edit", "Write", "WebFetch", "mcp__x__y", "rm -rf"]),
                  any_text, json_values)
previews = st.one_of(
    st.sampled_from(['{"command": "npm test"}', '{"file_path": "/a/../b"}', '{"command": ',
                     '{"command": "ls\\nrm -rf /"}', "[]", "null"]),
    any_text, json_values)
params = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"request_id": request_ids, "tool_name": tools,
                                        "description": st.one_of(any_text, json_values),
                                        "input_preview": previews}),
    st.dictionaries(st.sampled_from([*FIELDS, "_meta", "x"]), json_values, max_size=5),
)


@pytest.fixture
def paths(enrolled_home: Path) -> EdgePaths:
    """One edge home for every example of a test (hence the health check let through)."""
    paths = EdgePaths.resolve({"MAILSLOT_HOME": str(enrolled_home)})
    paths.intents_file.write_text(
        '[approvals]\nlevel = 2\nrules = [{ pattern = "claude:*", decision = "deny" }]\n')
    return paths


@settings(suppress_health_check=[*settings().suppress_health_check,
                                 HealthCheck.function_scoped_fixture])
@given(value=params)
def test_any_params_are_refused_or_denied(paths: EdgePaths, value: Any) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    async def notify(method: str, answer: dict[str, Any]) -> None:
        sent.append((method, answer))

    relay = PermissionRelay(paths, "fuzz", notify)
    asyncio.run(relay.receive(value))
    try:
        request = parse_permission_request(value)
    except InvalidPermissionRequest as exc:
        named = exc.request_id
    else:
        named = request.request_id
    if named is None:
        assert sent == []
    else:
        assert sent == [(PERMISSION_METHOD, {"request_id": named, "behavior": "deny"})]
    assert relay.waiting == 0


@given(st.one_of(tools, any_text), st.one_of(previews, any_text))
def test_every_request_names_an_action(tool: Any, preview: Any) -> None:
    if not isinstance(tool, str) or not isinstance(preview, str):
        return
    action = claude_action(ClaudeActions(), tool, preview)
    assert ACTION_RE.fullmatch(action) and action.startswith("claude:")
