"""The activity log's chain is anchored outside its two files: deleting ``activity.log``
and ``activity.log.head`` together (or replacing them with a shorter log) is reported by
``mailslot log --verify`` with a code, because the engine state remembers where the chain
had reached. The anchor may lag the log (a crash between the log's fsync and the engine's
commit is no false alarm), never lead it. Real files, real SQLite, the real CLI; the last
test runs the real daemon against a real relay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests_support import mailslot, post_drafts, running_edge, wait_until

from edge.config import EdgeConfig, EdgePaths, save_config
from edge.engine.audit import verify_log
from edge.store.activity import ActivityLog, Entry, Event, head_file
from edge.store.activityline import Anchor
from edge.store.enginestate import EngineState
from shared.identity import Identity

T0 = datetime(2026, 11, 25, 14, 3, 7, tzinfo=UTC)


@pytest.fixture
def paths(tmp_path: Path) -> EdgePaths:
    paths = EdgePaths.resolve({"MAILSLOT_HOME": str(tmp_path / "home")})
    paths.ensure()
    return paths


def _events(n: int, start: int = 0) -> list[Event]:
    return [Event("received", T0 + timedelta(seconds=start + i), f"01X{start + i}", None,
                  "ci.failed") for i in range(n)]


def _engine_batch(paths: EdgePaths, events: list[Event]) -> list[Entry]:
    """What the daemon's engine does per batch: append inside its transaction, anchor,
    commit."""
    state = EngineState.open(paths.engine_file)
    try:
        with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log, \
                state.transaction():
            log.continue_after(state.log_anchor())
            entries = log.append(events)
            state.advance_log_anchor(entries[-1].anchor)
        return entries
    finally:
        state.close()


def _verify(paths: EdgePaths) -> tuple[int, dict, list[str]]:
    home = paths.config_dir.parent
    text = mailslot(home, "log", "--verify")
    report = json.loads(mailslot(home, "log", "--verify", "--json").stdout)
    return text.returncode, report, text.stdout.splitlines()


def _delete_log(paths: EdgePaths) -> None:
    paths.activity_file.unlink()
    head_file(paths.activity_file).unlink()


def _anchor(paths: EdgePaths) -> Anchor | None:
    state = EngineState.open(paths.engine_file)
    try:
        return state.log_anchor()
    finally:
        state.close()


def test_the_anchor_is_the_last_entry_of_the_batch_and_only_moves_forward(paths) -> None:
    entries = _engine_batch(paths, _events(3))
    assert _anchor(paths) == entries[-1].anchor == Anchor(3, entries[-1].anchor.hash)
    state = EngineState.open(paths.engine_file)
    try:
        with state.transaction():
            state.advance_log_anchor(Anchor(1, "0" * 64))  # a lower seq never pulls it back
    finally:
        state.close()
    assert _anchor(paths) == entries[-1].anchor
    assert _verify(paths)[:2] == (0, {"ok": True, "count": 3, "code": None, "problems": [],
                                      "segments": 1, "pruned": None})


def test_a_log_deleted_with_its_head_is_log_missing(paths) -> None:
    _engine_batch(paths, _events(4))
    _delete_log(paths)
    code, report, lines = _verify(paths)
    assert code == 1 and report["ok"] is False and report["code"] == "log_missing"
    assert [p["code"] for p in report["problems"]] == ["log_missing"]
    assert "engine state records seq 4" in lines[0]
    assert lines[-1] == "FAILED: log_missing: 1 problem(s) in 0 entries"
    assert not paths.activity_file.exists()  # verifying created nothing


def test_a_log_replaced_by_a_shorter_one_is_log_truncated(paths) -> None:
    _engine_batch(paths, _events(5))
    _delete_log(paths)
    # Another writer (a CLI command) starts a fresh log: seq 1, 2 with a matching head.
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
        log.append(_events(2, start=10))
    code, report, lines = _verify(paths)
    assert code == 1 and report["code"] == "log_truncated"
    assert report["problems"][0]["seq"] == 3
    assert "the log ends at seq 2 but the engine state records seq 5" in lines[0]


def test_an_anchor_behind_the_log_is_no_alarm(paths) -> None:
    """A crash after the log's fsync and before the engine's commit: the log holds more
    than the anchor says. That is the allowed direction."""
    _engine_batch(paths, _events(2))
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
        log.append(_events(3, start=2))  # appended, never anchored
    assert _anchor(paths) is not None and _anchor(paths).seq == 2  # type: ignore[union-attr]
    code, report, _ = _verify(paths)
    assert (code, report["ok"], report["count"]) == (0, True, 5)


def test_an_entry_replaced_at_the_anchor_is_found(paths) -> None:
    _engine_batch(paths, _events(3))
    anchor = _anchor(paths)
    _delete_log(paths)
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
        log.append(_events(3, start=20))  # the same seqs, other entries
    report = verify_log(paths)
    assert not report.ok and report.code == "entry_replaced"
    assert [(p.seq, p.code) for p in report.problems] == [(anchor.seq, "entry_replaced")]  # type: ignore[union-attr]


def test_a_recreated_log_continues_after_the_anchor(paths) -> None:
    _engine_batch(paths, _events(4))
    _delete_log(paths)
    entries = _engine_batch(paths, _events(2, start=4))
    assert [e.seq for e in entries] == [5, 6]  # not 1, 2: the gap stays visible
    code, report, lines = _verify(paths)
    assert code == 1 and report["code"] == "entries_missing"
    assert lines[0] == ("line 1 (seq 5): seq 1 to 4 missing before this entry: entries were "
                        "deleted")
    assert _anchor(paths) == entries[-1].anchor


async def test_the_daemon_anchors_its_batches_and_a_deleted_log_is_reported(
    relay, make_member
) -> None:
    member = await make_member()
    paths = member.paths()
    drafts = [{"to": member.identity.id, "type": "ci.failed", "priority": "next"}
              for _ in range(3)]

    def decided() -> int:
        with member.inbox() as inbox:
            pending = inbox.list(state=None, limit=100)
        state = EngineState.open(paths.engine_file)
        try:
            return state.cursor if pending else 0
        finally:
            state.close()

    async with running_edge(member) as daemon:
        assert all(r.status_code == 202 for r in
                   await post_drafts(relay.url, member.token, drafts))
        await wait_until(lambda: decided() >= 3, 20, "three interrupts decided")
        assert daemon.activity is not None
    anchor = _anchor(paths)
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
        received = [e for e in log.entries() if e.step == "received"]
        assert len(received) == 3
        assert anchor is not None and anchor.seq >= received[-1].seq
        assert log.verify(anchor).ok
    _delete_log(paths)
    code, report, _ = _verify(paths)
    assert code == 1 and report["code"] == "log_missing"
    # The next daemon keeps the numbering going after the anchor: still visible.
    async with running_edge(member):
        assert all(r.status_code == 202 for r in
                   await post_drafts(relay.url, member.token, drafts[:1]))
        await wait_until(lambda: decided() >= 4, 20, "the fourth interrupt decided")
    code, report, _ = _verify(paths)
    assert code == 1 and report["code"] == "entries_missing"
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
        assert min(e.seq for e in log.entries()) == anchor.seq + 1


def test_commands_that_record_anchor_too(paths) -> None:
    """``mailslot activity`` and ``mailslot outcome`` write the log inside an engine-state
    transaction: they anchor it as the engine does."""
    relay, me = Identity.generate(), Identity.generate()
    save_config(paths, EdgeConfig(relay_url="http://127.0.0.1:1", identity=me.id,
                                  relay_identity=relay.public.to_doc()))
    home = paths.config_dir.parent
    assert mailslot(home, "activity", "--session", "main").returncode == 0
    assert mailslot(home, "outcome", "01X1", "--status", "ok").returncode == 0
    anchor = _anchor(paths)
    assert anchor is not None and anchor.seq == 2
    _delete_log(paths)
    assert _verify(paths)[1]["code"] == "log_missing"
    assert mailslot(home, "activity").returncode == 0  # a new log, numbered after seq 2
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
        assert [e.seq for e in log.entries()] == [3]
    assert _verify(paths)[1]["code"] == "entries_missing"
