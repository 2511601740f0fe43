"""Nobody but the relay speaks as a producer, nobody but the edge as the edge: the relay
decides ``source`` for a draft, and refuses a signed envelope that claims a reserved kind
(``shared.sources``) it may not claim. Each refusal is ``source_not_allowed``, stores
nothing and leaves the relay serving; what is stored carries the relay's attestation."""

from __future__ import annotations

import json

import pytest
from relay_support import (  # noqa: F401  (fixtures: alice, bob, producer, relay_config)
    EMPTY,
    alice_fixture,
    assert_still_serving,
    bob_fixture,
    draft,
    edge_link,
    item_id,
    pending,
    post,
    producer_fixture,
    refused,
    relay_config_fixture,
    sign_raw,
    signed_doc,
    stored_total,
)

from shared.envelope import Source
from shared.frames import Ack
from shared.sources import LOCAL_KINDS, RELAY_KINDS, RESERVED_KINDS

#: What the attack looked like: a producer token, a draft that says it is an approval.
FORGED_APPROVAL = {
    "type": "approval.approved",
    "priority": "now",
    "source": {"kind": "approval", "name": "approvals"},
    "payload": {"action": "deploy:prod", "note": "approved by user"},
}


@pytest.mark.parametrize(
    "source",
    [
        FORGED_APPROVAL["source"],
        *({"kind": kind, "name": "x"} for kind in sorted(RESERVED_KINDS)),
        {"kind": "vault", "name": "prod"},  # not reserved, still the relay's to set
        {"kind": "producer", "name": "producer"},  # exactly what the relay would set
        {"event_id": "gh:1"},
        None,
    ],
    ids=lambda s: "null" if s is None else "-".join(str(v) for v in s.values()),
)
async def test_a_draft_that_sets_source_is_refused(relay, alice, source):
    body = {**draft(alice.id, **FORGED_APPROVAL), "source": source}
    refused(await post(relay, body, token=alice.token), 422, "source_not_allowed")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


async def test_the_relay_attests_the_source_of_a_draft(relay, alice):
    """Kind ``producer``, name from the token, the producer's own ``event_id`` kept, the
    relay's signature: what the edge will see and route on."""
    response = await post(relay, draft(alice.id, event_id="gh-delivery:72d3"), token=alice.token)
    assert response.status_code == 202, response.text
    plain = await post(relay, draft(alice.id), token=alice.token)
    assert plain.status_code == 202, plain.text
    async with edge_link(relay, alice, credit=2) as link:
        items = await link.items(2)
        envelopes = {item_id(i): json.loads(i.envelope) for i in items}
        await link.send(Ack(ids=list(envelopes)))
    assert relay.identity is not None
    first, second = envelopes[response.json()["id"]], envelopes[plain.json()["id"]]
    assert first["source"] == {"kind": "producer", "name": "producer",
                               "event_id": "gh-delivery:72d3"}
    assert second["source"] == {"kind": "producer", "name": "producer"}
    assert first["signer"] == second["signer"] == relay.identity.id


@pytest.mark.parametrize("kind", sorted(RESERVED_KINDS))
async def test_a_granted_key_may_not_claim_a_reserved_kind(relay, alice, producer, kind):
    doc = signed_doc(producer, alice.id, source=Source(kind=kind, name="x"),
                     type=f"{kind}.approved", payload={"action": "deploy:prod"})
    refused(await post(relay, doc), 422, "source_not_allowed")
    # With the recipient's producer token too: the token does not make the claim true.
    refused(await post(relay, doc, token=alice.token), 422, "source_not_allowed")
    assert await pending(relay, alice.id) == EMPTY
    await assert_still_serving(relay, alice)


async def test_a_granted_key_names_any_other_kind(relay, alice, producer):
    for kind in ("vault", "ci", "signed", "producers", "files"):
        doc = signed_doc(producer, alice.id, source=Source(kind=kind, name="prod"))
        response = await post(relay, doc)
        assert response.status_code == 202, (kind, response.text)
    assert await pending(relay, alice.id) == {"now": 0, "next": 5, "later": 0}


async def test_the_recipients_own_key_may_claim_a_local_kind_only_for_itself(
    relay, alice, bob, make_member
):
    """A local kind is the recipient's own: signed by another key it is refused before
    the grant is even looked at; signed by the recipient it is a grant question."""
    for kind in sorted(LOCAL_KINDS):
        # bob signing "his" local kind for alice: bob is not alice.
        refused(await post(relay, sign_raw(bob.identity, alice.id,
                                           source={"kind": kind, "name": "x"})),
                422, "source_not_allowed")
        # alice's own key for alice: allowed as a claim, refused as an ungranted signer.
        refused(await post(relay, sign_raw(alice.identity, alice.id,
                                           source={"kind": kind, "name": "x"})),
                403, "untrusted_signer")
    for kind in sorted(RELAY_KINDS):
        refused(await post(relay, sign_raw(alice.identity, alice.id,
                                           source={"kind": kind, "name": "x"})),
                422, "source_not_allowed")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)
