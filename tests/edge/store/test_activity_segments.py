"""The activity log in segments, on real files: rotation continues the chain, retention
drops whole old segments behind a signed record, every reader reads across segments,
tampering in an old segment is found and located, and a real ``kill -9`` at the worst
moments of a rotation or a retention loses nothing and repeats nothing."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.errors import ActivityLogError
from edge.store.activity import ActivityLog, Event, head_file
from edge.store.activitysegments import pruned_file, segments

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[3]


def fill(log: ActivityLog, n: int, *, every: int = 5, start: int = 0) -> None:
    """``n`` entries an hour apart, rotating after every ``every`` (each a segment)."""
    for i in range(start, start + n):
        log.append([Event("received", T0 + timedelta(hours=i), f"01I{i:04d}", None,
                          "ci.failed", {"n": i})])
        if (i + 1) % every == 0:
            assert log.rotate(max_bytes=1) is not None


def names(log: ActivityLog) -> list[str]:
    return [s.path.name for s in segments(log.path)]


def test_rotation_continues_the_chain_across_segments(log: ActivityLog) -> None:
    fill(log, 17)
    assert names(log) == [f"activity.log.{first:012d}" for first in (1, 6, 11)]
    chained = [json.loads(line) for seg in segments(log.path)
               for line in seg.path.read_text().splitlines()]
    assert [d["seq"] for d in chained] == list(range(1, 16))
    # the first line of a segment links to the last line of the one before
    assert json.loads(segments(log.path)[1].path.read_text().splitlines()[0])["seq"] == 6
    report = log.verify()
    assert (report.ok, report.count, report.segments, report.pruned) == (True, 17, 4, None)
    assert [e.seq for e in log.entries()] == list(range(1, 18))
    assert [e.seq for e in log.entries(since=T0 + timedelta(hours=3, minutes=30))][:3] == [5, 6, 7]
    assert [e.seq for e in log.trace("01I0007")] == [8]
    for seg in segments(log.path):
        assert (seg.path.stat().st_mode & 0o777) == 0o600


def test_rotation_by_size_or_age_and_nothing_when_empty(log: ActivityLog) -> None:
    assert log.rotate(max_bytes=1) is None  # nothing to rotate
    fill(log, 3, every=100)
    size = log.path.stat().st_size
    assert log.rotate(max_bytes=size + 1) is None
    assert log.rotate(max_bytes=size + 1, max_age=timedelta(days=1),
                      now=T0 + timedelta(hours=23)) is None
    assert log.rotate(max_bytes=size + 1, max_age=timedelta(days=1),
                      now=T0 + timedelta(days=1)) is not None
    assert names(log) == ["activity.log.000000000001"]
    assert log.path.stat().st_size == 0
    assert log.rotate(max_bytes=size) is None  # the new active file is empty


def test_retention_drops_old_segments_and_verify_reports_them_pruned(log: ActivityLog) -> None:
    fill(log, 22)  # segments from seq 1, 6, 11, 16; 21-22 in the active file
    dropped = log.retain(keep_after=T0 + timedelta(hours=9, minutes=30))
    assert [p.name for p in dropped] == ["activity.log.000000000001", "activity.log.000000000006"]
    report = log.verify()
    assert (report.ok, report.count, report.segments) == (True, 12, 3)
    assert report.pruned is not None and report.pruned["seq"] == 10
    assert report.pruned["until"] == "2026-06-01T21:00:00.000000Z"
    assert [e.seq for e in log.entries()] == list(range(11, 23))
    # more appends and a size cap: the oldest go first, never the active file
    fill(log, 3, start=22, every=100)
    total = sum(p.stat().st_size for p in (*[s.path for s in segments(log.path)], log.path))
    assert [p.name for p in log.retain(max_bytes=total - 1)] == ["activity.log.000000000011"]
    assert [p.name for p in log.retain(max_bytes=1)] == ["activity.log.000000000016"]
    assert log.retain(max_bytes=1) == []
    report = log.verify()
    assert (report.ok, report.count, report.segments) == (True, 5, 1)
    assert report.pruned is not None and report.pruned["seq"] == 20
    assert (pruned_file(log.path).stat().st_mode & 0o777) == 0o600


def _edit(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def test_tampering_with_an_old_segment_is_found_and_located(log: ActivityLog) -> None:
    fill(log, 17)
    second = segments(log.path)[1].path
    _edit(second, b'"n":7}', b'"n":70}')
    report = log.verify()
    assert report.code == "entry_edited"
    assert [str(p) for p in report.problems] == [
        "activity.log.000000000006 line 3 (seq 8): MAC mismatch: the entry was edited"]
    assert report.problems[0].to_dict()["file"] == "activity.log.000000000006"


def test_a_deleted_segment_is_missing_not_pruned(log: ActivityLog) -> None:
    fill(log, 17)
    log.retain(keep_after=T0 + timedelta(hours=4, minutes=30))  # drops seq 1-5
    segments(log.path)[0].path.unlink()  # seq 6-10, behind retention's back
    report = log.verify()
    assert report.code == "entries_missing"
    assert [str(p) for p in report.problems] == [
        "activity.log.000000000011 line 1 (seq 11): seq 6 to 10 missing before this entry: "
        "entries were deleted"]


def test_segments_deleted_with_no_record_are_missing(log: ActivityLog) -> None:
    fill(log, 12)
    segments(log.path)[0].path.unlink()
    assert log.verify().code == "entries_missing"


def test_a_forged_or_copied_retention_record_is_refused(log: ActivityLog) -> None:
    fill(log, 17)
    log.retain(keep_after=T0 + timedelta(hours=4, minutes=30))
    record = pruned_file(log.path)
    doc = json.loads(record.read_text())
    record.write_text(json.dumps({**doc, "seq": 10}))  # hide seq 6-10 too: the MAC says no
    report = log.verify()
    assert "retention_invalid" in {p.code for p in report.problems} and not report.ok
    with pytest.raises(ActivityLogError, match="nothing is pruned"):
        log.retain(max_bytes=1)
    # the head anchor is signed with the same key, but is no retention record
    shutil.copy(head_file(log.path), record)
    assert log.verify().code is not None and not log.verify().ok


def test_a_crash_between_rename_and_the_new_file_loses_nothing(log: ActivityLog,
                                                               paths: tuple[Path, Path]) -> None:
    fill(log, 10)
    log.path.unlink()  # rotated, and the new empty active file never made
    with ActivityLog.open(*paths) as reopened:
        assert reopened.verify().ok
        fill(reopened, 2, start=10, every=100)
        report = reopened.verify()
    assert (report.ok, report.count) == (True, 12)


def test_a_crash_between_the_record_and_the_unlink_repeats_nothing(log: ActivityLog,
                                                                  tmp_path: Path) -> None:
    fill(log, 17)
    first = segments(log.path)[0].path
    keep = tmp_path / "copy"
    shutil.copy(first, keep)
    log.retain(keep_after=T0 + timedelta(hours=4, minutes=30))
    shutil.copy(keep, first)  # as if the unlink never happened
    report = log.verify()
    assert (report.ok, report.count) == (True, 12)
    assert [e.seq for e in log.entries()] == list(range(6, 18))
    assert [p.name for p in log.retain()] == [first.name]  # finished next time


def test_a_log_with_segments_and_no_head_refuses_to_start_over(
        log: ActivityLog, paths: tuple[Path, Path]) -> None:
    fill(log, 10)
    head_file(log.path).unlink()
    with ActivityLog.open(*paths) as reopened, pytest.raises(ActivityLogError,
                                                             match="its segments"):
        reopened.append([Event("received", T0, "x")])


# -- kill -9 at the worst moments -----------------------------------------------------

_CHILD = r"""
import os, signal, sys
from datetime import UTC, datetime
from pathlib import Path
import edge.store.activity as activity
from edge.store.activity import ActivityLog, Event
path, key, moment, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if moment == "after-rename":        # the active file is a segment; no new file yet
    real_rename = os.rename
    activity.os.rename = lambda a, b: (real_rename(a, b), die())
elif moment == "after-record":      # the retention record moved; the segment not deleted
    real_write = activity.write_small
    activity.write_small = lambda p, d: (real_write(p, d),
                                         die() if p.name.endswith(".pruned") else None)
log = ActivityLog.open(path, key)
i = 0
while True:
    i += 1
    entry = log.append([Event("received", datetime.now(UTC), f"{name}-{i}")])[0]
    print(entry.seq, flush=True)  # acknowledged
    if moment != "random" or i % 3 == 0:
        log.rotate(max_bytes=1)
    if moment == "after-record" or (moment == "random" and i % 7 == 0):
        log.retain(max_bytes=2000)
"""


def _run(paths: tuple[Path, Path], moment: str, name: str, *, kill_after: int = 0
         ) -> tuple[list[int], int]:
    """Run the child until it dies (by its own SIGKILL at ``moment``, or ours after
    ``kill_after`` acknowledged lines); its acknowledged seqs and exit code."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, *map(str, paths), moment, name],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    acked = []
    for line in proc.stdout:
        acked.append(int(line))
        if kill_after and len(acked) >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(30)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, err
    return acked, proc.returncode


def _intact(paths: tuple[Path, Path], acked: list[int]) -> None:
    with ActivityLog.open(*paths) as log:
        report = log.verify()
        kept = [e.seq for e in log.entries()]
    assert report.ok, [str(p) for p in report.problems]
    floor = report.pruned["seq"] if report.pruned else 0
    assert kept == list(range(floor + 1, floor + 1 + len(kept)))  # nothing twice, no gap
    assert set(acked) - set(range(1, floor + 1)) <= set(kept)  # nothing acknowledged lost


@pytest.mark.parametrize("moment", ["after-rename", "after-record"])
def test_kill_9_at_the_worst_moment_loses_nothing(paths: tuple[Path, Path], moment: str) -> None:
    ActivityLog.open(*paths).close()
    acked: list[int] = []
    for round_ in range(3):
        seqs, _code = _run(paths, moment, f"r{round_}")
        acked += seqs
        _intact(paths, acked)
    if moment == "after-rename":
        assert len(segments(paths[0])) == 3
    else:
        assert pruned_file(paths[0]).exists()


def test_kill_9_at_random_moments_while_another_process_appends(paths: tuple[Path, Path]) -> None:
    ActivityLog.open(*paths).close()
    chance = random.Random(os.getpid())
    acked: list[int] = []
    done = threading.Event()

    def other() -> None:  # this process, appending while the child rotates and is killed
        with ActivityLog.open(*paths) as log:
            while not done.is_set():
                acked.extend(e.seq for e in log.append([Event("received", datetime.now(UTC),
                                                               "other")]))

    for round_ in range(4):
        done.clear()
        thread = threading.Thread(target=other)
        thread.start()
        try:
            seqs, _code = _run(paths, "random", f"k{round_}", kill_after=chance.randint(5, 40))
        finally:
            done.set()
            thread.join()
        acked += seqs
        _intact(paths, acked)
    assert pruned_file(paths[0]).exists()  # it rotated and pruned meanwhile
    assert len(set(acked)) == len(acked)  # no seq acknowledged twice, to either writer
