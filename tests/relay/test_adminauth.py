"""Who may use the admin API, on a real relay (real nats-server, real sockets): the admin
credential, and admin identities signing their requests — every refusal with its status
and code, each leaving the registry as it was; the credential rotated."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from relay_support import (  # noqa: F401  (fixtures: admin, admin_key, alice, bob)
    SOON,
    admin_fixture,
    admin_key_fixture,
    alice_fixture,
    bob_fixture,
    grant_header,
    refused,
    relay_config_fixture,
)
from tests_support import Member

from relay.adminauth import ADMIN_IDENTITY_PREFIX, CREDENTIAL_KEY
from relay.registry import token_hash
from relay.server import RelayServer
from shared.auth import new_request_nonce

A = "/v1/admin/accounts"


async def signed(relay: RelayServer, member: Member, method: str, path: str,
                 body: Any = None, *, header: str | None = None) -> httpx.Response:
    """``method path`` signed by ``member`` (or with ``header`` as it is)."""
    content = b"" if body is None else json.dumps(body).encode()
    auth = header or grant_header(member.identity, method, path, body=content)
    headers = {"Authorization": auth}
    if body is not None:
        headers["Content-Type"] = "application/json"
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        return await client.request(method, path, content=content, headers=headers)


async def registry_keys(relay: RelayServer) -> list[str]:
    assert relay.store is not None
    return sorted(await relay.store.kv_keys(""))


async def test_an_admin_identity_administers_with_signed_requests(
    relay: RelayServer, admin: httpx.AsyncClient, alice: Member
) -> None:
    refused(await signed(relay, alice, "GET", A), 403, "not_admin")  # not yet
    granted = await admin.put(f"/v1/admin/admins/{alice.id}")
    assert granted.status_code == 200, granted.text
    assert granted.json() | {"granted_at": None} == {
        "id": alice.id, "account": "acme", "admin": True, "granted_at": None,
        "granted_by": "admin-key"}

    listed = await signed(relay, alice, "GET", A)
    assert listed.status_code == 200 and [a["name"] for a in listed.json()["accounts"]] == ["acme"]
    made = await signed(relay, alice, "POST", A, {"name": "globex"})
    assert made.status_code == 201 and made.json()["enrollment_token"].startswith("mse_")
    # The signature covers the body: the same header on another body does not verify.
    content = json.dumps({"name": "initech"}).encode()
    header = grant_header(alice.identity, "POST", A, body=content)
    refused(await signed(relay, alice, "POST", A, {"name": "evil"}, header=header),
            401, "bad_signature")
    # Signed for one path, sent to another.
    header = grant_header(alice.identity, "GET", f"{A}/acme")
    refused(await signed(relay, alice, "GET", A, header=header), 401, "bad_signature")
    # An admin identity may name others, and the hook routes' admin side takes it too.
    admins = await signed(relay, alice, "GET", "/v1/admin/admins")
    assert [a["id"] for a in admins.json()["admins"]] == [alice.id]
    hooks = await signed(relay, alice, "GET", "/v1/admin/hooks")
    assert hooks.status_code == 200 and hooks.json() == {"hooks": []}


async def test_each_refusal_of_a_signed_admin_request_has_its_code(
    relay: RelayServer, admin: httpx.AsyncClient, alice: Member, bob: Member
) -> None:
    assert (await admin.put(f"/v1/admin/admins/{alice.id}")).status_code == 200
    now = int(time.time())
    nonce = new_request_nonce()
    replayable = grant_header(alice.identity, "POST", f"{A}/acme/disable", nonce=nonce)
    assert (await signed(relay, alice, "POST", f"{A}/acme/disable",
                         header=replayable)).status_code == 200
    assert (await admin.post(f"{A}/acme/enable")).status_code == 200
    before = await registry_keys(relay)
    for header, status, code in [
        (replayable, 401, "replayed_request"),
        (grant_header(alice.identity, "POST", f"{A}/acme/disable", ts=now - 360), 401,
         "stale_request"),
        (grant_header(alice.identity, "POST", f"{A}/acme/disable", ts=now + 360), 401,
         "stale_request"),
        (f"Mailslot-Signature id={alice.id},ts={now},sig=x", 400, "missing_auth"),
        ("Mailslot-Signature", 400, "missing_auth"),
        (grant_header(bob.identity, "POST", f"{A}/acme/disable"), 403, "not_admin"),
        # Claims alice, signed by bob: the signature is checked against alice's key.
        (grant_header(bob.identity, "POST", f"{A}/acme/disable", claimed=alice.id), 401,
         "bad_signature"),
    ]:
        response = await signed(relay, alice, "POST", f"{A}/acme/disable", header=header)
        refused(response, status, code)
    assert await registry_keys(relay) == before


async def test_revoking_its_admin_its_identity_or_disabling_its_account_ends_it_at_once(
    relay: RelayServer, admin: httpx.AsyncClient, alice: Member, bob: Member
) -> None:
    for member in (alice, bob):
        assert (await admin.put(f"/v1/admin/admins/{member.id}")).status_code == 200
    assert (await signed(relay, bob, "GET", A)).status_code == 200

    revoked = await signed(relay, alice, "DELETE", f"/v1/admin/admins/{bob.id}")
    assert revoked.json() == {"id": bob.id, "admin": False, "was_admin": True}
    refused(await signed(relay, bob, "GET", A), 403, "not_admin")
    again = await admin.delete(f"/v1/admin/admins/{bob.id}")
    assert again.json()["was_admin"] is False

    assert (await admin.post(f"{A}/acme/disable")).status_code == 200
    refused(await signed(relay, alice, "GET", A), 403, "account_disabled")
    assert (await admin.post(f"{A}/acme/enable")).status_code == 200
    assert (await signed(relay, alice, "GET", A)).status_code == 200

    assert (await admin.delete(f"{A}/acme/identities/{alice.id}")).status_code == 200
    refused(await signed(relay, alice, "GET", A), 401, "bad_auth")
    assert relay.store is not None  # the flag went with the identity
    assert await relay.store.kv_get(ADMIN_IDENTITY_PREFIX + alice.id) is None
    assert (await admin.get("/v1/admin/admins")).json() == {"admins": []}


async def test_granting_admin_refuses_what_is_not_an_enrolled_identity(
    admin: httpx.AsyncClient, relay: RelayServer, alice: Member
) -> None:
    before = await registry_keys(relay)
    refused(await admin.put(f"/v1/admin/admins/{'a' * 32}"), 404, "unknown_identity")
    refused(await admin.put("/v1/admin/admins/not.an.id"), 404, "unknown_identity")
    refused(await admin.delete("/v1/admin/admins/x*"), 404, "unknown_identity")
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        refused(await client.put(f"/v1/admin/admins/{alice.id}"), 401, "missing_token")
        refused(await client.post("/v1/admin/admin-key/rotate",
                                  headers={"Authorization": "Bearer msa_wrong"}),
                401, "invalid_token")
    assert await registry_keys(relay) == before


async def test_rotating_the_credential_refuses_the_old_one_and_shows_the_new_once(
    relay: RelayServer, admin: httpx.AsyncClient, admin_key: str, alice: Member
) -> None:
    rotated = await admin.post("/v1/admin/admin-key/rotate")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["admin_key"]
    assert new.startswith("msa_") and new != admin_key
    refused(await admin.get(A), 401, "invalid_token")  # the old key, at once
    assert relay.store is not None
    record = await relay.store.kv_get(CREDENTIAL_KEY)
    assert record is not None and record[0]["hash"] == token_hash(new)
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON,
                                 headers={"Authorization": f"Bearer {new}"}) as client:
        assert (await client.get(A)).status_code == 200
        assert (await client.put(f"/v1/admin/admins/{alice.id}")).status_code == 200
    # An admin identity may rotate it too.
    by_identity = await signed(relay, alice, "POST", "/v1/admin/admin-key/rotate")
    assert by_identity.status_code == 200 and by_identity.json()["admin_key"] != new


async def test_a_signed_request_with_a_body_the_relay_refuses_gets_that_refusal(
    relay: RelayServer, admin: httpx.AsyncClient, alice: Member
) -> None:
    """Its signature cannot be checked without the bytes: the body's own refusal, and
    nothing changes. A bearer request is still answered on its credential first."""
    before = await registry_keys(relay)
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        header = grant_header(alice.identity, "POST", A, body=b"{")
        refused(await client.post(A, content=b"{", headers={
            "Authorization": header, "Content-Type": "application/json"}),
            400, "malformed_json")
        refused(await client.post(A, content=b"{", headers={
            "Authorization": "Bearer msa_wrong", "Content-Type": "application/json"}),
            401, "invalid_token")
    assert await registry_keys(relay) == before
