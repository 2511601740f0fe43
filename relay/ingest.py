"""Accepting interrupts from producers: who may send what to whom, then store.

Two ways in, one rule: an interrupt is stored only when its signer is trusted for its
recipient — the relay itself (a *draft* sent with a producer token, which the relay signs
as its attestation) or a producer key the recipient granted (a *signed* envelope, which
the relay cannot forge and, if sealed, cannot read). Checks run cheapest first and
nothing is written until all of them pass.
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
from shared.errors import Expired, UntrustedSigner
from shared.identity import Identity
from shared.signing import SignedEnvelope, check_signature, sign_envelope


class Draft(BaseModel):
    """What a producer with a bearer token posts; the relay fills in the rest and signs.
    ``id`` is optional: send your own to make retries idempotent."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: UlidStr | None = None
    to: IdentityId
    type: TypeName
    priority: Priority = Priority.next
    session: Session | None = None
    source: Source | None = None
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
        try:
            return Draft.model_validate(doc)
        except ValidationError as exc:
            raise validation_error(exc, "draft") from exc

    async def submit_draft(self, draft: Draft, producer: ProducerToken) -> Stored:
        self._check_route(draft.to, producer)
        await self.registry.require_identity(draft.to)
        now = self.clock()
        self._check_not_expired(draft.expires_at, now)
        fields = draft.model_dump(exclude_none=True, exclude={"id", "source"})
        try:
            envelope = Envelope(
                **fields,
                id=draft.id or str(ULID()),
                source=draft.source or Source(kind="producer", name=producer.name),
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
        duplicate = await self.store.publish(
            envelope.to, envelope.priority, envelope.id, signed.to_wire(), ttl
        )
        return Stored(envelope.id, duplicate)
