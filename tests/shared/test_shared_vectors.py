"""Committed test vectors for the signed envelope format: ``vectors/envelope_v1.json``.

They pin down, bytes-exact, what two implementations must agree on: the identity id of a
given key, the one serialization of an envelope (``shared.envelope.envelope_bytes``), the
signed message (``b"mailslot.envelope.v1\\n" + envelope``), the Ed25519 signature over it
and the wire document (``shared.signing.SignedEnvelope.to_wire``).

How they were produced (once): two identities from fixed 32-byte seeds (``SEEDS`` below),
envelopes from fixed fields (``vector_fields`` below), each signed with
``sign_envelope``. Ed25519 signatures are deterministic, so recomputing from the seeds gives
the same bytes every time. The ``sealed`` vector's ciphertext came from one run of
``shared.sealing.seal`` (sealing is randomized: a fresh ephemeral key and nonce), so for it
the file is the input (regenerating keeps it) and the test checks that the recipient opens
it. The ``tampered``
vector is the ``minimal`` envelope with one byte flipped and the original signature.

To regenerate after a deliberate, versioned format change (and only then)::

    python tests/shared/test_shared_vectors.py --write

then review the diff: any change to an existing vector is a wire-format break.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.encoding import b64d, b64e
from shared.envelope import Envelope, envelope_bytes, parse_envelope
from shared.errors import BadSignature
from shared.identity import Identity, PublicIdentity
from shared.sealing import open_sealed, seal
from shared.signing import (
    ENVELOPE_DOMAIN,
    SignedEnvelope,
    check_signature,
    sign_envelope,
    signed_from_wire,
    verify_envelope,
)

VECTORS = Path(__file__).resolve().parent / "vectors" / "envelope_v1.json"
SEEDS = {
    "producer": (bytes(range(0x00, 0x20)), bytes(range(0x20, 0x40))),
    "recipient": (bytes(range(0x40, 0x60)), bytes(range(0x60, 0x80))),
}
SEALED_PLAINTEXT = {"token": "s3cr\u00e9t", "scopes": ["repo", "ci"]}
TAMPER_AT = '"type":"build.faile'  # flip the case of the next byte: 'd' -> 'D'


def identities() -> dict[str, Identity]:
    return {name: Identity.from_seeds(*seeds) for name, seeds in SEEDS.items()}


def vector_fields(producer: str, recipient: str) -> dict[str, dict[str, Any]]:
    return {
        "minimal": {
            "id": "01JGZ6V7YH8M3Q5R2T4W6Y8Z0A",
            "to": recipient,
            "source": {"kind": "producer", "name": "ci"},
            "type": "build.failed",
            "created_at": "2025-01-02T03:04:05Z",
            "signer": producer,
        },
        "full": {
            "v": 1,
            "id": "01JGZ6V7YH8M3Q5R2T4W6Y8Z0B",
            "to": recipient,
            "session": "workspace.main",
            "source": {"kind": "webhook", "name": "github", "event_id": "gh-delivery:72d3162e"},
            "type": "github.pull_request.review_requested",
            "priority": "now",
            "created_at": "2025-01-02T03:04:05.123456Z",
            "expires_at": "2025-01-02T06:04:05.5+02:00",
            "dedupe_key": "pr-42/review",
            "payload": {
                "title": "Caf\u00e9 \u2603 \U0001f680 \"quoted\" \\ back\nslash",
                "n": 42,
                "ratio": 0.1,
                "nested": {"ok": True, "none": None},
                "list": [1, "two", None],
            },
            "permissions": {"actions": ["repo:read", "ci/*"], "expires_at": "2025-01-03T00:00:00Z"},
            "signer": producer,
        },
        "sealed": {
            "id": "01JGZ6V7YH8M3Q5R2T4W6Y8Z0C",
            "to": recipient,
            "source": {"kind": "producer", "name": "vault"},
            "type": "secret.rotated",
            "priority": "later",
            "created_at": "2025-01-02T03:04:05Z",
            # "sealed" is added once, at generation (see the module docstring).
            "signer": producer,
        },
    }


def generate() -> dict[str, Any]:
    """Build the vector file's content from the seeds (the sealed ciphertext is fresh)."""
    idents = identities()
    producer, recipient = idents["producer"], idents["recipient"]
    fields = vector_fields(producer.id, recipient.id)
    if VECTORS.exists():  # keep the committed ciphertext: regenerating changes nothing else
        fields["sealed"]["sealed"] = vector("sealed")["fields"]["sealed"]
    else:
        fields["sealed"]["sealed"] = seal(
            SEALED_PLAINTEXT, recipient.public.box_key, fields["sealed"]["id"]
        ).model_dump()
    vectors = []
    for name, doc in fields.items():
        signed = sign_envelope(Envelope.model_validate(doc), producer)
        entry: dict[str, Any] = {
            "name": name,
            "signer": "producer",
            "fields": doc,
            "envelope": signed.envelope,
            "signed_message_sha256": hashlib.sha256(signed.signed_message()).hexdigest(),
            "signature": signed.signature,
            "wire": signed.to_wire().decode(),
        }
        if name == "sealed":
            entry["opened_payload"] = SEALED_PLAINTEXT
        vectors.append(entry)
    minimal = vectors[0]["envelope"]
    offset = len((minimal.split(TAMPER_AT)[0] + TAMPER_AT).encode())
    raw = bytearray(minimal.encode())
    raw[offset] ^= 0x20
    return {
        "description": "mailslot envelope v1 test vectors; see tests/shared/test_shared_vectors.py",
        "domain": ENVELOPE_DOMAIN.decode(),
        "identities": {
            name: {
                "sign_seed": b64e(SEEDS[name][0]),
                "box_seed": b64e(SEEDS[name][1]),
                "public": ident.public.to_doc(),
            }
            for name, ident in idents.items()
        },
        "vectors": vectors,
        "tampered": {
            "from": "minimal",
            "offset": offset,
            "envelope": raw.decode(),
            "signature": vectors[0]["signature"],
        },
    }


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return data


DATA = load() if VECTORS.exists() else {"vectors": []}
NAMES = [v["name"] for v in DATA["vectors"]]


def vector(name: str) -> dict[str, Any]:
    (found,) = (v for v in DATA["vectors"] if v["name"] == name)
    return found


def test_vector_file_is_complete() -> None:
    assert NAMES == ["minimal", "full", "sealed"]
    assert set(DATA["identities"]) == set(SEEDS)
    assert DATA["domain"] == "mailslot.envelope.v1\n"


@pytest.mark.parametrize("name", list(SEEDS))
def test_identity_from_seeds(name: str) -> None:
    committed = DATA["identities"][name]
    assert (b64d(committed["sign_seed"]), b64d(committed["box_seed"])) == SEEDS[name]
    ident = Identity.from_seeds(*SEEDS[name])
    assert ident.public.to_doc() == committed["public"]
    assert PublicIdentity.from_doc(committed["public"]) == ident.public
    # The id rule, independently of shared: base32(SHA-256("mailslot.id.v1\n" || pk))[:32].
    digest = hashlib.sha256(b"mailslot.id.v1\n" + b64d(committed["public"]["sign_key"])).digest()
    assert committed["public"]["id"] == base64.b32encode(digest).decode()[:32].lower()


@pytest.mark.parametrize("name", NAMES)
def test_envelope_bytes_and_signature_are_recomputed_exactly(name: str) -> None:
    committed = vector(name)
    idents = identities()
    expected_fields = vector_fields(idents["producer"].id, idents["recipient"].id)[name]
    assert {k: v for k, v in committed["fields"].items() if k != "sealed"} == expected_fields
    envelope = Envelope.model_validate(committed["fields"])
    assert envelope_bytes(envelope) == committed["envelope"].encode("utf-8")
    assert envelope_bytes(parse_envelope(json.dumps(committed["fields"]))) == envelope_bytes(envelope)
    signed = sign_envelope(envelope, idents[committed["signer"]])
    assert signed.envelope == committed["envelope"]
    assert signed.signature == committed["signature"]
    assert signed.to_wire() == committed["wire"].encode()
    assert hashlib.sha256(signed.signed_message()).hexdigest() == committed["signed_message_sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_signature_verifies(name: str) -> None:
    committed = vector(name)
    public = DATA["identities"][committed["signer"]]["public"]
    # With the raw Ed25519 key and the documented message, independently of shared.signing:
    key = Ed25519PublicKey.from_public_bytes(b64d(public["sign_key"]))
    message = DATA["domain"].encode() + committed["envelope"].encode("utf-8")
    key.verify(b64d(committed["signature"]), message)
    # And through the wire form, as an edge would receive it:
    signed = signed_from_wire(committed["wire"].encode())
    assert signed == SignedEnvelope(committed["envelope"], committed["signature"])
    recipient = DATA["identities"]["recipient"]["public"]["id"]
    envelope = verify_envelope(signed, trusted={public["id"]: key}, recipient=recipient,
                               now=parse_envelope(committed["envelope"]).created_at)
    assert envelope_bytes(envelope) == committed["envelope"].encode()


def test_sealed_vector_opens_for_the_recipient() -> None:
    committed = vector("sealed")
    envelope = parse_envelope(committed["envelope"])
    assert envelope.sealed is not None
    recipient = identities()["recipient"]
    assert open_sealed(envelope.sealed, recipient, envelope.id) == committed["opened_payload"]
    assert committed["opened_payload"] == SEALED_PLAINTEXT


def test_tampered_vector_fails_verification() -> None:
    tampered = DATA["tampered"]
    original = vector(tampered["from"])["envelope"].encode()
    changed = tampered["envelope"].encode()
    assert len(changed) == len(original)
    diff = [i for i, (a, b) in enumerate(zip(original, changed, strict=True)) if a != b]
    assert diff == [tampered["offset"]]
    assert parse_envelope(changed).type == "build.faileD"  # still a valid envelope
    producer = DATA["identities"]["producer"]["public"]
    key = Ed25519PublicKey.from_public_bytes(b64d(producer["sign_key"]))
    with pytest.raises(BadSignature) as info:
        check_signature(SignedEnvelope(tampered["envelope"], tampered["signature"]), key)
    assert info.value.status == 401


if __name__ == "__main__":
    content = json.dumps(generate(), indent=2, ensure_ascii=False) + "\n"
    if sys.argv[1:] == ["--write"]:
        VECTORS.parent.mkdir(parents=True, exist_ok=True)
        VECTORS.write_text(content, encoding="utf-8")
        print(f"wrote {VECTORS}")
    else:
        sys.stdout.write(content)
