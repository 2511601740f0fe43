"""Signed envelopes: the signature covers the exact envelope text that travels, behind a
domain prefix, and every way a signed envelope can be wrong has its own typed refusal."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from protocol_support import alice, bob, envelope_doc, make_envelope, mallory

from shared.encoding import b64d, b64e
from shared.envelope import ENVELOPE_MAX_BYTES, Envelope, envelope_bytes
from shared.errors import (
    BadSignature,
    Expired,
    InvalidEnvelope,
    LimitExceeded,
    LocalProtocolError,
    MalformedInput,
    RemoteProtocolError,
    TooLarge,
    UntrustedSigner,
    WrongRecipient,
)
from shared.identity import Identity
from shared.signing import (
    ENVELOPE_DOMAIN,
    SignedEnvelope,
    check_signature,
    sign_envelope,
    signed_from_doc,
    signed_from_wire,
    verify_envelope,
)

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def signed_as_is(text: str, identity: Identity) -> SignedEnvelope:
    """Sign ``text`` exactly as given (not through ``envelope_bytes``)."""
    return SignedEnvelope(text, b64e(identity.sign(ENVELOPE_DOMAIN + text.encode())))


def verify(signed: SignedEnvelope, recipient: str | None) -> Envelope:
    return verify_envelope(
        signed, trusted={alice.id: alice.public.verifier()}, recipient=recipient, now=T0
    )


def error_of(call: Callable[[], object]) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        call()
    return info.value


# --- round trip ---------------------------------------------------------------------------


def test_sign_then_verify_round_trips() -> None:
    envelope = make_envelope()
    signed = sign_envelope(envelope, alice)
    assert signed.envelope.encode() == envelope_bytes(envelope)
    assert len(b64d(signed.signature)) == 64
    received = signed_from_wire(signed.to_wire())
    assert received == signed
    assert verify(received, bob.id) == envelope


def test_signature_is_over_domain_prefix_and_exact_bytes() -> None:
    signed = sign_envelope(make_envelope(), alice)
    assert ENVELOPE_DOMAIN == b"mailslot.envelope.v1\n"
    assert signed.signed_message() == ENVELOPE_DOMAIN + signed.envelope.encode()
    # Checked with the raw key, independently of shared.signing:
    alice.public.verifier().verify(b64d(signed.signature), ENVELOPE_DOMAIN + signed.envelope.encode())


def test_signature_without_the_domain_prefix_is_refused() -> None:
    text = envelope_bytes(make_envelope())
    signed = SignedEnvelope(text.decode(), b64e(alice.sign(text)))
    error = error_of(lambda: verify(signed, bob.id))
    assert isinstance(error, BadSignature)


def test_wire_form_round_trips_non_ascii_text() -> None:
    envelope = make_envelope(payload={"msg": "caf\u00e9 \u2603 \U0001f600"})
    signed = sign_envelope(envelope, alice)
    wire = signed.to_wire()
    assert json.loads(wire) == {"envelope": signed.envelope, "signature": signed.signature}
    assert verify(signed_from_wire(wire), bob.id) == envelope
    assert verify(signed_from_wire(wire.decode()), bob.id) == envelope


def test_sign_refuses_a_signer_field_naming_someone_else() -> None:
    with pytest.raises(LocalProtocolError):
        sign_envelope(make_envelope(), mallory)


# --- exact bytes --------------------------------------------------------------------------

RESERIALIZE: dict[str, Callable[[str], str]] = {
    "indented": lambda t: json.dumps(json.loads(t), indent=2),
    "default separators": lambda t: json.dumps(json.loads(t)),
    "ascii escapes": lambda t: json.dumps(json.loads(t), separators=(",", ":")),
    "keys sorted": lambda t: json.dumps(json.loads(t), separators=(",", ":"), sort_keys=True,
                                        ensure_ascii=False),
    "trailing newline": lambda t: t + "\n",
    "leading space": lambda t: " " + t,
}


@pytest.mark.parametrize("change", list(RESERIALIZE), ids=list(RESERIALIZE))
def test_reserialized_envelope_no_longer_verifies(change: str) -> None:
    envelope = make_envelope(payload={"msg": "caf\u00e9", "n": 1})
    signed = sign_envelope(envelope, alice)
    other = RESERIALIZE[change](signed.envelope)
    assert other != signed.envelope
    moved = SignedEnvelope(other, signed.signature)
    error = error_of(lambda: verify(moved, bob.id))
    assert isinstance(error, BadSignature)
    assert (error.status, error.code, error.close_code) == (401, "bad_signature", 4401)


def test_verifier_checks_the_text_as_sent_without_canonicalizing() -> None:
    """A producer may sign any valid text; the signature covers those bytes, not a
    canonical form, so nobody on the path needs to re-serialize."""
    text = json.dumps(envelope_doc(), indent=2, sort_keys=True)
    envelope = verify(signed_as_is(text, alice), bob.id)
    assert envelope.type == "build.failed"
    assert envelope_bytes(envelope).decode() != text


@pytest.mark.parametrize(
    ("old", "new"), [('"run":42', '"run":43'), ('"priority":"next"', '"priority":"now"')]
)
def test_tampered_envelope_is_refused(old: str, new: str) -> None:
    signed = sign_envelope(make_envelope(), alice)
    assert old in signed.envelope
    tampered = SignedEnvelope(signed.envelope.replace(old, new), signed.signature)
    assert isinstance(error_of(lambda: verify(tampered, bob.id)), BadSignature)


# --- keys and trust -----------------------------------------------------------------------


def test_wrong_key_is_refused() -> None:
    signed = sign_envelope(make_envelope(), alice)
    error = error_of(lambda: check_signature(signed, mallory.public.verifier()))
    assert isinstance(error, BadSignature)
    assert error.status == 401
    trusted_wrongly = {alice.id: mallory.public.verifier()}
    error = error_of(lambda: verify_envelope(signed, trusted=trusted_wrongly, recipient=bob.id,
                                             now=T0))
    assert isinstance(error, BadSignature)


def test_signature_by_an_impostor_is_refused() -> None:
    """Mallory signs an envelope whose signer field claims alice."""
    text = envelope_bytes(make_envelope()).decode()
    assert isinstance(error_of(lambda: verify(signed_as_is(text, mallory), bob.id)),
                      BadSignature)


def test_untrusted_signer_is_refused_before_the_signature_is_checked() -> None:
    signed = sign_envelope(make_envelope(), alice)
    error = error_of(lambda: verify_envelope(
        signed, trusted={mallory.id: mallory.public.verifier()}, recipient=bob.id, now=T0))
    assert isinstance(error, UntrustedSigner)
    assert (error.status, error.code, error.close_code) == (403, "untrusted_signer", 4403)
    garbage = SignedEnvelope(signed.envelope, "not a signature \u00e9")
    error = error_of(lambda: verify_envelope(garbage, trusted={}, recipient=bob.id, now=T0))
    assert isinstance(error, UntrustedSigner)


def test_wrong_recipient_is_refused_after_the_signature() -> None:
    signed = sign_envelope(make_envelope(), alice)
    error = error_of(lambda: verify(signed, mallory.id))
    assert isinstance(error, WrongRecipient)
    assert (error.status, error.code) == (403, "wrong_recipient")
    assert verify(signed, None).to == bob.id  # None: the relay routes by itself
    forged = SignedEnvelope(signed.envelope, b64e(bytes(64)))
    assert isinstance(error_of(lambda: verify(forged, mallory.id)), BadSignature)


def test_expired_envelope_is_refused() -> None:
    expires = T0 + timedelta(seconds=30)
    signed = sign_envelope(make_envelope(expires_at=expires.isoformat()), alice)
    trusted = {alice.id: alice.public.verifier()}
    assert verify_envelope(signed, trusted=trusted, recipient=bob.id, now=T0).expires_at == expires
    error = error_of(lambda: verify_envelope(signed, trusted=trusted, recipient=bob.id,
                                             now=expires))
    assert isinstance(error, Expired)
    assert (error.status, error.code) == (422, "expired")
    forged = SignedEnvelope(signed.envelope, b64e(bytes(64)))
    error = error_of(lambda: verify_envelope(forged, trusted=trusted, recipient=bob.id,
                                             now=expires))
    assert isinstance(error, BadSignature)


def test_invalid_envelope_text_is_refused_before_anything_else() -> None:
    signed = signed_as_is(json.dumps(envelope_doc(priority="asap")), alice)
    error = error_of(lambda: verify(signed, bob.id))
    assert isinstance(error, InvalidEnvelope)
    assert error.code == "invalid_priority"


# --- signature encoding -------------------------------------------------------------------


@pytest.mark.parametrize(
    "signature",
    ["\u00e9" * 86, "A", "A" * 85],
    ids=["non-ascii", "one char", "impossible length"],
)
def test_signature_that_is_not_base64url_is_malformed(signature: str) -> None:
    signed = SignedEnvelope(sign_envelope(make_envelope(), alice).envelope, signature)
    error = error_of(lambda: check_signature(signed, alice.public.verifier()))
    assert isinstance(error, MalformedInput)
    assert error.status == 400


@pytest.mark.parametrize("length", [0, 32, 63, 65, 128])
def test_signature_of_the_wrong_length_is_refused(length: int) -> None:
    good = sign_envelope(make_envelope(), alice)
    raw = (b64d(good.signature) * 2)[:length]
    error = error_of(lambda: check_signature(SignedEnvelope(good.envelope, b64e(raw)),
                                             alice.public.verifier()))
    assert isinstance(error, BadSignature)
    assert error.code == "bad_signature"


# --- wire documents -----------------------------------------------------------------------

GOOD = {"envelope": "{}", "signature": "c2ln"}


@pytest.mark.parametrize(
    "doc",
    [
        {"signature": "c2ln"},
        {"envelope": "{}"},
        {},
        {**GOOD, "extra": 1},
        {**GOOD, "envelope": {"v": 1}},
        {**GOOD, "envelope": None},
        {**GOOD, "signature": 123},
        {**GOOD, "signature": ["c2ln"]},
        [GOOD],
        "text",
        None,
    ],
    ids=["no envelope", "no signature", "empty", "extra field", "envelope object",
         "envelope null", "signature number", "signature list", "list", "string", "null"],
)
def test_malformed_wire_document_is_refused(doc: object) -> None:
    for call in (lambda: signed_from_doc(doc), lambda: signed_from_wire(json.dumps(doc))):
        error = error_of(call)
        assert type(error) is MalformedInput
        assert (error.status, error.code) == (400, "malformed")


@pytest.mark.parametrize("data", ["", "{", "nope", b"\xff\xfe{}", '{"envelope": "x",}'],
                         ids=["empty", "truncated", "word", "not utf-8", "trailing comma"])
def test_wire_that_is_not_json_is_refused(data: str | bytes) -> None:
    error = error_of(lambda: signed_from_wire(data))
    assert type(error) is MalformedInput
    assert (error.status, error.code) == (400, "malformed_json")


def test_oversized_wire_is_refused_before_parsing() -> None:
    limit = 2 * ENVELOPE_MAX_BYTES  # room for the JSON escaping of the envelope string
    error = error_of(lambda: signed_from_wire(b" " * (limit + 1)))
    assert type(error) is TooLarge
    assert (error.status, error.code, error.close_code) == (413, "too_large", 1009)
    # At the limit it is parsed (and here refused as malformed, not as too large).
    error = error_of(lambda: signed_from_wire(b" " * limit))
    assert type(error) is MalformedInput


@pytest.mark.parametrize("depth", [1000, 5000])
def test_deeply_nested_wire_is_refused_as_too_deep(depth: int) -> None:
    body = "[" * depth + "]" * depth
    assert len(body) <= 2 * ENVELOPE_MAX_BYTES
    error = error_of(lambda: signed_from_wire(body))
    assert (type(error), error.code) == (LimitExceeded, "too_deep")


def test_envelope_text_that_is_not_unicode_is_refused_with_a_typed_error() -> None:
    wire = json.dumps({"envelope": "\ud800", "signature": b64e(bytes(64))})
    error_of(lambda: check_signature(signed_from_wire(wire), alice.public.verifier()))
