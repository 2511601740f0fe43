"""Backtest: run stored interrupts through a candidate intent set, waking nothing.

The engine is the live one, on a scratch state (``:memory:``), fed the same inputs in the
same order of time: each interrupt at the time the edge received it, each ``mailslot
activity`` report at the time it was made (both read back from the inbox and the activity
log). Judges are not run again: the verdict recorded live for that interrupt and intent is
reused; an interrupt that was never judged live for that intent gets the intent's
``on_failure``, and the report says so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge.engine.decide import Decision, Engine
from edge.engine.judge import Judgment
from edge.intents.model import Intent, IntentSet
from edge.store.activity import Entry
from edge.store.enginestate import EngineState
from edge.store.inbox import InboxItem

#: Outcomes that end an interrupt's story for one intent (deferred/pending ones go on).
FINAL = ("woken", "suppressed", "skipped", "unmatched")


@dataclass(frozen=True)
class ReplayResult:
    decisions: list[Decision]
    unjudged: int

    def final(self) -> dict[tuple[str, str | None], Decision]:
        return final_outcomes(self.decisions)

    def summary(self) -> dict[str, int]:
        return dict(Counter(d.outcome for d in self.final().values()))


def final_outcomes(decisions: list[Decision]) -> dict[tuple[str, str | None], Decision]:
    """The last word on each (interrupt, intent): a deferred wake that later woke is woken."""
    last: dict[tuple[str, str | None], Decision] = {}
    for decision in decisions:
        last[(decision.interrupt, decision.intent)] = decision
    return last


def outcomes_from_log(entries: list[Entry]) -> dict[tuple[str, str | None], str]:
    """The live engine's last word on each (interrupt, intent), from its activity log."""
    steps = {"woken": "woken", "suppressed": "suppressed", "deferred": "deferred",
             "coalesced": "coalesced", "unmatched": "unmatched"}
    last: dict[tuple[str, str | None], str] = {}
    for entry in entries:
        if entry.interrupt is None:
            continue
        key = (entry.interrupt, entry.intent)
        if entry.step in steps:
            last[key] = steps[entry.step]
        elif entry.step == "outcome" and entry.detail.get("outcome") == "skipped":
            last[key] = "skipped"
    return last


async def replay(
    intents: IntentSet,
    items: list[InboxItem],
    log_entries: list[Entry],
    until: datetime,
) -> ReplayResult:
    verdicts: dict[tuple[str, str], dict[str, Any]] = {}
    activity: list[tuple[datetime, str]] = []
    for entry in log_entries:
        if entry.step == "judged" and entry.interrupt and entry.intent:
            verdicts[(entry.interrupt, entry.intent)] = entry.detail
        elif entry.step == "activity":
            activity.append((entry.at, str(entry.detail.get("session", ""))))
    unjudged = 0

    async def recorded_judge(intent: Intent, doc: dict[str, Any]) -> Judgment:
        nonlocal unjudged
        found = verdicts.get((doc["id"], intent.id))
        if found is None or found.get("failure"):
            unjudged += found is None
            reason = found.get("failure") if found else "not judged live"
            return Judgment(wake=None, reason=str(reason), failure=str(reason))
        return Judgment(wake=bool(found["wake"]), reason=str(found.get("reason", "")))

    state = EngineState.open(":memory:")
    try:
        engine = Engine(intents, state, lambda _events: None, inbox=None,
                        judge=recorded_judge)
        engine.keep_decisions = True
        inputs: list[tuple[datetime, int, Any]] = [
            *((item.received_at, 1, item) for item in items),
            *((at, 0, session) for at, session in activity),
        ]
        inputs.sort(key=lambda x: (x[0], x[1]))
        for at, kind, value in inputs:
            if kind == 0:
                engine.report_activity(value, at)
            else:
                await engine.decide([value])
        engine.dispatch_due(until)
        return ReplayResult(engine.decisions, unjudged)
    finally:
        state.close()
