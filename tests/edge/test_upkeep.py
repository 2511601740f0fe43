"""Upkeep under a running daemon: a real ``mailslot edge run`` process against a real
relay rotates its activity log into segments, drops the oldest behind the retention
record, prunes the acked inbox items (never a pending one) while interrupts keep
arriving, and ``mailslot log --verify`` stays green across segments and after retention;
an edited line in a kept old segment is then found, with its file and line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ulid
from tests_support import EdgeProcess, json_out, mailslot, post_drafts, wait_until

from edge.config import EdgePaths, RetentionConfig, load_config, save_config
from edge.store.activity import ActivityLog
from edge.store.activitysegments import pruned_file, segments
from edge.store.deliveries import DeliveryQueue
from edge.store.enginestate import EngineState
from edge.store.inbox import Accepted, Inbox
from edge.upkeep import Upkeep
from shared.envelope import Envelope, Priority, Source
from shared.identity import Identity
from shared.signing import sign_envelope


def _decided(paths: EdgePaths) -> int:
    if not paths.engine_file.exists():
        return 0
    state = EngineState.open(paths.engine_file)
    try:
        return state.cursor
    finally:
        state.close()


def _active_size(paths: EdgePaths) -> int:
    """The active file's size (0 in the moment between a rotation's rename and the new
    file: readers open it, and so create it, then)."""
    try:
        return paths.activity_file.stat().st_size
    except FileNotFoundError:
        return 0


async def test_a_running_daemon_rotates_prunes_and_stays_verifiable(relay, make_member) -> None:
    member = await make_member()
    paths = member.paths()
    home = member.home
    assert home is not None
    retention = RetentionConfig(log_segment_bytes=4096, log_max_bytes=6 * 4096,
                                inbox_days=0.5 / 86400, check_every=0.1)
    save_config(paths, load_config(paths).model_copy(update={"retention": retention}))
    edge = EdgeProcess(home)
    edge.start()
    try:
        kept: set[str] = set()
        for wave in range(3):  # ~10 KiB of log each: rotated after each wave
            drafts = [{"to": member.id, "type": "ci.failed", "priority": "next",
                       "payload": {"wave": wave, "n": i}} for i in range(10)]
            assert all(r.status_code == 202 for r in
                       await post_drafts(relay.url, member.token, drafts))
            await wait_until(lambda w=wave: _decided(paths) >= 10 * (w + 1), 30,
                             f"wave {wave} decided")
            await wait_until(lambda: _active_size(paths) < 4096, 20,
                             f"the log rotated after wave {wave}")
            if wave == 1:
                with member.inbox() as inbox:
                    first = inbox.list(state=None, limit=100)
                    for item in first[:15]:
                        assert inbox.ack(item.id)
                kept = {item.id for item in first[15:]}

        def pruned() -> bool:
            with member.inbox() as inbox:
                return inbox.total() == 15
        await wait_until(pruned, 20, "the 15 acked items pruned")
        await wait_until(lambda: pruned_file(paths.activity_file).exists(), 20,
                         "old log segments dropped")
        with member.inbox() as inbox:
            left = {item.id for item in inbox.list(state=None, limit=100)}
        assert kept <= left and len(left) == 15  # no pending item touched

        report = json_out(mailslot(home, "log", "--verify", "--json"))
        assert report["ok"] and report["segments"] >= 2 and report["pruned"]["seq"] > 0
        text = mailslot(home, "log", "--verify").stdout.strip()
        assert text.startswith(f"ok: {report['count']} entries in ") and "pruned by retention" in text
        listed = json_out(mailslot(home, "log", "--limit", "0", "--json"))
        assert [e["seq"] for e in listed] == list(range(report["pruned"]["seq"] + 1,
                                                        report["pruned"]["seq"] + 1 + len(listed)))
        since = json_out(mailslot(home, "log", "--limit", "0", "--json", "--since", "1h"))
        assert since == listed
        oldest = segments(paths.activity_file)[0].path
        entry = json.loads(oldest.read_text().splitlines()[-1])
        if entry["interrupt"]:
            assert mailslot(home, "explain", entry["interrupt"]).returncode == 0
    finally:
        assert edge.stop() == 0

    oldest = segments(paths.activity_file)[0].path
    rows = oldest.read_bytes().split(b"\n")
    doc = json.loads(rows[1])
    doc["detail"]["forged"] = True
    rows[1] = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    oldest.write_bytes(b"\n".join(rows))
    result = mailslot(home, "log", "--verify", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["code"] == "entry_edited"
    assert [(p["file"], p["line"]) for p in report["problems"]] == [(oldest.name, 2)]


T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=3 * 365)  # past every default retention


def _old_home(paths: EdgePaths) -> dict[str, int]:
    """A home whose every kind of record is three years older than ``LATER``: four acked
    inbox items the engine decided, three finished deliveries (with their permission
    files), three wakes of one intent/session (the newest always stays) and a rotated
    log segment; the active log is empty (nothing due to rotate). Returns the counts."""
    paths.ensure()
    producer = Identity.generate()
    with Inbox.open(paths.inbox_file) as inbox:
        items = inbox.commit([_accepted(producer, i) for i in range(4)])
        for item in items:
            assert inbox.ack(item.id)
    state = EngineState.open(paths.engine_file)
    try:
        state.set_cursor(items[-1].seq)
        queue = DeliveryQueue(state.db)
        permissions = paths.data_dir / "permissions"
        permissions.mkdir(exist_ok=True)
        for i in range(3):
            seq = queue.enqueue(wake=i, intent="ci", route={"kind": "exec"}, session="",
                                interrupts=[items[i].id], permissions={}, wake_doc={},
                                at=T0.timestamp())
            state.db.execute("UPDATE deliveries SET status = 'done', finished = ? WHERE seq = ?",
                             (T0.timestamp(), seq))
            (permissions / f"delivery-{seq}.json").write_text("{}")
            state.add_wake("ci", "s1", T0.timestamp() + i)
    finally:
        state.close()
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as activity:
        for i in range(5):
            activity.record("received", at=T0 + timedelta(minutes=i), n=i)
        assert activity.rotate(max_bytes=1 << 20, max_age=timedelta(0), now=T0) is not None
    return _counts(paths)


def _counts(paths: EdgePaths) -> dict[str, int]:
    with Inbox.open(paths.inbox_file) as inbox:
        items = inbox.total()
    state = EngineState.open(paths.engine_file)
    try:
        deliveries = len(DeliveryQueue(state.db).rows())
        wakes = state.wakes_since("ci", "s1", 0)
    finally:
        state.close()
    return {"inbox": items, "deliveries": deliveries, "wakes": wakes,
            "permissions": len(list((paths.data_dir / "permissions").iterdir())),
            "segments": len(segments(paths.activity_file))}


def _accepted(producer: Identity, n: int) -> Accepted:
    envelope = Envelope(id=str(ulid.ULID()), to=producer.id, type="build.failed",
                        source=Source(kind="producer", name="ci"), priority=Priority.next,
                        created_at=T0, payload={"n": n}, signer=producer.id)
    return Accepted(envelope, sign_envelope(envelope, producer), None, T0)


def test_upkeep_prunes_nothing_it_is_told_to_keep(tmp_path: Path) -> None:
    """0 keeps a kind forever: a home full of old, prunable records keeps every one of
    them; the same home under the default retention loses them all (but the newest wake)."""
    paths = EdgePaths.resolve({"MAILSLOT_HOME": str(tmp_path)})
    before = _old_home(paths)
    assert before == {"inbox": 4, "deliveries": 3, "wakes": 3, "permissions": 3,
                      "segments": 1}
    keep = Upkeep(RetentionConfig(inbox_days=0, deliveries_days=0, engine_days=0,
                                  log_keep_days=0, log_max_bytes=0), paths, clock=lambda: LATER)
    result = keep.step()
    assert not result and result.errors == [], result
    assert _counts(paths) == before

    prune = Upkeep(RetentionConfig(), paths, clock=lambda: LATER)
    result = prune.step()
    assert result.errors == [], result
    assert (result.inbox, result.deliveries, result.engine, len(result.segments)) == (4, 3, 2, 1)
    assert _counts(paths) == {"inbox": 0, "deliveries": 0, "wakes": 1, "permissions": 0,
                              "segments": 0}


def test_upkeep_on_an_empty_home_is_no_error(tmp_path: Path) -> None:
    paths = EdgePaths.resolve({"MAILSLOT_HOME": str(tmp_path)})
    upkeep = Upkeep(RetentionConfig(), paths, clock=lambda: LATER)
    result = upkeep.step()
    assert not result and result.errors == []
    assert upkeep.convert() == []
