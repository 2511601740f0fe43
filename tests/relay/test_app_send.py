"""POST /v1/send/{identity} against a real relay: plain text becomes payload.text, the
options come from the query or from headers, and bad inputs are refused with a code and
nothing stored. The stored interrupt is read back over the link, as the edge gets it."""

from __future__ import annotations

import json
from typing import Any

import httpx
from relay_support import (  # noqa: F401  (fixtures: alice, bob, relay_config)
    EMPTY,
    SOON,
    alice_fixture,
    assert_still_serving,
    bob_fixture,
    edge_link,
    pending,
    refused,
    relay_config_fixture,
    stored_total,
)
from ulid import ULID

from shared.limits import PAYLOAD_MAX_BYTES


async def send(
    relay: Any, to: str, body: bytes | str = b"disk full on nas", *, token: str | None,
    params: dict[str, str] | str | None = None, headers: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        return await client.post(f"/v1/send/{to}", content=body, params=params,
                                 headers=all_headers)


async def delivered(relay: Any, member: Any) -> dict[str, Any]:
    """The one stored interrupt's envelope, as the edge receives it."""
    async with edge_link(relay, member.identity, credit=1) as edge:
        (item,) = await edge.items(1)
    return dict(json.loads(item.envelope))


async def test_curl_style_send_with_query_parameters(relay, alice):
    # curl -d labels the body application/x-www-form-urlencoded and does not encode it
    response = await send(
        relay, alice.id, "disk full on nas", token=alice.token,
        params={"type": "alert.disk", "priority": "now", "title": "nas — storage"},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 202, response.text
    sent_id = response.json()["id"]
    assert await pending(relay, alice.id) == {**EMPTY, "now": 1}
    envelope = await delivered(relay, alice)
    assert envelope["id"] == sent_id
    assert envelope["type"] == "alert.disk"
    assert envelope["payload"] == {"text": "disk full on nas", "title": "nas — storage"}
    assert envelope["source"]["kind"] == "producer"


async def test_options_as_headers_and_defaults(relay, alice):
    own_id = str(ULID())
    headers = {"X-Type": "backup.done", "X-Priority": "later", "X-Title": "backup",
               "X-Session": "nightly", "X-Dedupe-Key": "backup-1", "X-Interrupt-Id": own_id,
               "X-Event-Id": "run-7", "Content-Type": "text/plain; charset=utf-8"}
    response = await send(relay, alice.id, b"48 GB in 3 min", token=alice.token,
                          headers=headers)
    assert response.status_code == 202, response.text
    assert response.json() == {"id": own_id, "duplicate": False}
    again = await send(relay, alice.id, "48 GB in 3 min", token=alice.token, headers=headers)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    envelope = await delivered(relay, alice)
    assert (envelope["type"], envelope["priority"], envelope["session"],
            envelope["dedupe_key"]) == ("backup.done", "later", "nightly", "backup-1")
    assert envelope["source"]["event_id"] == "run-7"
    assert envelope["payload"] == {"text": "48 GB in 3 min", "title": "backup"}


async def test_no_options_gives_a_text_interrupt_of_priority_next(relay, alice):
    response = await send(relay, alice.id, "hello", token=alice.token)
    assert response.status_code == 202, response.text
    envelope = await delivered(relay, alice)
    assert (envelope["type"], envelope["priority"], envelope["payload"]) == (
        "text", "next", {"text": "hello"})


BAD_SENDS: dict[str, tuple[dict[str, Any], int, str]] = {
    "unknown_parameter": ({"params": {"prio": "now"}}, 422, "unknown_parameter"),
    "repeated_parameter": ({"params": "type=a.b&type=c.d"}, 422, "repeated_parameter"),
    "conflicting": ({"params": {"type": "a.b"}, "headers": {"X-Type": "c.d"}}, 422,
                    "conflicting_parameter"),
    "bad_priority": ({"params": {"priority": "urgent"}}, 422, "invalid_priority"),
    "bad_type": ({"params": {"type": "no spaces"}}, 422, "invalid_token"),
    "bad_id": ({"params": {"id": "not-a-ulid"}}, 422, "invalid_envelope"),
    "json_body": ({"headers": {"Content-Type": "application/json"}}, 415,
                  "unsupported_media_type"),
    "latin1_charset": ({"headers": {"Content-Type": "text/plain; charset=latin-1"}}, 415,
                       "unsupported_media_type"),
    "not_utf8": ({"body": b"\xff\xfe"}, 422, "invalid_string"),
    "empty": ({"body": b""}, 422, "empty_message"),
    "too_long": ({"body": b"x" * (PAYLOAD_MAX_BYTES + 1)}, 413, "payload_too_large"),
    "non_ascii_header": ({"headers": {"X-Title": "caf\xe9".encode("latin-1")}}, 422,
                         "invalid_string"),
}


async def test_bad_sends_are_refused_with_a_code_and_store_nothing(relay, alice):
    for name, (options, status, code) in BAD_SENDS.items():
        response = await send(relay, alice.id, token=alice.token, **options)
        assert response.status_code == status, (name, response.text)
        refused(response, status, code)
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


async def test_send_checks_the_token_and_recipient_like_a_draft(relay, alice, bob):
    refused(await send(relay, alice.id, token=None), 401, "missing_token")
    refused(await send(relay, alice.id, token="msp_" + "A" * 43), 401, "invalid_token")
    refused(await send(relay, bob.id, token=alice.token), 403, "recipient_not_allowed")
    refused(await send(relay, "not an id", token=alice.token), 422, "invalid_identity")
    assert await stored_total(relay) == 0
