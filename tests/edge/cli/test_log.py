"""``mailslot log``, ``mailslot log --verify`` and ``mailslot explain`` as a person runs
them: the real CLI in a subprocess, on a real log in a MAILSLOT_HOME."""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests_support import json_out, mailslot

from edge.cli.log import since_time
from edge.config import EdgePaths
from edge.store.activity import ActivityLog, Event
from edge.store.activityline import canonical

T0 = datetime(2026, 11, 25, 14, 3, 7, tzinfo=UTC)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TZ", "UTC")  # the CLI prints local time
    return tmp_path / "home"


def _paths(home: Path) -> EdgePaths:
    return EdgePaths.resolve({"MAILSLOT_HOME": str(home)})


def _fill(home: Path, at: datetime = T0) -> None:
    paths = _paths(home)
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
        log.append([
            Event("received", at, "01A", None, "ci.failed",
                  {"priority": "now", "source": "producer/github"}),
            Event("matched", at, "01A", "ci-failures", "ci.failed"),
            Event("suppressed", at, "01A", "ci-failures", "ci.failed",
                  {"rule": "cooldown", "reason": "last wake 12 min ago, cooldown 30 min"}),
            Event("received", at + timedelta(hours=2), "01B", None, "deploy.done", {}),
            Event("matched", at + timedelta(hours=2), "01B", "deploys", "deploy.done"),
            Event("woken", at + timedelta(hours=2), "01B", "deploys", None, {"route": "record"}),
        ])


def test_log_lists_entries_and_filters(home: Path) -> None:
    _fill(home)
    every = json_out(mailslot(home, "log", "--json"))
    assert [e["seq"] for e in every] == [1, 2, 3, 4, 5, 6]
    assert every[2]["detail"]["rule"] == "cooldown" and every[2]["at"] == "2026-11-25T14:03:07.000000Z"
    assert [e["seq"] for e in json_out(mailslot(home, "log", "--intent", "deploys", "--json"))] == [5, 6]
    assert [e["seq"] for e in json_out(mailslot(home, "log", "--type", "ci.failed", "--json"))] == [1, 2, 3]
    assert [e["seq"] for e in json_out(mailslot(home, "log", "--interrupt", "01B", "--limit", "2",
                                                "--json"))] == [5, 6]
    since = json_out(mailslot(home, "log", "--since", "2026-11-25T15:00:00+00:00", "--json"))
    assert [e["seq"] for e in since] == [4, 5, 6]


def test_log_text_has_one_line_per_entry(home: Path) -> None:
    _fill(home)
    result = mailslot(home, "log", "--type", "ci.failed")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "2026-11-25 14:03:07  received    -  01A  priority=now source=producer/github",
        "2026-11-25 14:03:07  matched     ci-failures  01A",
        "2026-11-25 14:03:07  suppressed  ci-failures  01A  cooldown: last wake 12 min ago, cooldown 30 min",
    ]


def test_log_since_a_relative_duration(home: Path) -> None:
    _fill(home, at=datetime.now(UTC) - timedelta(hours=3))  # entries 3 h and 1 h ago
    assert [e["seq"] for e in json_out(mailslot(home, "log", "--since", "2h", "--json"))] == [4, 5, 6]
    assert len(json_out(mailslot(home, "log", "--since", "1d", "--json"))) == 6
    bad = mailslot(home, "log", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "neither an ISO 8601 time nor a duration" in bad.stderr


def test_since_time_parses_durations_and_iso() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert since_time("30m", now) == now - timedelta(minutes=30)
    assert since_time("1d", now) == now - timedelta(days=1)
    assert since_time("2026-11-25T08:00:00Z") == datetime(2026, 11, 25, 8, tzinfo=UTC)
    assert since_time("2026-11-25").utcoffset() is not None  # naive means local time
    with pytest.raises(argparse.ArgumentTypeError):
        since_time("2 fortnights")


def test_verify_exit_codes_before_and_after_tampering(home: Path) -> None:
    _fill(home)
    ok = mailslot(home, "log", "--verify")
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok: 6 entries, chain intact")
    log_file = _paths(home).activity_file
    rows = log_file.read_bytes().split(b"\n")[:-1]
    doc = json.loads(rows[1])
    doc["intent"] = "something-else"
    rows[1] = canonical(doc).encode()
    log_file.write_bytes(b"\n".join(rows[:4]) + b"\n")  # line 2 edited, last two cut
    bad = mailslot(home, "log", "--verify")
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [
        "line 2 (seq 2): MAC mismatch: the entry was edited",
        "line 5 (seq 5): the log ends at seq 4 but the head anchor records seq 6: 2 entries "
        "missing at the end (truncated)",
        "FAILED: log_truncated: 2 problem(s) in 4 entries",
    ]
    report = json.loads(mailslot(home, "log", "--verify", "--json").stdout)
    assert report["ok"] is False and report["count"] == 4
    assert [(p["line"], p["seq"], p["code"]) for p in report["problems"]] == [
        (2, 2, "entry_edited"), (5, 5, "log_truncated")]
    assert report["code"] == "log_truncated"


def test_verify_takes_no_filters(home: Path) -> None:
    result = mailslot(home, "log", "--verify", "--intent", "x")
    assert result.returncode == 2 and "takes no filters" in result.stderr


def test_explain_prints_the_trace(home: Path) -> None:
    _fill(home)
    result = mailslot(home, "explain", "01A")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "interrupt 01A (ci.failed), 2026-11-25, times in UTC:",
        "14:03:07 received ci.failed (now) from producer github",
        "14:03:07 matched intent ci-failures",
        "14:03:07 suppressed by intent ci-failures: cooldown (last wake 12 min ago, cooldown 30 min)",
    ]
    entries = json_out(mailslot(home, "explain", "01A", "--json"))
    assert [e["step"] for e in entries] == ["received", "matched", "suppressed"]
    missing = mailslot(home, "explain", "01NOPE")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.strip() == (
        "mailslot: no_record: no record of interrupt 01NOPE in the activity log")
    as_json = mailslot(home, "explain", "01NOPE", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {
        "error": "no_record", "message": "no record of interrupt 01NOPE in the activity log"}


def test_no_log_yet_reads_as_empty_and_creates_nothing(home: Path) -> None:
    assert json_out(mailslot(home, "log", "--json")) == []
    assert mailslot(home, "log").stdout.strip() == "(no entries)"
    assert mailslot(home, "log", "--verify").stdout.strip() == "ok: 0 entries, chain intact"
    assert not home.exists()


def test_unsafe_key_file_is_an_error_with_its_code(home: Path) -> None:
    _fill(home)
    key_file = _paths(home).activity_key_file
    os.chmod(key_file, 0o644)
    result = mailslot(home, "log")
    assert result.returncode == 1
    assert result.stderr.startswith("mailslot: key_file_error: ")
    assert f"chmod 600 {key_file}" in result.stderr
    as_json = json.loads(mailslot(home, "log", "--verify", "--json").stdout)
    assert as_json["error"] == "key_file_error"


def test_missing_key_is_an_activity_log_error(home: Path) -> None:
    _fill(home)
    _paths(home).activity_key_file.unlink()
    result = mailslot(home, "explain", "01A")
    assert result.returncode == 1
    assert result.stderr.startswith("mailslot: activity_log_error: ")
