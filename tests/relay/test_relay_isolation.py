"""Tenants are isolated: another identity (in another account) cannot receive, ack, nak,
reject, read or take over one identity's interrupts, and no identity-shaped input can
reach another identity's NATS subject."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
from relay_support import (  # noqa: F401  (fixtures: alice, bob, producer, relay_config)
    EMPTY,
    SOON,
    alice_fixture,
    auth_frame,
    bob_fixture,
    closed,
    draft,
    edge_link,
    grant_request,
    item_id,
    pending,
    post,
    producer_fixture,
    raw_socket,
    read_challenge,
    refused,
    relay_config_fixture,
    send_drafts,
    sign_raw,
    stored_total,
    unacked,
)
from tests_support import running_edge, wait_until
from ulid import ULID

from shared.frames import Ack, Nak, Reject

NEXT = {"now": 0, "next": 1, "later": 0}


def next_only(n: int) -> dict[str, int]:
    return {"now": 0, "next": n, "later": 0}


async def _pending_is(relay, identity, expected):
    return await pending(relay, identity) == expected


async def test_other_identity_cannot_receive_or_settle_anothers_interrupts(relay, make_member):
    alice = await make_member("acme")  # with an edge home: a real edge drains at the end
    bob = await make_member("globex", with_home=False)
    mine = await send_drafts(relay, alice, 3)
    async with edge_link(relay, alice, credit=3) as alice_link:
        assert [item_id(i) for i in await alice_link.items(3)] == mine
        assert await unacked(relay, alice.id) == 3
        async with edge_link(relay, bob) as bob_link:
            assert bob_link.welcome.pending.model_dump() == EMPTY
            # bob knows alice's delivery ids and tries to settle them from his link.
            await bob_link.send(Ack(ids=mine))
            await bob_link.send(Nak(id=mine[0]))
            await bob_link.send(Reject(id=mine[1], code="not_mine"))
            await bob_link.credit(1)
            [marker] = await send_drafts(relay, bob, 1)
            [got] = await bob_link.items(1)
            # bob gets his own interrupt and nothing of alice's
            envelope = json.loads(got.envelope)
            assert (envelope["id"], envelope["to"]) == (marker, bob.id)
            await bob_link.send(Ack(ids=[marker]))
            await wait_until(lambda: _pending_is(relay, bob.id, EMPTY), SOON, "bob acked")
        # bob's frames (applied before his own ack) changed nothing for alice
        assert await pending(relay, alice.id) == next_only(3)
        assert await unacked(relay, alice.id) == 3
        # alice's link is untouched and still settles her own deliveries
        await alice_link.send(Ack(ids=mine[:1]))
        await wait_until(lambda: _pending_is(relay, alice.id, next_only(2)), SOON, "acked")
    # ... and her real edge drains the rest, and only hers.
    async with running_edge(alice):
        with alice.inbox() as inbox:
            await wait_until(lambda: inbox.total() == 2, SOON, "alice's edge drained")
    with alice.inbox() as inbox:
        assert sorted(row.id for row in inbox.list(state=None, limit=10)) == sorted(mine[1:])
    assert await pending(relay, alice.id) == EMPTY


async def test_identity_cannot_authenticate_as_another(relay, alice, bob):
    async with edge_link(relay, alice, credit=1) as alice_link:
        async with raw_socket(relay) as ws:
            challenge = await read_challenge(ws)
            await ws.send(auth_frame(bob.identity, challenge, claimed=alice.id))
            end = await closed(ws)
        assert (end.code, end.reason, end.frames) == (4401, "bad_auth", [])
        # No takeover happened: alice's link still receives.
        [sent] = await send_drafts(relay, alice, 1)
        [item] = await alice_link.items(1)
        assert item_id(item) == sent


async def test_takeover_is_per_identity(relay, alice, bob):
    """A new link for alice replaces alice's old link only; bob's stays open and served."""
    async with edge_link(relay, bob, credit=1) as bob_link, \
            edge_link(relay, alice) as first, edge_link(relay, alice):
        end = await closed(first.ws)
        assert (end.code, end.reason) == (4409, "replaced")
        [sent] = await send_drafts(relay, bob, 1)
        [item] = await bob_link.items(1)
        assert item_id(item) == sent


async def test_no_http_endpoint_reads_interrupts(relay, alice, bob):
    secret = "only-for-alice-" + str(ULID())
    response = await post(relay, draft(alice.id, payload={"secret": secret}), token=alice.token)
    assert response.status_code == 202, response.text
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        answers = [
            await client.get("/v1/interrupts"),
            await client.get(f"/v1/interrupts/{response.json()['id']}"),
            await client.get(f"/v1/identities/{alice.id}/interrupts"),
            await client.get(f"/v1/identities/{alice.id}",
                             headers={"Authorization": f"Bearer {bob.token}"}),
        ]
    assert [a.status_code for a in answers] == [405, 404, 404, 200]
    assert answers[3].json() == alice.identity.public.to_doc()  # public keys, nothing else
    assert all(secret not in a.text for a in answers)
    assert await pending(relay, alice.id) == NEXT


def bad_ids(good: str) -> dict[str, str]:
    """Identity-shaped strings that must never reach a NATS subject: each differs from a
    real id only where it breaks the alphabet."""
    return {
        "dot": good[:-1] + ".",
        "star": good[:-1] + "*",
        "gt": good[:-1] + ">",
        "subject_wildcard": good[:16] + ".*.next",
        "full_wildcard": ">",
        "space": good[:-1] + " ",
        "tab": "\t" + good[1:],
        "trailing_newline": good + "\n",
        "nul": good[:-1] + "\0",
        "non_ascii": good[:-1] + "é",
        "cyrillic_lookalike": good[:-1] + "\u0430",  # Cyrillic small a
        "fullwidth_digit": good[:-1] + "\uff12",  # fullwidth two
        "uppercase": good.upper(),
        "too_long": good + "a",
        "too_short": good[:-1],
        "empty": "",
    }


@pytest.mark.parametrize("kind", sorted(bad_ids("a" * 32)))
async def test_bad_identity_is_refused_on_every_surface(relay, alice, bob, producer, kind):
    """The same bad id is refused as ``invalid_identity`` wherever an identity enters:
    draft ``to``, signed envelope ``to`` and ``signer``, URL path, grant path and link
    auth. Nothing is stored for anyone."""
    bad = bad_ids(alice.id)[kind]
    # draft, with alice's (valid) token
    refused(await post(relay, draft(bad), token=alice.token), 422, "invalid_identity")
    # producer-signed envelopes (the signature is fine: only the content is refused)
    refused(await post(relay, sign_raw(producer, bad)), 422, "invalid_identity")
    refused(await post(relay, sign_raw(producer, alice.id, signer=bad)), 422,
            "invalid_identity")
    if bad:  # (an empty path segment is another route)
        async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
            refused(await client.get(f"/v1/identities/{quote(bad, safe='')}"), 422,
                    "invalid_identity")
        for recipient, signer in ((bad, producer.id), (alice.id, bad)):
            response = await grant_request(relay, "PUT", recipient, signer, "sign",
                                           signed_by=alice.identity)
            refused(response, 422, "invalid_identity")
    # link auth
    async with raw_socket(relay) as ws:
        challenge = await read_challenge(ws)
        await ws.send(auth_frame(alice.identity, challenge, claimed=bad))
        end = await closed(ws)
    assert (end.code, end.error_codes) == (4400, ["invalid_identity"])
    assert await stored_total(relay) == 0
    assert await pending(relay, alice.id) == EMPTY
    assert await pending(relay, bob.id) == EMPTY
    ok = await post(relay, draft(alice.id), token=alice.token)
    assert ok.status_code == 202, ok.text


async def test_same_id_for_two_recipients_is_two_interrupts(relay, alice, bob):
    shared_id = str(ULID())
    first = await post(relay, draft(alice.id, id=shared_id), token=alice.token)
    assert first.status_code == 202, first.text
    second = await post(relay, draft(bob.id, id=shared_id), token=bob.token)
    assert await pending(relay, alice.id) == NEXT
    assert (second.status_code, second.json()["duplicate"]) == (202, False), second.text
    assert await pending(relay, bob.id) == NEXT
