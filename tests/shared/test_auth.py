"""What an identity signs to prove itself: the link's auth answer, enrollment and signed
HTTP requests; each under its own domain prefix and bound to the verifier's context.

The ±REQUEST_SKEW_SECONDS window is enforced by the relay's HTTP adapter (shared has no
clock); here we check what shared owns: that the timestamp is covered by the signature,
so a captured header cannot be re-dated."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from itertools import combinations

import pytest
from protocol_support import alice, mallory

from shared.auth import (
    AUTH_DOMAIN,
    ENROLL_DOMAIN,
    REQUEST_DOMAIN,
    REQUEST_SKEW_SECONDS,
    auth_message,
    check_b64_signature,
    enroll_message,
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
HEADER_RE = re.compile(r"Mailslot-Signature id=([a-z2-7]{32}),ts=(\d+),sig=([A-Za-z0-9_-]{86})")


def test_messages_have_the_documented_bytes() -> None:
    assert auth_message(NONCE, TIME, "ident", RELAY) == (
        b"mailslot.auth.v1\n" + f"{NONCE}\n{TIME}\nident\n{RELAY}".encode()
    )
    assert enroll_message("tok", "ident") == b"mailslot.enroll.v1\ntok\nident"
    digest = hashlib.sha256(BODY).hexdigest()
    assert request_message("post", "/v1/x", TIME, BODY) == (
        f"mailslot.request.v1\nPOST\n/v1/x\n{TIME}\n{digest}".encode()
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
    ident, ts, sig = parse_request_header(header)
    assert (ident, ts, sig) == (alice.id, TIME, match.group(3))
    message = request_message("PUT", "/v1/identities/x/grants/y", ts, BODY)
    check_b64_signature(alice.public.verifier(), sig, message)


def test_method_is_case_insensitive() -> None:
    assert request_message("delete", "/p", TIME, b"") == request_message("DELETE", "/p", TIME, b"")


REQUEST_CHANGES: dict[str, Callable[[], bytes]] = {
    "re-dated": lambda: request_message("PUT", "/v1/a", TIME + REQUEST_SKEW_SECONDS, BODY),
    "other method": lambda: request_message("DELETE", "/v1/a", TIME, BODY),
    "other path": lambda: request_message("PUT", "/v1/b", TIME, BODY),
    "other body": lambda: request_message("PUT", "/v1/a", TIME, BODY + b" "),
    "empty body": lambda: request_message("PUT", "/v1/a", TIME, b""),
}


@pytest.mark.parametrize("change", list(REQUEST_CHANGES), ids=list(REQUEST_CHANGES))
def test_request_signature_covers_time_method_path_and_body(change: str) -> None:
    _, _, sig = parse_request_header(request_header(alice, "PUT", "/v1/a", TIME, BODY))
    with pytest.raises(BadSignature):
        check_b64_signature(alice.public.verifier(), sig, REQUEST_CHANGES[change]())


def test_request_skew_is_five_minutes() -> None:
    assert REQUEST_SKEW_SECONDS == 300


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer abc.def",
        "Mailslot-Signature",
        "Mailslot-Signature ",
        "mailslot-signature id=a,ts=1,sig=s",
        "Mailslot-Signature id=a,ts=1",
        "Mailslot-Signature id=a,sig=s",
        "Mailslot-Signature ts=1,sig=s",
        "Mailslot-Signature id=a,ts=soon,sig=s",
        "Mailslot-Signature id=a,ts=1.5,sig=s",
        "Mailslot-Signature id=a;ts=1;sig=s",
        "Mailslot-Signature  id=a,ts=1,sig=s",
        "Mailslot-Signature:id=a,ts=1,sig=s",
    ],
    ids=["empty", "bearer", "scheme only", "scheme and space", "scheme lowercase",
         "no sig", "no ts", "no id", "ts not a number", "ts float", "semicolons",
         "double space", "colon"],
)
def test_malformed_header_is_refused(header: str) -> None:
    with pytest.raises(MalformedInput) as info:
        parse_request_header(header)
    assert (info.value.status, info.value.code) == (400, "missing_auth")
