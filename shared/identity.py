"""Self-certifying identities.

An identity is an Ed25519 signing key plus an X25519 encryption ("box") key. Its id is
derived from the Ed25519 public key, so anyone who knows an id can check that the keys a
relay hands out really belong to it: ``identity_id(sign_key) == id``. The box key is bound
to the identity by an Ed25519 signature over it, so a relay cannot swap in its own box key
to read sealed payloads.

The id is 32 chars of lowercase base32 (160 bits of SHA-256): safe as a NATS subject
token, a file name and a URL segment as it is.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from shared.encoding import b64d, b64e
from shared.errors import InvalidIdentity, InvalidToken, MalformedInput
from shared.tokens import check_identity

_ID_DOMAIN = b"mailslot.id.v1\n"
_BOX_DOMAIN = b"mailslot.boxkey.v1\n"


def identity_id(sign_key: bytes) -> str:
    """The id of the identity whose Ed25519 public key is ``sign_key`` (32 raw bytes)."""
    digest = hashlib.sha256(_ID_DOMAIN + sign_key).digest()
    return base64.b32encode(digest).decode("ascii")[:32].lower()


def _raw_public(key: Ed25519PublicKey | Any) -> bytes:
    return bytes(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


@dataclass(frozen=True)
class PublicIdentity:
    """What anyone may know of an identity. Build it with ``from_doc`` to have it checked."""

    id: str
    sign_key: bytes
    box_key: bytes
    box_sig: bytes

    def verifier(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.sign_key)

    def to_doc(self) -> dict[str, str]:
        return {
            "id": self.id,
            "sign_key": b64e(self.sign_key),
            "box_key": b64e(self.box_key),
            "box_sig": b64e(self.box_sig),
        }

    @classmethod
    def from_doc(cls, doc: object) -> PublicIdentity:
        """Parse and check an identity document; raise ``InvalidIdentity`` unless the id
        derives from the signing key and the box key carries a valid signature by it."""
        if not isinstance(doc, dict) or set(doc) != {"id", "sign_key", "box_key", "box_sig"}:
            raise InvalidIdentity("identity document must have id, sign_key, box_key, box_sig")
        try:
            ident = cls(
                id=check_identity(doc["id"]),
                sign_key=b64d(doc["sign_key"], "sign_key"),
                box_key=b64d(doc["box_key"], "box_key"),
                box_sig=b64d(doc["box_sig"], "box_sig"),
            )
        except (MalformedInput, InvalidToken) as exc:
            raise InvalidIdentity(exc.message) from exc
        if len(ident.sign_key) != 32 or len(ident.box_key) != 32 or len(ident.box_sig) != 64:
            raise InvalidIdentity("identity keys have the wrong length")
        if identity_id(ident.sign_key) != ident.id:
            raise InvalidIdentity("identity id does not derive from its signing key")
        try:
            ident.verifier().verify(ident.box_sig, _BOX_DOMAIN + ident.box_key)
        except InvalidSignature as exc:
            raise InvalidIdentity("box key is not signed by the identity") from exc
        return ident


class Identity:
    """A private identity: can sign, and open payloads sealed to it.

    Persist it with ``to_private_bytes`` into a user-only file (the edge's key store does
    that); never log or send those bytes.
    """

    def __init__(self, signing: Ed25519PrivateKey, box: X25519PrivateKey) -> None:
        self.signing = signing
        self.box = box
        sign_pub = _raw_public(signing.public_key())
        box_pub = _raw_public(box.public_key())
        self.public = PublicIdentity(
            id=identity_id(sign_pub),
            sign_key=sign_pub,
            box_key=box_pub,
            box_sig=signing.sign(_BOX_DOMAIN + box_pub),
        )

    @property
    def id(self) -> str:
        return self.public.id

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @classmethod
    def from_seeds(cls, sign_seed: bytes, box_seed: bytes) -> Identity:
        return cls(
            Ed25519PrivateKey.from_private_bytes(sign_seed),
            X25519PrivateKey.from_private_bytes(box_seed),
        )

    def sign(self, message: bytes) -> bytes:
        return self.signing.sign(message)

    def to_private_bytes(self) -> bytes:
        """Serialize the two private seeds (JSON). Secret: store with mode 0600."""
        def seed(key: Ed25519PrivateKey | X25519PrivateKey) -> str:
            return b64e(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

        doc = {"v": 1, "id": self.id, "sign_seed": seed(self.signing), "box_seed": seed(self.box)}
        return json.dumps(doc).encode()

    @classmethod
    def from_private_bytes(cls, data: bytes) -> Identity:
        try:
            doc = json.loads(data)
            ident = cls.from_seeds(b64d(doc["sign_seed"]), b64d(doc["box_seed"]))
        except (ValueError, KeyError, TypeError, MalformedInput) as exc:
            raise InvalidIdentity("key file is not a mailslot identity") from exc
        if doc.get("id") != ident.id:
            raise InvalidIdentity("key file id does not match its keys")
        return ident

    def __repr__(self) -> str:  # never print secrets, even by accident
        return f"Identity(id={self.id!r})"
