"""Sealed payloads: only the recipient's box key opens them, the envelope id is bound in as
associated data, and any change to any part is detected (``SealError``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from protocol_support import alice, bob, mallory

from shared.encoding import b64d, b64e
from shared.envelope import PAYLOAD_MAX_BYTES, Envelope, Sealed, Source
from shared.errors import SealError, TooLarge
from shared.identity import PublicIdentity
from shared.sealing import ALG, open_sealed, seal
from shared.signing import sign_envelope, signed_from_wire, verify_envelope

ENVELOPE_ID = "01JGZ6V7YH8M3Q5R2T4W6Y8Z0A"
OTHER_ID = "01JGZ6V7YH8M3Q5R2T4W6Y8Z0B"
PAYLOAD: dict[str, Any] = {"secret": "hunter2", "n": [1, 2, 3], "caf\u00e9": True}


def flip(text: str, index: int) -> str:
    raw = bytearray(b64d(text))
    raw[index] ^= 0x01
    return b64e(bytes(raw))


def spec_key(secret: bytes, epk: bytes, recipient_pk: bytes) -> ChaCha20Poly1305:
    """The construction, written out: HKDF-SHA256(secret, salt=epk||pk, info) → key."""
    hkdf = HKDF(hashes.SHA256(), 32, salt=epk + recipient_pk, info=b"mailslot.seal.v1")
    return ChaCha20Poly1305(hkdf.derive(secret))


def spec_seal(plaintext: bytes, recipient_pk: bytes, aad: str) -> Sealed:
    eph = X25519PrivateKey.from_private_bytes(b"\x07" * 32)
    epk = eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    secret = eph.exchange(X25519PublicKey.from_public_bytes(recipient_pk))
    nonce = b"\x09" * 12
    ct = spec_key(secret, epk, recipient_pk).encrypt(nonce, plaintext, aad.encode())
    return Sealed(alg=ALG, epk=b64e(epk), nonce=b64e(nonce), ct=b64e(ct))


def test_seal_then_open_with_the_recipient_key() -> None:
    sealed = seal(PAYLOAD, bob.public.box_key, ENVELOPE_ID)
    assert sealed.alg == "x25519-hkdf-sha256-chacha20poly1305"
    assert len(b64d(sealed.epk)) == 32
    assert len(b64d(sealed.nonce)) == 12
    plaintext = json.dumps(PAYLOAD, separators=(",", ":")).encode()
    assert len(b64d(sealed.ct)) == len(plaintext) + 16  # Poly1305 tag
    assert b"hunter2" not in b64d(sealed.ct)
    assert open_sealed(sealed, bob, ENVELOPE_ID) == PAYLOAD


def test_seal_uses_the_key_from_a_checked_identity_document() -> None:
    public = PublicIdentity.from_doc(json.loads(json.dumps(bob.public.to_doc())))
    assert open_sealed(seal(PAYLOAD, public.box_key, ENVELOPE_ID), bob, ENVELOPE_ID) == PAYLOAD


def test_every_seal_uses_a_fresh_ephemeral_key_and_nonce() -> None:
    one, two = (seal(PAYLOAD, bob.public.box_key, ENVELOPE_ID) for _ in range(2))
    assert one.epk != two.epk
    assert one.nonce != two.nonce
    assert one.ct != two.ct


def test_construction_matches_the_documented_scheme() -> None:
    # Sealed by hand with the documented construction, opened by shared.sealing ...
    sealed = spec_seal(json.dumps(PAYLOAD).encode(), bob.public.box_key, ENVELOPE_ID)
    assert open_sealed(sealed, bob, ENVELOPE_ID) == PAYLOAD
    # ... and sealed by shared.sealing, opened by hand.
    sealed = seal(PAYLOAD, bob.public.box_key, ENVELOPE_ID)
    epk = b64d(sealed.epk)
    secret = bob.box.exchange(X25519PublicKey.from_public_bytes(epk))
    plaintext = spec_key(secret, epk, bob.public.box_key).decrypt(
        b64d(sealed.nonce), b64d(sealed.ct), ENVELOPE_ID.encode()
    )
    assert json.loads(plaintext) == PAYLOAD


def test_wrong_recipient_cannot_open() -> None:
    sealed = seal(PAYLOAD, bob.public.box_key, ENVELOPE_ID)
    with pytest.raises(SealError) as info:
        open_sealed(sealed, mallory, ENVELOPE_ID)
    assert (info.value.status, info.value.code) == (422, "seal_error")


def test_sealed_to_the_sender_is_not_readable_by_the_recipient() -> None:
    sealed = seal(PAYLOAD, alice.public.box_key, ENVELOPE_ID)
    with pytest.raises(SealError):
        open_sealed(sealed, bob, ENVELOPE_ID)


def test_envelope_id_is_bound_as_associated_data() -> None:
    sealed = seal(PAYLOAD, bob.public.box_key, ENVELOPE_ID)
    with pytest.raises(SealError):
        open_sealed(sealed, bob, OTHER_ID)
    assert open_sealed(sealed, bob, ENVELOPE_ID) == PAYLOAD


Tamper = Callable[[Sealed], dict[str, str]]

TAMPERS: dict[str, Tamper] = {
    "ciphertext first byte": lambda s: {"ct": flip(s.ct, 0)},
    "ciphertext last byte (tag)": lambda s: {"ct": flip(s.ct, -1)},
    "ciphertext truncated": lambda s: {"ct": b64e(b64d(s.ct)[:-1])},
    "ciphertext extended": lambda s: {"ct": b64e(b64d(s.ct) + b"\0")},
    "ciphertext empty": lambda s: {"ct": ""},
    "nonce": lambda s: {"nonce": flip(s.nonce, 3)},
    "nonce too short": lambda s: {"nonce": b64e(b64d(s.nonce)[:11])},
    "epk": lambda s: {"epk": flip(s.epk, 7)},
    "epk too short": lambda s: {"epk": b64e(b64d(s.epk)[:31])},
    "epk all zero (low order)": lambda s: {"epk": b64e(bytes(32))},
    "epk not base64url": lambda s: {"epk": "\u00e9" * 43},
    "ct not base64url": lambda s: {"ct": "A"},
}


@pytest.mark.parametrize("tamper", list(TAMPERS), ids=list(TAMPERS))
def test_tampered_sealed_payload_is_refused(tamper: str) -> None:
    sealed = seal(PAYLOAD, bob.public.box_key, ENVELOPE_ID)
    changed = sealed.model_copy(update=TAMPERS[tamper](sealed))
    assert changed != sealed
    with pytest.raises(SealError):
        open_sealed(changed, bob, ENVELOPE_ID)


@pytest.mark.parametrize("plaintext", [b"[1, 2]", b'"text"', b"null", b"not json", b"\xff"])
def test_plaintext_that_is_not_a_json_object_is_refused(plaintext: bytes) -> None:
    sealed = spec_seal(plaintext, bob.public.box_key, ENVELOPE_ID)
    with pytest.raises(SealError):
        open_sealed(sealed, bob, ENVELOPE_ID)


def test_payload_over_the_cap_is_not_sealed() -> None:
    payload = {"x": "a" * PAYLOAD_MAX_BYTES}
    with pytest.raises(TooLarge) as info:
        seal(payload, bob.public.box_key, ENVELOPE_ID)
    assert (info.value.status, info.value.code) == (413, "payload_too_large")
    at_cap = {"x": "a" * (PAYLOAD_MAX_BYTES - len('{"x":""}'))}
    assert open_sealed(seal(at_cap, bob.public.box_key, ENVELOPE_ID), bob, ENVELOPE_ID) == at_cap


def test_sealed_envelope_travels_signed_and_opens_at_the_recipient() -> None:
    sealed = seal(PAYLOAD, bob.public.box_key, ENVELOPE_ID)
    envelope = Envelope(
        id=ENVELOPE_ID, to=bob.id, source=Source(kind="producer", name="ci"),
        type="secret.rotated", created_at=datetime(2025, 1, 2, tzinfo=UTC), sealed=sealed,
        signer=alice.id,
    )
    wire = sign_envelope(envelope, alice).to_wire()
    assert b"hunter2" not in wire
    received = verify_envelope(
        signed_from_wire(wire), trusted={alice.id: alice.public.verifier()}, recipient=bob.id,
        now=datetime(2025, 1, 2, 1, tzinfo=UTC),
    )
    assert received.sealed is not None
    assert open_sealed(received.sealed, bob, received.id) == PAYLOAD
