"""POST /v1/interrupts/batch against a real relay and a real nats-server: a result per
item in order, good items stored once each (same dedupe rules as single posts), bad items
refused with the code a single post would get, whole-batch refusals storing nothing."""

from __future__ import annotations

from typing import Any

import httpx
from relay_support import (  # noqa: F401  (fixtures: alice, bob, producer, relay_config)
    EMPTY,
    SOON,
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
    signed_doc,
    stored_total,
)
from ulid import ULID

from shared.identity import Identity
from shared.limits import BATCH_MAX_ITEMS


async def post_batch(
    relay: Any, body: Any = None, *, token: str | None = None, content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        if content is not None:
            return await client.post("/v1/interrupts/batch", content=content,
                                     headers=all_headers)
        return await client.post("/v1/interrupts/batch", json=body, headers=all_headers)


async def test_a_batch_wakes_a_connected_edge_once_it_is_stored(relay, alice):
    """A batch sends one wake-up per recipient after JetStream acknowledged every item
    (not one per item): an edge already connected and waiting gets them all at once,
    not at the session's safety re-check a minute later."""
    ids = [str(ULID()) for _ in range(20)]
    async with edge_link(relay, alice, credit=len(ids)) as link:
        response = await post_batch(relay, {"items": [draft(alice.id, id=i) for i in ids]},
                                    token=alice.token)
        assert response.status_code == 200, response.text
        items = await link.items(len(ids))  # within SOON, far under the re-check
    assert [item_id(item) for item in items] == ids


async def test_every_item_is_stored_once_with_its_own_result(relay, alice):
    ids = [str(ULID()) for _ in range(50)]
    items = [draft(alice.id, id=i, priority=("now", "next", "later")[n % 3])
             for n, i in enumerate(ids)]
    response = await post_batch(relay, {"items": items}, token=alice.token)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == ids
    assert all(r == {"status": 202, "id": r["id"], "duplicate": False} for r in results)
    assert await pending(relay, alice.id) == {"now": 17, "next": 17, "later": 16}

    again = await post_batch(relay, {"items": items[:10]}, token=alice.token)
    assert [r["status"] for r in again.json()["results"]] == [200] * 10
    assert all(r["duplicate"] for r in again.json()["results"])
    assert await stored_total(relay) == 50  # a resent batch is stored once


async def test_a_repeated_id_within_one_batch_is_the_later_items_duplicate(relay, alice):
    same = str(ULID())
    items = [draft(alice.id, id=same), draft(alice.id), draft(alice.id, id=same)]
    results = (await post_batch(relay, {"items": items}, token=alice.token)).json()["results"]
    assert [(r["status"], r["duplicate"]) for r in results] == [
        (202, False), (202, False), (200, True)]
    assert results[0]["id"] == results[2]["id"] == same
    assert await stored_total(relay) == 2


async def test_mixed_items_get_their_own_refusal_and_the_good_ones_are_stored(
    relay, alice, bob, producer: Identity
):
    items: list[Any] = [
        draft(alice.id),                                    # 0 good draft
        draft(bob.id),                                      # 1 token is alice's
        {"to": alice.id},                                   # 2 no type
        draft(alice.id, source={"kind": "producer"}),       # 3 drafts may not set source
        signed_doc(producer, alice.id),                     # 4 good signed envelope
        signed_doc(Identity.generate(), alice.id),          # 5 signer never granted
        draft(alice.id, expires_at="2000-01-01T00:00:00Z"), # 6 already expired
        "not an object",                                    # 7
        draft(alice.id, payload={"x": "y" * (17 * 1024)}),  # 8 payload over the cap
    ]
    response = await post_batch(relay, {"items": items}, token=alice.token)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    got = [(r["status"], r.get("error")) for r in results]
    assert got == [
        (202, None),
        (403, "recipient_not_allowed"),
        (422, "invalid_envelope"),
        (422, "source_not_allowed"),
        (202, None),
        (403, "untrusted_signer"),
        (422, "expired"),
        (422, "invalid_envelope"),
        (413, "payload_too_large"),
    ]
    assert all(isinstance(r["message"], str) and r["message"] for r in results if "error" in r)
    assert sum((await pending(relay, alice.id)).values()) == 2
    assert await pending(relay, bob.id) == EMPTY


async def test_signed_items_need_no_token_but_drafts_do(relay, alice, producer: Identity):
    items = [signed_doc(producer, alice.id), draft(alice.id)]
    results = (await post_batch(relay, {"items": items})).json()["results"]
    assert [(r["status"], r.get("error")) for r in results] == [
        (202, None), (401, "missing_token")]
    assert await stored_total(relay) == 1


BAD_BATCHES: dict[str, tuple[Any, int, str]] = {
    "not_an_object": ([], 400, "malformed_batch"),
    "items_not_a_list": ({"items": {}}, 400, "malformed_batch"),
    "extra_field": ({"items": [], "x": 1}, 400, "malformed_batch"),
    "empty": ({"items": []}, 400, "empty_batch"),
    "too_many": ({"items": [{}] * (BATCH_MAX_ITEMS + 1)}, 413, "too_many_items"),
}


async def test_malformed_batches_are_refused_whole_and_store_nothing(relay, alice):
    for name, (body, status, code) in BAD_BATCHES.items():
        response = await post_batch(relay, body, token=alice.token)
        assert response.status_code == status, (name, response.text)
        refused(response, status, code)
    refused(await post_batch(relay, content=b"{", token=alice.token), 400, "malformed_json")
    refused(await post_batch(relay, {"items": [draft(alice.id)]}, token=alice.token,
                             headers={"Content-Type": "text/plain"}), 415,
            "unsupported_media_type")
    refused(await post_batch(relay, {"items": [draft(alice.id)]}, token="msp_" + "A" * 43),
            401, "invalid_token")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


async def test_the_full_batch_size_is_accepted(relay, alice):
    items = [draft(alice.id, payload={"n": n}) for n in range(BATCH_MAX_ITEMS)]
    response = await post_batch(relay, {"items": items}, token=alice.token)
    assert response.status_code == 200, response.text
    assert {r["status"] for r in response.json()["results"]} == {202}
    assert await stored_total(relay) == BATCH_MAX_ITEMS
    # and single posts keep working next to it
    assert (await post(relay, draft(alice.id), token=alice.token)).status_code == 202
