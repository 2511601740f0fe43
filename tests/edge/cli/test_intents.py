"""``mailslot intent ...`` through the real CLI, in real subprocesses."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from tests_support import json_out, mailslot

from edge.cli.intents import add_intent_commands, intent_from_args
from edge.errors import InvalidIntent
from edge.intents.file import load_intents
from edge.intents.model import ActiveHours, Intent, Judge, Match, Policy
from shared.match import Predicate


def intents_file(home: Path) -> Path:
    return home / "config" / "intents.toml"


def test_add_list_show_pause_resume_rm(tmp_path: Path) -> None:
    added = json_out(mailslot(
        tmp_path, "intent", "add", "ci-failures", "--json",
        "--description", "CI failed on main",
        "--type", "ci.failed", "--type", "ci.error*",
        "--source-kind", "producer", "--priority", "now", "--priority", "next",
        "--where", "payload.branch eq main", "--where", "payload.attempt ge 2",
        "--where", 'payload.tags in ["a", "b"]', "--where", "payload.note absent",
        "--judge", "python3 'my judge.py' --strict", "--judge-timeout", "5s",
        "--judge-on-failure", "wake",
        "--cooldown", "30m", "--max-reminders", "3", "--suppress-when-active",
        "--coalesce", "5m", "--dedupe", "1h",
        "--active-hours", "08:00-22:00", "--timezone", "Europe/Berlin",
        "--grant", "repo:read", "--grant", "ci:rerun",
    ))
    expected = Intent(
        id="ci-failures",
        description="CI failed on main",
        match=Match(
            type=["ci.failed", "ci.error*"], source_kind=["producer"], priority=["now", "next"],
            all=[
                Predicate(field="payload.branch", op="eq", value="main"),
                Predicate(field="payload.attempt", op="ge", value=2),
                Predicate(field="payload.tags", op="in", value=["a", "b"]),
                Predicate(field="payload.note", op="absent"),
            ],
        ),
        judge=Judge(command=["python3", "my judge.py", "--strict"], timeout=5, on_failure="wake"),
        policy=Policy(
            cooldown=1800, max_reminders=3, suppress_when_active=True, coalesce=300,
            dedupe=3600,
            active_hours=ActiveHours(start="08:00", end="22:00", timezone="Europe/Berlin"),
        ),
        grant=["repo:read", "ci:rerun"],
    )
    assert added == expected.model_dump(mode="json")
    path = intents_file(tmp_path)
    assert load_intents(path).intents == [expected]
    assert 'cooldown = "30m"' in path.read_text()

    # a second intent, added to a file the user has commented by hand
    path.write_text("# keep me\n" + path.read_text())
    assert mailslot(tmp_path, "intent", "add", "pages", "--type", "page.*", "--critical").returncode == 0

    listed = json_out(mailslot(tmp_path, "intent", "list", "--json"))
    assert [(r["id"], r["paused"], r["critical"], r["route"]) for r in listed] == [
        ("ci-failures", False, False, "record"), ("pages", False, True, "record"),
    ]
    assert listed[0]["summary"].startswith("type=ci.failed,ci.error* source_kind=producer")
    assert "[payload.branch eq 'main']" in listed[0]["summary"]
    text = mailslot(tmp_path, "intent", "list").stdout
    assert "pages" in text and "critical" in text and "type=page.*" in text

    shown = json_out(mailslot(tmp_path, "intent", "show", "ci-failures", "--json"))
    assert shown == expected.model_dump(mode="json")
    assert '[intent.policy]\ndedupe = "1h"' in mailslot(tmp_path, "intent", "show", "ci-failures").stdout

    assert json_out(mailslot(tmp_path, "intent", "pause", "pages", "--json")) == {
        "id": "pages", "paused": True,
    }
    assert load_intents(path).get("pages").paused  # type: ignore[union-attr]
    assert json_out(mailslot(tmp_path, "intent", "list", "--json"))[1]["paused"] is True
    assert mailslot(tmp_path, "intent", "resume", "pages").stdout.strip() == "resumed pages"
    assert not load_intents(path).get("pages").paused  # type: ignore[union-attr]

    assert json_out(mailslot(tmp_path, "intent", "rm", "ci-failures", "--json")) == {
        "removed": "ci-failures"
    }
    assert [i.id for i in load_intents(path).intents] == ["pages"]
    assert path.read_text().startswith("# keep me\n")


def test_unknown_ids_exit_1_with_a_code(tmp_path: Path) -> None:
    for verb in ("rm", "pause", "resume", "show"):
        result = mailslot(tmp_path, "intent", verb, "nobody", "--json")
        assert result.returncode == 1, verb
        assert json.loads(result.stdout)["error"] == "unknown_intent"
    result = mailslot(tmp_path, "intent", "rm", "nobody")
    assert result.returncode == 1
    assert result.stderr.startswith("mailslot: unknown_intent: no intent 'nobody' in ")


def parse_add(*argv: str) -> argparse.Namespace:
    """``intent add`` options parsed as the real CLI parses them, without a process."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()

    def command(name: str, handler: Any, help: str, parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help)
        p.set_defaults(handler=handler)
        p.add_argument("--json", action="store_true")
        return p

    add_intent_commands(sub, command)
    return parser.parse_args(["intent", "add", "x", *argv])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--cooldown", "soon"], "--cooldown: 'soon' is not a duration"),
        (["--max-reminders", "-1"], "--max-reminders: Input should be greater than or equal to 0"),
        (["--where", "payload.x regex (a"], "--where: bad regular expression '(a'"),
        (["--where", "payload.x like a"], "expected 'FIELD OP VALUE' with OP one of eq, ne,"),
        (["--where", "payload.x gt"], "--where 'payload.x gt': gt needs a value"),
        (["--where", "payload.x present 1"], "present takes no value"),
        (["--where", "payload.x gt ten"], "--where: op gt needs a number value"),
        (["--active-hours", "8-22"], "--active-hours: '8' is not a time of day HH:MM"),
        (["--active-hours", "0800"], "--active-hours '0800': expected HH:MM-HH:MM"),
        (["--active-hours", "08:00-22:00", "--timezone", "Mars/Base"], "--timezone: unknown time zone"),
        (["--timezone", "UTC"], "--timezone needs --active-hours"),
        (["--priority", "urgent"], "--priority: Input should be 'now', 'next' or 'later'"),
        (["--judge", "j", "--judge-on-failure", "panic"], "--judge-on-failure: Input should be"),
        (["--judge-timeout", "5s"], "--judge-timeout and --judge-on-failure need --judge"),
        (["--judge", ""], "--judge: List should have at least 1 item"),
        (["--grant", "a b"], "--grant: String should match pattern"),
    ],
)
def test_invalid_options_name_the_option(options: list[str], message: str) -> None:
    with pytest.raises(InvalidIntent) as caught:
        intent_from_args(parse_add(*options))
    assert caught.value.code == "invalid_intent"
    assert message in caught.value.message


def test_invalid_input_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    result = mailslot(tmp_path, "intent", "add", "x", "--json", "--cooldown", "soon")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "error": "invalid_intent",
        "message": "--cooldown: 'soon' is not a duration (e.g. 90, '90s', '15m', '2h', '1d')",
    }
    result = mailslot(tmp_path, "intent", "add", "Bad Id")
    assert result.returncode == 1
    assert "mailslot: invalid_intent: ID: intent id 'Bad Id' is not allowed" in result.stderr
    assert not intents_file(tmp_path).exists()

    assert mailslot(tmp_path, "intent", "add", "x").returncode == 0
    before = intents_file(tmp_path).read_text()
    result = mailslot(tmp_path, "intent", "add", "x", "--json", "--critical")
    assert (result.returncode, json.loads(result.stdout)["error"]) == (1, "duplicate_intent")
    assert intents_file(tmp_path).read_text() == before


def test_a_broken_file_is_reported_with_its_line(tmp_path: Path) -> None:
    path = intents_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('[[intent]]\nid = "a"\n[intent.policy]\ncooldown = "often"\n')
    result = mailslot(tmp_path, "intent", "list", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "error": "intent_file_error",
        "message": f"{path}:4: intent 'a': policy.cooldown: 'often' is not a duration "
        "(e.g. 90, '90s', '15m', '2h', '1d')",
    }
