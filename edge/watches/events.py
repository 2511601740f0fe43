"""Local interrupts: what the edge's own watches raise.

A local interrupt is the same envelope a remote producer sends, addressed to this edge,
signed with the edge's own key, with a local source kind (``shared.sources.LOCAL_KINDS``:
``file``, ``command``, ``timer``, ``absence``, ``sleep``, ``tick``, ``approval``). It is
committed to the same inbox and goes through the same decision engine, so intents,
policy, the activity log, ``explain`` and ``replay`` treat both alike. Those kinds are
reserved: the edge refuses them from anyone but itself (``edge.link.receiver``), so a rule
on ``source_kind = "approval"`` cannot be triggered from outside.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ulid import ULID

from edge.store.inbox import Accepted, Inbox
from shared.envelope import PAYLOAD_MAX_BYTES, Envelope, Priority, Source
from shared.identity import Identity
from shared.signing import sign_envelope
from shared.sources import LOCAL_KINDS


class LocalRaiser:
    def __init__(
        self,
        identity: Identity,
        inbox: Inbox,
        on_new: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.identity = identity
        self.inbox = inbox
        self.on_new = on_new
        self.clock = clock

    def envelope(
        self, kind: str, name: str, type_: str, payload: dict[str, Any], *,
        priority: Priority | str = Priority.next, session: str | None = None,
        event_id: str | None = None, at: datetime | None = None,
    ) -> Envelope:
        assert kind in LOCAL_KINDS, kind
        return Envelope(
            id=str(ULID()),
            to=self.identity.id,
            session=session,
            source=Source(kind=kind, name=name, event_id=event_id),
            type=type_,
            priority=Priority(priority),
            created_at=at or self.clock(),
            payload=fit_payload(payload),
            signer=self.identity.id,
        )

    def raise_event(
        self, kind: str, name: str, type_: str, payload: dict[str, Any], **options: Any
    ) -> str:
        """Sign, commit to the inbox (durable when this returns), wake the engine."""
        envelope = self.envelope(kind, name, type_, payload, **options)
        signed = sign_envelope(envelope, self.identity)
        new = self.inbox.commit_batch(
            [Accepted(envelope, signed, None, options.get("at") or self.clock())]
        )
        if new:
            self.on_new()
        return envelope.id


def fit_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Local sources can produce more than an interrupt may carry: shorten the longest
    text fields until it fits, and say so, rather than lose the event."""
    doc = dict(payload)
    while _size(doc) > PAYLOAD_MAX_BYTES:
        texts = [(len(v), k) for k, v in doc.items() if isinstance(v, str)]
        if not texts:
            return {"truncated": True, "note": "payload too large for an interrupt"}
        length, key = max(texts)
        doc[key] = doc[key][: max(0, length // 2)]
        doc["truncated"] = True
    return doc


def _size(doc: dict[str, Any]) -> int:
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())
