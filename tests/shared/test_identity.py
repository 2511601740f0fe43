"""Self-certifying identities: the id derives from the Ed25519 key, the box key is signed
by it, and a document that breaks either rule is refused with ``InvalidIdentity``."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from protocol_support import alice, mallory

from shared.encoding import b64d, b64e
from shared.errors import InvalidIdentity, RemoteProtocolError
from shared.identity import Identity, PublicIdentity, identity_id
from shared.tokens import IDENTITY_RE, check_identity

NATS_UNSAFE = set(".*> \t\r\n")
SEEDS = [(bytes([i]) * 32, bytes([i + 100]) * 32) for i in range(8)]


def flip(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize("seeds", SEEDS, ids=[f"seed{i}" for i in range(len(SEEDS))])
def test_id_is_32_lowercase_base32_chars_and_a_safe_nats_token(seeds: tuple[bytes, bytes]) -> None:
    ident = Identity.from_seeds(*seeds)
    assert IDENTITY_RE.fullmatch(ident.id)
    assert len(ident.id) == 32
    assert ident.id == ident.id.lower()
    assert set(ident.id) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert not NATS_UNSAFE & set(ident.id)
    assert check_identity(ident.id) == ident.id


def test_id_derives_from_the_signing_key_only() -> None:
    # Spec, written out: lowercase base32 of SHA-256("mailslot.id.v1\n" || Ed25519 pk), 32 chars.
    digest = hashlib.sha256(b"mailslot.id.v1\n" + alice.public.sign_key).digest()
    assert alice.id == base64.b32encode(digest).decode()[:32].lower()
    assert identity_id(alice.public.sign_key) == alice.id
    sign_seed = bytes(range(32))
    same_signer = Identity.from_seeds(sign_seed, b"\x01" * 32)
    other_box = Identity.from_seeds(sign_seed, b"\x02" * 32)
    assert same_signer.id == other_box.id
    assert same_signer.public.box_key != other_box.public.box_key
    assert Identity.from_seeds(b"\x03" * 32, b"\x01" * 32).id != same_signer.id


def test_from_seeds_is_deterministic() -> None:
    one = Identity.from_seeds(*SEEDS[0])
    two = Identity.from_seeds(*SEEDS[0])
    assert one.public == two.public
    assert one.sign(b"message") == two.sign(b"message")
    assert Identity.from_seeds(*SEEDS[1]).public != one.public


def test_generate_makes_distinct_valid_identities() -> None:
    one, two = Identity.generate(), Identity.generate()
    assert one.id != two.id
    assert PublicIdentity.from_doc(one.public.to_doc()) == one.public


def test_public_doc_round_trips_through_json() -> None:
    doc = alice.public.to_doc()
    assert set(doc) == {"id", "sign_key", "box_key", "box_sig"}
    assert doc["id"] == alice.id
    assert b64d(doc["sign_key"]) == alice.public.sign_key
    assert PublicIdentity.from_doc(json.loads(json.dumps(doc))) == alice.public


def test_box_key_is_signed_by_the_identity() -> None:
    public = alice.public
    public.verifier().verify(public.box_sig, b"mailslot.boxkey.v1\n" + public.box_key)
    message = b"anything"
    alice.public.verifier().verify(alice.sign(message), message)


Tamper = Callable[[dict[str, Any], Identity, Identity], dict[str, Any]]

TAMPERS: dict[str, Tamper] = {
    # A relay swapping in its own box key, to read payloads sealed to alice.
    "box_key swapped": lambda d, a, m: {**d, "box_key": b64e(m.public.box_key)},
    "box key and sig of another identity": lambda d, a, m: {
        **d, "box_key": b64e(m.public.box_key), "box_sig": b64e(m.public.box_sig)
    },
    "box_sig bit flipped": lambda d, a, m: {**d, "box_sig": b64e(flip(a.public.box_sig, 5))},
    "box_sig without domain prefix": lambda d, a, m: {
        **d, "box_sig": b64e(a.sign(a.public.box_key))
    },
    "box_sig by another key": lambda d, a, m: {
        **d, "box_sig": b64e(m.sign(b"mailslot.boxkey.v1\n" + a.public.box_key))
    },
    "id of another identity": lambda d, a, m: {**d, "id": m.id},
    "sign_key of another identity": lambda d, a, m: {**d, "sign_key": b64e(m.public.sign_key)},
    "keys of another identity, this id": lambda d, a, m: {**m.public.to_doc(), "id": a.id},
    "sign_key 31 bytes": lambda d, a, m: {**d, "sign_key": b64e(a.public.sign_key[:31])},
    "box_key 33 bytes": lambda d, a, m: {**d, "box_key": b64e(a.public.box_key + b"\0")},
    "box_sig 63 bytes": lambda d, a, m: {**d, "box_sig": b64e(a.public.box_sig[:63])},
    "sign_key not base64url text": lambda d, a, m: {**d, "sign_key": "\u00e9" * 43},
    "box_key not a string": lambda d, a, m: {**d, "box_key": 12345},
    "box_sig not base64url": lambda d, a, m: {**d, "box_sig": "A"},
    "field missing": lambda d, a, m: {k: v for k, v in d.items() if k != "box_sig"},
    "extra field": lambda d, a, m: {**d, "name": "alice"},
}


@pytest.mark.parametrize("tamper", list(TAMPERS), ids=list(TAMPERS))
def test_tampered_document_is_refused(tamper: str) -> None:
    doc = TAMPERS[tamper](alice.public.to_doc(), alice, mallory)
    with pytest.raises(InvalidIdentity) as info:
        PublicIdentity.from_doc(doc)
    assert info.value.status == 422
    assert info.value.code == "invalid_identity"


@pytest.mark.parametrize("doc", [None, "doc", 3, []], ids=repr)
def test_non_object_document_is_refused(doc: object) -> None:
    with pytest.raises(InvalidIdentity):
        PublicIdentity.from_doc(doc)


@pytest.mark.parametrize("bad_id", ["A" * 32, 7], ids=["uppercase id", "id not a string"])
def test_malformed_id_is_refused_as_invalid_identity(bad_id: object) -> None:
    doc: dict[str, Any] = {**alice.public.to_doc(), "id": bad_id}
    with pytest.raises(RemoteProtocolError) as info:
        PublicIdentity.from_doc(doc)
    assert isinstance(info.value, InvalidIdentity), type(info.value).__name__


def test_private_bytes_round_trip() -> None:
    data = alice.to_private_bytes()
    doc = json.loads(data)
    assert doc["v"] == 1
    assert doc["id"] == alice.id
    assert b64d(doc["sign_seed"]) == bytes(range(32))
    assert b64d(doc["box_seed"]) == bytes(range(32, 64))
    again = Identity.from_private_bytes(data)
    assert again.public == alice.public
    assert again.sign(b"m") == alice.sign(b"m")


def test_private_bytes_with_a_wrong_id_are_refused() -> None:
    doc = json.loads(alice.to_private_bytes())
    doc["id"] = mallory.id
    with pytest.raises(InvalidIdentity, match="does not match"):
        Identity.from_private_bytes(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"not json",
        b"[1, 2]",
        b'"text"',
        b'{"v": 1}',
        b'{"sign_seed": "AAAA", "box_seed": "AAAA"}',
    ],
    ids=["empty", "not utf-8", "not json", "list", "string", "no seeds", "short seeds"],
)
def test_junk_key_file_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidIdentity):
        Identity.from_private_bytes(data)


def test_key_file_with_non_text_seeds_is_refused_as_invalid_identity() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        Identity.from_private_bytes(b'{"v": 1, "id": "x", "sign_seed": 1, "box_seed": 2}')
    assert isinstance(info.value, InvalidIdentity), type(info.value).__name__


def test_repr_shows_no_secrets() -> None:
    doc = json.loads(alice.to_private_bytes())
    text = repr(alice)
    assert text == f"Identity(id={alice.id!r})"
    assert doc["sign_seed"] not in text
    assert doc["box_seed"] not in text
