"""Signed envelopes: the exact bytes that travel are the bytes that are signed.

Wire form (JSON)::

    {"envelope": "<envelope JSON text>", "signature": "<base64url Ed25519 signature>"}

The envelope is carried as a *string*, so nobody on the path re-serializes it: the relay
stores the string, the edge verifies the string. The signature covers
``b"mailslot.envelope.v1\\n" + utf8(envelope)`` — the domain prefix keeps an envelope
signature from ever being valid as an auth answer or a request signature, and the body
covers ``id``, ``created_at`` and ``expires_at``, so a captured interrupt cannot be
replayed as a new one (the inbox is idempotent by id) nor outlive its expiry.

``tests/shared/vectors/envelope_v1.json`` pins the format down.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.encoding import b64d, b64e
from shared.envelope import Envelope, envelope_bytes, parse_envelope
from shared.errors import (
    BadSignature,
    Expired,
    LocalProtocolError,
    MalformedInput,
    UntrustedSigner,
    WrongRecipient,
)
from shared.identity import Identity
from shared.limits import SIGNED_MAX_BYTES, check_size, loads

ENVELOPE_DOMAIN = b"mailslot.envelope.v1\n"


@dataclass(frozen=True)
class SignedEnvelope:
    """An envelope's exact text and its signature, as stored and as delivered."""

    envelope: str
    signature: str

    def to_wire(self) -> bytes:
        return json.dumps({"envelope": self.envelope, "signature": self.signature}).encode()

    def signed_message(self) -> bytes:
        return ENVELOPE_DOMAIN + self.envelope.encode()


def sign_envelope(envelope: Envelope, identity: Identity) -> SignedEnvelope:
    """Serialize ``envelope`` once and sign those bytes with ``identity``.

    The envelope's ``signer`` must name ``identity``: a signature by one key claiming
    another would never verify, so refusing here catches the bug early."""
    if envelope.signer != identity.id:
        raise LocalProtocolError("envelope.signer must be the id of the signing identity")
    body = envelope_bytes(envelope)
    return SignedEnvelope(body.decode(), b64e(identity.sign(ENVELOPE_DOMAIN + body)))


def signed_from_wire(data: str | bytes) -> SignedEnvelope:
    """Parse the wire form; raise ``MalformedInput``/``TooLarge``/``LimitExceeded`` on
    anything else."""
    check_size(data, SIGNED_MAX_BYTES, "signed envelope")
    return signed_from_doc(loads(data, "signed envelope"))


def signed_from_doc(doc: object) -> SignedEnvelope:
    if (
        not isinstance(doc, dict)
        or set(doc) != {"envelope", "signature"}
        or not isinstance(doc["envelope"], str)
        or not isinstance(doc["signature"], str)
    ):
        raise MalformedInput('expected {"envelope": string, "signature": string}')
    try:
        doc["envelope"].encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedInput("envelope is not valid Unicode text") from exc
    return SignedEnvelope(doc["envelope"], doc["signature"])


def check_signature(signed: SignedEnvelope, key: Ed25519PublicKey) -> None:
    """Raise ``BadSignature`` unless ``key`` signed exactly these envelope bytes."""
    sig = b64d(signed.signature, "signature")
    if len(sig) != 64:
        raise BadSignature("signature must be 64 bytes")
    try:
        key.verify(sig, signed.signed_message())
    except InvalidSignature as exc:
        raise BadSignature("signature does not verify") from exc


def verify_envelope(
    signed: SignedEnvelope,
    *,
    trusted: Mapping[str, Ed25519PublicKey],
    recipient: str | None,
    now: datetime,
) -> Envelope:
    """Everything an edge checks before it keeps an interrupt, cheapest check first:
    shape and caps (``shared.limits``), then a trusted signer, then the signature, then
    recipient and expiry.

    ``created_at`` is *not* checked against ``now`` here: the relay bounds it against its
    own clock before it answers 2xx (``shared.limits.check_created_at``), and the edge's
    clock may well be behind the relay's. Refusing here would lose an interrupt the
    producer was told is stored.

    ``trusted`` maps signer ids to their keys. ``recipient`` is our own id (``None``
    skips that check, for the relay, which checks routing itself).
    Returns the parsed envelope; raises a ``RemoteProtocolError`` subclass otherwise."""
    envelope = parse_envelope(signed.envelope)
    key = trusted.get(envelope.signer)
    if key is None:
        raise UntrustedSigner(f"signer {envelope.signer} is not trusted")
    check_signature(signed, key)
    if recipient is not None and envelope.to != recipient:
        raise WrongRecipient(f"envelope is addressed to {envelope.to}")
    if envelope.is_expired(now):
        raise Expired(f"envelope expired at {envelope.expires_at}")
    return envelope
