"""What the edge does with each delivered envelope, before anything else touches it:
verify (shape, trusted signer, signature, recipient is me, not expired), check that its
signer may claim its source kind, open a sealed payload, commit to the inbox — and only
then say which ids may be acked upstream.

The source check is what makes ``source_kind`` worth routing on (``shared.sources``):
``producer``/``webhook`` only under the pinned relay key, local kinds (``approval``,
``file``, ``timer``…) only under this edge's own key. Anything else claiming them is a
forgery, refused as ``forged_source`` even when its signature is good.

An envelope that fails any check is *recorded* (``inbox.rejections``) and refused
upstream, never silently dropped and never stored as an interrupt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.store.inbox import Accepted, Inbox, InboxItem, utc_now
from shared.envelope import ULID_RE
from shared.errors import InvalidEnvelope, RemoteProtocolError
from shared.frames import DeliverItem
from shared.identity import Identity, PublicIdentity
from shared.sealing import open_sealed
from shared.signing import SignedEnvelope, verify_envelope
from shared.sources import source_claim_refusal


@dataclass
class Outcome:
    """Ids to ack upstream (new or already stored) and (id, code) pairs to reject;
    ``stored``: the interrupts this batch newly committed, for the decision engine."""

    acked: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    stored: list[InboxItem] = field(default_factory=list)

    @property
    def new(self) -> int:
        return len(self.stored)


class Receiver:
    def __init__(
        self,
        identity: Identity,
        relay: PublicIdentity,
        inbox: Inbox,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.identity = identity
        self.relay = relay
        self.inbox = inbox
        self.clock = clock
        self._trusted: dict[str, Ed25519PublicKey] = {}
        self._load_trusted()

    def _load_trusted(self) -> None:
        """The pinned relay key plus the producer keys the user granted."""
        trusted = dict(self.inbox.trusted_keys())
        trusted[self.relay.id] = self.relay.verifier()
        self._trusted = trusted

    def process(self, items: list[DeliverItem]) -> Outcome:
        """Verify and commit one delivered batch. Blocking (CPU and one fsync): run it
        off the event loop. Returns once everything accepted is durable."""
        if self.inbox.changed():
            self._load_trusted()
        now = self.clock()
        accepted: list[Accepted] = []
        outcome = Outcome()
        for item in items:
            signed = SignedEnvelope(item.envelope, item.signature)
            try:
                envelope = verify_envelope(
                    signed, trusted=self._trusted, recipient=self.identity.id, now=now
                )
                forged = source_claim_refusal(
                    envelope.source.kind, envelope.signer,
                    relay=self.relay.id, recipient=self.identity.id,
                )
                if forged is not None:
                    raise InvalidEnvelope(forged, code="forged_source")
                payload = (
                    open_sealed(envelope.sealed, self.identity, envelope.id)
                    if envelope.sealed is not None
                    else envelope.payload
                )
            except RemoteProtocolError as exc:
                envelope_id = _peek_id(item.envelope)
                self.inbox.record_rejection(
                    envelope_text=item.envelope,
                    signature=item.signature,
                    code=exc.code,
                    message=exc.message,
                    envelope_id=envelope_id,
                    received_at=now,
                )
                if envelope_id is not None:
                    outcome.rejected.append((envelope_id, exc.code))
                continue
            accepted.append(Accepted(envelope, signed, payload, now))
        if accepted:
            outcome.stored = self.inbox.commit(accepted)
            outcome.acked = [a.envelope.id for a in accepted]
        return outcome


def _peek_id(text: str) -> str | None:
    """The id of an envelope we refused, if it has a readable one (to tell the relay)."""
    try:
        value = json.loads(text).get("id")
    except (ValueError, AttributeError, RecursionError):  # a refused text may be anything
        return None
    if isinstance(value, str) and re.fullmatch(ULID_RE, value):
        return value
    return None
