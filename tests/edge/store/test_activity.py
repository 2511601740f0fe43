"""The activity log on real files: the chain and MACs, every kind of tampering found and
located, torn writes after a crash, several writers at once, reading and explaining."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edge.engine.explain import explain
from edge.errors import ActivityLogError, EdgeError, KeyFileError
from edge.store.activity import ActivityLog, Entry, Event, head_file
from edge.store.activityline import STEPS, ZERO_HASH, canonical

T0 = datetime(2026, 11, 25, 14, 3, 7, 250_000, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[3]


def events(n: int, interrupt: str = "01INT", at: datetime = T0) -> list[Event]:
    return [Event(STEPS[i % 3], at + timedelta(seconds=i), interrupt, "ci-failures",
                  "ci.failed", {"n": i}) for i in range(n)]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def write_lines(path: Path, rows: list[bytes]) -> None:
    path.write_bytes(b"".join(row + b"\n" for row in rows))


def report(path: Path, key: Path) -> list[tuple[int | None, int, str]]:
    with ActivityLog.open(path, key) as reopened:
        result = reopened.verify()
    assert result.ok == (not result.problems)
    return [(p.seq, p.line, p.what) for p in result.problems]


# -- the chain ------------------------------------------------------------------------


def test_chain_and_macs_round_trip(log: ActivityLog, paths: tuple[Path, Path]) -> None:
    path, key_file = paths
    written = log.append(events(4))
    written.append(log.record("woken", at=T0, interrupt="01INT", intent="ci-failures",
                              route="record"))
    key = key_file.read_bytes()
    rows = lines(path)
    assert [e.seq for e in written] == [1, 2, 3, 4, 5]
    prev = ZERO_HASH
    for entry, row in zip(written, rows, strict=True):
        assert row == canonical(entry.to_dict()).encode()
        doc = json.loads(row)
        assert doc["prev"] == entry.prev == prev
        body = canonical({k: v for k, v in doc.items() if k != "mac"}).encode()
        assert doc["mac"] == hmac.new(key, body, hashlib.sha256).hexdigest()
        prev = hashlib.sha256(row).hexdigest()
    assert list(log.entries()) == written
    result = log.verify()
    assert (result.ok, result.count, result.problems) == (True, 5, [])
    head = json.loads(head_file(path).read_bytes())
    assert (head["seq"], head["hash"]) == (5, prev)


class _Name(str):
    """A str subclass: only ``canonical`` itself may encode it (the general path)."""


def test_lines_are_canonical_json_for_any_text(log: ActivityLog, paths: tuple[Path, Path]) -> None:
    """Entries are assembled from their fields rather than encoded whole: whatever the
    strings hold (quotes, backslashes, control characters, non-ASCII, nulls), each line
    is still exactly the canonical JSON of its fields, and its MAC covers exactly the
    canonical JSON of the others."""
    path, key_file = paths
    odd = ['quote " and \\ backslash', "tab\tnew\nline\x01\x7f", "été ✓ \u2028 😀", ""]
    batch = [
        Event("received", T0, odd[0], None, odd[1], {"x": odd[2], "n": [1, 2.5, None]}),
        Event("matched", T0 + timedelta(microseconds=1), None, odd[3], None, {}),
        Event("judged", T0.astimezone(timezone(timedelta(hours=5))), odd[2], odd[1], odd[0],
              {odd[0]: {odd[1]: True}}),
        Event("woken", T0, _Name("01INT"), _Name("ci"), _Name("ci.failed"), {"k": _Name("v")}),
    ]
    written = log.append(batch)
    key = key_file.read_bytes()
    for entry, row in zip(written, lines(path), strict=True):
        assert row == canonical(entry.to_dict()).encode()
        doc = json.loads(row)
        body = canonical({k: v for k, v in doc.items() if k != "mac"}).encode()
        assert doc["mac"] == hmac.new(key, body, hashlib.sha256).hexdigest()
    assert log.verify().ok
    assert [e.event for e in log.entries()] == [
        Event(e.step, e.at.astimezone(UTC), e.interrupt, e.intent, e.type, e.detail)
        for e in batch
    ]


def test_reopened_log_continues_the_chain(paths: tuple[Path, Path]) -> None:
    with ActivityLog.open(*paths) as first:
        first.append(events(3))
    last = lines(paths[0])[-1]
    with ActivityLog.open(*paths) as second:
        entry = second.record("outcome", at=T0, interrupt="01INT", outcome="ok")
        assert (entry.seq, entry.prev) == (4, hashlib.sha256(last).hexdigest())
        assert second.verify().ok


def test_time_is_stored_as_utc_with_microseconds(log: ActivityLog, paths: tuple[Path, Path]) -> None:
    berlin = timezone(timedelta(hours=1))
    entry = log.record("received", at=datetime(2026, 11, 25, 15, 3, 7, 5, tzinfo=berlin))
    assert json.loads(lines(paths[0])[0])["at"] == "2026-11-25T14:03:07.000005Z"
    assert entry.at == next(log.entries()).at == datetime(2026, 11, 25, 14, 3, 7, 5, tzinfo=UTC)


def test_bad_events_are_refused_and_nothing_is_written(log: ActivityLog, paths: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="unknown activity step 'exploded'"):
        Event("exploded", T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        Event("received", datetime(2026, 1, 1))
    log.append(events(1))
    before = paths[0].read_bytes()
    with pytest.raises(ValueError, match="not JSON"):
        log.append([*events(1), Event("received", T0, detail={"x": object()})])
    with pytest.raises(ValueError, match="not JSON"):
        log.record("received", at=T0, x=float("nan"))
    assert paths[0].read_bytes() == before
    assert log.record("received", at=T0).seq == 2


# -- files and keys -------------------------------------------------------------------


def test_files_are_private(log: ActivityLog, paths: tuple[Path, Path]) -> None:
    path, key_file = paths
    log.append(events(1))
    assert len(key_file.read_bytes()) == 32
    for file in (path, key_file, head_file(path)):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    for folder in (path.parent, key_file.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_file_readable_by_others_is_refused(paths: tuple[Path, Path], mode: int) -> None:
    path, key_file = paths
    ActivityLog.open(path, key_file).close()
    os.chmod(key_file, mode)
    with pytest.raises(KeyFileError) as info:
        ActivityLog.open(path, key_file)
    assert info.value.code == "key_file_error"
    assert f"chmod 600 {key_file}" in str(info.value)
    assert key_file.read_bytes().hex() not in str(info.value)


def test_missing_key_for_a_log_with_entries_is_refused(paths: tuple[Path, Path]) -> None:
    path, key_file = paths
    with ActivityLog.open(path, key_file) as log:
        log.append(events(2))
    key_file.unlink()
    with pytest.raises(ActivityLogError, match="key is missing") as info:
        ActivityLog.open(path, key_file)
    assert isinstance(info.value, EdgeError) and info.value.code == "activity_log_error"
    assert not key_file.exists()


# -- tampering ------------------------------------------------------------------------


@pytest.fixture
def six(paths: tuple[Path, Path]) -> list[bytes]:
    """A log of six entries; returns its lines."""
    with ActivityLog.open(*paths) as log:
        log.append(events(6))
    return lines(paths[0])


def test_edited_entry_fails_its_mac(paths: tuple[Path, Path], six: list[bytes]) -> None:
    doc = json.loads(six[2])
    doc["detail"]["n"] = 99
    write_lines(paths[0], [*six[:2], canonical(doc).encode(), *six[3:]])
    assert report(*paths) == [(3, 3, "MAC mismatch: the entry was edited")]


def test_deleted_entry_breaks_the_chain(paths: tuple[Path, Path], six: list[bytes]) -> None:
    write_lines(paths[0], [*six[:2], *six[3:]])
    assert report(*paths) == [(4, 3, "seq 3 missing before this entry: entries were deleted")]


def test_reordered_pair_is_out_of_order(paths: tuple[Path, Path], six: list[bytes]) -> None:
    write_lines(paths[0], [six[0], six[1], six[3], six[2], six[4], six[5]])
    [(seq, line, what)] = report(*paths)
    assert (seq, line) == (3, 4)
    assert what.startswith("out of order: comes after seq 4 (line 3)")


def test_truncated_tail_is_caught_by_the_head(paths: tuple[Path, Path], six: list[bytes]) -> None:
    write_lines(paths[0], six[:4])
    [(seq, line, what)] = report(*paths)
    assert (seq, line) == (5, 5)
    assert "head anchor records seq 6: 2 entries missing at the end (truncated)" in what


def test_truncation_stays_visible_after_more_appends(paths: tuple[Path, Path], six: list[bytes]) -> None:
    write_lines(paths[0], six[:4])
    with ActivityLog.open(*paths) as log:
        entry = log.record("received", at=T0, interrupt="01NEXT")
        assert entry.seq == 7  # numbering continues from the head, not from the cut tail
        assert report(*paths) == [(7, 5, "seq 5 to 6 missing before this entry: entries were deleted")]


def test_garbage_line_is_reported_where_it_is(paths: tuple[Path, Path], six: list[bytes]) -> None:
    write_lines(paths[0], [*six[:3], b"rm -rf / # not json", *six[3:]])
    assert report(*paths) == [(None, 4, "unreadable line: not JSON")]
    write_lines(paths[0], [six[0], b'{"seq": 2}', *six[2:]])
    problems = report(*paths)
    assert problems[0] == (None, 2, "unreadable line: not an activity entry (wrong fields)")
    assert problems[1] == (3, 3, "seq 2 missing before this entry: deleted, or on an unreadable line")


def test_rewritten_entry_breaks_the_link_or_the_head(paths: tuple[Path, Path], six: list[bytes]) -> None:
    # Same fields, other bytes: the MAC still holds, the hash chain does not.
    def loose(row: bytes) -> bytes:
        return json.dumps(json.loads(row)).encode()

    write_lines(paths[0], [*six[:2], loose(six[2]), *six[3:]])
    assert report(*paths) == [(4, 4, "prev does not match seq 3 (line 3): an entry was replaced")]
    write_lines(paths[0], [*six[:5], loose(six[5])])
    assert report(*paths) == [(6, 6, "not the entry the head anchor records: it was replaced")]


def test_duplicated_line_is_reported(paths: tuple[Path, Path], six: list[bytes]) -> None:
    write_lines(paths[0], [*six[:5], six[4], six[5]])
    assert report(*paths) == [(5, 6, "duplicate of seq 5 on line 5")]


def test_edited_head_fails_its_mac(paths: tuple[Path, Path], six: list[bytes]) -> None:
    head = head_file(paths[0])
    doc = json.loads(head.read_bytes())
    doc["seq"] = 4
    head.write_text(canonical(doc))
    [(seq, line, what)] = report(*paths)
    assert (seq, line) == (None, 0)
    assert "MAC mismatch: the head anchor was edited" in what
    with ActivityLog.open(*paths) as log, pytest.raises(ActivityLogError, match="log --verify"):
        log.record("received", at=T0)
    assert lines(paths[0]) == six  # nothing appended over the evidence


def test_missing_head_is_reported_and_stops_appends(paths: tuple[Path, Path], six: list[bytes]) -> None:
    head_file(paths[0]).unlink()
    [(seq, line, what)] = report(*paths)
    assert (seq, line) == (None, 0) and "is missing" in what
    with ActivityLog.open(*paths) as log, pytest.raises(ActivityLogError, match="is missing"):
        log.append(events(1))


def test_changed_key_makes_every_mac_fail_with_one_clear_message(
    paths: tuple[Path, Path], six: list[bytes]
) -> None:
    path, key_file = paths
    key_file.write_bytes(os.urandom(32))
    [(seq, line, what)] = report(path, key_file)
    assert (seq, line) == (1, 1)
    assert f"no MAC matches the key in {key_file} (6 of 6 entries and the head anchor fail)" in what


def test_moving_the_log_aside_starts_a_new_one(paths: tuple[Path, Path], six: list[bytes]) -> None:
    path = paths[0]
    with ActivityLog.open(*paths) as log:
        head_file(path).unlink()
        with pytest.raises(ActivityLogError):
            log.record("received", at=T0)
        path.rename(path.with_name("activity.log.evidence"))
        entry = log.record("received", at=T0)  # the open log follows the path
    assert (entry.seq, entry.prev) == (1, ZERO_HASH)
    assert report(*paths) == []


# -- crashes --------------------------------------------------------------------------


def test_torn_unacknowledged_line_is_cut_off_on_open(paths: tuple[Path, Path], six: list[bytes]) -> None:
    path = paths[0]
    with path.open("ab") as f:
        f.write(six[0][:40])  # what a kill -9 in the middle of a write leaves
    with ActivityLog.open(*paths) as log:
        assert lines(path) == six and path.read_bytes().endswith(b"\n")
        assert log.record("received", at=T0).seq == 7
    assert report(*paths) == []


def test_torn_line_is_cut_off_by_a_writer_that_had_the_log_open(
    paths: tuple[Path, Path], six: list[bytes]
) -> None:
    path = paths[0]
    with ActivityLog.open(*paths) as log:
        with path.open("ab") as f:
            f.write(b'{"at":"2026-11-25T14:0')  # another process died mid-write
        entry = log.record("received", at=T0)
        assert (entry.seq, entry.prev) == (7, hashlib.sha256(six[-1]).hexdigest())
        assert log.verify().ok


def test_torn_acknowledged_line_is_kept_and_reported(paths: tuple[Path, Path], six: list[bytes]) -> None:
    path = paths[0]
    write_lines(path, six[:5])
    with path.open("ab") as f:
        f.write(six[5][:30])  # the head says seq 6 was acknowledged
    problems = report(*paths)
    assert path.read_bytes().endswith(six[5][:30])  # not cut off: it is evidence
    assert problems == [(6, 6, "torn last line: the log ends at seq 5 but the head anchor "
                                "records seq 6: 1 entry missing at the end (a write that did "
                                "not finish, or truncated)")]
    with ActivityLog.open(*paths) as log:
        assert log.record("received", at=T0).seq == 7
    problems = report(*paths)
    assert problems[0] == (None, 6, "unreadable line: not JSON")
    assert problems[1][:2] == (7, 7)


# -- several writers ------------------------------------------------------------------

_WRITER = """
import sys, time
from datetime import UTC, datetime
from pathlib import Path
from edge.store.activity import ActivityLog
name, path, key, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
with ActivityLog.open(path, key) as log:
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    for i in range(200):
        log.record("received", at=datetime.now(UTC), interrupt=f"{name}-{i:03d}", n=i)
"""


def test_two_processes_appending_keep_one_chain(paths: tuple[Path, Path], tmp_path: Path) -> None:
    path, key_file = paths
    go = tmp_path / "go"
    ActivityLog.open(path, key_file).close()  # one key, made before the race
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, name, str(path), str(key_file), str(go)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in "ab"]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    go.touch()  # both start appending at once
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with ActivityLog.open(path, key_file) as log:
        result = log.verify()
        assert (result.ok, result.count, result.problems) == (True, 400, [])
        written = list(log.entries())
    assert [e.seq for e in written] == list(range(1, 401))
    writers = [e.interrupt[0] for e in written if e.interrupt]
    assert sum(a != b for a, b in itertools.pairwise(writers)) > 1  # they did interleave
    for name in "ab":
        mine = [e.interrupt for e in written if e.interrupt and e.interrupt.startswith(name)]
        assert mine == [f"{name}-{i:03d}" for i in range(200)]


def test_threads_on_two_instances_keep_one_chain(paths: tuple[Path, Path]) -> None:
    logs = [ActivityLog.open(*paths), ActivityLog.open(*paths)]

    def write(log: ActivityLog, name: str) -> None:
        for i in range(50):
            log.append(events(3, interrupt=f"{name}{i}"))

    threads = [threading.Thread(target=write, args=(logs[i % 2], f"t{i}-")) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = logs[0].verify()
    assert (result.ok, result.count) == (True, 600)
    for log in logs:
        log.close()


# -- reading --------------------------------------------------------------------------


def test_entries_filters(log: ActivityLog) -> None:
    log.append([
        Event("received", T0, "01A", None, "ci.failed"),
        Event("matched", T0 + timedelta(minutes=1), "01A", "ci-failures", "ci.failed"),
        Event("received", T0 + timedelta(minutes=2), "01B", None, "deploy.done"),
        Event("matched", T0 + timedelta(minutes=3), "01B", "deploys", "deploy.done"),
        Event("activity", T0 + timedelta(minutes=4), detail={"session": "s"}),
    ])

    def seqs(**filters: Any) -> list[int]:
        return [e.seq for e in log.entries(**filters)]

    assert seqs() == [1, 2, 3, 4, 5]
    assert seqs(since=T0 + timedelta(minutes=2)) == [3, 4, 5]
    assert seqs(intent="ci-failures") == [2]
    assert seqs(type="deploy.done") == [3, 4]
    assert seqs(interrupt="01A") == [1, 2]
    assert seqs(interrupt="01B", since=T0 + timedelta(minutes=3)) == [4]
    assert seqs(intent="01A") == []  # the pre-filter's byte match is not the answer
    assert [e.step for e in log.trace("01B")] == ["received", "matched"]


def test_explain_tells_a_realistic_trace(log: ActivityLog) -> None:
    # detail shapes as edge/engine.py records them
    at, later = T0, T0 + timedelta(hours=18)
    log.append([
        Event("received", at, "01A", None, "ci.failed",
              {"priority": "now", "source": "producer/github", "session": None}),
        Event("verified", at, "01A", None, "ci.failed", {"signer": "ms1producer"}),
        Event("matched", at, "01A", "ci-failures", "ci.failed", {}),
        Event("suppressed", at, "01A", "ci-failures", "ci.failed",
              {"rule": "cooldown", "reason": "last wake 12 min ago, cooldown 30 min"}),
        Event("matched", at, "01A", "night-owl", "ci.failed", {}),
        Event("judged", at, "01A", "night-owl", "ci.failed",
              {"wake": True, "reason": "main is red", "failure": None, "tokens": 120,
               "elapsed_ms": 850.0}),
        Event("deferred", at, "01A", "night-owl", "ci.failed",
              {"rule": "active_hours", "reason": "outside active hours",
               "until": "2026-11-26T09:00:00+01:00", "zone": "Europe/Berlin"}),
        Event("woken", later, "01A", "night-owl", None,
              {"route": "record", "wake": 3, "events": 1, "last_seen": "2026-11-26T07:50:00+00:00"}),
        Event("outcome", later, "01A", "night-owl", None, {"outcome": "ok"}),
        Event("received", at, "01OTHER", None, "ci.failed", {}),
    ])
    assert explain("01A", log.trace("01A")).splitlines() == [
        "interrupt 01A (ci.failed), 2026-11-25, times in UTC:",
        "14:03:07 received ci.failed (now) from producer github",
        "14:03:07 verified, signed by ms1producer",
        "14:03:07 matched intent ci-failures",
        "14:03:07 suppressed by intent ci-failures: cooldown (last wake 12 min ago, cooldown 30 min)",
        "14:03:07 matched intent night-owl",
        "14:03:07 judge of intent night-owl answered wake: main is red (elapsed 850 ms, tokens 120)",
        "14:03:07 deferred until 2026-11-26 09:00 Europe/Berlin for intent night-owl (outside active hours)",
        "2026-11-26 08:03:07 woke via record for intent night-owl (events 1, last seen 13 min ago, wake 3)",
        "08:03:07 outcome ok for intent night-owl",
    ]
    berlin = timezone(timedelta(hours=1), "CET")
    assert explain("01A", log.trace("01A"), tz=berlin).splitlines()[1] == (
        "15:03:07 received ci.failed (now) from producer github")
    assert explain("01NOPE", log.trace("01NOPE")) == "no record of interrupt 01NOPE in the activity log"


def test_explain_of_one_intent_does_not_repeat_it(log: ActivityLog) -> None:
    log.append([
        Event("matched", T0, "01A", "ci", "ci.failed"),
        Event("woken", T0, "01A", "ci", None, {"route": "record"}),
        Event("outcome", T0, "01A", "ci", None, {"outcome": "skipped", "rule": "budget",
                                                 "reason": "12 of 12 wakes spent today"}),
    ])
    assert explain("01A", log.trace("01A")).splitlines()[2:] == [
        "14:03:07 woke via record",
        "14:03:07 outcome skipped: budget (12 of 12 wakes spent today)",
    ]


def test_entry_round_trips_its_event(log: ActivityLog) -> None:
    event = Event("judged", T0, "01A", "ci", "ci.failed", {"wake": False, "reason": "noise"})
    [entry] = log.append([event])
    assert isinstance(entry, Entry)
    assert entry.event == event
    assert next(log.entries()).event == event
