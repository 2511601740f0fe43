"""What an identity signs to prove itself: the link's auth answer, enrollment, and
signed HTTP requests. Each has its own domain prefix, so no signature can be replayed as
another kind, and each covers a value the verifier chose or a fresh timestamp, so none can
be replayed later."""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.encoding import b64d, b64e
from shared.errors import BadSignature, MalformedInput
from shared.identity import Identity

AUTH_DOMAIN = b"mailslot.auth.v1\n"
ENROLL_DOMAIN = b"mailslot.enroll.v1\n"
REQUEST_DOMAIN = b"mailslot.request.v1\n"
#: How far a signed request's timestamp may be from the verifier's clock.
REQUEST_SKEW_SECONDS = 300


def auth_message(nonce: str, time: int, identity: str, relay: str) -> bytes:
    """The bytes an edge signs to answer a relay's challenge: the relay's fresh nonce
    and time, the identity claimed and the relay addressed (so an answer meant for one
    relay is useless at another)."""
    return AUTH_DOMAIN + f"{nonce}\n{time}\n{identity}\n{relay}".encode()


def enroll_message(token: str, identity: str) -> bytes:
    return ENROLL_DOMAIN + f"{token}\n{identity}".encode()


def request_message(method: str, path: str, ts: int, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return REQUEST_DOMAIN + f"{method.upper()}\n{path}\n{ts}\n{digest}".encode()


def sign_b64(identity: Identity, message: bytes) -> str:
    return b64e(identity.sign(message))


def check_b64_signature(key: Ed25519PublicKey, signature: str, message: bytes) -> None:
    """Raise ``BadSignature`` unless ``signature`` (base64url) is ``key``'s over ``message``."""
    try:
        sig = b64d(signature, "signature")
        key.verify(sig, message)
    except (InvalidSignature, MalformedInput, ValueError) as exc:
        raise BadSignature("signature does not verify") from exc


def request_header(identity: Identity, method: str, path: str, ts: int, body: bytes) -> str:
    """``Authorization`` value for a request signed by ``identity``."""
    sig = sign_b64(identity, request_message(method, path, ts, body))
    return f"Mailslot-Signature id={identity.id},ts={ts},sig={sig}"


def parse_request_header(value: str) -> tuple[str, int, str]:
    """Split a ``Mailslot-Signature`` header into (identity id, timestamp, signature)."""
    scheme, _, params = value.partition(" ")
    if scheme != "Mailslot-Signature":
        raise MalformedInput("expected a Mailslot-Signature authorization", code="missing_auth")
    fields = dict(part.split("=", 1) for part in params.split(",") if "=" in part)
    try:
        return fields["id"], int(fields["ts"]), fields["sig"]
    except (KeyError, ValueError) as exc:
        raise MalformedInput(
            "Mailslot-Signature needs id, ts and sig", code="missing_auth"
        ) from exc
