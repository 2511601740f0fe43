"""A decision engine on real files (SQLite inbox and state) with time in the test's hands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ulid

from edge.engine.decide import Engine, JudgeFn
from edge.intents.model import IntentSet
from edge.store.activity import Event
from edge.store.enginestate import EngineState
from edge.store.inbox import Accepted, Inbox
from shared.envelope import Envelope, Priority, Source
from shared.identity import Identity
from shared.signing import sign_envelope

PRODUCER = Identity.generate()
ME = Identity.generate()


def intent_set(*intents: dict[str, Any], **settings: Any) -> IntentSet:
    return IntentSet.model_validate({"settings": settings, "intents": list(intents)})


class Harness:
    """Interrupts are committed to a real inbox with a chosen arrival time and decided by
    a real engine whose state is a real SQLite file; records are kept in ``events``."""

    def __init__(self, root: Path, intents: IntentSet, judge: JudgeFn | None = None) -> None:
        self.root = root
        self.intents = intents
        self.judge = judge
        root.mkdir(parents=True, exist_ok=True)
        self.inbox = Inbox.open(root / "inbox.sqlite3")
        self.events: list[Event] = []
        self.engine = self._engine()

    def _engine(self) -> Engine:
        state = EngineState.open(self.root / "engine.sqlite3")
        engine = Engine(self.intents, state, self.events.extend, inbox=self.inbox,
                        judge=self.judge)
        engine.keep_decisions = True
        return engine

    def restart(self) -> None:
        """Drop the engine and its connection; a new one continues from the files."""
        decisions = self.engine.decisions
        self.engine.state.close()
        self.engine = self._engine()
        self.engine.decisions = decisions

    def close(self) -> None:
        self.engine.state.close()
        self.inbox.close()

    def commit(
        self, at: datetime, type: str = "ci.failed", priority: str = "next", *,
        payload: dict[str, Any] | None = None, session: str | None = None,
        dedupe_key: str | None = None, permissions: dict[str, Any] | None = None,
    ) -> str:
        envelope = Envelope(
            id=str(ulid.ULID()), to=ME.id, session=session,
            source=Source(kind="producer", name="github"), type=type,
            priority=Priority(priority), created_at=at, dedupe_key=dedupe_key,
            payload=payload if payload is not None else {"n": 1}, signer=PRODUCER.id,
            permissions=permissions,
        )
        signed = sign_envelope(envelope, PRODUCER)
        self.inbox.commit_batch([Accepted(envelope, signed, None, at)])
        return envelope.id

    async def send(self, at: datetime, type: str = "ci.failed", priority: str = "next",
                   **kwargs: Any) -> str:
        """Commit one interrupt and let the engine decide it."""
        interrupt = self.commit(at, type, priority, **kwargs)
        await self.decide_new()
        return interrupt

    async def decide_new(self) -> None:
        await self.engine.decide(self.inbox.after(self.engine.state.cursor))

    def final(self, interrupt: str, intent: str | None = "i") -> tuple[str, str]:
        """The last (outcome, reason) for an interrupt and intent."""
        found = [d for d in self.engine.decisions if d.interrupt == interrupt and d.intent == intent]
        assert found, f"no decision for {interrupt} / {intent}"
        return found[-1].outcome, found[-1].reason

    def rule(self, interrupt: str, intent: str = "i") -> str | None:
        """The policy rule recorded for the last refusal of ``interrupt``."""
        rules = [e.detail.get("rule") for e in self.events
                 if e.interrupt == interrupt and e.intent == intent and "rule" in e.detail]
        return rules[-1] if rules else None

    def woken(self) -> list[str]:
        return [e.interrupt for e in self.events if e.step == "woken" and e.interrupt]


def at(text: str, zone: str = "UTC") -> datetime:
    """``at("2026-03-29 01:30", "Europe/Berlin")`` → an aware datetime."""
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
