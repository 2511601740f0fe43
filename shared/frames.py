"""The frames of the ``mailslot.v1`` WebSocket link, one JSON object per text message.

::

    relay → edge   challenge{nonce, time, relay}
    edge  → relay  auth{identity, sig}              sig = auth_message(nonce,time,identity,relay)
    relay → edge   welcome{session, pending{now,next,later}}
    edge  → relay  credit{n}                        the edge may now receive n more envelopes
    relay → edge   deliver{items[{envelope, signature}]}   never more items than credit
    edge  → relay  ack{ids}                         committed to the inbox: delete upstream
    edge  → relay  nak{id, delay}                   redeliver after delay seconds
    edge  → relay  reject{id, code}                 refused (recorded at the edge): never redeliver
    either         error{code, message}             then the sender closes

Keepalive is WebSocket ping/pong, not a frame. Which frame may come when is in
``shared.link``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.envelope import UlidStr, validation_error
from shared.errors import LimitExceeded, LinkError, MalformedInput, TooLarge
from shared.limits import EDGE_FRAME_MAX_BYTES, MAX_BATCH, RELAY_FRAME_MAX_BYTES, byte_length

__all__ = [  # the caps live in shared.limits; re-exported for older imports
    "EDGE_FRAME_MAX_BYTES",
    "MAX_BATCH",
    "RELAY_FRAME_MAX_BYTES",
]

SUBPROTOCOL = "mailslot.v1"

_STRICT = ConfigDict(frozen=True, extra="forbid")


class Challenge(BaseModel):
    model_config = _STRICT
    type: Literal["challenge"] = "challenge"
    nonce: str = Field(min_length=16, max_length=128)
    time: int
    relay: str = Field(max_length=64)


class Auth(BaseModel):
    model_config = _STRICT
    type: Literal["auth"] = "auth"
    identity: str = Field(max_length=64)
    sig: str = Field(max_length=128)


class Pending(BaseModel):
    model_config = _STRICT
    now: int = 0
    next: int = 0
    later: int = 0


class Welcome(BaseModel):
    model_config = _STRICT
    type: Literal["welcome"] = "welcome"
    session: str = Field(max_length=64)
    pending: Pending


class Credit(BaseModel):
    model_config = _STRICT
    type: Literal["credit"] = "credit"
    n: int = Field(ge=1, le=MAX_BATCH * 16)


class DeliverItem(BaseModel):
    model_config = _STRICT
    envelope: str
    signature: str = Field(max_length=128)


class Deliver(BaseModel):
    model_config = _STRICT
    type: Literal["deliver"] = "deliver"
    items: list[DeliverItem] = Field(min_length=1, max_length=MAX_BATCH)


class Ack(BaseModel):
    model_config = _STRICT
    type: Literal["ack"] = "ack"
    ids: list[UlidStr] = Field(min_length=1, max_length=MAX_BATCH)


class Nak(BaseModel):
    model_config = _STRICT
    type: Literal["nak"] = "nak"
    id: UlidStr
    delay: float = Field(default=0, ge=0, le=3600)


class Reject(BaseModel):
    model_config = _STRICT
    type: Literal["reject"] = "reject"
    id: UlidStr
    code: str = Field(pattern=r"^[a-z_]{1,64}$")


class Error(BaseModel):
    model_config = _STRICT
    type: Literal["error"] = "error"
    code: str = Field(max_length=64)
    message: str = Field(max_length=1024)


Frame = Challenge | Auth | Welcome | Credit | Deliver | Ack | Nak | Reject | Error
_FRAME = TypeAdapter[Frame](Annotated[Frame, Field(discriminator="type")])
FRAME_TYPES = frozenset(
    t.model_fields["type"].default
    for t in (Challenge, Auth, Welcome, Credit, Deliver, Ack, Nak, Reject, Error)
)


def encode_frame(frame: Frame) -> str:
    return frame.model_dump_json()


def encode_deliver(items: list[bytes]) -> str:
    """A deliver frame around items that are already ``{"envelope", "signature"}`` JSON
    (as stored by the relay), without parsing and re-serializing each one."""
    return '{"type":"deliver","items":[' + b",".join(items).decode() + "]}"


def decode_frame(data: str | bytes, max_bytes: int) -> Frame:
    """Parse one frame; raise ``TooLarge``, ``MalformedInput`` or ``LinkError``
    (``unknown_frame``) — each with the close code the link should use."""
    if byte_length(data) > max_bytes:
        raise TooLarge(f"frame is larger than {max_bytes} bytes", code="frame_too_large")
    try:
        return _FRAME.validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            raise LinkError("unknown frame type", code="unknown_frame") from exc
        error = validation_error(exc, "frame")
        if isinstance(error, MalformedInput | LimitExceeded):  # not JSON, or too deep
            raise LinkError(error.message, code="malformed_frame") from exc
        raise LinkError(error.message, code="invalid_frame") from exc
