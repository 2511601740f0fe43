"""Accepting interrupts from producers: who may send what to whom, then store.

Two ways in, one rule: an interrupt is stored only when its signer is trusted for its
recipient — the relay itself (a *draft* sent with a producer token, which the relay signs
as its attestation) or a producer key the recipient granted (a *signed* envelope, which
the relay cannot forge and, if sealed, cannot read). Checks run cheapest first and
nothing is written until all of them pass.

``source`` is part of the attestation: the relay sets it for a draft (kind ``producer``,
the token's name) and refuses a draft that tries to; a signed envelope may name any kind
but the reserved ones (``shared.sources``), which only the relay or the edge may claim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError
from ulid import ULID

from relay.errors import Forbidden
from relay.registry import ProducerToken, Registry
from relay.store import Store
from shared.envelope import (
    DedupeKey,
    Envelope,
    EventId,
    IdentityId,
    Permissions,
    Priority,
    Sealed,
    Session,
    Source,
    TypeName,
    UlidStr,
    parse_envelope,
    validation_error,
)
from shared.errors import Expired, InvalidEnvelope, UntrustedSigner
from shared.identity import Identity
from shared.limits import TTL_MAX_SECONDS, check_created_at
from shared.signing import SignedEnvelope, check_signature, sign_envelope
from shared.sources import source_claim_refusal


class Draft(BaseModel):
    """What a producer with a bearer token posts; the relay fills in the rest and signs.
    ``id`` is optional: send your own to make retries idempotent. ``source`` is the
    relay's to set (kind ``producer``, name from the token), so a draft carrying one is
    refused; ``event_id`` (your own id for the event, e.g. a webhook delivery id) becomes
    ``source.event_id``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: UlidStr | None = None
    to: IdentityId
    type: TypeName
    priority: Priority = Priority.next
    session: Session | None = None
    event_id: EventId | None = None
    expires_at: AwareDatetime | None = None
    dedupe_key: DedupeKey | None = None
    payload: dict[str, Any] | None = None
    sealed: Sealed | None = None
    permissions: Permissions | None = None


@dataclass(frozen=True)
class Stored:
    id: str
    duplicate: bool


class Ingest:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        relay: Identity,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.registry = registry
        self.relay = relay
        self.clock = clock

    def parse_draft(self, doc: object) -> Draft:
        if isinstance(doc, dict) and "source" in doc:
            raise InvalidEnvelope(
                "source: the relay sets source for drafts (kind producer, name from the "
                "token); send your own event id as event_id",
                code="source_not_allowed",
            )
        try:
            return Draft.model_validate(doc)
        except ValidationError as exc:
            raise validation_error(exc, "draft") from exc

    async def submit_draft(self, draft: Draft, producer: ProducerToken) -> Stored:
        self._check_route(draft.to, producer)
        await self.registry.require_identity(draft.to)
        now = self.clock()
        self._check_not_expired(draft.expires_at, now)
        fields = draft.model_dump(exclude_none=True, exclude={"id", "event_id"})
        try:
            envelope = Envelope(
                **fields,
                id=draft.id or str(ULID()),
                source=Source(kind="producer", name=producer.name, event_id=draft.event_id),
                created_at=now,
                signer=self.relay.id,
            )
        except ValidationError as exc:
            raise validation_error(exc, "draft") from exc
        return await self._store(envelope, sign_envelope(envelope, self.relay), now)

    async def submit_signed(self, signed: SignedEnvelope, producer: ProducerToken | None) -> Stored:
        envelope = parse_envelope(signed.envelope)
        if producer is not None:
            self._check_route(envelope.to, producer)
        refusal = source_claim_refusal(
            envelope.source.kind, envelope.signer, relay=self.relay.id, recipient=envelope.to
        )
        if refusal is not None:
            raise InvalidEnvelope(f"source.kind: {refusal}", code="source_not_allowed")
        await self.registry.require_identity(envelope.to)
        if envelope.signer == self.relay.id:
            raise UntrustedSigner("only the relay signs relay attestations")
        if not await self.registry.is_granted(envelope.to, envelope.signer):
            raise UntrustedSigner(f"{envelope.to} has not granted signer {envelope.signer}")
        signer = await self.registry.identity(envelope.signer)
        if signer is None:
            raise UntrustedSigner(f"signer {envelope.signer} is not enrolled")
        check_signature(signed, signer[0].verifier())
        now = self.clock()
        self._check_not_expired(envelope.expires_at, now)
        check_created_at(envelope.created_at, now)  # by our clock, at the door only
        return await self._store(envelope, signed, now)

    @staticmethod
    def _check_route(to: str, producer: ProducerToken) -> None:
        if to != producer.to:
            raise Forbidden(f"this token may not send to {to}", code="recipient_not_allowed")

    @staticmethod
    def _check_not_expired(expires_at: datetime | None, now: datetime) -> None:
        if expires_at is not None and expires_at <= now:
            raise Expired(f"expires_at {expires_at.isoformat()} is in the past")

    async def _store(self, envelope: Envelope, signed: SignedEnvelope, now: datetime) -> Stored:
        ttl = (envelope.expires_at - now).total_seconds() if envelope.expires_at else None
        if ttl is not None:
            # JetStream's per-message TTL overflows past ~292 years (nanoseconds in an
            # int64): such a message was stored, answered 202, and dropped at once.
            ttl = min(ttl, TTL_MAX_SECONDS)
        duplicate = await self.store.publish(
            envelope.to, envelope.priority, envelope.id, signed.to_wire(), ttl
        )
        return Stored(envelope.id, duplicate)
