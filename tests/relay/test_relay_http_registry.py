"""Enrollment, identity look-up, grants and health: refusals are specific, change nothing
in the registry, and leave the relay serving."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
from relay_support import (  # noqa: F401  (fixtures: alice, bob, producer, relay_config)
    EMPTY,
    SOON,
    alice_fixture,
    assert_still_serving,
    bob_fixture,
    grant_header,
    grant_request,
    granted,
    pending,
    post,
    producer_fixture,
    refused,
    relay_config_fixture,
    signed_doc,
    stored_total,
)

from relay.registry import Registry
from shared.auth import REQUEST_SKEW_SECONDS, enroll_message, sign_b64
from shared.encoding import b64e
from shared.identity import Identity

# -- enrollment -----------------------------------------------------------------------------


def enroll_body(token: str, identity: Identity, *, proof_by: Identity | None = None,
                proof_token: str | None = None) -> dict[str, object]:
    signer = proof_by or identity
    proof = sign_b64(signer, enroll_message(proof_token or token, identity.id))
    return {"token": token, "identity": identity.public.to_doc(), "proof": proof}


async def enroll_post(relay, body=None, *, content: bytes | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        if content is not None:
            return await client.post("/v1/enroll", content=content,
                                     headers={"Content-Type": "application/json"})
        return await client.post("/v1/enroll", json=body)


async def enrolled(relay, identity: str) -> bool:
    return await Registry(relay.store).identity(identity) is not None


async def test_enroll_with_unknown_or_wrong_kind_of_token(relay, alice):
    newcomer = Identity.generate()
    for token in ("mse_" + "A" * 43, alice.token, "", "not-a-token"):
        refused(await enroll_post(relay, enroll_body(token, newcomer)), 401, "invalid_token")
    assert not await enrolled(relay, newcomer.id)
    await assert_still_serving(relay, alice)


async def test_enrollment_token_works_once(relay, alice):
    token = await Registry(relay.store).enrollment_token("acme")
    first, second = Identity.generate(), Identity.generate()
    response = await enroll_post(relay, enroll_body(token, first))
    assert response.status_code == 201, response.text
    assert response.json()["identity"] == first.id
    refused(await enroll_post(relay, enroll_body(token, second)), 401, "invalid_token")
    refused(await enroll_post(relay, enroll_body(token, first)), 401, "invalid_token")
    assert not await enrolled(relay, second.id)
    assert await enrolled(relay, first.id)
    await assert_still_serving(relay, alice)


async def test_enroll_bad_proof_is_refused_and_keeps_the_token(relay, alice):
    token = await Registry(relay.store).enrollment_token("acme")
    newcomer = Identity.generate()
    for body in (
        enroll_body(token, newcomer, proof_by=Identity.generate()),  # someone else's key
        enroll_body(token, newcomer, proof_token="mse_" + "B" * 43),  # over another token
        {**enroll_body(token, newcomer), "proof": b64e(b"\0" * 64)},
        {**enroll_body(token, newcomer), "proof": ""},
    ):
        refused(await enroll_post(relay, body), 401, "bad_signature")
    assert not await enrolled(relay, newcomer.id)
    # Nothing was spent: the same token still enrolls with a real proof.
    response = await enroll_post(relay, enroll_body(token, newcomer))
    assert response.status_code == 201, response.text


async def test_enroll_malformed_body_is_refused_and_keeps_the_token(relay, alice):
    token = await Registry(relay.store).enrollment_token("acme")
    newcomer, other = Identity.generate(), Identity.generate()
    good = enroll_body(token, newcomer)
    wrong_id_doc = {**newcomer.public.to_doc(), "id": other.id}
    swapped_box = {**newcomer.public.to_doc(), "box_key": other.public.to_doc()["box_key"]}
    cases = [
        (None, b"{", 400, "malformed_json"),
        (None, b"", 400, "malformed_json"),
        ([], None, 400, "malformed"),
        ({}, None, 400, "malformed"),
        ({"token": token, "identity": good["identity"]}, None, 400, "malformed"),
        ({**good, "account": "acme"}, None, 400, "malformed"),
        ({**good, "token": 1}, None, 400, "malformed"),
        ({**good, "proof": None}, None, 400, "malformed"),
        ({**good, "identity": "a string"}, None, 422, "invalid_identity"),
        ({**good, "identity": wrong_id_doc}, None, 422, "invalid_identity"),
        ({**good, "identity": swapped_box}, None, 422, "invalid_identity"),
    ]
    for body, content, status, code in cases:
        response = await enroll_post(relay, body, content=content)
        assert response.status_code == status, (body, content, response.text)
        assert response.json()["error"] == code, (body, content, response.text)
    assert not await enrolled(relay, newcomer.id)
    response = await enroll_post(relay, good)
    assert response.status_code == 201, response.text


async def test_enroll_refused_as_conflict_keeps_the_token(relay, alice):
    token = await Registry(relay.store).create_account("globex")  # alice is in acme
    conflict = await enroll_post(relay, enroll_body(token, alice.identity))
    refused(conflict, 409, "exists")
    newcomer = Identity.generate()
    response = await enroll_post(relay, enroll_body(token, newcomer))
    assert response.status_code == 201, response.text


async def test_accounts_are_listed(relay, alice, bob):
    assert await Registry(relay.store).accounts() == ["acme", "globex"]


# -- identities and health --------------------------------------------------------------------


async def test_identity_lookup(relay, alice):
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        found = await client.get(f"/v1/identities/{alice.id}")
        assert found.status_code == 200, found.text
        assert found.json() == alice.identity.public.to_doc()
        refused(await client.get(f"/v1/identities/{Identity.generate().id}"),
                404, "unknown_identity")
        refused(await client.get(f"/v1/identities/{alice.id[:-1]}*"), 422, "invalid_identity")
        refused(await client.get("/v1/nothing-here"), 404, "not_found")
        refused(await client.post(f"/v1/identities/{alice.id}"), 405, "method_not_allowed")
    await assert_still_serving(relay, alice)


async def test_health_and_readiness(relay):
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert (health.status_code, health.json()["ok"]) == (200, True)
    relay_time = datetime.fromisoformat(health.json()["time"])
    assert abs((relay_time - datetime.now(UTC)).total_seconds()) < 5
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


# -- grants ---------------------------------------------------------------------------------


async def test_grant_refusals_change_nothing(relay, alice, bob, make_member):
    signer = (await make_member("producers", with_home=False)).identity
    path = f"/v1/identities/{alice.id}/grants/{signer.id}"
    now = int(time.time())
    me = alice.identity
    # alice's signature made for ``now``, sent with another ts: the ts is signed too.
    moved_ts = grant_header(me, "PUT", path, ts=now).replace(f"ts={now}", f"ts={now - 1}")
    cases = [
        (None, 401, "missing_auth"),
        ("Bearer " + alice.token, 400, "missing_auth"),
        (f"Mailslot-Signature id={alice.id},sig=x", 400, "missing_auth"),
        (f"Mailslot-Signature id={alice.id},ts=soon,sig=x", 400, "missing_auth"),
        # signed by the signer (or bob) but claiming to be alice
        (grant_header(signer, "PUT", path, claimed=alice.id), 401, "bad_signature"),
        (grant_header(bob.identity, "PUT", path, claimed=alice.id), 401, "bad_signature"),
        # alice's signature, but over something else than this request
        (grant_header(me, "DELETE", path), 401, "bad_signature"),
        (grant_header(me, "PUT", path.replace(signer.id, bob.id)), 401, "bad_signature"),
        (grant_header(me, "PUT", path, body=b"{}"), 401, "bad_signature"),
        (moved_ts, 401, "bad_signature"),
        (grant_header(me, "PUT", path).replace("sig=", "sig=AAAA"), 401, "bad_signature"),
        # a properly signed request by bob for alice's grants
        (grant_header(bob.identity, "PUT", path), 401, "bad_auth"),
        # stale or future timestamps, otherwise perfectly signed
        (grant_header(me, "PUT", path, ts=now - REQUEST_SKEW_SECONDS - 60), 401,
         "stale_request"),
        (grant_header(me, "PUT", path, ts=now + REQUEST_SKEW_SECONDS + 60), 401,
         "stale_request"),
    ]
    for header, status, code in cases:
        response = await grant_request(relay, "PUT", alice.id, signer.id, header)
        assert response.status_code == status, (header, response.text)
        assert response.json()["error"] == code, (header, response.text)
    assert not await granted(relay, alice.id, signer.id)
    refused(await post(relay, signed_doc(signer, alice.id)), 403, "untrusted_signer")
    assert await stored_total(relay) == 0
    # The real request succeeds afterwards.
    ok = await grant_request(relay, "PUT", alice.id, signer.id, "sign", signed_by=me)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"recipient": alice.id, "signer": signer.id, "granted": True}
    accepted = await post(relay, signed_doc(signer, alice.id))
    assert accepted.status_code == 202, accepted.text


async def test_revoke_refusals_keep_the_grant(relay, alice, bob, producer):
    path = f"/v1/identities/{alice.id}/grants/{producer.id}"
    now = int(time.time())
    me = alice.identity
    for header, status, code in [
        (None, 401, "missing_auth"),
        (grant_header(me, "PUT", path), 401, "bad_signature"),  # a PUT signature
        (grant_header(me, "DELETE", path, ts=now - REQUEST_SKEW_SECONDS - 60), 401,
         "stale_request"),
        (grant_header(bob.identity, "DELETE", path), 401, "bad_auth"),
        (grant_header(producer, "DELETE", path, claimed=alice.id), 401, "bad_signature"),
    ]:
        response = await grant_request(relay, "DELETE", alice.id, producer.id, header)
        assert response.status_code == status, (header, response.text)
        assert response.json()["error"] == code, (header, response.text)
    assert await granted(relay, alice.id, producer.id)
    kept = await post(relay, signed_doc(producer, alice.id))
    assert kept.status_code == 202, kept.text
    ok = await grant_request(relay, "DELETE", alice.id, producer.id, "sign", signed_by=me)
    assert ok.status_code == 200 and ok.json()["granted"] is False, ok.text
    refused(await post(relay, signed_doc(producer, alice.id)), 403, "untrusted_signer")
    assert await pending(relay, alice.id) == {"now": 0, "next": 1, "later": 0}


async def test_grant_to_unknown_signer_or_for_unknown_recipient(relay, alice):
    stranger = Identity.generate()
    refused(await grant_request(relay, "PUT", alice.id, stranger.id, "sign",
                                signed_by=alice.identity), 404, "unknown_identity")
    # An identity the relay does not know cannot change grants, even signing correctly.
    refused(await grant_request(relay, "PUT", stranger.id, alice.id, "sign",
                                signed_by=stranger), 404, "unknown_identity")
    assert not await granted(relay, alice.id, stranger.id)
    assert await pending(relay, alice.id) == EMPTY
    await assert_still_serving(relay, alice)
