"""The admin API on a real relay (real nats-server, real sockets): every operation, and
every refusal with its status and code — no credential, a wrong one, an unknown
account, a disabled account, bad bodies — each leaving the registry as it was."""

from __future__ import annotations

import asyncio
import stat
from typing import Any

import httpx
import pytest
from relay_support import (  # noqa: F401  (fixtures: admin, admin_key, alice, bob)
    EMPTY,
    SOON,
    admin_fixture,
    admin_key_fixture,
    alice_fixture,
    auth_frame,
    bob_fixture,
    closed,
    draft,
    edge_link,
    item_id,
    pending,
    post,
    producer_fixture,
    raw_socket,
    read_challenge,
    refused,
    relay_config_fixture,
    send_drafts,
    signed_doc,
)
from tests_support import Member

from relay.adminauth import ADMIN_KEY_FILE, CREDENTIAL_KEY, ensure_admin_credential
from relay.registry import Registry, token_hash
from relay.server import RelayServer
from relay.store import STREAM
from shared.auth import enroll_message, sign_b64
from shared.frames import Ack
from shared.identity import Identity

A = "/v1/admin/accounts"

#: Every admin route, with a path that names an account that exists (``acme``).
ROUTES = [
    ("POST", A, {"name": "nobody"}),
    ("GET", A, None),
    ("GET", f"{A}/acme", None),
    ("DELETE", f"{A}/acme", None),
    ("POST", f"{A}/acme/disable", None),
    ("POST", f"{A}/acme/enable", None),
    ("POST", f"{A}/acme/enrollments", {"count": 2}),
    ("GET", f"{A}/acme/enrollments", None),
    ("DELETE", f"{A}/acme/enrollments/0123456789abcdef0123", None),
    ("POST", f"{A}/acme/tokens", {"to": "a" * 32}),
    ("GET", f"{A}/acme/tokens", None),
    ("DELETE", f"{A}/acme/tokens/0123456789abcdef0123", None),
    ("GET", f"{A}/acme/identities", None),
    ("DELETE", f"{A}/acme/identities/{'a' * 32}", None),
]


async def registry_keys(relay: RelayServer) -> list[str]:
    assert relay.store is not None
    return sorted(await relay.store.kv_keys(""))


async def enroll_with(relay: RelayServer, token: str) -> httpx.Response:
    identity = Identity.generate()
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        return await client.post("/v1/enroll", json={
            "token": token, "identity": identity.public.to_doc(),
            "proof": sign_b64(identity, enroll_message(token, identity.id)),
        })


# -- the credential ---------------------------------------------------------------------


async def test_the_credential_is_made_once_stored_hashed_and_saved_0600(
    relay: RelayServer, admin_key: str
) -> None:
    assert relay.store is not None
    path = relay.config.data_dir / ADMIN_KEY_FILE
    assert path.read_text().strip() == admin_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = await relay.store.kv_get(CREDENTIAL_KEY)
    assert record is not None and record[0]["hash"] == token_hash(admin_key)
    assert admin_key not in str(record[0])
    # A second start (or another relay process) makes none and leaves the file alone.
    assert await ensure_admin_credential(relay.store, relay.config.data_dir) is None
    assert await ensure_admin_credential(relay.store, relay.config.data_dir / "other") is None
    assert path.read_text().strip() == admin_key
    assert not (relay.config.data_dir / "other" / ADMIN_KEY_FILE).exists()


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_every_route_refuses_without_the_credential(
    relay: RelayServer, admin_key: str, alice: Member, method: str, path: str, body: Any
) -> None:
    before = await registry_keys(relay)
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        for headers, code in (
            ({}, "missing_token"),
            ({"Authorization": "Bearer msa_wrong"}, "invalid_token"),
            ({"Authorization": f"Bearer {alice.token}"}, "invalid_token"),  # a producer's
            ({"Authorization": f"Basic {admin_key}"}, "invalid_token"),
            ({"Authorization": f"Bearer {admin_key}x"}, "invalid_token"),
        ):
            response = await client.request(method, path, json=body, headers=headers)
            refused(response, 401, code)
    assert await registry_keys(relay) == before
    assert (await pending(relay, alice.id)) == EMPTY


@pytest.mark.parametrize(("method", "path", "body"), [r for r in ROUTES if r[1] != A])
async def test_an_unknown_account_is_404_everywhere(
    relay: RelayServer, admin: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    before = await registry_keys(relay)
    for name in ("ghost", "Not%20A%20Name"):
        response = await admin.request(method, path.replace("acme", name, 1), json=body)
        refused(response, 404, "unknown_account")
    assert await registry_keys(relay) == before


# -- accounts -----------------------------------------------------------------------------


async def test_accounts_create_list_show_disable_enable(
    relay: RelayServer, admin: httpx.AsyncClient
) -> None:
    made = await admin.post(A, json={"name": "acme"})
    assert made.status_code == 201, made.text
    doc = made.json()
    assert doc["name"] == "acme" and doc["disabled"] is False
    assert doc["enrollment_token"].startswith("mse_")
    refused(await admin.post(A, json={"name": "acme"}), 409, "exists")
    for bad, code in (({"name": "Bad Name"}, "invalid_request"), ({}, "invalid_request"),
                      ({"name": "x", "extra": 1}, "unknown_field"), ([], "invalid_request")):
        refused(await admin.post(A, json=bad), 400, code)
    refused(await admin.post(A, content=b"{", headers={"Content-Type": "application/json"}),
            400, "malformed_json")
    refused(await admin.post(A, content=b"name=x"), 415, "unsupported_media_type")
    assert (await admin.post(A, json={"name": "globex"})).status_code == 201

    listed = (await admin.get(A)).json()["accounts"]
    assert [a["name"] for a in listed] == ["acme", "globex"]

    enrolled = await enroll_with(relay, doc["enrollment_token"])
    assert enrolled.status_code == 201, enrolled.text
    identity = enrolled.json()["identity"]
    token = (await admin.post(f"{A}/acme/tokens", json={"to": identity})).json()["token"]
    member = Member(Identity.generate(), token, "acme")
    for _ in range(3):
        assert (await post(relay, draft(identity), token=member.token)).status_code == 202
    shown = (await admin.get(f"{A}/acme")).json()
    quotas = shown["usage"].pop("quotas")
    assert shown["usage"] == {
        "identities": 1, "producer_tokens": 1, "enrollment_tokens": 0,
        "pending": {"now": 0, "next": 3, "later": 0}, "pending_total": 3,
        "plan": "default", "limits": {"account_rate": None, "account_burst": None,
                                      "token_rate": None, "token_burst": None,
                                      "max_identities": None, "max_pending": None,
                                      "max_pending_per_identity": None,
                                      "max_pending_bytes": None,
                                      "max_pending_bytes_per_identity": None,
                                      "max_connected_edges": None},
        "pending_bytes": None, "connected_edges": None,  # the plan keeps neither
    }
    assert quotas["pending"] == {"used": 3, "limit": None}
    assert quotas["pending_per_identity"] == {"used": 3, "limit": None}

    disabled = await admin.post(f"{A}/acme/disable")
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert (await admin.get(f"{A}/acme")).json()["disabled"] is True
    assert [a["disabled"] for a in (await admin.get(A)).json()["accounts"]] == [True, False]
    enabled = await admin.post(f"{A}/acme/enable")
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False


async def test_a_disabled_account_refuses_producers_edges_and_enrollment_keeping_its_data(
    relay: RelayServer, admin: httpx.AsyncClient, alice: Member, bob: Member
) -> None:
    kept = await send_drafts(relay, alice, 2)
    enrollment = (await admin.post(f"{A}/acme/enrollments", json={})).json()
    async with edge_link(relay, alice) as live:
        assert (await admin.post(f"{A}/acme/disable")).status_code == 200
        # The open link is ended at once (in whichever relay process serves it).
        assert (await closed(live.ws)).code == 4409

    refused(await post(relay, draft(alice.id), token=alice.token), 403, "account_disabled")
    async with raw_socket(relay) as ws:
        challenge = await read_challenge(ws)
        await ws.send(auth_frame(alice.identity, challenge))
        end = await closed(ws)
    assert (end.code, end.reason, end.error_codes) == (4403, "account_disabled",
                                                       ["account_disabled"])
    refused(await enroll_with(relay, enrollment["enrollment_tokens"][0]), 403,
            "account_disabled")
    refused(await admin.post(f"{A}/acme/tokens", json={"to": alice.id}), 403,
            "account_disabled")
    assert (await pending(relay, alice.id))["next"] == 2  # data kept
    # Another account is not affected.
    assert (await post(relay, draft(bob.id), token=bob.token)).status_code == 202

    assert (await admin.post(f"{A}/acme/enable")).status_code == 200
    fresh = await post(relay, draft(alice.id), token=alice.token)
    assert fresh.status_code == 202, fresh.text
    async with edge_link(relay, alice, credit=3) as edge:
        items = await edge.items(3)
        assert [item_id(i) for i in items] == [*kept, fresh.json()["id"]]
        await edge.send(Ack(ids=[item_id(i) for i in items]))
    assert (await enroll_with(relay, enrollment["enrollment_tokens"][0])).status_code == 201


async def test_delete_purges_identities_tokens_enrollments_and_queued_interrupts(
    relay: RelayServer, admin: httpx.AsyncClient, make_member: Any, bob: Member
) -> None:
    one: Member = await make_member("acme", with_home=False)
    two: Member = await make_member("acme", with_home=False)
    await send_drafts(relay, one, 3)
    await send_drafts(relay, two, 2)
    await send_drafts(relay, bob, 1)
    await admin.post(f"{A}/acme/enrollments", json={"count": 2})

    response = await admin.delete(f"{A}/acme")
    assert response.status_code == 200, response.text
    purged = response.json()["purged"]
    assert purged == {"identities": 2, "interrupts": 5, "producer_tokens": 2,
                      "enrollment_tokens": 2}
    assert await pending(relay, one.id) == EMPTY and await pending(relay, two.id) == EMPTY
    assert relay.store is not None
    info = await relay.store.js.stream_info(STREAM)
    assert info.state.messages == 1  # bob's only
    keys = await registry_keys(relay)
    assert not [k for k in keys if one.id in k or two.id in k or k == "account.acme"], keys
    refused(await admin.get(f"{A}/acme"), 404, "unknown_account")
    refused(await post(relay, draft(one.id), token=one.token), 401, "invalid_token")
    async with raw_socket(relay) as ws:
        challenge = await read_challenge(ws)
        await ws.send(auth_frame(one.identity, challenge))
        end = await closed(ws)
    assert (end.code, end.reason) == (4401, "unknown_identity")
    assert (await post(relay, draft(bob.id), token=bob.token)).status_code == 202
    # The name is free again.
    assert (await admin.post(A, json={"name": "acme"})).status_code == 201


# -- enrollment tokens ------------------------------------------------------------------


async def test_enrollment_tokens_bulk_expiry_list_revoke(
    relay: RelayServer, admin: httpx.AsyncClient
) -> None:
    await admin.post(A, json={"name": "acme"})
    made = await admin.post(f"{A}/acme/enrollments", json={"count": 5, "expires_in": 3600})
    assert made.status_code == 201, made.text
    doc = made.json()
    assert len(doc["enrollment_tokens"]) == len(set(doc["enrollment_tokens"])) == 5
    listed = (await admin.get(f"{A}/acme/enrollments")).json()["enrollments"]
    assert len(listed) == 6  # and the account's first
    assert set(doc["ids"]) <= {e["id"] for e in listed}
    assert all(t not in str(listed) for t in doc["enrollment_tokens"])

    revoked = await admin.delete(f"{A}/acme/enrollments/{doc['ids'][0]}")
    assert revoked.status_code == 200, revoked.text
    refused(await enroll_with(relay, doc["enrollment_tokens"][0]), 401, "invalid_token")
    refused(await admin.delete(f"{A}/acme/enrollments/{doc['ids'][0]}"), 404,
            "unknown_enrollment")
    refused(await admin.delete(f"{A}/acme/enrollments/nothex"), 404, "unknown_enrollment")
    assert (await enroll_with(relay, doc["enrollment_tokens"][1])).status_code == 201
    assert len((await admin.get(f"{A}/acme/enrollments")).json()["enrollments"]) == 4

    short = (await admin.post(f"{A}/acme/enrollments", json={"expires_in": 0.2})).json()
    await asyncio.sleep(0.3)  # time itself must pass: nothing to await
    refused(await enroll_with(relay, short["enrollment_tokens"][0]), 401, "token_expired")

    for bad, code in (({"count": 0}, "invalid_request"), ({"count": 1001}, "invalid_request"),
                      ({"expires_in": -1}, "invalid_request"), ({"n": 1}, "unknown_field")):
        refused(await admin.post(f"{A}/acme/enrollments", json=bad), 400, code)


# -- producer tokens -----------------------------------------------------------------------


async def test_producer_token_scope_list_and_revoke(
    relay: RelayServer, admin: httpx.AsyncClient, make_member: Any, bob: Member
) -> None:
    one: Member = await make_member("acme", with_home=False)
    two: Member = await make_member("acme", with_home=False)
    three: Member = await make_member("acme", with_home=False)
    made = await admin.post(f"{A}/acme/tokens", json={
        "to": [one.id, two.id], "name": "ci", "types": ["ci.*", "deploy.done"],
        "expires_in": 3600,
    })
    assert made.status_code == 201, made.text
    doc = made.json()
    token = doc["token"]
    assert doc["to"] == [one.id, two.id] and doc["types"] == ["ci.*", "deploy.done"]

    for to, type_ in ((one.id, "ci.failed"), (two.id, "ci.passed"), (one.id, "deploy.done")):
        response = await post(relay, draft(to, type=type_), token=token)
        assert response.status_code == 202, response.text
    refused(await post(relay, draft(one.id, type="deploy.started"), token=token), 403,
            "type_not_allowed")
    refused(await post(relay, draft(three.id, type="ci.failed"), token=token), 403,
            "recipient_not_allowed")
    assert await pending(relay, three.id) == EMPTY

    refused(await admin.post(f"{A}/acme/tokens", json={"to": bob.id}), 403, "wrong_account")
    refused(await admin.post(f"{A}/acme/tokens", json={"to": "a" * 32}), 404,
            "unknown_identity")
    for bad, code in (({"to": "nope"}, "invalid_request"), ({"to": []}, "invalid_request"),
                      ({"to": one.id, "types": []}, "invalid_request"),
                      ({"to": one.id, "types": ["a b"]}, "invalid_request"),
                      ({"to": one.id, "name": "Bad Name"}, "invalid_request"),
                      ({"to": one.id, "scope": 1}, "unknown_field")):
        refused(await admin.post(f"{A}/acme/tokens", json=bad), 400, code)

    short = (await admin.post(f"{A}/acme/tokens",
                              json={"to": one.id, "expires_in": 0.2})).json()
    await asyncio.sleep(0.3)  # time itself must pass: nothing to await
    refused(await post(relay, draft(one.id), token=short["token"]), 401, "token_expired")

    listed = await admin.get(f"{A}/acme/tokens")
    assert token not in listed.text and short["token"] not in listed.text
    states = {t["id"]: t for t in listed.json()["tokens"]}
    assert states[doc["id"]]["state"] == "active" and states[short["id"]]["state"] == "expired"
    assert states[doc["id"]]["name"] == "ci" and states[doc["id"]]["revoked_at"] is None

    revoked = await admin.delete(f"{A}/acme/tokens/{doc['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    refused(await post(relay, draft(one.id, type="ci.failed"), token=token), 401,
            "invalid_token")
    again = {t["id"]: t for t in (await admin.get(f"{A}/acme/tokens")).json()["tokens"]}
    assert again[doc["id"]]["state"] == "revoked" and again[doc["id"]]["revoked_at"]
    refused(await admin.delete(f"{A}/acme/tokens/0123456789abcdef0123"), 404, "unknown_token")
    # A token of another account is unknown here.
    bob_id = (await admin.get(f"{A}/globex/tokens")).json()["tokens"][0]["id"]
    refused(await admin.delete(f"{A}/acme/tokens/{bob_id}"), 404, "unknown_token")
    assert (await post(relay, draft(bob.id), token=bob.token)).status_code == 202


async def test_a_scoped_token_applies_to_signed_envelopes_too(
    relay: RelayServer, admin: httpx.AsyncClient, alice: Member, producer: Identity
) -> None:
    """A producer token sent with a signed envelope limits it as it limits drafts."""
    made = (await admin.post(f"{A}/acme/tokens",
                             json={"to": alice.id, "types": ["ci.*"]})).json()
    doc = signed_doc(producer, alice.id, type="other.thing")
    refused(await post(relay, doc, token=made["token"]), 403, "type_not_allowed")
    ok = signed_doc(producer, alice.id, type="ci.failed")
    assert (await post(relay, ok, token=made["token"])).status_code == 202
    assert (await pending(relay, alice.id))["next"] == 1


# -- identities ------------------------------------------------------------------------


async def test_identities_list_and_revoke(
    relay: RelayServer, admin: httpx.AsyncClient, make_member: Any, bob: Member
) -> None:
    one: Member = await make_member("acme", with_home=False)
    two: Member = await make_member("acme", with_home=False)
    await send_drafts(relay, one, 2)
    listed = (await admin.get(f"{A}/acme/identities")).json()["identities"]
    assert [i["id"] for i in listed] == [one.id, two.id]

    revoked = await admin.delete(f"{A}/acme/identities/{one.id}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["purged_interrupts"] == 2
    assert await pending(relay, one.id) == EMPTY
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        refused(await client.get(f"/v1/identities/{one.id}"), 404, "unknown_identity")
    async with raw_socket(relay) as ws:
        challenge = await read_challenge(ws)
        await ws.send(auth_frame(one.identity, challenge))
        assert (await closed(ws)).reason == "unknown_identity"
    refused(await post(relay, draft(one.id), token=one.token), 404, "unknown_identity")
    assert [i["id"] for i in (await admin.get(f"{A}/acme/identities")).json()["identities"]] \
        == [two.id]
    refused(await admin.delete(f"{A}/acme/identities/{one.id}"), 404, "unknown_identity")
    refused(await admin.delete(f"{A}/acme/identities/{bob.id}"), 404, "unknown_identity")
    refused(await admin.delete(f"{A}/acme/identities/short"), 404, "unknown_identity")
    async with edge_link(relay, two):
        pass  # the other identity still links


async def test_the_registry_reads_are_the_interface(relay: RelayServer, alice: Member) -> None:
    """``producer`` returns the token's scope (what the ingest path checks)."""
    assert relay.store is not None
    scope = await Registry(relay.store).producer(alice.token)
    assert scope.account == "acme" and scope.to == alice.id
    assert scope.recipients == (alice.id,) and scope.types == ("*",)

