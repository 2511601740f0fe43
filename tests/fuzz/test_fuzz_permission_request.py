"""Claude Code permission requests (``notifications/claude/channel/permission_request``)
with any JSON as params: the relay (``edge.mcp.permissions``) refuses them cleanly (no
answer: nothing names a request) or answers ``deny`` (here every readable request is
denied by a ``claude:*`` deny rule), never raises, never answers anything else, and the
action it names is always one the dial can judge. The relay runs on a real edge home
(SQLite, activity log, inbox); only the MCP session is replaced by a list of answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.approvals.claude import claude_action, parse_permission_request
from edge.config import EdgeConfig, EdgePaths, save_config
from edge.errors import InvalidPermissionRequest
from edge.intents.approvalrules import ACTION_RE, ClaudeActions
from edge.link.keystore import save_identity
from edge.mcp.permissions import PERMISSION_METHOD, PermissionRelay
from edge.store.inbox import Inbox
from fuzz.strategies import any_text, json_values
from shared.identity import Identity

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


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> EdgePaths:
    root = tmp_path_factory.mktemp("permissions")
    paths = EdgePaths(root / "config", root / "data")
    paths.ensure()
    identity = Identity.generate()
    save_identity(paths.key_file, identity)
    save_config(paths, EdgeConfig(relay_url="http://127.0.0.1:9", identity=identity.id,
                                  relay_identity=Identity.generate().public.to_doc()))
    Inbox.open(paths.inbox_file).close()
    paths.intents_file.write_text(
        '[approvals]\nlevel = 2\nrules = [{ pattern = "claude:*", decision = "deny" }]\n')
    return paths


@given(value=params)
def test_any_params_are_refused_or_denied(home: EdgePaths, value: Any) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    async def notify(method: str, answer: dict[str, Any]) -> None:
        sent.append((method, answer))

    relay = PermissionRelay(home, "fuzz", notify)
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
