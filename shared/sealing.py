"""Sealed payloads: only the recipient can read them; the relay only sees ciphertext.

Construction (the usual ECIES shape, all primitives from ``cryptography``):
an ephemeral X25519 key agrees a secret with the recipient's box key; HKDF-SHA256 over
that secret, salted with both public keys, derives a ChaCha20-Poly1305 key; the envelope
id is the associated data, so a ciphertext cannot be moved into another envelope.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared.encoding import b64d, b64e
from shared.envelope import Sealed
from shared.errors import MalformedInput, SealError, TooLarge
from shared.identity import Identity
from shared.limits import MAX_DEPTH, PAYLOAD_MAX_BYTES, check_json, loads

ALG: Literal["x25519-hkdf-sha256-chacha20poly1305"] = "x25519-hkdf-sha256-chacha20poly1305"
_INFO = b"mailslot.seal.v1"


def _key(shared_secret: bytes, epk: bytes, recipient_pk: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + recipient_pk, info=_INFO)
    return hkdf.derive(shared_secret)


def seal(payload: dict[str, Any], recipient_box_key: bytes, envelope_id: str) -> Sealed:
    """Encrypt ``payload`` to the holder of ``recipient_box_key`` (32 raw bytes).

    The relay cannot read what it carries, so the limits are checked here, by the
    sender: the edge refuses (and records) a sealed payload that breaks them."""
    check_json(payload, MAX_DEPTH, "payload")
    plaintext = json.dumps(payload, separators=(",", ":")).encode()
    if len(plaintext) > PAYLOAD_MAX_BYTES:
        raise TooLarge(
            f"payload is larger than {PAYLOAD_MAX_BYTES} bytes", code="payload_too_large"
        )
    eph = X25519PrivateKey.generate()
    epk = eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    secret = eph.exchange(X25519PublicKey.from_public_bytes(recipient_box_key))
    nonce = os.urandom(12)
    ct = ChaCha20Poly1305(_key(secret, epk, recipient_box_key)).encrypt(
        nonce, plaintext, envelope_id.encode()
    )
    return Sealed(alg=ALG, epk=b64e(epk), nonce=b64e(nonce), ct=b64e(ct))


def open_sealed(sealed: Sealed, identity: Identity, envelope_id: str) -> dict[str, Any]:
    """Decrypt a payload sealed to ``identity``; raise ``SealError`` if it was not, or
    if anyone changed a byte of it (or moved it to another envelope); ``LimitExceeded``
    if what it holds breaks ``shared.limits``."""
    try:
        epk, nonce, ct = b64d(sealed.epk), b64d(sealed.nonce), b64d(sealed.ct)
        my_pk = identity.box.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        secret = identity.box.exchange(X25519PublicKey.from_public_bytes(epk))
        plaintext = ChaCha20Poly1305(_key(secret, epk, my_pk)).decrypt(
            nonce, ct, envelope_id.encode()
        )
    except (InvalidTag, ValueError, MalformedInput) as exc:
        raise SealError("sealed payload cannot be opened by this identity") from exc
    try:
        payload = loads(plaintext, "sealed payload", max_depth=MAX_DEPTH)
    except MalformedInput as exc:
        raise SealError("sealed payload is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise SealError("sealed payload is not a JSON object")
    return payload
