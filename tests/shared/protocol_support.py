"""Values for the sans-I/O protocol tests: fixed identities, envelope documents and one
sample of every link frame. Nothing here opens a socket, a file or a clock.

Plain values and functions, not fixtures: a ``conftest.py`` here would shadow
``tests/conftest.py`` as the ``conftest`` module that other test modules import from.
Everything here is immutable (identities, frozen frames) or built fresh per call."""

from __future__ import annotations

import json
from typing import Any

from shared.envelope import Envelope
from shared.frames import (
    Ack,
    Auth,
    Challenge,
    Credit,
    Deliver,
    DeliverItem,
    Error,
    Frame,
    Nak,
    Pending,
    Reject,
    Welcome,
)
from shared.identity import Identity

ENVELOPE_ID = "01JGZ6V7YH8M3Q5R2T4W6Y8Z0A"
CREATED_AT = "2025-01-02T03:04:05Z"


def _seeds(first: int) -> tuple[bytes, bytes]:
    return bytes(range(first, first + 32)), bytes(range(first + 32, first + 64))


#: The producer in most tests: signs envelopes.
alice = Identity.from_seeds(*_seeds(0))
#: The recipient in most tests: receives envelopes, opens sealed payloads.
bob = Identity.from_seeds(*_seeds(64))
#: Someone who is neither: her keys must never pass for alice's or bob's.
mallory = Identity.from_seeds(*_seeds(128))


def envelope_doc(**changes: Any) -> dict[str, Any]:
    """A valid envelope document (JSON values) from alice to bob; keyword arguments
    replace top-level fields, and a value of ``None`` removes the field."""
    doc: dict[str, Any] = {
        "v": 1,
        "id": ENVELOPE_ID,
        "to": bob.id,
        "source": {"kind": "producer", "name": "ci"},
        "type": "build.failed",
        "priority": "next",
        "created_at": CREATED_AT,
        "payload": {"repo": "mailslot", "run": 42},
        "signer": alice.id,
    }
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def make_envelope(**changes: Any) -> Envelope:
    """Like ``envelope_doc`` but parsed into an ``Envelope`` (through its JSON text)."""
    return Envelope.model_validate_json(json.dumps(envelope_doc(**changes)))


_FRAMES: list[Frame] = [
    Challenge(nonce="n" * 32, time=1_735_787_045, relay="relay.example"),
    Auth(identity=alice.id, sig="s" * 86),
    Welcome(session="s1", pending=Pending(now=1, next=2, later=3)),
    Credit(n=8),
    Deliver(items=[DeliverItem(envelope="{}", signature="s" * 86)]),
    Ack(ids=[ENVELOPE_ID]),
    Nak(id=ENVELOPE_ID, delay=1.5),
    Reject(id=ENVELOPE_ID, code="expired"),
    Error(code="going_away", message="bye"),
]
#: One valid frame of every type, keyed by its ``type``.
frame_samples: dict[str, Frame] = {frame.type: frame for frame in _FRAMES}
