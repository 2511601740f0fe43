"""The autonomy dial (``edge.approvals.dial``): the pure decision at each level, the
envelope short-circuit, the envelope a runtime reads, and wildcard overlap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.approvals.dial import HeldPermissions, decide, overlaps, read_permissions
from edge.intents.approvalrules import ApprovalSettings, Rule
from edge.intents.model import Intent
from edge.store.deliveries import permission_envelope, write_envelope_file

T0 = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
RULES = [
    Rule(pattern="deploy:prod", decision="deny"),
    Rule(pattern="deploy:*", decision="allow"),
    Rule(pattern="repo:*", decision="ask"),
    Rule(pattern="ci:*", decision="allow"),
]


# -- the dial (pure) --------------------------------------------------------------------


@pytest.mark.parametrize(("level", "action", "decision", "by"), [
    (0, "repo:read", "ask", "level"),
    (0, "deploy:prod", "ask", "level"),
    (1, "repo:read", "allow", "read_only"),
    (1, "issues:list", "allow", "read_only"),
    (1, "read:logs", "allow", "read_only"),
    (1, "repo:write", "ask", "level"),
    (1, "deploy:prod", "ask", "level"),
    (1, "*", "ask", "level"),
    (2, "deploy:prod", "deny", "rule"),
    (2, "deploy:staging", "allow", "rule"),
    (2, "ci:rerun", "allow", "rule"),
    (2, "repo:write", "ask", "rule"),
    (2, "fs:write", "ask", "no_rule"),
    (2, "repo:read", "ask", "rule"),  # at level 2 only the rules count
    (2, "deploy:*", "ask", "rule"),  # part of it is deploy:prod (denied)
    (3, "repo:write", "allow", "level"),
    (3, "ci:rerun", "allow", "level"),
    (3, "deploy:prod", "ask", "irreversible"),
    (3, "repo:delete", "ask", "irreversible"),
    (3, "payment:refund", "ask", "irreversible"),
    (3, "git:force-push", "ask", "irreversible"),
    (3, "*", "ask", "irreversible"),  # a wildcard that could be irreversible
    (3, "repo:*", "ask", "irreversible"),
])
def test_each_level_decides(level: int, action: str, decision: str, by: str) -> None:
    settings = ApprovalSettings(level=level, rules=RULES)
    verdict = decide(settings, action, None, T0)
    assert (verdict.decision, verdict.by, verdict.level) == (decision, by, level), verdict


def test_level_two_first_rule_wins_and_names_it() -> None:
    settings = ApprovalSettings(level=2, rules=[Rule(pattern="*:read", decision="deny"),
                                                Rule(pattern="repo:*", decision="allow")])
    verdict = decide(settings, "repo:read", None, T0)
    assert (verdict.decision, verdict.rule, verdict.pattern) == ("deny", 0, "*:read")
    assert "rule '*:read' says deny" in verdict.reason
    assert decide(settings, "repo:write", None, T0).rule == 1


def test_the_envelope_allows_at_every_level_until_it_expires() -> None:
    held = HeldPermissions(("deploy:*", "ci:rerun"), T0 + timedelta(hours=1), "ci", "/p")
    for level in range(4):
        settings = ApprovalSettings(level=level, rules=RULES)  # level 2 denies deploy:prod
        verdict = decide(settings, "deploy:prod", held, T0)
        assert (verdict.decision, verdict.by, verdict.pattern) == ("allow", "envelope", "deploy:*")
        assert decide(settings, "deploy:prod", held, T0 + timedelta(hours=1)).by != "envelope"
    assert decide(ApprovalSettings(level=0), "repo:write", held, T0).decision == "ask"
    # a wider action than the envelope covers is not covered
    assert decide(ApprovalSettings(level=0), "*", held, T0).decision == "ask"


def test_read_permissions_reads_the_envelope_a_runtime_is_given(tmp_path: Path) -> None:
    intent = Intent(id="ci", grant=["ci:rerun", "repo:*"])
    envelope = permission_envelope(intent, [None], datetime.now(UTC))
    path = write_envelope_file(tmp_path / "permissions", 7, envelope)
    held = read_permissions({"MAILSLOT_PERMISSIONS": str(path)})
    assert held is not None and held.intent == "ci" and held.path == str(path)
    assert held.covering("repo:write", datetime.now(UTC)) == "repo:*"
    assert held.covering("deploy:prod", datetime.now(UTC)) is None
    assert read_permissions({}) is None
    assert read_permissions({"MAILSLOT_PERMISSIONS": str(tmp_path / "missing")}) is None
    (tmp_path / "garbage.json").write_text('{"actions": ["x"]}')
    assert read_permissions({"MAILSLOT_PERMISSIONS": str(tmp_path / "garbage.json")}) is None


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("deploy:prod", "deploy:prod", True),
    ("deploy:prod", "deploy:staging", False),
    ("*", "*:delete", True),
    ("repo:*", "*:delete", True),
    ("repo:*", "deploy:*", False),
    ("a*b", "*c", False),
    ("a*", "*b", True),
    ("x:*:y", "x:*", True),
    ("", "*", True),
])
def test_overlaps(a: str, b: str, expected: bool) -> None:
    assert overlaps(a, b) is expected
    assert overlaps(b, a) is expected


# -- actions of Claude Code permission prompts (claude:…) --------------------------------

CLAUDE_RULES = [
    Rule(pattern="claude:Bash:rm:*", decision="deny"),
    Rule(pattern="*:read", decision="allow"),  # not a claude: pattern: skipped for them
    Rule(pattern="claude:Bash:npm:test", decision="allow"),
    Rule(pattern="claude:Edit:/home/u/proj/*", decision="allow"),
]


@pytest.mark.parametrize(("level", "action", "decision", "by"), [
    (0, "claude:Bash:npm:test", "ask", "level"),
    # the generic read-only patterns do not allow session text that ends in ":read"
    (1, "claude:Bash:rm:-rf:/:read", "ask", "level"),
    (1, "claude:Edit:/x/y:get", "ask", "level"),
    (1, "claude:WebSearch", "allow", "read_only"),  # listed as claude:WebSearch below
    (2, "claude:Bash:npm:test", "allow", "rule"),
    (2, "claude:Bash:rm:-rf:/", "deny", "rule"),
    (2, "claude:Bash:cat:notes:read", "ask", "no_rule"),  # '*:read' allows no claude: action
    (2, "claude:Edit:/home/u/proj/src/a.py", "allow", "rule"),
    (2, "claude:Edit:/home/u/.ssh/config", "ask", "no_rule"),
    (2, "claude:Bash:*", "ask", "rule"),  # some command: could be rm
    (3, "claude:Edit:/home/u/.ssh/config", "allow", "level"),
    (3, "claude:Bash:npm:test", "ask", "irreversible"),  # claude:Bash:* by default
    (3, "claude:Bash:*", "ask", "irreversible"),
])
def test_claude_actions(level: int, action: str, decision: str, by: str) -> None:
    settings = ApprovalSettings(level=level, rules=CLAUDE_RULES,
                                read_only=[*ApprovalSettings().read_only, "claude:WebSearch"])
    verdict = decide(settings, action, None, T0)
    assert (verdict.decision, verdict.by) == (decision, by), verdict


def test_only_a_claude_pattern_in_an_envelope_allows_a_claude_action() -> None:
    held = HeldPermissions(("*", "claude:Bash:git:*"), T0 + timedelta(hours=1))
    assert decide(ApprovalSettings(level=0), "claude:Bash:git:log", held, T0).pattern == (
        "claude:Bash:git:*")
    assert decide(ApprovalSettings(level=0), "claude:Bash:rm:x", held, T0).decision == "ask"
    assert decide(ApprovalSettings(level=0), "repo:write", held, T0).decision == "allow"
