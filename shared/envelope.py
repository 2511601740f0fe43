"""The interrupt envelope: what happened, whose it is, how urgent, what it may unlock.

An envelope is small on purpose: it should carry the minimum context an agent needs to
decide whether to look, not the thing itself. Caps (``shared.limits``, the one table)
are enforced here, at parse time, so an oversized, too deep or non-finite interrupt is
refused before it is stored anywhere — by the relay and by the edge alike.

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
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.errors import (
    InvalidEnvelope,
    LimitExceeded,
    MalformedInput,
    PayloadCapExceeded,
    RemoteProtocolError,
    TooLarge,
)
from shared.limits import (
    ENVELOPE_MAX_BYTES,
    MAX_DEPTH,
    PAYLOAD_MAX_BYTES,
    SEALED_CT_MAX_CHARS,
    byte_length,
    check_json,
)
from shared.tokens import (
    check_identity,
    check_name,
    check_opaque,
    check_session,
    check_type,
)

__all__ = [  # the caps live in shared.limits; re-exported for older imports
    "ENVELOPE_MAX_BYTES",
    "PAYLOAD_MAX_BYTES",
    "SEALED_CT_MAX_CHARS",
    "byte_length",
]

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
#: Unpadded base64url (``shared.encoding``): the only text the sealed fields may hold.
_B64URL = r"^[A-Za-z0-9_-]*$"


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
    #: 32 bytes of X25519 public key, 12 of nonce, at least the 16-byte tag: checked as
    #: shapes here so that the relay refuses what can never open, even unread.
    epk: str = Field(pattern=r"^[A-Za-z0-9_-]{43}$")
    nonce: str = Field(pattern=r"^[A-Za-z0-9_-]{16}$")
    ct: str = Field(min_length=22, pattern=_B64URL)

    @field_validator("ct")
    @classmethod
    def _ciphertext_cap(cls, value: str) -> str:
        # base64url of at most PAYLOAD_MAX_BYTES of plaintext plus the 16-byte tag
        if len(value) > SEALED_CT_MAX_CHARS:
            raise PayloadCapExceeded(PAYLOAD_MAX_BYTES)
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
    def _payload_rules(self, info: ValidationInfo) -> Envelope:
        if self.payload is not None and self.sealed is not None:
            raise ValueError("an envelope carries payload or sealed, not both")
        if self.payload is not None:
            # Raises LimitExceeded, which pydantic lets through as it is.
            check_json(self.payload, MAX_DEPTH, "payload")
            if not _fits_by_size(info) and _json_size(self.payload) > PAYLOAD_MAX_BYTES:
                raise PayloadCapExceeded(PAYLOAD_MAX_BYTES)
        if self.expires_at is not None and self.expires_at <= self.created_at:
            raise ValueError("expires_at must be after created_at")
        return self

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


#: Built once (``json.dumps`` with options builds an encoder per call): this runs for
#: every envelope the relay takes and the edge verifies.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _json_size(value: object) -> int:
    return len(_COMPACT.encode(value).encode())


def envelope_bytes(envelope: Envelope) -> bytes:
    """The one serialization of an envelope: compact JSON, fields in model order, no
    nulls. These exact bytes are signed and travel; nobody re-serializes them."""
    return envelope.model_dump_json(exclude_none=True).encode()


#: Serialized compactly, a parsed payload takes at most 4.5 times the bytes of its JSON
#: text: whitespace, escapes and duplicate keys only shrink, and the one thing that grows
#: is a number read as a float, at worst ``1e15`` (4 bytes) -> ``1000000000000000.0``
#: (18). So an envelope text of this many bytes or fewer cannot carry a payload over the
#: cap, and ``parse_envelope`` says so rather than serializing every payload again to
#: measure it (a measurable share of the edge's CPU per interrupt).
_FITS_BYTES = PAYLOAD_MAX_BYTES * 2 // 9
_FITS = ("payload fits",)  # the validation context that says so


def _fits_by_size(info: ValidationInfo) -> bool:
    return info.context is _FITS


def parse_envelope(body: str | bytes) -> Envelope:
    """Parse envelope JSON text, translating every failure into a typed remote error."""
    size = byte_length(body)
    if size > ENVELOPE_MAX_BYTES:
        raise TooLarge(f"envelope is larger than {ENVELOPE_MAX_BYTES} bytes")
    try:
        return Envelope.model_validate_json(body, context=_FITS if size <= _FITS_BYTES else None)
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
    if first["type"] == "json_invalid" and "recursion limit" in first["msg"]:
        return LimitExceeded(f"{what} nests deeper than {MAX_DEPTH + 1}", code="too_deep")
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
