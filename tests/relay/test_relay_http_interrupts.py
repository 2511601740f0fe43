"""POST /v1/interrupts refuses bad input with a specific status and machine-readable
code, stores nothing when it refuses, and keeps serving afterwards.

Every test checks the three things a refusal owes the producer and the recipient:
``{"error": code}`` with the documented status, an unchanged JetStream (per recipient and
in total), and a relay that still accepts a good interrupt.
"""

from __future__ import annotations

import json

import httpx
import pytest
from relay_support import (  # noqa: F401  (fixtures: alice, bob, producer, relay_config)
    EMPTY,
    SOON,
    alice_fixture,
    assert_still_serving,
    bob_fixture,
    draft,
    edge_link,
    flip_signature,
    grant,
    item_id,
    past,
    pending,
    post,
    producer_fixture,
    raw_envelope_fields,
    refused,
    relay_config_fixture,
    sign_raw,
    sign_text,
    signed_doc,
    stored_total,
)
from tests_support import wait_until
from ulid import ULID

from shared.encoding import b64d, b64e
from shared.envelope import ENVELOPE_MAX_BYTES, PAYLOAD_MAX_BYTES
from shared.frames import Ack
from shared.identity import Identity

# -- who may post -------------------------------------------------------------------------


async def test_draft_without_authorization_is_refused(relay, alice):
    refused(await post(relay, draft(alice.id)), 401, "missing_token")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


BAD_AUTHORIZATION = {
    "unknown_producer_token": lambda m: "Bearer msp_" + "A" * 43,
    "tampered_token": lambda m: "Bearer " + m.token[:-1] + ("A" if m.token[-1] != "A" else "B"),
    "enrollment_token": lambda m: "Bearer mse_" + "A" * 43,
    "no_prefix": lambda m: "Bearer " + m.token.removeprefix("msp_"),
    "basic_scheme": lambda m: "Basic dXNlcjpwYXNz",
    "token_scheme": lambda m: "Token " + m.token,
    "no_scheme": lambda m: m.token,
    "empty_bearer": lambda m: "Bearer",
}


@pytest.mark.parametrize("kind", sorted(BAD_AUTHORIZATION))
async def test_bad_bearer_token_is_refused(relay, alice, producer, kind):
    header = {"Authorization": BAD_AUTHORIZATION[kind](alice)}
    refused(await post(relay, draft(alice.id), headers=header), 401, "invalid_token")
    # A bad token is not ignored because the body happens to be a valid signed envelope.
    refused(await post(relay, signed_doc(producer, alice.id), headers=header),
            401, "invalid_token")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


async def test_token_for_another_recipient_is_forbidden(relay, alice, bob, producer):
    refused(await post(relay, draft(bob.id), token=alice.token), 403, "recipient_not_allowed")
    refused(await post(relay, draft(alice.id), token=bob.token), 403, "recipient_not_allowed")
    # A token also routes signed envelopes: alice's token cannot carry one for bob.
    for_bob = signed_doc(producer, bob.id)
    refused(await post(relay, for_bob, token=alice.token), 403, "recipient_not_allowed")
    assert await pending(relay, alice.id) == EMPTY
    assert await pending(relay, bob.id) == EMPTY
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)
    await assert_still_serving(relay, bob)


# -- producer-signed envelopes ---------------------------------------------------------------


def _tampered_text(doc):
    return {**doc, "envelope": doc["envelope"].replace('"n":1', '"n":2')}


def _truncated(doc):
    return {**doc, "signature": b64e(b64d(doc["signature"])[:63])}


BAD_SIGNATURES = {
    "one_bit_flipped": flip_signature,
    "truncated": _truncated,
    "empty": lambda doc: {**doc, "signature": ""},
    "envelope_changed_after_signing": _tampered_text,
    "signed_by_another_key": lambda doc: {
        **doc,
        "signature": sign_text(Identity.generate(), doc["envelope"])["signature"],
    },
}


@pytest.mark.parametrize("kind", sorted(BAD_SIGNATURES))
async def test_signed_envelope_with_bad_signature_is_refused(relay, alice, producer, kind):
    good = signed_doc(producer, alice.id)
    bad = BAD_SIGNATURES[kind](good)
    assert bad != good
    refused(await post(relay, bad), 401, "bad_signature")
    assert await stored_total(relay) == 0
    # The very same envelope with its real signature is accepted: only the signature was bad.
    response = await post(relay, good)
    assert response.status_code == 202, response.text
    assert await pending(relay, alice.id) == {"now": 0, "next": 1, "later": 0}
    await assert_still_serving(relay, alice)


async def test_signer_not_granted_by_recipient_is_forbidden(relay, alice, bob, make_member):
    stranger = (await make_member("producers", with_home=False)).identity
    refused(await post(relay, signed_doc(stranger, alice.id)), 403, "untrusted_signer")
    # A grant by bob does not make the signer trusted for alice.
    await grant(relay, bob, stranger.id)
    refused(await post(relay, signed_doc(stranger, alice.id)), 403, "untrusted_signer")
    # Never enrolled at all: same answer.
    refused(await post(relay, signed_doc(Identity.generate(), alice.id)), 403, "untrusted_signer")
    assert await pending(relay, alice.id) == EMPTY
    assert await stored_total(relay) == 0
    ok = await post(relay, signed_doc(stranger, bob.id))
    assert ok.status_code == 202, ok.text
    await assert_still_serving(relay, alice)


async def test_relay_attestation_cannot_be_posted_back(relay, alice):
    """A relay-signed envelope captured off the link is refused when posted as a signed
    envelope: only the relay signs relay attestations."""
    await assert_still_serving(relay, alice)
    async with edge_link(relay, alice, credit=1) as link:
        [item] = await link.items(1)
    assert json.loads(item.envelope)["signer"] == relay.identity.id
    before = await pending(relay, alice.id)
    replay = {"envelope": item.envelope, "signature": item.signature}
    refused(await post(relay, replay), 403, "untrusted_signer")
    refused(await post(relay, replay, token=alice.token), 403, "untrusted_signer")
    assert await pending(relay, alice.id) == before
    await assert_still_serving(relay, alice)


async def test_signed_envelope_to_unknown_identity_is_not_found(relay, alice, producer):
    nobody = Identity.generate().id
    refused(await post(relay, signed_doc(producer, nobody)), 404, "unknown_identity")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


# -- fields that break a rule ----------------------------------------------------------------


async def test_unknown_priority_is_refused(relay, alice, producer):
    for priority in ("urgent", "NOW", "", "now ", 1, None):
        refused(await post(relay, draft(alice.id, priority=priority), token=alice.token),
                422, "invalid_priority")
        refused(await post(relay, sign_raw(producer, alice.id, priority=priority)),
                422, "invalid_priority")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


async def test_expired_interrupt_is_refused(relay, alice, producer):
    expired = draft(alice.id, expires_at=past(60).isoformat())
    refused(await post(relay, expired, token=alice.token), 422, "expired")
    signed = signed_doc(producer, alice.id, created_at=past(7200), expires_at=past(3600))
    refused(await post(relay, signed), 422, "expired")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


def _payload_of_size(size: int, char: str = "x") -> dict[str, str]:
    """A payload whose compact JSON is exactly ``size`` bytes (for 1-byte ``char``)."""
    overhead = len(json.dumps({"b": ""}, separators=(",", ":")))
    return {"b": char * (size - overhead)}


async def test_payload_over_cap_is_413(relay, alice, producer):
    over = _payload_of_size(PAYLOAD_MAX_BYTES + 1)
    refused(await post(relay, draft(alice.id, payload=over), token=alice.token),
            413, "payload_too_large")
    # The cap counts bytes, not characters: 2-byte characters overflow it at half the count.
    wide = {"b": "é" * (PAYLOAD_MAX_BYTES // 2)}
    assert len(json.dumps(wide, ensure_ascii=False)) < PAYLOAD_MAX_BYTES
    refused(await post(relay, draft(alice.id, payload=wide), token=alice.token),
            413, "payload_too_large")
    refused(await post(relay, sign_raw(producer, alice.id, payload=over)),
            413, "payload_too_large")
    assert await stored_total(relay) == 0
    # Exactly at the cap is fine.
    at_cap = await post(relay, draft(alice.id, payload=_payload_of_size(PAYLOAD_MAX_BYTES)),
                        token=alice.token)
    assert at_cap.status_code == 202, at_cap.text
    assert await stored_total(relay) == 1
    await assert_still_serving(relay, alice)


async def test_sealed_payload_over_cap_is_413(relay, alice):
    sealed = {"alg": "x25519-hkdf-sha256-chacha20poly1305", "epk": "A" * 43,
              "nonce": "A" * 16, "ct": "A" * (PAYLOAD_MAX_BYTES * 2 + 4)}
    response = await post(relay, draft(alice.id, payload=None, sealed=sealed),
                          token=alice.token)
    assert await stored_total(relay) == 0
    refused(response, 413, "payload_too_large")


async def test_body_over_max_is_413(relay, alice, producer):
    limit = relay.config.max_body_bytes
    body = json.dumps(draft(alice.id, payload={"b": "x" * limit})).encode()
    assert len(body) > limit
    refused(await post(relay, content=body, token=alice.token), 413, "body_too_large")
    refused(await post(relay, content=b" " * (limit + 1)), 413, "body_too_large")
    # A signed envelope over the envelope cap, in a body under the body cap.
    text = json.dumps(raw_envelope_fields(producer, alice.id)) + " " * ENVELOPE_MAX_BYTES
    doc = sign_text(producer, text)
    assert len(json.dumps(doc)) < limit
    refused(await post(relay, doc), 413, "too_large")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


async def test_malformed_json_is_400(relay, alice):
    bodies = [b"", b"{", b"not json", b'{"to": }', b"\xff\xfe\x00", b"to=x&type=y",
              b'{"to": "a"} trailing']
    for body in bodies:
        for token in (None, alice.token):
            response = await post(relay, content=body, token=token,
                                  headers={"Content-Type": "application/json"})
            refused(response, 400, "malformed_json")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


async def test_wrong_shape_is_refused(relay, alice, producer):
    good = signed_doc(producer, alice.id)
    cases = [
        ([], alice.token, 422, "invalid_envelope"),
        ("a string", alice.token, 422, "invalid_envelope"),
        ({"to": alice.id}, alice.token, 422, "invalid_envelope"),  # no type
        ({"envelope": 1, "signature": "x"}, None, 400, "malformed"),
        ({"envelope": good["envelope"]}, None, 400, "malformed"),
        ({**good, "extra": 1}, None, 400, "malformed"),
        (sign_text(producer, "[]"), None, 422, "invalid_envelope"),
        (sign_text(producer, "{"), None, 400, "malformed_json"),
        (draft(alice.id, id="not-a-ulid"), alice.token, 422, "invalid_envelope"),
        (draft(alice.id, expires_at="2030-01-01T00:00:00"), alice.token, 422,
         "invalid_envelope"),  # naive datetime
        (sign_raw(producer, alice.id, v=2), None, 422, "invalid_envelope"),
    ]
    for body, token, status, code in cases:
        response = await post(relay, body, token=token)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"] == code, (body, response.text)
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


async def test_unknown_field_is_refused(relay, alice, producer):
    # A producer cannot set what the relay fills in (signer, created_at) nor invent fields.
    for extra in ({"colour": "red"}, {"signer": relay.identity.id},
                  {"created_at": "2030-01-01T00:00:00Z"}, {"v": 1}):
        refused(await post(relay, draft(alice.id, **extra), token=alice.token),
                422, "unknown_field")
    refused(await post(relay, sign_raw(producer, alice.id, colour="red")), 422, "unknown_field")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


@pytest.mark.parametrize("content_type", [
    None, "application/x-www-form-urlencoded", "text/plain", "multipart/form-data",
    "application/jsonx", "json", "application/json; charset=latin-1", "",
])
async def test_a_body_not_labelled_json_is_415(relay, alice, content_type):
    """``curl -d`` sends a form: it gets a clear 415, not a parse error, and nothing is
    stored even when the bytes happen to be a good draft."""
    headers = {"Authorization": f"Bearer {alice.token}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = json.dumps(draft(alice.id)).encode()
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        refused(await client.post("/v1/interrupts", content=body, headers=headers),
                415, "unsupported_media_type")
        refused(await client.post("/v1/enroll", content=b"{}", headers=headers),
                415, "unsupported_media_type")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
    "application/vnd.mailslot+json", 'application/json; charset="utf-8"',
])
async def test_json_media_types_are_accepted(relay, alice, content_type):
    response = await post(relay, content=json.dumps(draft(alice.id)).encode(),
                          token=alice.token, headers={"Content-Type": content_type})
    assert response.status_code == 202, response.text
    assert await stored_total(relay) == 1


async def test_wrong_method_is_405(relay, alice):
    async with httpx.AsyncClient(base_url=relay.url) as client:
        for method in ("GET", "PUT", "DELETE"):
            response = await client.request(method, "/v1/interrupts")
            refused(response, 405, "method_not_allowed")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


# -- retries ------------------------------------------------------------------------------------


async def test_retried_draft_id_is_stored_once(relay, alice):
    interrupt_id = str(ULID())
    first = await post(relay, draft(alice.id, id=interrupt_id), token=alice.token)
    assert first.status_code == 202, first.text
    assert first.json() == {"id": interrupt_id, "duplicate": False}
    retry = await post(relay, draft(alice.id, id=interrupt_id), token=alice.token)
    assert retry.status_code == 200, retry.text
    assert retry.json() == {"id": interrupt_id, "duplicate": True}
    # A retry that differs (another payload, even another priority) is still the same
    # interrupt: answered as a duplicate, the first version kept.
    changed = draft(alice.id, id=interrupt_id, priority="now", payload={"n": 99})
    again = await post(relay, changed, token=alice.token)
    assert again.status_code == 200 and again.json()["duplicate"] is True, again.text
    assert await pending(relay, alice.id) == {"now": 0, "next": 1, "later": 0}
    async with edge_link(relay, alice, credit=1) as link:
        [item] = await link.items(1)
        assert item_id(item) == interrupt_id
        assert json.loads(item.envelope)["payload"] == {"n": 1}


async def test_retried_signed_envelope_is_stored_once(relay, alice, producer):
    doc = signed_doc(producer, alice.id)
    first, retry = await post(relay, doc), await post(relay, doc)
    assert first.status_code == 202 and first.json()["duplicate"] is False, first.text
    assert retry.status_code == 200 and retry.json()["duplicate"] is True, retry.text
    assert first.json()["id"] == retry.json()["id"]
    assert await pending(relay, alice.id) == {"now": 0, "next": 1, "later": 0}


async def test_retry_after_ack_is_not_delivered_again(relay, alice):
    """Within the duplicate window a retry of an interrupt the edge already acked is
    answered as a duplicate and not stored again (work-queue retention removed it)."""
    interrupt_id = str(ULID())
    first = await post(relay, draft(alice.id, id=interrupt_id), token=alice.token)
    assert first.status_code == 202, first.text
    async with edge_link(relay, alice, credit=1) as link:
        [item] = await link.items(1)
        await link.send(Ack(ids=[item_id(item)]))
        await wait_until(lambda: _is_empty(relay, alice.id), what="ack removes it")
    retry = await post(relay, draft(alice.id, id=interrupt_id), token=alice.token)
    assert retry.status_code == 200 and retry.json()["duplicate"] is True, retry.text
    assert await pending(relay, alice.id) == EMPTY


async def _is_empty(relay, identity):
    return await pending(relay, identity) == EMPTY
