"""What an identity signs to prove itself: the link's auth answer, enrollment and signed
HTTP requests; each under its own domain prefix and bound to the verifier's context.

The ±REQUEST_SKEW_SECONDS window and the one use of each nonce are enforced by the
relay's HTTP adapter (shared has no clock and no store); here we check what shared owns:
that the timestamp and the nonce are covered by the signature, so a captured header
cannot be re-dated or given a fresh nonce, and that the header is parsed strictly."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from protocol_support import alice, mallory

from shared.auth import (
    AUTH_DOMAIN,
    ENROLL_DOMAIN,
    NONCE_MEMORY_SECONDS,
    REQUEST_DOMAIN,
    REQUEST_SKEW_SECONDS,
    RequestSignature,
    auth_message,
    check_b64_signature,
    check_request_nonce,
    enroll_message,
    new_request_nonce,
    parse_request_header,
    request_header,
    request_message,
    sign_b64,
)
from shared.encoding import b64d, b64e
from shared.errors import BadSignature, MalformedInput
from shared.signing import ENVELOPE_DOMAIN

NONCE = "bm9uY2Utbm9uY2Utbm9uY2U"
TIME = 1_735_787_045
RELAY = "relay.example.org"
BODY = b'{"signer": "x", "granted": true}'
REQUEST_NONCE = "q8Xw3m0k-Z9_r2TtYbLmNA"
HEADER_RE = re.compile(
    r"Mailslot-Signature id=([a-z2-7]{32}),ts=(\d+),nonce=([A-Za-z0-9_-]{22}),"
    r"sig=([A-Za-z0-9_-]{86})"
)


def test_messages_have_the_documented_bytes() -> None:
    assert auth_message(NONCE, TIME, "ident", RELAY) == (
        b"mailslot.auth.v1\n" + f"{NONCE}\n{TIME}\nident\n{RELAY}".encode()
    )
    assert enroll_message("tok", "ident") == b"mailslot.enroll.v1\ntok\nident"
    digest = hashlib.sha256(BODY).hexdigest()
    assert request_message("post", "/v1/x", TIME, REQUEST_NONCE, BODY) == (
        f"mailslot.request.v2\nPOST\n/v1/x\n{TIME}\n{REQUEST_NONCE}\n{digest}".encode()
    )


def test_domains_are_distinct_and_none_prefixes_another() -> None:
    domains = [AUTH_DOMAIN, ENROLL_DOMAIN, REQUEST_DOMAIN, ENVELOPE_DOMAIN,
               b"mailslot.id.v1\n", b"mailslot.boxkey.v1\n"]
    for one, two in combinations(domains, 2):
        assert not one.startswith(two) and not two.startswith(one), (one, two)
    for domain in domains:
        assert domain.endswith(b"\n")


def test_auth_answer_verifies() -> None:
    message = auth_message(NONCE, TIME, alice.id, RELAY)
    signature = sign_b64(alice, message)
    assert len(b64d(signature)) == 64
    check_b64_signature(alice.public.verifier(), signature, message)


AUTH_CHANGES: dict[str, Callable[[str], bytes]] = {
    "other nonce": lambda ident: auth_message(NONCE + "x", TIME, ident, RELAY),
    "other time": lambda ident: auth_message(NONCE, TIME + 1, ident, RELAY),
    "other relay": lambda ident: auth_message(NONCE, TIME, ident, "evil.example.org"),
    "other identity": lambda ident: auth_message(NONCE, TIME, "b" * 32, RELAY),
    "as enrollment": lambda ident: ENROLL_DOMAIN + f"{NONCE}\n{TIME}\n{ident}\n{RELAY}".encode(),
}


@pytest.mark.parametrize("change", list(AUTH_CHANGES), ids=list(AUTH_CHANGES))
def test_auth_answer_is_bound_to_its_challenge(change: str) -> None:
    signature = sign_b64(alice, auth_message(NONCE, TIME, alice.id, RELAY))
    with pytest.raises(BadSignature) as info:
        check_b64_signature(alice.public.verifier(), signature, AUTH_CHANGES[change](alice.id))
    assert (info.value.status, info.value.code, info.value.close_code) == (
        401, "bad_signature", 4401)


def test_enrollment_proof_verifies_and_is_bound_to_token_and_identity() -> None:
    proof = sign_b64(alice, enroll_message("token-1", alice.id))
    check_b64_signature(alice.public.verifier(), proof, enroll_message("token-1", alice.id))
    for message in (enroll_message("token-2", alice.id), enroll_message("token-1", mallory.id)):
        with pytest.raises(BadSignature):
            check_b64_signature(alice.public.verifier(), proof, message)
    with pytest.raises(BadSignature):
        check_b64_signature(mallory.public.verifier(), proof, enroll_message("token-1", alice.id))


@pytest.mark.parametrize(
    "signature",
    ["", "A", "\u00e9" * 86, "not base64!", b64e(bytes(63)), b64e(bytes(64))],
    ids=["empty", "one char", "non-ascii", "junk", "63 bytes", "zeros"],
)
def test_junk_signature_is_a_bad_signature(signature: str) -> None:
    with pytest.raises(BadSignature):
        check_b64_signature(alice.public.verifier(), signature, b"message")


# --- signed requests ----------------------------------------------------------------------


def test_request_header_format_and_parse() -> None:
    header = request_header(alice, "PUT", "/v1/identities/x/grants/y", TIME, BODY)
    match = HEADER_RE.fullmatch(header)
    assert match is not None, header
    assert match.group(1) == alice.id
    parsed = parse_request_header(header)
    assert parsed == RequestSignature(alice.id, TIME, match.group(3), match.group(4))
    message = request_message("PUT", "/v1/identities/x/grants/y", TIME, parsed.nonce, BODY)
    check_b64_signature(alice.public.verifier(), parsed.sig, message)


def test_every_header_gets_a_fresh_nonce() -> None:
    nonces = {parse_request_header(request_header(alice, "PUT", "/p", TIME, b"")).nonce
              for _ in range(50)}
    assert len(nonces) == 50
    assert all(check_request_nonce(n) == n for n in nonces)
    assert len(new_request_nonce()) == 22


def test_method_is_case_insensitive() -> None:
    assert request_message("delete", "/p", TIME, REQUEST_NONCE, b"") == request_message(
        "DELETE", "/p", TIME, REQUEST_NONCE, b"")


REQUEST_CHANGES: dict[str, Callable[[], bytes]] = {
    "re-dated": lambda: request_message(
        "PUT", "/v1/a", TIME + REQUEST_SKEW_SECONDS, REQUEST_NONCE, BODY),
    "other nonce": lambda: request_message("PUT", "/v1/a", TIME, REQUEST_NONCE[::-1], BODY),
    "other method": lambda: request_message("DELETE", "/v1/a", TIME, REQUEST_NONCE, BODY),
    "other path": lambda: request_message("PUT", "/v1/b", TIME, REQUEST_NONCE, BODY),
    "other body": lambda: request_message("PUT", "/v1/a", TIME, REQUEST_NONCE, BODY + b" "),
    "empty body": lambda: request_message("PUT", "/v1/a", TIME, REQUEST_NONCE, b""),
    "v1 message": lambda: b"mailslot.request.v1\n" + request_message(
        "PUT", "/v1/a", TIME, REQUEST_NONCE, BODY).split(b"\n", 1)[1],
}


@pytest.mark.parametrize("change", list(REQUEST_CHANGES), ids=list(REQUEST_CHANGES))
def test_request_signature_covers_time_nonce_method_path_and_body(change: str) -> None:
    header = request_header(alice, "PUT", "/v1/a", TIME, BODY, nonce=REQUEST_NONCE)
    sig = parse_request_header(header).sig
    check_b64_signature(alice.public.verifier(), sig,
                        request_message("PUT", "/v1/a", TIME, REQUEST_NONCE, BODY))
    with pytest.raises(BadSignature):
        check_b64_signature(alice.public.verifier(), sig, REQUEST_CHANGES[change]())


def test_request_skew_is_five_minutes_and_nonces_outlive_it() -> None:
    assert REQUEST_SKEW_SECONDS == 300
    # A ts up to the skew ahead is acceptable until twice the skew from its first use.
    assert NONCE_MEMORY_SECONDS >= 2 * REQUEST_SKEW_SECONDS


SIG = "A" * 86
GOOD_ID = "a" * 32
GOOD = f"id={GOOD_ID},ts=1,nonce={REQUEST_NONCE},sig={SIG}"


def test_a_well_formed_header_parses() -> None:
    assert parse_request_header("Mailslot-Signature " + GOOD) == RequestSignature(
        GOOD_ID, 1, REQUEST_NONCE, SIG)
    # field order is free
    reordered = f"Mailslot-Signature sig={SIG},nonce={REQUEST_NONCE},ts=1,id={GOOD_ID}"
    assert parse_request_header(reordered).ts == 1


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer abc.def",
        "Mailslot-Signature",
        "Mailslot-Signature ",
        "mailslot-signature " + GOOD,
        "Mailslot-Signature id=a,ts=1,sig=s",
        f"Mailslot-Signature id={GOOD_ID},ts=1,sig={SIG}",
        f"Mailslot-Signature id={GOOD_ID},nonce={REQUEST_NONCE},sig={SIG}",
        f"Mailslot-Signature ts=1,nonce={REQUEST_NONCE},sig={SIG}",
        f"Mailslot-Signature id={GOOD_ID},ts=1,nonce={REQUEST_NONCE}",
        "Mailslot-Signature " + GOOD.replace("ts=1", "ts=soon"),
        "Mailslot-Signature " + GOOD.replace("ts=1", "ts=1.5"),
        "Mailslot-Signature " + GOOD.replace("ts=1", "ts=" + "9" * 400),
        "Mailslot-Signature " + GOOD.replace("ts=1", "ts=1e400"),
        "Mailslot-Signature " + GOOD.replace("ts=1", "ts=-1"),
        "Mailslot-Signature " + GOOD.replace("ts=1", "ts=+1"),
        "Mailslot-Signature " + GOOD.replace("ts=1", "ts=1_000"),
        "Mailslot-Signature " + GOOD.replace("ts=1", "ts=١٢"),
        "Mailslot-Signature " + GOOD.replace("ts=1", "ts= 1"),
        "Mailslot-Signature " + GOOD.replace("ts=1", "ts="),
        "Mailslot-Signature " + GOOD.replace(REQUEST_NONCE, "short"),
        "Mailslot-Signature " + GOOD.replace(REQUEST_NONCE, "n" * 65),
        "Mailslot-Signature " + GOOD.replace(REQUEST_NONCE, REQUEST_NONCE[:-1] + "."),
        "Mailslot-Signature " + GOOD.replace(SIG, "A" * 129),
        "Mailslot-Signature " + GOOD.replace(GOOD_ID, "A" * 32),
        "Mailslot-Signature " + GOOD + ",ts=2",
        "Mailslot-Signature " + GOOD + ",extra=1",
        "Mailslot-Signature " + GOOD + ",",
        "Mailslot-Signature " + GOOD.replace(",", ";"),
        "Mailslot-Signature  " + GOOD,
        "Mailslot-Signature:" + GOOD,
    ],
    ids=["empty", "bearer", "scheme only", "scheme and space", "scheme lowercase",
         "v1 junk", "no nonce", "no ts", "no id", "no sig", "ts not a number", "ts float",
         "ts 400 digits", "ts exponent", "ts negative", "ts plus", "ts underscore",
         "ts arabic digits", "ts space", "ts empty", "nonce short", "nonce long",
         "nonce bad char", "sig long", "id uppercase", "ts twice", "unknown field",
         "trailing comma", "semicolons", "double space", "colon"],
)
def test_malformed_header_is_refused(header: str) -> None:
    with pytest.raises(MalformedInput) as info:
        parse_request_header(header)
    assert (info.value.status, info.value.code) == (400, "missing_auth")


# --- the committed vector: what another implementation must reproduce -----------------------

REQUEST_VECTOR = Path(__file__).resolve().parent / "vectors" / "request_v2.json"


def test_request_vector_is_recomputed_exactly() -> None:
    """``vectors/request_v2.json`` (written once from ``alice``'s fixed seeds) pins the
    signed bytes and the header; Ed25519 is deterministic, so recomputing gives the same."""
    vector = json.loads(REQUEST_VECTOR.read_text(encoding="utf-8"))
    assert vector["domain"].encode() == REQUEST_DOMAIN
    assert vector["signer"]["public"] == alice.public.to_doc()
    body = bytes.fromhex(vector["body_hex"])
    message = request_message(vector["method"], vector["path"], vector["ts"], vector["nonce"],
                              body)
    assert message == vector["message"].encode()
    digest = hashlib.sha256(body).hexdigest()
    assert message == (f"{vector['domain']}{vector['method']}\n{vector['path']}\n"
                       f"{vector['ts']}\n{vector['nonce']}\n{digest}").encode()
    header = request_header(alice, vector["method"], vector["path"], vector["ts"], body,
                            nonce=vector["nonce"])
    assert header == vector["header"]
    # Independently of shared: the raw Ed25519 key over the documented message.
    key = Ed25519PublicKey.from_public_bytes(b64d(vector["signer"]["public"]["sign_key"]))
    key.verify(b64d(vector["signature"]), vector["message"].encode())
    assert parse_request_header(vector["header"]) == RequestSignature(
        alice.id, vector["ts"], vector["nonce"], vector["signature"])
