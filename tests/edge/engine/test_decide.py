"""The decision engine's rules, each with its recorded reason, on real SQLite files and an
injected clock (interrupts carry their arrival time; wakes are dispatched at chosen times)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import pytest
import ulid
from engine_support import ME, PRODUCER, Harness, at, intent_set, minutes

from edge.engine.replay import final_outcomes, outcomes_from_log, replay
from edge.intents.model import IntentSet
from edge.store.inbox import Accepted
from shared.envelope import Envelope, Source
from shared.signing import sign_envelope

T = at("2026-11-24 10:00")


def one(policy: dict[str, object] | None = None, **fields: object) -> IntentSet:
    return intent_set({"id": "i", "match": {"type": "ci.*"}, "policy": policy or {}, **fields})


@pytest.fixture
def make(tmp_path: Path):
    harnesses: list[Harness] = []

    def build(intents: IntentSet, judge=None) -> Harness:
        h = Harness(tmp_path / f"h{len(harnesses)}", intents, judge)
        harnesses.append(h)
        return h

    yield build
    for h in harnesses:
        h.close()


async def test_unmatched_and_matched(make) -> None:
    h = make(one())
    hit = await h.send(T, "ci.failed")
    miss = await h.send(T, "mail.received")
    h.engine.dispatch_due(T)
    assert h.final(hit) == ("woken", "ready")
    assert h.final(miss, None)[0] == "unmatched"
    steps = [e.step for e in h.events if e.interrupt == hit]
    assert steps == ["received", "verified", "matched", "woken", "delivered", "outcome"]


async def test_dedupe_suppresses_within_window_only(make) -> None:
    h = make(one({"dedupe": "1h"}))
    first = await h.send(T, dedupe_key="build-7")
    again = await h.send(T + minutes(30), dedupe_key="build-7")
    later = await h.send(T + minutes(100), dedupe_key="build-7")
    h.engine.dispatch_due(T + minutes(100))
    assert h.final(first)[0] == "woken"
    assert h.final(again)[0] == "suppressed" and h.rule(again) == "dedupe"
    assert h.final(later)[0] == "woken"


async def test_user_active_suppresses_and_expires(make) -> None:
    h = make(one({"suppress_when_active": True, "active_for": "5m"}))
    h.engine.report_activity("api", T)
    busy = await h.send(T + minutes(1), session="api")
    elsewhere = await h.send(T + minutes(1), session="docs")
    idle = await h.send(T + minutes(6), session="api")
    h.engine.dispatch_due(T + minutes(6))
    assert h.final(busy)[0] == "suppressed" and h.rule(busy) == "user_active"
    assert "active" in h.final(busy)[1]
    assert h.final(elsewhere)[0] == "woken"
    assert h.final(idle)[0] == "woken"


async def test_max_reminders_until_the_user_is_back(make) -> None:
    h = make(one({"max_reminders": 2}))
    sent = [await h.send(T + minutes(i)) for i in range(3)]
    h.engine.dispatch_due(T + minutes(3))
    assert [h.final(s)[0] for s in sent[:2]] == ["woken", "woken"]
    # wakes are dispatched as soon as they are due, so the third sees two reminders
    assert h.final(sent[2])[0] == "suppressed" and h.rule(sent[2]) == "max_reminders"
    h.engine.report_activity("", T + minutes(10))
    back = await h.send(T + minutes(11))
    h.engine.dispatch_due(T + minutes(11))
    assert h.final(back)[0] == "woken"


async def test_cooldown(make) -> None:
    h = make(one({"cooldown": "30m"}))
    first = await h.send(T)
    h.engine.dispatch_due(T)
    soon = await h.send(T + minutes(10))
    after = await h.send(T + minutes(31))
    h.engine.dispatch_due(T + minutes(31))
    assert h.final(first)[0] == "woken"
    assert h.final(soon)[0] == "suppressed" and h.rule(soon) == "cooldown"
    assert "cooldown 30m" in h.final(soon)[1]
    assert h.final(after)[0] == "woken"


async def test_condition(make) -> None:
    h = make(one({"condition": [{"field": "payload.severity", "op": "ge", "value": 3}]}))
    low = await h.send(T, payload={"severity": 1})
    high = await h.send(T, payload={"severity": 5})
    h.engine.dispatch_due(T)
    assert h.final(low)[0] == "suppressed" and h.rule(low) == "condition"
    assert h.final(high)[0] == "woken"


async def test_rules_apply_in_the_documented_order(make) -> None:
    """When several rules would refuse, the earliest in the order is the one recorded."""
    h = make(one({
        "dedupe": "1h", "suppress_when_active": True, "max_reminders": 1, "cooldown": "1h",
        "condition": [{"field": "payload.ok", "op": "eq", "value": True}],
    }))
    first = await h.send(T, payload={"ok": True}, dedupe_key="k")
    h.engine.dispatch_due(T)
    assert h.final(first)[0] == "woken"
    # everything fails now: dedupe first
    assert h.rule(await h.send(T + minutes(1), payload={"ok": False}, dedupe_key="k")) == "dedupe"
    h.engine.report_activity("", T + minutes(2))
    # no dedupe key: user active comes next
    assert h.rule(await h.send(T + minutes(3), payload={"ok": False})) == "user_active"
    # activity expired (5m default): reminders were reset by the report, so cooldown
    assert h.rule(await h.send(T + minutes(9), payload={"ok": False})) == "cooldown"
    # after the cooldown: the condition
    assert h.rule(await h.send(T + minutes(70), payload={"ok": False})) == "condition"


async def test_active_hours_across_midnight_in_tokyo_defer_to_the_window_start(make) -> None:
    h = make(one({"active_hours": {"start": "22:00", "end": "07:00", "timezone": "Asia/Tokyo"}}))
    noon = at("2026-11-24 12:00", "Asia/Tokyo")
    deferred = await h.send(noon)
    urgent = await h.send(noon, priority="now")
    assert h.final(deferred)[0] == "deferred" and h.rule(deferred) == "active_hours"
    until = next(e.detail["until"] for e in h.events if e.step == "deferred")
    assert until.startswith("2026-11-24T22:00:00+09:00")
    h.engine.dispatch_due(noon)
    assert h.final(urgent)[0] == "woken"  # `now` is never deferred
    assert h.engine.dispatch_due(at("2026-11-24 21:59", "Asia/Tokyo")) == 0
    assert h.engine.dispatch_due(at("2026-11-24 22:00", "Asia/Tokyo")) == 1
    assert h.final(deferred)[0] == "woken"
    woke = next(e.at for e in h.events if e.step == "woken" and e.interrupt == deferred)
    assert woke == at("2026-11-24 22:00", "Asia/Tokyo")
    # 02:00 the next morning is inside the window that opened the evening before
    night = await h.send(at("2026-11-25 02:00", "Asia/Tokyo"))
    h.engine.dispatch_due(at("2026-11-25 02:00", "Asia/Tokyo"))
    assert h.final(night)[0] == "woken"


async def test_critical_intent_ignores_hours_and_budget(make) -> None:
    h = make(intent_set(
        {"id": "i", "critical": True, "match": {"type": "ci.*"},
         "policy": {"active_hours": {"start": "09:00", "end": "17:00"}}},
        wakes_per_day=1,
    ))
    night = at("2026-11-24 03:00")
    sent = [await h.send(night + minutes(i)) for i in range(3)]
    h.engine.dispatch_due(night + minutes(3))
    assert [h.final(s)[0] for s in sent] == ["woken"] * 3


async def test_budget_exhausted_then_reset_at_local_midnight(make) -> None:
    h = make(intent_set({"id": "i", "match": {"type": "ci.*"}}, wakes_per_day=3,
                        timezone="Europe/Berlin"))
    evening = at("2026-11-24 22:00", "Europe/Berlin")
    sent = []
    for i in range(4):
        sent.append(await h.send(evening + minutes(i)))
        h.engine.dispatch_due(evening + minutes(i))
    assert [h.final(s)[0] for s in sent] == ["woken", "woken", "woken", "skipped"]
    assert h.rule(sent[3]) == "budget" and "3/3" in h.final(sent[3])[1]
    # 23:30 UTC is 00:30 in Berlin: a new day
    after_midnight = at("2026-11-25 00:30", "Europe/Berlin")
    fresh = await h.send(after_midnight)
    h.engine.dispatch_due(after_midnight)
    assert h.final(fresh)[0] == "woken"


async def test_burst_of_50_becomes_one_wake(make) -> None:
    h = make(one({"coalesce": "5m"}))
    burst = [await h.send(T + minutes(i * 0.05)) for i in range(50)]
    assert h.engine.dispatch_due(T + minutes(4)) == 0
    assert h.engine.dispatch_due(T + minutes(5)) == 1
    assert set(h.woken()) == set(burst)
    wakes = {e.detail["wake"] for e in h.events if e.step == "woken"}
    assert len(wakes) == 1
    assert {e.detail["events"] for e in h.events if e.step == "woken"} == {50}
    assert h.engine.state.wakes_since("i", "", 0) == 1


async def test_now_bypasses_coalescing_and_jumps_the_queue(make) -> None:
    h = make(intent_set(
        {"id": "slow", "match": {"type": "report.*"}, "policy": {
            "active_hours": {"start": "08:00", "end": "20:00"}}},
        {"id": "ci", "match": {"type": "ci.*"}, "policy": {
            "coalesce": "10m", "active_hours": {"start": "08:00", "end": "20:00"}}},
    ))
    early = at("2026-11-24 07:00")
    laters = [await h.send(early + minutes(i), "report.daily", "later") for i in range(3)]
    nexts = [await h.send(early + minutes(30 + i), "ci.failed", "next") for i in range(2)]
    urgent = await h.send(early + minutes(45), "ci.failed", "now")
    h.engine.dispatch_due(early + minutes(45))
    assert h.woken() == [urgent]  # not deferred, not coalesced, dispatched at once
    h.engine.dispatch_due(at("2026-11-24 08:00"))
    order = h.woken()
    assert order[1:3] == nexts and order[3:] == laters  # next before later at 08:00


async def test_restart_changes_nothing(make, tmp_path: Path) -> None:
    """A restart in the middle of a cooldown, a budget day and a deferred window."""
    intents = intent_set(
        {"id": "cool", "match": {"type": "ci.*"}, "policy": {"cooldown": "1h"}},
        {"id": "hours", "match": {"type": "report.*"}, "policy": {
            "active_hours": {"start": "09:00", "end": "17:00", "timezone": "Europe/Berlin"}}},
        wakes_per_day=4, timezone="Europe/Berlin",
    )
    script = [(at("2026-11-24 06:00", "Europe/Berlin"), "report.x"),
              (at("2026-11-24 06:10", "Europe/Berlin"), "ci.a"),
              (at("2026-11-24 06:20", "Europe/Berlin"), "ci.b"),   # cooldown
              (at("2026-11-24 07:20", "Europe/Berlin"), "ci.c"),
              (at("2026-11-24 08:30", "Europe/Berlin"), "ci.d"),   # 3rd wake
              (at("2026-11-24 09:45", "Europe/Berlin"), "ci.e")]   # the 09:00 wake was the 4th

    async def run(h: Harness, restart_after: int | None) -> list[tuple[str, str]]:
        ids = []
        for n, (when, kind) in enumerate(script):
            ids.append(await h.send(when, kind))
            h.engine.dispatch_due(when)
            if n == restart_after:
                h.restart()
        h.engine.dispatch_due(at("2026-11-24 09:45", "Europe/Berlin"))
        intent_of = {"report": "hours", "ci": "cool"}
        return [h.final(i, intent_of[kind.split(".")[0]]) for i, (_w, kind) in zip(ids, script, strict=True)]

    straight = await run(make(intents), None)
    for restart_after in (0, 1, 2, 3, 4):
        assert await run(make(intents), restart_after) == straight
    assert [o for o, _r in straight] == ["woken", "woken", "suppressed", "woken", "woken",
                                         "skipped"]


JUDGE = [sys.executable, "-c"]


def judge_intent(code: str, on_failure: str = "skip", timeout: str = "5s") -> IntentSet:
    return one(judge={"command": [*JUDGE, code], "timeout": timeout, "on_failure": on_failure})


@pytest.mark.parametrize(
    ("code", "on_failure", "outcome", "reason_part"),
    [
        ('print(\'{"wake": true, "reason": "looks real"}\')', "skip", "woken", "ready"),
        ('print(\'{"wake": false, "reason": "flaky test"}\')', "wake", "suppressed", "flaky test"),
        ("print('not json at all')", "skip", "suppressed", "garbage"),
        ("print('not json at all')", "wake", "woken", "ready"),
        ("import sys; sys.exit(3)", "skip", "suppressed", "status 3"),
        ("import sys; sys.exit(3)", "wake", "woken", "ready"),
        ("import time; time.sleep(60)", "skip", "suppressed", "timed out"),
        ("import time; time.sleep(60)", "wake", "woken", "ready"),
    ],
    ids=["yes", "no", "garbage-skip", "garbage-wake", "crash-skip", "crash-wake",
         "hang-skip", "hang-wake"],
)
async def test_judge_answers_and_failures(make, code, on_failure, outcome, reason_part) -> None:
    h = make(judge_intent(code, on_failure, timeout="0.5s"))
    judged = await h.send(T)
    h.engine.dispatch_due(T)
    assert h.final(judged)[0] == outcome
    assert reason_part in h.final(judged)[1]
    assert [e for e in h.events if e.step == "judged" and e.interrupt == judged]
    # the engine is unharmed: the next interrupt is decided as usual
    unmatched = await h.send(T, "other.thing")
    assert h.final(unmatched, None)[0] == "unmatched"


async def test_judge_runs_only_after_deterministic_checks_and_is_cached(make, tmp_path) -> None:
    counter = tmp_path / "runs"
    code = (f"import pathlib; p = pathlib.Path({str(counter)!r}); "
            "p.write_text(str(int(p.read_text() or 0) + 1) if p.exists() else '1'); "
            "print('{\"wake\": true, \"tokens\": 7}')")
    h = make(intent_set({"id": "i", "match": {"type": "ci.*"},
                         "judge": {"command": [*JUDGE, code]},
                         "policy": {"condition": [{"field": "payload.n", "op": "gt", "value": 0}]}}))
    await h.send(T, payload={"n": 0})  # condition refuses: the judge is not asked
    assert not counter.exists()
    await h.send(T, payload={"n": 1}, dedupe_key="same")
    await h.send(T + minutes(1), payload={"n": 2}, dedupe_key="same")
    assert counter.read_text() == "1"
    cached = [e.detail.get("cached") for e in h.events if e.step == "judged"]
    assert cached == [None, True]
    assert h.engine.state.budget("2026-11-24")[1] == 7  # judge tokens count


async def test_replay_gives_the_live_decisions(make) -> None:
    judge = 'import json, sys; d = json.load(sys.stdin); print(json.dumps({"wake": d["payload"]["n"] % 3 != 0}))'
    intents = intent_set(
        {"id": "cool", "match": {"type": "ci.*"}, "policy": {
            "cooldown": "20m", "suppress_when_active": True, "max_reminders": 3}},
        {"id": "judged", "match": {"type": "ci.*", "all": [{"field": "payload.n", "op": "gt", "value": 5}]},
         "judge": {"command": [*JUDGE, judge]}},
        {"id": "burst", "match": {"type": "log.*"}, "policy": {
            "coalesce": "15m", "dedupe": "1h",
            "active_hours": {"start": "08:00", "end": "18:00", "timezone": "Europe/Berlin"}}},
        wakes_per_day=25, timezone="Europe/Berlin",
    )
    h = make(intents)
    day = at("2026-11-24 00:00", "Europe/Berlin")
    for n in range(120):
        when = day + minutes(n * 12)
        if n % 17 == 0:
            h.engine.dispatch_due(when)
            h.engine.report_activity("", when)
        kind = "ci.failed" if n % 2 else "log.line"
        await h.send(when, kind, ("now", "next", "later")[n % 3], payload={"n": n},
                     dedupe_key=f"k{n % 7}" if kind == "log.line" else None)
        h.engine.dispatch_due(when)
    end = day + minutes(24 * 60)
    h.engine.dispatch_due(end)

    result = await replay(intents, h.inbox.received_since(day), h.events, end)
    replayed = {k: d.outcome for k, d in result.final().items()}
    live = {k: d.outcome for k, d in final_outcomes(h.engine.decisions).items()}
    assert replayed == live
    from_log = outcomes_from_log(h.events)
    assert {k: v for k, v in replayed.items() if v != "pending"} == {
        k: v for k, v in from_log.items() if v not in ("pending",)
    }
    assert result.unjudged == 0
    outcomes = set(replayed.values())
    assert {"woken", "suppressed", "skipped"} <= outcomes


def _accepted(when: datetime, type: str = "ci.failed") -> Accepted:
    """An interrupt as the link has it after verifying: not yet stored."""
    envelope = Envelope(id=str(ulid.ULID()), to=ME.id, source=Source(kind="producer", name="gh"),
                        type=type, created_at=when, payload={"n": 1, "é": [1.5, None]},
                        signer=PRODUCER.id)
    return Accepted(envelope, sign_envelope(envelope, PRODUCER), None, when)


async def test_committed_items_are_what_the_inbox_reads_back(make) -> None:
    h = make(one())
    first, again = _accepted(T), _accepted(T)
    stored = h.inbox.commit([first, again, first])  # a repeat within the batch: stored once
    assert [i.id for i in stored] == [first.envelope.id, again.envelope.id]
    assert stored == h.inbox.after(0)
    assert h.inbox.commit([again]) == []  # a redelivery is not new


async def test_offered_items_are_decided_once_and_gaps_are_read_from_the_inbox(make) -> None:
    """The link hands what it committed to the engine; the engine uses it only while it
    continues its cursor, and reads anything else (another writer's rows, a restart)
    from the inbox: every interrupt is decided exactly once, in seq order."""
    h = make(one())
    linked = h.inbox.commit([_accepted(T), _accepted(T, "mail.received")])
    h.engine.offer(linked)
    h.engine.offer(linked)  # offered twice: the second copy is dropped
    assert await h.engine.catch_up() == 2
    local = h.commit(T)  # a watch's interrupt: committed by another writer, not offered
    later = h.inbox.commit([_accepted(T)])
    h.engine.offer(later)  # leaves a gap (local's seq) before it: read from the inbox
    assert await h.engine.catch_up() == 2
    h.engine.offer(linked)  # late: already decided
    assert await h.engine.catch_up() == 0
    decided = [e.interrupt for e in h.events if e.step == "received"]
    assert decided == [linked[0].id, linked[1].id, local, later[0].id]
    assert h.final(linked[1].id, None) == ("unmatched", "no intent matched")
    h.restart()  # nothing offered after a restart, nothing left to decide
    assert await h.engine.catch_up() == 0
