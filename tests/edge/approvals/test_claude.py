"""Claude Code permission prompts as actions (``edge.approvals.claude``): what a request's
params must hold, and how tool and input become an action the dial can judge — exactly,
or as a wildcard when the input does not say exactly what would run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.approvals.claude import (
    DESCRIPTION_MAX,
    PREVIEW_MAX,
    claude_action,
    parse_permission_request,
    summary,
)
from edge.errors import IntentFileError, InvalidPermissionRequest
from edge.intents.approvalrules import ACTION_RE, ClaudeActions
from edge.intents.file import parse_intents

DEFAULT = ClaudeActions()
FILE = Path("intents.toml")


def _bash(command: str, **more: str) -> str:
    return json.dumps({"command": command, **more})


@pytest.mark.parametrize(("tool", "preview", "action"), [
    ("Bash", _bash("npm test", description="Run the tests"), "claude:Bash:npm:test"),
    ("Bash", _bash("  git   status --short "), "claude:Bash:git:status:--short"),
    ("Bash", _bash("python3 -m pytest tests/x_test.py"),
     "claude:Bash:python3:-m:pytest:tests/x_test.py"),
    ("Edit", json.dumps({"file_path": "/home/u/proj/src/app.py", "old_string": "a"}),
     "claude:Edit:/home/u/proj/src/app.py"),
    ("Write", json.dumps({"file_path": "/home/u/proj/../.ssh/authorized_keys"}),
     "claude:Write:/home/u/.ssh/authorized_keys"),  # `..` taken out before any rule sees it
    ("Write", json.dumps({"file_path": "//etc/./passwd"}), "claude:Write:/etc/passwd"),
    ("WebFetch", json.dumps({"url": "https://example.com"}), "claude:WebFetch"),
    ("mcp__github__create_issue", "{}", "claude:mcp__github__create_issue"),
    # what a shell reads differently from its words: "some command"
    ("Bash", _bash("git status && rm -rf ~"), "claude:Bash:*"),
    ("Bash", _bash("echo hi\nrm -rf /"), "claude:Bash:*"),
    ("Bash", _bash("echo hi\trm"), "claude:Bash:*"),
    ("Bash", _bash("ls $HOME"), "claude:Bash:*"),
    ("Bash", _bash("ls *.py"), "claude:Bash:*"),
    ("Bash", _bash("FOO=1 make"), "claude:Bash:*"),
    ("Bash", _bash("git push origin HEAD:main"), "claude:Bash:*"),  # ':' would be ambiguous
    ("Bash", _bash("   "), "claude:Bash:*"),
    ("Bash", _bash("rm 'a b'"), "claude:Bash:*"),
    ("Bash", '{"command": "npm run build -- --very-long-flag', "claude:Bash:*"),  # cut: not JSON
    ("Bash", json.dumps({"command": ["npm", "test"]}), "claude:Bash:*"),
    ("Bash", json.dumps({"cmd": "npm test"}), "claude:Bash:*"),
    ("Bash", "[1, 2]", "claude:Bash:*"),
    ("Edit", json.dumps({"file_path": "src/app.py"}), "claude:Edit:*"),  # relative
    ("Edit", json.dumps({"file_path": "/tmp/a b.txt"}), "claude:Edit:*"),
    ("Edit", json.dumps({"file_path": "/tmp/x:read"}), "claude:Edit:*"),
    ("Edit", json.dumps({"file_path": "/tmp/*"}), "claude:Edit:*"),
])
def test_tool_and_input_become_an_action(tool: str, preview: str, action: str) -> None:
    assert claude_action(DEFAULT, tool, preview) == action
    assert ACTION_RE.fullmatch(action)


def test_a_long_action_is_cut_to_a_wildcard() -> None:
    words = " ".join(["arg"] * 60)
    action = claude_action(DEFAULT, "Bash", _bash(f"echo {words}"))
    assert len(action) == 128 and action.endswith("*") and action.startswith("claude:Bash:echo:")
    assert ACTION_RE.fullmatch(action)


def test_the_mapping_is_configurable_in_intents_toml() -> None:
    settings = parse_intents("""
[approvals.claude]
commands = { Bash = "command", Shell = "script" }
paths = { NotebookEdit = "notebook_path" }
""", FILE).approvals
    mapping = settings.claude
    assert claude_action(mapping, "Shell", json.dumps({"script": "make all"})) == (
        "claude:Shell:make:all")
    assert claude_action(mapping, "NotebookEdit", json.dumps(
        {"notebook_path": "/n/a.ipynb"})) == "claude:NotebookEdit:/n/a.ipynb"
    # a tool no longer listed is named alone
    assert claude_action(mapping, "Edit", json.dumps({"file_path": "/x"})) == "claude:Edit"
    assert "claude:Bash:*" in settings.irreversible


@pytest.mark.parametrize("text", [
    '[approvals.claude]\ncommands = { Edit = "file_path" }\npaths = { Edit = "file_path" }\n',
    '[approvals.claude]\ncommands = { "Ba sh" = "command" }\n',
    '[approvals.claude]\npaths = { Edit = 3 }\n',
    '[approvals.claude]\nshell = { Bash = "command" }\n',
])
def test_a_bad_mapping_is_refused(text: str) -> None:
    with pytest.raises(IntentFileError):
        parse_intents(text, FILE)


def test_a_request_is_read_checked_and_cut() -> None:
    request = parse_permission_request({
        "request_id": "abcde", "tool_name": "Bash", "description": "x" * 5000,
        "input_preview": "\ud800" + "y" * 5000, "extra": {"ignored": True}})
    assert (request.request_id, request.tool_name) == ("abcde", "Bash")
    assert len(request.description) == DESCRIPTION_MAX
    assert len(request.input_preview) == PREVIEW_MAX
    assert request.input_preview.startswith("?")  # a lone surrogate cannot be stored
    request.input_preview.encode("utf-8")
    assert summary(request).startswith("Claude Code asks to use Bash: xxx")
    bare = parse_permission_request({"request_id": "fghij", "tool_name": "Read"})
    assert (bare.description, bare.input_preview) == ("", "")
    assert summary(bare) == "Claude Code asks to use Read"


@pytest.mark.parametrize(("params", "request_id"), [
    ([], None),
    ("abcde", None),
    ({}, None),
    ({"request_id": 5, "tool_name": "Bash"}, None),
    ({"request_id": "", "tool_name": "Bash"}, None),
    ({"request_id": "a b", "tool_name": "Bash"}, None),
    ({"request_id": "x" * 65, "tool_name": "Bash"}, None),
    ({"request_id": "abcde"}, "abcde"),
    ({"request_id": "abcde", "tool_name": "rm -rf"}, "abcde"),
    ({"request_id": "abcde", "tool_name": "Bash", "description": 3}, "abcde"),
    ({"request_id": "abcde", "tool_name": "Bash", "input_preview": {"command": "ls"}}, "abcde"),
])
def test_unreadable_params_are_refused_with_what_can_be_answered(
    params: object, request_id: str | None
) -> None:
    with pytest.raises(InvalidPermissionRequest) as caught:
        parse_permission_request(params)
    assert caught.value.request_id == request_id
    assert caught.value.code == "invalid_permission_request"
