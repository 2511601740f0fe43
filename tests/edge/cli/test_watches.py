"""``mailslot watch ...`` through the real CLI, in real subprocesses, on real files and
a real watch-state database."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests_support import json_out, mailslot

from edge.cli.watches import add_watch_commands, watch_from_args
from edge.config import EdgePaths
from edge.errors import InvalidWatch
from edge.intents.declarations import (
    AbsenceWatch,
    CommandWatch,
    FileWatch,
    Schedule,
    TickWatch,
    TimerWatch,
)
from edge.intents.file import load_intents
from edge.intents.model import Match
from edge.store.watchstate import WatchState
from shared.envelope import Priority
from shared.match import Predicate


def intents_file(home: Path) -> Path:
    return home / "config" / "intents.toml"


def test_add_every_kind_list_pause_resume_rm(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    added = [
        json_out(mailslot(
            tmp_path, "watch", "add", "src", "--kind", "file", "--json",
            "--description", "python sources", "--path", f"{project}/**/*.py",
            "--path", str(project / "README.md"), "--ignore", "build", "--no-default-ignores",
            "--change", "created", "--change", "modified", "--debounce", "500ms",
            "--include-content", "--content-max", "2048", "--session", "main",
        )),
        json_out(mailslot(
            tmp_path, "watch", "add", "disk", "--kind", "command", "--json",
            "--argv", "df --output=pcent /", "--every", "5m", "--jitter", "30s",
            "--timeout", "10s", "--where", "output.pct gt 90", "--output-max", "512",
            "--cwd", str(tmp_path), "--priority", "now",
        )),
        json_out(mailslot(
            tmp_path, "watch", "add", "standup", "--kind", "timer", "--json",
            "--cron", "0 9 * * 1-5", "--timezone", "Europe/Berlin", "--catch-up", "skip",
            "--type", "timer.standup",
        )),
        json_out(mailslot(
            tmp_path, "watch", "add", "backup-missing", "--kind", "absence", "--json",
            "--match-type", "backup.done", "--match-source-kind", "producer",
            "--where", "payload.ok eq true", "--within", "26h",
        )),
        json_out(mailslot(
            tmp_path, "watch", "add", "tick-main", "--kind", "tick", "--json", "--paused",
            "--session", "main", "--every", "30m", "--jitter-pct", "15", "--max-idle", "4h",
            "--daily-budget", "20", "--cache-aware",
        )),
    ]
    expected = [
        FileWatch(
            id="src", kind="file", description="python sources", session="main",
            paths=[f"{project}/**/*.py", str(project / "README.md")], ignore=["build"],
            default_ignores=False, changes=["created", "modified"], debounce=0.5,
            include_content=True, content_max=2048,
        ),
        CommandWatch(
            id="disk", kind="command", priority=Priority.now, argv=["df", "--output=pcent", "/"],
            schedule=Schedule(every=300, jitter=30), timeout=10, fire_on="condition",
            condition=[Predicate(field="output.pct", op="gt", value=90)], output_max=512,
            cwd=str(tmp_path),
        ),
        TimerWatch(
            id="standup", kind="timer", type="timer.standup",
            schedule=Schedule(cron="0 9 * * 1-5", timezone="Europe/Berlin", catch_up="skip"),
        ),
        AbsenceWatch(
            id="backup-missing", kind="absence", within=26 * 3600,
            match=Match(
                type=["backup.done"], source_kind=["producer"],
                all=[Predicate(field="payload.ok", op="eq", value=True)],
            ),
        ),
        TickWatch(
            id="tick-main", kind="tick", paused=True, session="main", every=1800,
            jitter_pct=15, max_idle=4 * 3600, daily_budget=20, cache_aware=True,
        ),
    ]
    assert added == [w.model_dump(mode="json") for w in expected]
    path = intents_file(tmp_path)
    assert load_intents(path).watches == expected
    text = path.read_text()
    assert '[watch.schedule]\ncron = "0 9 * * 1-5"' in text and 'within = "26h"' in text

    # the user comments the file by hand; every later edit keeps it
    path.write_text("# keep me\n" + text.replace('id = "disk"', 'id = "disk"  # df!'))

    listed = json_out(mailslot(tmp_path, "watch", "list", "--json"))
    assert [(r["id"], r["kind"], r["state"], r["last_run"], r["next_run"], r["last_result"])
            for r in listed] == [
        ("src", "file", "active", None, None, None),
        ("disk", "command", "active", None, None, None),
        ("standup", "timer", "active", None, None, None),
        ("backup-missing", "absence", "active", None, None, None),
        ("tick-main", "tick", "paused", None, None, None),
    ]
    assert listed[0]["description"] == "python sources"
    lines = mailslot(tmp_path, "watch", "list").stdout.splitlines()
    assert lines[0].split() == ["ID", "KIND", "STATE", "LAST", "RUN", "NEXT", "RUN", "LAST", "RESULT"]
    assert lines[2].split() == ["disk", "command", "active", "-", "-", "-"]
    assert not EdgePaths(tmp_path / "config", tmp_path / "data").watches_file.exists()

    assert json_out(mailslot(tmp_path, "watch", "pause", "disk", "--json")) == {
        "id": "disk", "paused": True,
    }
    assert load_intents(path).watch("disk") == expected[1].model_copy(update={"paused": True})
    assert json_out(mailslot(tmp_path, "watch", "list", "--json"))[1]["state"] == "paused"
    assert mailslot(tmp_path, "watch", "resume", "tick-main").stdout.strip() == "resumed tick-main"
    assert not load_intents(path).watch("tick-main").paused  # type: ignore[union-attr]

    assert json_out(mailslot(tmp_path, "watch", "rm", "standup", "--json")) == {"removed": "standup"}
    for watch_id in ("src", "backup-missing", "tick-main"):
        assert mailslot(tmp_path, "watch", "rm", watch_id).stdout.strip() == f"removed {watch_id}"
    assert load_intents(path).watches == [expected[1].model_copy(update={"paused": True})]
    assert path.read_text().startswith("# keep me\n")
    assert 'id = "disk"  # df!' in path.read_text()
    assert mailslot(tmp_path, "watch", "rm", "disk").returncode == 0
    assert mailslot(tmp_path, "watch", "list").stdout.strip() == "(no watches)"


def test_list_shows_what_the_daemon_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")  # the text shows local times
    for watch_id in ("a", "b", "c"):
        assert mailslot(tmp_path, "watch", "add", watch_id, "--kind", "timer", "--every", "1h").returncode == 0
    assert mailslot(tmp_path, "watch", "pause", "c").returncode == 0
    state = WatchState.open(EdgePaths(tmp_path / "config", tmp_path / "data").watches_file)
    try:
        state.upsert(
            "a", "timer", last_run=datetime(2026, 1, 5, 8, 0, tzinfo=UTC),
            next_run=datetime(2026, 1, 5, 9, 0, tzinfo=UTC), last_result={"fired": True},
        )
        state.upsert("b", "timer", state="cancelled")
        state.upsert("c", "timer", state="active")  # paused in the file: that wins
        state.upsert("gone", "timer")  # no longer declared: not listed
    finally:
        state.close()
    listed = json_out(mailslot(tmp_path, "watch", "list", "--json"))
    assert listed[0] == {
        "id": "a", "kind": "timer", "state": "active", "description": "",
        "last_run": "2026-01-05T08:00:00+00:00", "next_run": "2026-01-05T09:00:00+00:00",
        "last_result": {"fired": True},
    }
    assert [(r["id"], r["state"]) for r in listed] == [("a", "active"), ("b", "cancelled"), ("c", "paused")]
    text = mailslot(tmp_path, "watch", "list").stdout.splitlines()
    assert text[1].split() == [
        "a", "timer", "active", "2026-01-05T08:00:00+00:00", "2026-01-05T09:00:00+00:00",
        '{"fired":true}',
    ]


def test_unknown_ids_exit_1_with_a_code(tmp_path: Path) -> None:
    for verb in ("rm", "pause", "resume"):
        result = mailslot(tmp_path, "watch", verb, "nobody", "--json")
        assert result.returncode == 1, verb
        assert json.loads(result.stdout)["error"] == "unknown_watch"
    result = mailslot(tmp_path, "watch", "rm", "nobody")
    assert result.returncode == 1
    assert result.stderr.startswith("mailslot: unknown_watch: no watch 'nobody' in ")


def test_refusals_exit_1_and_write_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    for argv, message in [
        (["--kind", "file", "--path", f"{missing}/*.py"],
         f"--path '{missing}/*.py': folder '{missing}' does not exist"),
        (["--kind", "file", "--path", f"{missing}/sub/notes.txt"],
         f"--path '{missing}/sub/notes.txt': folder '{missing}/sub' does not exist"),
        (["--kind", "file", "--path", "relative/notes.txt"],
         "--path 'relative/notes.txt': must be absolute (or start with ~)"),
        (["--kind", "command", "--arg", "true", "--every", "1m", "--cwd", str(missing)],
         f"--cwd '{missing}': not an existing absolute folder"),
        (["--kind", "timer", "--cron", "every day"],
         "--cron: bad cron expression 'every day'"),
        (["--kind", "timer", "--every", "1m", "--path", "/tmp"],
         "--path does not apply to a timer watch"),
        (["--kind", "tick", "--every", "30m"], "--session: Field required"),
    ]:
        result = mailslot(tmp_path, "watch", "add", "w", "--json", *argv)
        assert result.returncode == 1, argv
        error = json.loads(result.stdout)
        assert error["error"] == "invalid_watch", error
        assert error["message"].startswith(message), error
        assert not intents_file(tmp_path).exists()

    (tmp_path / "real").mkdir()
    assert mailslot(tmp_path, "watch", "add", "w", "--kind", "file", "--path", f"{tmp_path}/real/new.txt").returncode == 0
    before = intents_file(tmp_path).read_text()
    result = mailslot(tmp_path, "watch", "add", "w", "--json", "--kind", "timer", "--every", "1m")
    assert (result.returncode, json.loads(result.stdout)["error"]) == (1, "duplicate_watch")
    result = mailslot(tmp_path, "watch", "add", "x", "--kind", "file", "--path", f"{missing}/a")
    assert result.returncode == 1
    assert result.stderr.startswith("mailslot: invalid_watch: --path ")
    assert intents_file(tmp_path).read_text() == before


def test_argv_with_shell_metacharacters_is_stored_verbatim(tmp_path: Path) -> None:
    line = "sh -c 'df -h / | tail -1; echo $HOME' > /dev/null && rm -rf ~ `x` *"
    assert mailslot(tmp_path, "watch", "add", "split", "--kind", "command", "--argv", line, "--every", "1h").returncode == 0
    pieces = ["printf", "%s\n", "$(whoami)", "a;b", "|", "'q' \"qq\"", "*", "~"]
    args = [item for piece in pieces for item in ("--arg", piece)]
    assert mailslot(tmp_path, "watch", "add", "pieces", "--kind", "command", *args, "--every", "1h").returncode == 0
    loaded = load_intents(intents_file(tmp_path))
    assert loaded.watch("split").argv == [  # type: ignore[union-attr]
        "sh", "-c", "df -h / | tail -1; echo $HOME", ">", "/dev/null", "&&", "rm", "-rf", "~",
        "`x`", "*",
    ]
    assert loaded.watch("pieces").argv == pieces  # type: ignore[union-attr]


def parse_add(*argv: str) -> argparse.Namespace:
    """``watch add`` options parsed as the real CLI parses them, without a process."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()

    def command(name: str, handler: Any, help: str, parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help)
        p.set_defaults(handler=handler)
        p.add_argument("--json", action="store_true")
        return p

    add_watch_commands(sub, command)
    return parser.parse_args(["watch", "add", "x", *argv])


def test_fire_on_follows_the_options() -> None:
    base = ("--kind", "command", "--arg", "c", "--every", "1m")
    assert watch_from_args(parse_add(*base)).fire_on == "change"  # type: ignore[union-attr]
    exit_codes = watch_from_args(parse_add(*base, "--exit-code", "2", "--exit-code", "3"))
    assert (exit_codes.fire_on, exit_codes.exit_codes) == ("exit_code", [2, 3])  # type: ignore[union-attr]
    assert watch_from_args(parse_add(*base, "--where", "output.n gt 1")).fire_on == "condition"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--kind", "file"], "--path: Field required"),
        (["--kind", "file", "--path", "/tmp/[x"], "--path: bad glob '/tmp/[x'"),
        (["--kind", "file", "--path", "/tmp", "--change", "renamed"], "--change: Input should be"),
        (["--kind", "file", "--path", "/tmp", "--content-max", "lots"],
         "--content-max: 'lots' is not a whole number"),
        (["--kind", "file", "--path", "/tmp", "--debounce", "-1"], "--debounce: '-1' is not a duration"),
        (["--kind", "file", "--path", "/tmp", "--every", "1m"], "--every does not apply to a file watch"),
        (["--kind", "command", "--every", "1m"], "--argv: Field required"),
        (["--kind", "command", "--argv", "a", "--arg", "b", "--every", "1m"], "give --argv or --arg, not both"),
        (["--kind", "command", "--argv", "a 'b", "--every", "1m"], "--argv \"a 'b\": No closing quotation"),
        (["--kind", "command", "--argv", "", "--every", "1m"], "--argv: List should have at least 1 item"),
        (["--kind", "command", "--arg", "a"], "--every, --cron or --at: Field required"),
        (["--kind", "command", "--arg", "a", "--every", "1m", "--cron", "* * * * *"],
         "--every, --cron or --at: give exactly one of cron, every or at"),
        (["--kind", "command", "--arg", "a", "--every", "0"], "--every: Input should be greater than 0"),
        (["--kind", "command", "--arg", "a", "--every", "1m", "--where", "output.x like 1"],
         "--where 'output.x like 1': expected 'FIELD OP VALUE'"),
        (["--kind", "command", "--arg", "a", "--every", "1m", "--where", "output.x gt 1", "--exit-code", "1"],
         "--where and --exit-code fire on different things: say --fire-on"),
        (["--kind", "command", "--arg", "a", "--every", "1m", "--fire-on", "condition"],
         "fire_on = 'condition' needs a condition"),
        (["--kind", "command", "--arg", "a", "--every", "1m", "--exit-code", "one"],
         "--exit-code: 'one' is not a whole number"),
        (["--kind", "command", "--arg", "a", "--every", "1m", "--output-max", "100000"],
         "--output-max: Input should be less than or equal to"),
        (["--kind", "timer", "--at", "tomorrow"], "--every, --cron or --at: at: 'tomorrow' is not an ISO 8601 time"),
        (["--kind", "timer", "--every", "1h", "--timezone", "Mars/Base"], "--timezone: unknown time zone 'Mars/Base'"),
        (["--kind", "timer", "--every", "1h", "--catch-up", "twice"], "--catch-up: Input should be 'once' or 'skip'"),
        (["--kind", "absence", "--match-type", "x"], "--within: Field required"),
        (["--kind", "absence", "--within", "1h", "--match-priority", "urgent"],
         "--match-priority: Input should be 'now', 'next' or 'later'"),
        (["--kind", "absence", "--within", "1h", "--where", "payload.x regex (a"],
         "--where: bad regular expression '(a'"),
        (["--kind", "absence", "--within", "1h", "--type", "Bad Type"], "--type: "),
        (["--kind", "tick", "--session", "s"], "--every: Field required"),
        (["--kind", "tick", "--session", "s", "--every", "1h", "--jitter-pct", "60"],
         "--jitter-pct: Input should be less than or equal to 50"),
        (["--kind", "tick", "--session", "s", "--every", "1h", "--daily-budget", "-1"],
         "--daily-budget: Input should be greater than or equal to 0"),
        (["--kind", "tick", "--session", "s", "--every", "1h", "--cron", "* * * * *"],
         "--cron does not apply to a tick watch"),
        (["--kind", "timer", "--every", "1h", "--priority", "asap"], "--priority: Input should be"),
    ],
)
def test_invalid_options_name_the_option(options: list[str], message: str) -> None:
    with pytest.raises(InvalidWatch) as caught:
        watch_from_args(parse_add(*options))
    assert caught.value.code == "invalid_watch"
    assert caught.value.message.startswith(message), caught.value.message
