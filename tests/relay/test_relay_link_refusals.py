"""/v1/connect refuses a bad handshake or a broken frame with the documented close code
(and, for protocol errors, an ``error`` frame naming the code first), delivers nothing
on a refused link, and keeps serving other edges."""

from __future__ import annotations

import json
import time

import pytest
import websockets
from relay_support import (  # noqa: F401  (fixtures: alice, bob, relay_config)
    EMPTY,
    SOON,
    alice_fixture,
    auth_frame,
    bob_fixture,
    closed,
    edge_link,
    item_id,
    pending,
    raw_socket,
    read_challenge,
    relay_config_fixture,
    send_drafts,
)
from tests_support import wait_until
from ulid import ULID

from shared.encoding import b64d, b64e
from shared.frames import EDGE_FRAME_MAX_BYTES, Ack, Auth, Credit, Deliver
from shared.identity import Identity


async def assert_link_still_works(relay, member) -> None:
    """A good edge for ``member`` still connects, receives everything pending for it
    (a fresh interrupt included) and acks it away."""
    [sent] = await send_drafts(relay, member, 1)
    before = await pending(relay, member.id)
    total = sum(before.values())
    async with edge_link(relay, member) as link:
        assert link.welcome.pending.model_dump() == before
        await link.credit(total)
        ids = [item_id(i) for i in await link.items(total)]
        assert sent in ids
        await link.send(Ack(ids=ids))
        await wait_until(lambda: _drained(relay, member.id), SOON, "acks applied")


async def _drained(relay, identity: str) -> bool:
    return await pending(relay, identity) == EMPTY


# -- the handshake ------------------------------------------------------------------------


@pytest.mark.parametrize("offered", [None, ("mailslot.v0",), ("chat", "mqtt")])
async def test_without_the_subprotocol_the_upgrade_is_refused(relay, alice, offered):
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with raw_socket(relay, subprotocols=offered):
            pass
    assert refused.value.response.status_code == 403
    await assert_link_still_works(relay, alice)


def _flipped(auth_text: str) -> Auth:
    auth = Auth.model_validate_json(auth_text)
    raw = bytearray(b64d(auth.sig))
    raw[0] ^= 0x01
    return auth.model_copy(update={"sig": b64e(bytes(raw))})


async def test_bad_auth_signature_is_refused_4401(relay, alice):
    await send_drafts(relay, alice, 2)
    cases = {
        "flipped": lambda c: _flipped(auth_frame(alice.identity, c)),
        "other_key_claiming_alice": lambda c: Auth.model_validate_json(
            auth_frame(Identity.generate(), c, claimed=alice.id)),
        "for_another_relay": lambda c: Auth.model_validate_json(
            auth_frame(alice.identity, c.model_copy(update={"relay": Identity.generate().id}))),
        "stale_time": lambda c: Auth.model_validate_json(
            auth_frame(alice.identity, c.model_copy(update={"time": c.time - 1}))),
        "not_base64": lambda c: Auth(identity=alice.id, sig="!!!"),
        "empty": lambda c: Auth(identity=alice.id, sig=""),
    }
    for name, make in cases.items():
        async with raw_socket(relay) as ws:
            challenge = await read_challenge(ws)
            await ws.send(make(challenge).model_dump_json())
            end = await closed(ws)
        assert (end.code, end.reason) == (4401, "bad_auth"), name
        assert end.frames == [], name  # no welcome, nothing delivered
    assert await pending(relay, alice.id) == {"now": 0, "next": 2, "later": 0}
    await assert_link_still_works(relay, alice)


async def test_unknown_identity_is_refused_4401(relay, alice):
    stranger = Identity.generate()
    async with raw_socket(relay) as ws:
        challenge = await read_challenge(ws)
        await ws.send(auth_frame(stranger, challenge))
        end = await closed(ws)
    assert (end.code, end.reason, end.frames) == (4401, "unknown_identity", [])
    await assert_link_still_works(relay, alice)


async def test_replayed_auth_answer_is_refused(relay, alice):
    """An auth frame captured from one connection is useless on the next: every
    connection gets a fresh nonce. The failed attempt does not take over the live link."""
    async with edge_link(relay, alice, credit=1) as live:
        async with raw_socket(relay) as ws:
            fresh = await read_challenge(ws)
            assert fresh.nonce != live.challenge.nonce
            await ws.send(live.auth_text)
            end = await closed(ws)
        assert (end.code, end.reason, end.frames) == (4401, "bad_auth", [])
        # The live link was not replaced: it still gets what arrives for alice.
        [sent] = await send_drafts(relay, alice, 1)
        [item] = await live.items(1)
        assert json.loads(item.envelope)["id"] == sent


async def test_auth_timeout_closes_4408_and_blocks_nobody(relay, alice):
    """The relay's auth timeout (``RelayConfig.auth_timeout``, short in these tests).
    While a silent socket waits out its timeout, other edges connect and drain normally."""
    timeout = relay.config.auth_timeout
    async with raw_socket(relay) as silent:
        started = time.monotonic()
        await read_challenge(silent)
        await assert_link_still_works(relay, alice)
        end = await closed(silent, timeout=timeout + SOON)
        waited = time.monotonic() - started
    assert (end.code, end.reason, end.frames) == (4408, "auth_timeout", [])
    assert waited >= timeout - 0.5, waited
    await assert_link_still_works(relay, alice)


async def test_invalid_identity_in_auth_is_refused_4400(relay, alice):
    for bad in (alice.id[:-1] + ".", alice.id[:-1] + "*", alice.id[:-1] + ">", "",
                alice.id + " ", alice.id[:-1] + "é", alice.id.upper()):
        async with raw_socket(relay) as ws:
            challenge = await read_challenge(ws)
            await ws.send(auth_frame(alice.identity, challenge, claimed=bad))
            end = await closed(ws)
        assert (end.code, end.reason, end.error_codes) == (
            4400, "invalid_identity", ["invalid_identity"]), bad
    await assert_link_still_works(relay, alice)


# -- frames that break the protocol ------------------------------------------------------------

ULID_1 = str(ULID())

BEFORE_AUTH = {
    "ack_before_auth": (json.dumps({"type": "ack", "ids": [ULID_1]}), "unexpected_frame"),
    "credit_before_auth": (Credit(n=5).model_dump_json(), "unexpected_frame"),
    "nak_before_auth": (json.dumps({"type": "nak", "id": ULID_1}), "unexpected_frame"),
    "challenge_from_edge": (json.dumps({"type": "challenge", "nonce": "n" * 20, "time": 1,
                                        "relay": "r"}), "unexpected_frame"),
    "welcome_from_edge": (json.dumps({"type": "welcome", "session": "s",
                                      "pending": {"now": 0, "next": 0, "later": 0}}),
                          "unexpected_frame"),
    "unknown_type": (json.dumps({"type": "hello"}), "unknown_frame"),
    "no_type": ("{}", "unknown_frame"),
    "malformed_json": ('{"type": "auth"', "malformed_frame"),
    "empty_text": ("", "malformed_frame"),
    "not_an_object": ("[]", "invalid_frame"),
    "auth_with_extra_field": (None, "invalid_frame"),
}

AFTER_WELCOME = {
    "auth_twice": (None, "unexpected_frame"),
    "unknown_type": (json.dumps({"type": "subscribe", "to": ">"}), "unknown_frame"),
    "malformed_json": ("{'type': 'ack'}", "malformed_frame"),
    "deliver_from_edge": (
        Deliver(items=[{"envelope": "{}", "signature": "x"}]).model_dump_json(),
        "unexpected_frame"),
    "challenge_from_edge": (json.dumps({"type": "challenge", "nonce": "n" * 20, "time": 1,
                                        "relay": "r"}), "unexpected_frame"),
    "zero_credit": (json.dumps({"type": "credit", "n": 0}), "invalid_frame"),
    "ack_not_a_ulid": (json.dumps({"type": "ack", "ids": ["ms.in.*"]}), "invalid_frame"),
    "ack_empty": (json.dumps({"type": "ack", "ids": []}), "invalid_frame"),
    "negative_nak_delay": (json.dumps({"type": "nak", "id": ULID_1, "delay": -1}),
                           "invalid_frame"),
    "reject_bad_code": (json.dumps({"type": "reject", "id": ULID_1, "code": "X Y"}),
                        "invalid_frame"),
}


@pytest.mark.parametrize("case", sorted(BEFORE_AUTH))
async def test_bad_frame_before_auth_closes_4400(relay, alice, case):
    text, code = BEFORE_AUTH[case]
    async with raw_socket(relay) as ws:
        challenge = await read_challenge(ws)
        if text is None:  # auth_with_extra_field
            text = json.dumps({**json.loads(auth_frame(alice.identity, challenge)), "x": 1})
        await ws.send(text)
        end = await closed(ws)
    assert (end.code, end.reason, end.error_codes) == (4400, code, [code])
    assert all(f["type"] == "error" for f in end.frames)  # no welcome
    await assert_link_still_works(relay, alice)


@pytest.mark.parametrize("case", sorted(AFTER_WELCOME))
async def test_bad_frame_after_welcome_closes_4400(relay, alice, case):
    text, code = AFTER_WELCOME[case]
    await send_drafts(relay, alice, 2)
    async with edge_link(relay, alice) as link:
        await link.ws.send(link.auth_text if text is None else text)
        end = await closed(link.ws)
    assert (end.code, end.reason, end.error_codes) == (4400, code, [code])
    assert await pending(relay, alice.id) == {"now": 0, "next": 2, "later": 0}
    await assert_link_still_works(relay, alice)


@pytest.mark.parametrize("phase", ["before_auth", "after_welcome"])
async def test_oversized_frame_closes_1009(relay, alice, phase):
    """Past EDGE_FRAME_MAX_BYTES the WebSocket layer closes with 1009 (message too big).
    Exactly at the cap a frame is still read: the link stays open."""
    await send_drafts(relay, alice, 1)
    at_cap = json.dumps({"type": "nak", "id": ULID_1})
    at_cap = at_cap[:-1] + " " * (EDGE_FRAME_MAX_BYTES - len(at_cap)) + "}"
    assert len(at_cap.encode()) == EDGE_FRAME_MAX_BYTES
    if phase == "after_welcome":
        async with edge_link(relay, alice) as link:
            await link.ws.send(at_cap)  # an (ignored) nak for an id never delivered
            await link.credit(1)
            await link.items(1)  # still open and serving
            await link.ws.send("x" * (EDGE_FRAME_MAX_BYTES + 1))
            end = await closed(link.ws)
    else:
        async with raw_socket(relay) as ws:
            await read_challenge(ws)
            await ws.send("x" * (EDGE_FRAME_MAX_BYTES + 1))
            end = await closed(ws)
    assert end.code == 1009, end
    assert await pending(relay, alice.id) == {"now": 0, "next": 1, "later": 0}
    await assert_link_still_works(relay, alice)


# -- the edge says "error" ------------------------------------------------------------------

EDGE_ERROR = json.dumps({"type": "error", "code": "shutting_down", "message": "bye"})


async def test_error_frame_instead_of_auth_is_closed_cleanly(relay, alice):
    async with raw_socket(relay) as ws:
        await read_challenge(ws)
        await ws.send(EDGE_ERROR)
        end = await closed(ws)
    assert end.code is not None and end.code in (1000, 4400), end


async def test_error_frame_after_welcome_is_closed_cleanly(relay, alice):
    async with edge_link(relay, alice, credit=5) as link:
        await link.ws.send(EDGE_ERROR)
        await send_drafts(relay, alice, 1)
        end = await closed(link.ws)
    assert end.code is not None and end.code in (1000, 4400), end
