"""What an identity signs to prove itself: the link's auth answer, enrollment, and
signed HTTP requests. Each has its own domain prefix, so no signature can be replayed as
another kind, and each covers a value the verifier chose, or a fresh timestamp plus a
one-time nonce, so none can be replayed later.

A signed HTTP request travels as one header::

    Authorization: Mailslot-Signature id=<identity>,ts=<unix seconds>,nonce=<base64url>,sig=<base64url>

``sig`` is Ed25519 over ``request_message``: ``mailslot.request.v2\n`` + method, path,
ts, nonce and the SHA-256 of the body, one per line. The verifier must refuse a ``ts``
more than ``REQUEST_SKEW_SECONDS`` from its clock and must remember every nonce it
accepted for at least ``NONCE_MEMORY_SECONDS``, refusing one it has seen: the timestamp
bounds how long a captured header is worth anything, the nonce makes it worth one use.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.encoding import b64d, b64e
from shared.errors import BadSignature, MalformedInput
from shared.identity import Identity
from shared.tokens import IDENTITY_RE

AUTH_DOMAIN = b"mailslot.auth.v1\n"
ENROLL_DOMAIN = b"mailslot.enroll.v1\n"
REQUEST_DOMAIN = b"mailslot.request.v2\n"
#: How far a signed request's timestamp may be from the verifier's clock.
REQUEST_SKEW_SECONDS = 300
#: How long a verifier must remember an accepted nonce: a ``ts`` up to the skew ahead
#: stays acceptable for twice the skew, plus a margin for the store's expiry sweep.
NONCE_MEMORY_SECONDS = 2 * REQUEST_SKEW_SECONDS + 30
#: Random bytes in a fresh nonce (22 base64url characters).
NONCE_BYTES = 16

SIGNATURE_SCHEME = "Mailslot-Signature"
_FIELDS = ("id", "ts", "nonce", "sig")
#: Each field's whole value. Strict and length-bounded, so nothing a client sends can
#: overflow or blow up a later step: ``ts`` is at most 12 ASCII digits (no sign, no
#: ``_``, no other script's digits, all of which ``int()`` would take).
_FIELD_RES = {
    "id": IDENTITY_RE,
    "ts": re.compile(r"[0-9]{1,12}"),
    "nonce": re.compile(r"[A-Za-z0-9_-]{16,64}"),
    "sig": re.compile(r"[A-Za-z0-9_-]{1,128}"),
}


def auth_message(nonce: str, time: int, identity: str, relay: str) -> bytes:
    """The bytes an edge signs to answer a relay's challenge: the relay's fresh nonce
    and time, the identity claimed and the relay addressed (so an answer meant for one
    relay is useless at another)."""
    return AUTH_DOMAIN + f"{nonce}\n{time}\n{identity}\n{relay}".encode()


def enroll_message(token: str, identity: str) -> bytes:
    return ENROLL_DOMAIN + f"{token}\n{identity}".encode()


def request_message(method: str, path: str, ts: int, nonce: str, body: bytes) -> bytes:
    """The bytes a signed HTTP request's ``sig`` covers: method, path, time, nonce, body."""
    digest = hashlib.sha256(body).hexdigest()
    return REQUEST_DOMAIN + f"{method.upper()}\n{path}\n{ts}\n{nonce}\n{digest}".encode()


def new_request_nonce() -> str:
    """A fresh random nonce for one signed request: never reuse one (the relay refuses a
    nonce it has seen, ``replayed_request``)."""
    return b64e(os.urandom(NONCE_BYTES))


def sign_b64(identity: Identity, message: bytes) -> str:
    return b64e(identity.sign(message))


def check_b64_signature(key: Ed25519PublicKey, signature: str, message: bytes) -> None:
    """Raise ``BadSignature`` unless ``signature`` (base64url) is ``key``'s over ``message``."""
    try:
        sig = b64d(signature, "signature")
        key.verify(sig, message)
    except (InvalidSignature, MalformedInput, ValueError) as exc:
        raise BadSignature("signature does not verify") from exc


def check_request_nonce(value: str) -> str:
    """``value`` if it is a well-formed request nonce (16-64 base64url characters, safe as
    a key token in a store); else ``MalformedInput`` ``missing_auth``."""
    if _FIELD_RES["nonce"].fullmatch(value) is None:
        raise MalformedInput("Mailslot-Signature nonce= is malformed", code="missing_auth")
    return value


class RequestSignature(NamedTuple):
    """A parsed ``Mailslot-Signature`` header. Nothing in it is verified yet: the caller
    must check the time, the signature (``request_message``) and the nonce's freshness,
    in that order, before acting on the request."""

    identity: str
    ts: int
    nonce: str
    sig: str


def request_header(
    identity: Identity, method: str, path: str, ts: int, body: bytes, nonce: str | None = None
) -> str:
    """``Authorization`` value for a request signed by ``identity``. ``nonce`` defaults to
    a fresh one; pass one only to reproduce a header (tests, vectors)."""
    nonce = new_request_nonce() if nonce is None else nonce
    sig = sign_b64(identity, request_message(method, path, ts, nonce, body))
    return f"{SIGNATURE_SCHEME} id={identity.id},ts={ts},nonce={nonce},sig={sig}"


def parse_request_header(value: str) -> RequestSignature:
    """Parse a ``Mailslot-Signature`` header strictly: the scheme, one space, then exactly
    ``id``, ``ts``, ``nonce`` and ``sig`` once each, comma-separated, each value matching
    its pattern. Anything else is ``MalformedInput`` (400 ``missing_auth``)."""
    scheme, _, params = value.partition(" ")
    if scheme != SIGNATURE_SCHEME:
        raise MalformedInput("expected a Mailslot-Signature authorization", code="missing_auth")
    fields: dict[str, str] = {}
    for part in params.split(","):
        key, eq, field = part.partition("=")
        if not eq or key not in _FIELD_RES or key in fields:
            raise MalformedInput(
                f"Mailslot-Signature takes {', '.join(f'{k}=' for k in _FIELDS)} once each",
                code="missing_auth",
            )
        fields[key] = field
    missing = [key for key in _FIELDS if key not in fields]
    if missing:
        raise MalformedInput(
            f"Mailslot-Signature needs {', '.join(_FIELDS)}; missing {', '.join(missing)}",
            code="missing_auth",
        )
    for key in _FIELDS:
        if _FIELD_RES[key].fullmatch(fields[key]) is None:
            raise MalformedInput(
                f"Mailslot-Signature {key}= is malformed", code="missing_auth"
            )
    return RequestSignature(fields["id"], int(fields["ts"]), fields["nonce"], fields["sig"])
