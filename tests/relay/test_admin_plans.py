"""Plans through the admin API on a real relay (real nats-server, real socket): an
account is created under a plan (or the default one), ``show`` reports its usage and
limits, an unknown plan is refused, and ``max_identities`` refuses one more enrollment
with ``429 quota_exceeded`` without spending the token or touching another account."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from relay_support import SOON, draft, edge_link, post, refused
from tests_support import NatsServer, enroll

from relay.adminauth import ensure_admin_credential
from relay.config import RelayConfig, parse_plans
from relay.server import RelayServer
from shared.auth import enroll_message, sign_b64
from shared.identity import Identity

A = "/v1/admin/accounts"
PLANS = """
default_plan = "free"

[plans.free]
max_identities = 2
token_rate = 100

[plans.pro]
account_rate = 1000
account_burst = 5000

[plans.metered]
max_pending_per_identity = 10
max_pending_bytes = 100000
max_connected_edges = 3
"""


@pytest.fixture
def relay_config(tmp_path: Path, nats_server: NatsServer) -> RelayConfig:
    found = parse_plans(PLANS, "plans.toml")
    return RelayConfig(listen="127.0.0.1:0", nats=(nats_server.url,),
                       data_dir=tmp_path / "relay", plans=found.plans,
                       default_plan=found.default_plan)


@pytest.fixture
async def admin(relay: RelayServer) -> Any:
    assert relay.store is not None
    key = await ensure_admin_credential(relay.store, relay.config.data_dir)
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        yield client


async def enroll_with(relay: RelayServer, token: str) -> httpx.Response:
    identity = Identity.generate()
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        return await client.post("/v1/enroll", json={
            "token": token, "identity": identity.public.to_doc(),
            "proof": sign_b64(identity, enroll_message(token, identity.id)),
        })


async def new_enrollment(admin: httpx.AsyncClient, account: str) -> str:
    made = await admin.post(f"{A}/{account}/enrollments", json={})
    assert made.status_code == 201, made.text
    return str(made.json()["enrollment_tokens"][0])


async def test_accounts_get_a_plan_and_show_reports_its_limits(admin: httpx.AsyncClient):
    made = await admin.post(A, json={"name": "acme", "plan": "pro"})
    assert made.status_code == 201, made.text
    assert made.json()["plan"] == "pro"
    assert (await admin.post(A, json={"name": "globex"})).json()["plan"] == "free"
    usage = (await admin.get(f"{A}/acme")).json()["usage"]
    assert usage["plan"] == "pro"
    assert usage["limits"] == {"account_rate": 1000.0, "account_burst": 5000,
                               "token_rate": None, "token_burst": None,
                               "max_identities": None, "max_pending": None,
                               "max_pending_per_identity": None, "max_pending_bytes": None,
                               "max_pending_bytes_per_identity": None,
                               "max_connected_edges": None}
    assert (await admin.get(f"{A}/globex")).json()["usage"]["limits"]["max_identities"] == 2
    refused(await admin.post(A, json={"name": "initech", "plan": "gold"}), 404, "unknown_plan")
    refused(await admin.post(A, json={"name": "initech", "plan": "Not A Name"}), 400,
            "invalid_request")
    refused(await admin.post(A, json={"name": "initech", "plan": 3}), 400, "invalid_request")
    assert (await admin.get(f"{A}/initech")).status_code == 404  # nothing stored


async def test_max_identities_refuses_one_more_enrollment_and_keeps_the_token(
    relay: RelayServer, admin: httpx.AsyncClient
):
    first = (await admin.post(A, json={"name": "acme"})).json()["enrollment_token"]
    other = (await admin.post(A, json={"name": "globex"})).json()["enrollment_token"]
    ids = [(await enroll_with(relay, first)).json()["identity"]]
    assert (await enroll_with(relay, await new_enrollment(admin, "acme"))).status_code == 201
    third = await new_enrollment(admin, "acme")
    refusal = await enroll_with(relay, third)
    refused(refusal, 429, "quota_exceeded")
    assert "2 identities" in refusal.json()["message"]
    assert len((await admin.get(f"{A}/acme/identities")).json()["identities"]) == 2
    assert (await enroll_with(relay, other)).status_code == 201  # globex is not refused

    # What was accepted stays served; the token was not spent: after a revoke it works.
    token = (await admin.post(f"{A}/acme/tokens", json={"to": ids[0]})).json()["token"]
    assert (await post(relay, draft(ids[0]), token=token)).status_code == 202
    assert (await admin.delete(f"{A}/acme/identities/{ids[0]}")).status_code == 200
    assert (await enroll_with(relay, third)).status_code == 201


async def test_change_plan_takes_effect_for_the_next_request(
    relay: RelayServer, admin: httpx.AsyncClient
):
    first = (await admin.post(A, json={"name": "acme"})).json()["enrollment_token"]  # free
    assert (await enroll_with(relay, first)).status_code == 201
    assert (await enroll_with(relay, await new_enrollment(admin, "acme"))).status_code == 201
    third = await new_enrollment(admin, "acme")
    refused(await enroll_with(relay, third), 429, "quota_exceeded")  # max_identities 2
    changed = await admin.patch(f"{A}/acme", json={"plan": "pro"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["plan"]) == ("acme", "pro")
    assert (await enroll_with(relay, third)).status_code == 201  # the very next request
    assert (await admin.get(f"{A}/acme")).json()["usage"]["plan"] == "pro"

    for body, status, code in [
        ({"plan": "gold"}, 404, "unknown_plan"),
        ({"plan": 3}, 400, "invalid_request"),
        ({"plan": "Not A Name"}, 400, "invalid_request"),
        ({}, 400, "invalid_request"),
        ({"plan": "free", "name": "x"}, 400, "unknown_field"),
    ]:
        refused(await admin.patch(f"{A}/acme", json=body), status, code)
    refused(await admin.patch(f"{A}/ghost", json={"plan": "free"}), 404, "unknown_account")
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as anonymous:
        refused(await anonymous.patch(f"{A}/acme", json={"plan": "free"}), 401,
                "missing_token")
        refused(await anonymous.patch(f"{A}/acme", json={"plan": "free"},
                                      headers={"Authorization": "Bearer msa_wrong"}),
                401, "invalid_token")
    assert (await admin.get(f"{A}/acme")).json()["plan"] == "pro"  # refusals change nothing


async def test_show_reports_usage_against_every_quota(
    relay: RelayServer, admin: httpx.AsyncClient
):
    assert (await admin.post(A, json={"name": "meter", "plan": "metered"})).status_code == 201
    member = await enroll(relay, "meter")
    for _ in range(2):
        assert (await post(relay, draft(member.id), token=member.token)).status_code == 202
    async with edge_link(relay, member):  # credit 0: nothing delivered, one edge connected
        usage = (await admin.get(f"{A}/meter")).json()["usage"]
    quotas = usage["quotas"]
    assert quotas["identities"] == {"used": 1, "limit": None}
    assert quotas["pending"] == {"used": 2, "limit": None}
    assert quotas["pending_per_identity"] == {"used": 2, "limit": 10}
    assert quotas["connected_edges"] == {"used": 1, "limit": 3} and usage["connected_edges"] == 1
    used = usage["pending_bytes"]
    assert 500 < used < 4000, usage  # two small drafts, as stored
    assert quotas["pending_bytes"] == {"used": used, "limit": 100000}
    assert quotas["pending_bytes_per_identity"] == {"used": used, "limit": None}
    # An account whose plan keeps no ledger and counts no links says so.
    await admin.post(A, json={"name": "plain", "plan": "pro"})
    plain = (await admin.get(f"{A}/plain")).json()["usage"]
    assert plain["pending_bytes"] is None and plain["connected_edges"] is None
    assert plain["quotas"]["pending_bytes"] == {"used": None, "limit": None}
