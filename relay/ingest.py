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

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError
from ulid import ULID

from relay.config import Plan
from relay.errors import RelayError, Unauthorized
from relay.quota import PendingQuota
from relay.ratelimit import RateLimiter
from relay.registry import ProducerToken, Registry
from relay.store import Store
from relay.usage import Reservation
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
from shared.errors import Expired, InvalidEnvelope, RemoteProtocolError, UntrustedSigner
from shared.identity import Identity
from shared.limits import TTL_MAX_SECONDS, check_created_at
from shared.signing import SignedEnvelope, check_signature, sign_envelope, signed_from_doc
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


#: A plan that limits nothing (``_check_limits`` has nothing to do for its accounts).
_UNLIMITED = Plan()
#: How many checked batch items are queued before the publishes are let go out.
_YIELD_EVERY = 8

#: One item's outcome in a batch: stored (or a duplicate), or the refusal it would have
#: had as a single post.
BatchResult = Stored | RemoteProtocolError | RelayError


@dataclass(frozen=True)
class _Checked:
    """An interrupt that passed every check: ready to publish."""

    envelope: Envelope
    #: Its signed form, made on first call (``Ingest._attest``) and kept.
    signed: Callable[[], SignedEnvelope]
    now: datetime
    #: Its bytes in the plan's byte ledger (``relay.usage``), settled once published.
    usage: Reservation | None = None
    #: JetStream's deduplication id (``Nats-Msg-Id``, after the recipient) when it is not
    #: the envelope's id: a webhook's hook and delivery id (``submit_webhook``).
    msg_id: str | None = None


class Ingest:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        relay: Identity,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        limiter: RateLimiter | None = None,
        quota: PendingQuota | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.relay = relay
        self.clock = clock
        #: The plans' publish rates and pending caps (None: not applied at all).
        self.limiter = limiter
        self.quota = quota

    async def _check_limits(
        self, account: str, producer: ProducerToken | None, signed: Callable[[], SignedEnvelope],
        to: str,
    ) -> Reservation | None:
        """The last checks before publishing, by the account's plan: its pending caps
        (``relay.quota``: ``QuotaExceeded``), then the token's and the account's rate
        buckets (``relay.ratelimit``: ``RateLimited``), then its byte caps, which add
        the interrupt to the byte ledger (``relay.usage``: ``ByteQuotaExceeded``).
        ``signed`` gives the signed form (its size is what the byte caps count): for a
        relay attestation it is signed only when needed, so that a flood refused by its
        rate or pending cap costs the relay no signature (see ``_attest``)."""
        config = self.registry.config
        if config is None or (self.limiter is None and self.quota is None):
            return None
        _, plan = config.plan_of((await self.registry.account(account)).get("plan"))
        if plan == _UNLIMITED:
            return None  # the common case of a relay without plans: nothing to check

        async def identities() -> list[str]:
            return [i["id"] for i in await self.registry.identities(account)]

        if self.quota is not None:
            await self.quota.check(account, identities, plan, to)
        if self.limiter is not None:
            await self.limiter.take(plan, account, producer.id if producer else None)
        if self.quota is None:
            return None
        return await self.quota.reserve(account, identities, plan, to,
                                        lambda: len(signed().to_wire()))

    async def refuse_early(self, producer: ProducerToken) -> None:
        """Refuse a producer's request from its head alone (before its body is parsed),
        when this process already knows that the checks of ``_check_limits`` would refuse
        it, and with the same refusal they would give: its account at its pending cap
        (``QuotaExceeded``, from a count read less than ``relay.quota.COUNT_TTL`` ago),
        or — when that count is current and below the cap and the plan has no cap per
        identity, so that the pending checks would pass — the token's or the account's
        rate bucket empty (``RateLimited``, from the state this process last wrote or
        read, which can only be behind NATS). Anything else: no answer, and the request
        takes the whole path. A flood refused here costs no body parse, no validation
        and no look-up beyond the token's."""
        config = self.registry.config
        quota, limiter = self.quota, self.limiter
        if config is None or not (
            (quota is not None and quota.fresh(producer.account))
            or (limiter is not None and limiter.knows(producer.account, producer.id))
        ):
            return  # nothing known about this account here: nothing to refuse from memory
        _, plan = config.plan_of((await self.registry.account(producer.account)).get("plan"))
        if quota is not None:
            refusal = quota.known_refusal(producer.account, plan)
            if refusal is not None:
                raise refusal
        if limiter is None or plan.max_pending_per_identity is not None or (
            quota is not None and plan.max_pending is not None
            and not quota.fresh(producer.account)
        ):
            return
        limited = limiter.known_refusal(plan, producer.account, producer.id)
        if limited is not None:
            raise limited

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
        return await self._publish(await self._check_draft(draft, producer))

    async def submit_signed(self, signed: SignedEnvelope, producer: ProducerToken | None) -> Stored:
        return await self._publish(await self._check_signed(signed, producer))

    async def submit_doc(self, doc: object, producer: ProducerToken | None) -> Stored:
        """One body of ``POST /v1/interrupts``: a signed envelope or a draft."""
        return await self._publish(await self._check_doc(doc, producer))

    async def submit_batch(
        self, docs: Sequence[object], producer: ProducerToken | None
    ) -> list[BatchResult]:
        """Check every item as a single post would be checked, then publish the good ones
        all at once (pipelined on the one NATS connection; JetStream takes them in list
        order, so a repeated id within a batch is the later item's duplicate). Each result
        is known only once JetStream acknowledged (or refused) that item."""
        results: list[BatchResult | asyncio.Task[Stored]] = []
        recipients: set[str] = set()
        try:
            for n, doc in enumerate(docs):
                try:
                    checked = await self._check_doc(doc, producer)
                except (RemoteProtocolError, RelayError) as exc:
                    results.append(exc)
                    continue
                # Published as soon as checked, so that checking the rest overlaps with
                # JetStream's writes; tasks start in creation order, so the publishes
                # reach NATS in list order. (Signing in a worker thread, chunk by chunk,
                # was measured slower: the publishes start later, and the thread waits
                # for the GIL to hand each chunk back.)
                results.append(asyncio.ensure_future(self._publish(checked, notify=False)))
                recipients.add(checked.envelope.to)
                if n % _YIELD_EVERY == _YIELD_EVERY - 1:
                    await asyncio.sleep(0)  # let the publishes queued so far go out
            tasks = [r for r in results if isinstance(r, asyncio.Task)]
            if tasks:
                await asyncio.wait(tasks)
            for recipient in recipients:  # one wake-up per recipient, once all are in
                await self.store.notify(recipient)
        except BaseException:
            for r in results:
                if isinstance(r, asyncio.Task):
                    r.cancel()
            raise
        out: list[BatchResult] = []
        for r in results:
            if not isinstance(r, asyncio.Task):
                out.append(r)
            elif isinstance(r.exception(), RemoteProtocolError | RelayError):
                out.append(r.exception())  # type: ignore[arg-type]
            else:
                out.append(r.result())  # a bug re-raises: answered 500 like a single post
        return out

    async def submit_webhook(
        self, account: str, to: str, name: str, type_: str, priority: Priority,
        payload: dict[str, Any], event_id: str | None, msg_id: str | None,
    ) -> Stored:
        """A delivery a hook verified and mapped (``relay.hooks.routes``), attested by the
        relay: source kind ``webhook``, name = the hook's name, ``event_id`` = the
        provider's delivery id. ``msg_id`` (made of the hook and delivery ids) makes a
        redelivery within JetStream's duplicate window a duplicate (the hook claimed the
        delivery id before: ``relay.hooks.routes``). The account's plan applies as to a
        draft (pending caps, its rate, the byte ledger)."""
        await self.registry.require_identity(to)
        now = self.clock()
        try:
            envelope = Envelope(id=str(ULID()), to=to, type=type_, priority=priority,
                                payload=payload, created_at=now, signer=self.relay.id,
                                source=Source(kind="webhook", name=name, event_id=event_id))
        except ValidationError as exc:
            raise validation_error(exc, "webhook") from exc
        signed = self._attest(envelope)
        usage = await self._check_limits(account, None, signed, envelope.to)
        return await self._publish(_Checked(envelope, signed, now, usage, msg_id))

    async def _check_doc(self, doc: object, producer: ProducerToken | None) -> _Checked:
        if isinstance(doc, dict) and "envelope" in doc:
            return await self._check_signed(signed_from_doc(doc), producer)
        if producer is None:
            raise Unauthorized(
                "a draft needs 'Authorization: Bearer <producer token>'", code="missing_token"
            )
        return await self._check_draft(self.parse_draft(doc), producer)

    async def _check_draft(self, draft: Draft, producer: ProducerToken) -> _Checked:
        producer.check(draft.to, draft.type)  # recipient and type scope (registry)
        await self.registry.require_identity(draft.to)
        now = self.clock()
        self._check_not_expired(draft.expires_at, now)
        fields = draft.model_dump(exclude_none=True, exclude={"id", "event_id"})
        return await self._relay_attested(
            {**fields, "id": draft.id or str(ULID())},
            Source(kind="producer", name=producer.name, event_id=draft.event_id), now,
            producer.account, producer, "draft")

    async def _relay_attested(
        self, fields: dict[str, Any], source: Source, now: datetime, account: str,
        producer: ProducerToken | None, what: str,
    ) -> _Checked:
        """An envelope the relay attests (a draft's, a webhook's): validated, then the
        account's limits, then (``_attest``) signed."""
        try:
            envelope = Envelope(**fields, source=source, created_at=now, signer=self.relay.id)
        except ValidationError as exc:
            raise validation_error(exc, what) from exc
        signed = self._attest(envelope)
        usage = await self._check_limits(account, producer, signed, envelope.to)
        return _Checked(envelope, signed, now, usage)

    def _attest(self, envelope: Envelope) -> Callable[[], SignedEnvelope]:
        """The relay's signature over ``envelope``, made on first use and kept: the
        limits run before it (they refuse a flood without signing each refused draft;
        the envelope was validated already, so a refusal after them cannot come from
        it), and only the byte caps need the signed size earlier."""
        made: list[SignedEnvelope] = []

        def signed() -> SignedEnvelope:
            if not made:
                made.append(sign_envelope(envelope, self.relay))
            return made[0]

        return signed

    async def _check_signed(
        self, signed: SignedEnvelope, producer: ProducerToken | None
    ) -> _Checked:
        envelope = parse_envelope(signed.envelope)
        if producer is not None:
            producer.check(envelope.to, envelope.type)
        refusal = source_claim_refusal(
            envelope.source.kind, envelope.signer, relay=self.relay.id, recipient=envelope.to
        )
        if refusal is not None:
            raise InvalidEnvelope(f"source.kind: {refusal}", code="source_not_allowed")
        _, account = await self.registry.require_identity(envelope.to)
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
        usage = await self._check_limits(
            producer.account if producer else account, producer, lambda: signed, envelope.to)
        return _Checked(envelope, lambda: signed, now, usage)

    @staticmethod
    def _check_not_expired(expires_at: datetime | None, now: datetime) -> None:
        if expires_at is not None and expires_at <= now:
            raise Expired(f"expires_at {expires_at.isoformat()} is in the past")

    async def _publish(self, checked: _Checked, notify: bool = True) -> Stored:
        envelope, signed, now = checked.envelope, checked.signed(), checked.now
        ttl = (envelope.expires_at - now).total_seconds() if envelope.expires_at else None
        if ttl is not None:
            # JetStream's per-message TTL overflows past ~292 years (nanoseconds in an
            # int64): such a message was stored, answered 202, and dropped at once.
            ttl = min(ttl, TTL_MAX_SECONDS)
        stored = False
        try:
            duplicate = await self.store.publish(
                envelope.to, envelope.priority, checked.msg_id or envelope.id, signed.to_wire(),
                ttl, notify
            )
            stored = not duplicate
        finally:
            if checked.usage is not None:
                await checked.usage.done(stored)  # a failure or a duplicate: taken back
        return Stored(envelope.id, duplicate)

