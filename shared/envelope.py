"""The interrupt envelope: what happened, whose it is, how urgent, what it may unlock.

An envelope is small on purpose: it should carry the minimum context an agent needs to
decide whether to look, not the thing itself. Caps are enforced here, at parse time, so
an oversized interrupt is refused before it is stored anywhere.

Envelopes are immutable and strict (unknown fields are refused). The bytes that get signed
come from exactly one function, ``envelope_bytes``; see ``shared.signing``.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.errors import InvalidEnvelope, MalformedInput, RemoteProtocolError, TooLarge
from shared.tokens import (
    check_identity,
    check_name,
    check_opaque,
    check_session,
    check_type,
)

#: Largest serialized ``payload`` (or sealed ciphertext) an envelope may carry.
PAYLOAD_MAX_BYTES = 16 * 1024
#: Largest signed envelope on the wire, signature and framing included.
ENVELOPE_MAX_BYTES = 64 * 1024
#: Longest ``sealed.ct``: unpadded base64url of a full payload plus its 16-byte AEAD tag.
SEALED_CT_MAX_CHARS = -(-(PAYLOAD_MAX_BYTES + 16) * 4 // 3)
ULID_RE = r"^[0-9A-HJKMNP-TV-Z]{26}$"


class Priority(StrEnum):
    """Urgency classes. Every pending ``now`` is drained before any ``next``, and every
    ``next`` before any ``later``; FIFO within a class."""

    now = "now"
    next = "next"
    later = "later"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Priority.now: 0, Priority.next: 1, Priority.later: 2}
PRIORITIES: tuple[Priority, ...] = (Priority.now, Priority.next, Priority.later)

IdentityId = Annotated[str, AfterValidator(check_identity)]
Name = Annotated[str, AfterValidator(check_name)]
TypeName = Annotated[str, AfterValidator(check_type)]
Session = Annotated[str, AfterValidator(check_session)]
EventId = Annotated[str, AfterValidator(lambda v: check_opaque(v, "event_id"))]
DedupeKey = Annotated[str, AfterValidator(lambda v: check_opaque(v, "dedupe_key"))]
UlidStr = Annotated[str, Field(pattern=ULID_RE)]

_STRICT = ConfigDict(frozen=True, extra="forbid")


class Source(BaseModel):
    """Who raised it: ``kind`` (producer, webhook, file, command, timer…) and ``name``."""

    model_config = _STRICT
    kind: Name
    name: TypeName
    event_id: EventId | None = None


class Permissions(BaseModel):
    """What the producer asks that the woken agent may do. The edge intersects this with
    the matching intent's grant; a producer can never widen what the user granted."""

    model_config = _STRICT
    actions: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:*/-]{1,128}$")]] = Field(
        max_length=64
    )
    expires_at: AwareDatetime | None = None


class Sealed(BaseModel):
    """A payload encrypted to the recipient's box key (see ``shared.sealing``)."""

    model_config = _STRICT
    alg: Literal["x25519-hkdf-sha256-chacha20poly1305"]
    epk: str = Field(max_length=64)
    nonce: str = Field(max_length=32)
    ct: str

    @field_validator("ct")
    @classmethod
    def _ciphertext_cap(cls, value: str) -> str:
        # base64url of at most PAYLOAD_MAX_BYTES of plaintext plus the 16-byte tag
        if len(value) > SEALED_CT_MAX_CHARS:
            raise PayloadCapExceeded
        return value


class Envelope(BaseModel):
    """One interrupt. Build it, then sign it with ``shared.signing.sign_envelope``."""

    model_config = _STRICT
    v: Literal[1] = 1
    id: UlidStr
    to: IdentityId
    session: Session | None = None
    source: Source
    type: TypeName
    priority: Priority = Priority.next
    created_at: AwareDatetime
    expires_at: AwareDatetime | None = None
    dedupe_key: DedupeKey | None = None
    payload: dict[str, Any] | None = None
    sealed: Sealed | None = None
    permissions: Permissions | None = None
    signer: IdentityId

    @model_validator(mode="after")
    def _payload_rules(self) -> Envelope:
        if self.payload is not None and self.sealed is not None:
            raise ValueError("an envelope carries payload or sealed, not both")
        if self.payload is not None and _json_size(self.payload) > PAYLOAD_MAX_BYTES:
            raise PayloadCapExceeded
        if self.expires_at is not None and self.expires_at <= self.created_at:
            raise ValueError("expires_at must be after created_at")
        return self

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class PayloadCapExceeded(ValueError):
    """Raised inside validation so that the caller can answer 413, not 422."""

    def __init__(self) -> None:
        super().__init__(f"payload is larger than {PAYLOAD_MAX_BYTES} bytes")


def _json_size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def envelope_bytes(envelope: Envelope) -> bytes:
    """The one serialization of an envelope: compact JSON, fields in model order, no
    nulls. These exact bytes are signed and travel; nobody re-serializes them."""
    return envelope.model_dump_json(exclude_none=True).encode()


def byte_length(data: str | bytes) -> int:
    """Caps are in bytes on the wire; text that arrived as ``str`` is measured as UTF-8
    (a lone surrogate counts as the 3 bytes it would take, and fails later as JSON)."""
    if isinstance(data, bytes):
        return len(data)
    if data.isascii():
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def parse_envelope(body: str | bytes) -> Envelope:
    """Parse envelope JSON text, translating every failure into a typed remote error."""
    if byte_length(body) > ENVELOPE_MAX_BYTES:
        raise TooLarge(f"envelope is larger than {ENVELOPE_MAX_BYTES} bytes")
    try:
        return Envelope.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc, "envelope") from exc


def validation_error(exc: ValidationError, what: str) -> RemoteProtocolError:
    """Map a pydantic error to the most specific remote error, naming the field."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or what
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, PayloadCapExceeded):
        return TooLarge(str(cause), code="payload_too_large")
    if first["type"] == "json_invalid":
        return MalformedInput(f"{what} is not valid JSON: {first['msg']}", code="malformed_json")
    if isinstance(cause, RemoteProtocolError):
        return type(cause)(f"{where}: {cause.message}", code=_field_code(where, cause.code))
    if where == "priority" or where.endswith(".priority"):
        return InvalidEnvelope(f"{where}: must be now, next or later", code="invalid_priority")
    if first["type"] == "extra_forbidden":
        return InvalidEnvelope(f"{where}: unknown field", code="unknown_field")
    return InvalidEnvelope(f"{where}: {first['msg']}")


def _field_code(where: str, default: str) -> str:
    """Token errors name the field: ``invalid_identity`` for ``to``/``signer``."""
    if where.split(".")[-1] in {"to", "signer", "identity"}:
        return "invalid_identity"
    return default
