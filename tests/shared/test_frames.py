"""The ``mailslot.v1`` frames: every type round-trips, and every bad message is refused
with the typed error and close code the link should use."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest
from protocol_support import alice, bob, frame_samples

from shared.envelope import Envelope, Source
from shared.errors import LinkError, RemoteProtocolError, TooLarge
from shared.frames import (
    EDGE_FRAME_MAX_BYTES,
    FRAME_TYPES,
    MAX_BATCH,
    RELAY_FRAME_MAX_BYTES,
    SUBPROTOCOL,
    Ack,
    Deliver,
    DeliverItem,
    decode_frame,
    encode_deliver,
    encode_frame,
)
from shared.signing import SignedEnvelope, sign_envelope, verify_envelope

ULID = "01JGZ6V7YH8M3Q5R2T4W6Y8Z0A"
BIG = RELAY_FRAME_MAX_BYTES


def link_error(data: str | bytes, code: str, limit: int = BIG) -> LinkError:
    with pytest.raises(RemoteProtocolError) as info:
        decode_frame(data, limit)
    error = info.value
    assert type(error) is LinkError, f"{type(error).__name__}: {error}"
    assert (error.code, error.status, error.close_code) == (code, 400, 4400)
    return error


def test_protocol_constants() -> None:
    assert SUBPROTOCOL == "mailslot.v1"
    expected = {"challenge", "auth", "welcome", "credit", "deliver", "ack", "nak", "reject",
                "error"}
    assert expected == FRAME_TYPES
    assert EDGE_FRAME_MAX_BYTES < RELAY_FRAME_MAX_BYTES


def test_samples_cover_every_frame_type() -> None:
    assert set(frame_samples) == FRAME_TYPES


@pytest.mark.parametrize("frame_type", sorted(FRAME_TYPES))
def test_every_frame_type_round_trips(frame_type: str) -> None:
    frame = frame_samples[frame_type]
    text = encode_frame(frame)
    assert json.loads(text)["type"] == frame_type
    assert decode_frame(text, BIG) == frame
    assert decode_frame(text.encode(), BIG) == frame
    assert type(decode_frame(text, BIG)) is type(frame)


def test_frames_are_immutable() -> None:
    with pytest.raises(pydantic.ValidationError):
        frame_samples["credit"].n = 99  # type: ignore[union-attr,misc]


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    ['{"type": "bogus"}', '{"type": "Credit", "n": 1}', "{}", '{"n": 1}', '{"type": 5}',
     '{"type": null}'],
    ids=["bogus", "wrong case", "empty object", "no type", "type number", "type null"],
)
def test_unknown_frame_type_is_a_link_error(data: str) -> None:
    link_error(data, "unknown_frame")


@pytest.mark.parametrize(
    "data",
    ["", "{", "nope", '{"type": "ack",}', b"\xff\xfe", "[" * 5000, '{"type": "ack"} x'],
    ids=["empty", "truncated", "word", "trailing comma", "not utf-8", "deeply nested",
         "trailing junk"],
)
def test_malformed_json_is_a_link_error(data: str | bytes) -> None:
    link_error(data, "malformed_frame")


@pytest.mark.parametrize(
    "data",
    [
        "[]",
        "1",
        '{"type": "credit", "n": 0}',
        f'{{"type": "credit", "n": {MAX_BATCH * 16 + 1}}}',
        '{"type": "credit"}',
        '{"type": "credit", "n": 1, "extra": true}',
        '{"type": "nak", "id": "' + ULID + '", "delay": -1}',
        '{"type": "nak", "id": "' + ULID + '", "delay": 3601}',
        '{"type": "nak", "id": "' + ULID + '", "delay": NaN}',
        '{"type": "nak", "id": "' + ULID + '", "delay": Infinity}',
        '{"type": "ack", "ids": []}',
        '{"type": "ack", "ids": ["not-a-ulid"]}',
        '{"type": "reject", "id": "' + ULID + '", "code": "Not Snake"}',
        '{"type": "challenge", "nonce": "short", "time": 1, "relay": "r"}',
        '{"type": "deliver", "items": []}',
        '{"type": "deliver", "items": [{"envelope": "{}"}]}',
        '{"type": "welcome", "session": "s", "pending": {"now": 1, "soon": 2}}',
        '{"type": "error", "code": "x", "message": "' + "m" * 1025 + '"}',
    ],
    ids=["array", "number", "credit zero", "credit too big", "credit missing n",
         "unknown field", "nak negative delay", "nak delay over an hour", "nak delay NaN",
         "nak delay infinite", "ack empty", "ack bad id", "reject bad code",
         "challenge short nonce", "deliver empty", "deliver item without signature",
         "welcome unknown priority", "error message too long"],
)
def test_invalid_frame_is_a_link_error(data: str) -> None:
    link_error(data, "invalid_frame")


def test_oversized_frame_is_too_large_with_close_code_1009() -> None:
    text = encode_frame(Ack(ids=[ULID]))
    at_limit = text + " " * (EDGE_FRAME_MAX_BYTES - len(text))
    assert decode_frame(at_limit, EDGE_FRAME_MAX_BYTES) == Ack(ids=[ULID])
    for data in (at_limit + " ", (at_limit + " ").encode(), "x" * (EDGE_FRAME_MAX_BYTES * 2)):
        with pytest.raises(TooLarge) as info:
            decode_frame(data, EDGE_FRAME_MAX_BYTES)
        assert (info.value.code, info.value.status, info.value.close_code) == (
            "frame_too_large", 413, 1009)


def test_frame_cap_counts_utf8_bytes_for_text_input() -> None:
    text = json.dumps({"type": "error", "code": "x", "message": "\u20ac" * 1000},
                      ensure_ascii=False)
    limit = len(text)
    assert len(text.encode()) > limit
    try:
        decode_frame(text, limit)
    except TooLarge:
        return
    raise AssertionError("a frame over max_bytes (as UTF-8) was accepted as str")


# --- batches and deliveries ---------------------------------------------------------------


def _deliver_doc(count: int) -> str:
    item = {"envelope": "{}", "signature": "sig"}
    return json.dumps({"type": "deliver", "items": [item] * count})


def test_max_batch_is_enforced_on_deliver_and_ack() -> None:
    assert len(decode_frame(_deliver_doc(MAX_BATCH), BIG).items) == MAX_BATCH  # type: ignore[union-attr]
    link_error(_deliver_doc(MAX_BATCH + 1), "invalid_frame")
    ack = {"type": "ack", "ids": [ULID] * MAX_BATCH}
    assert len(decode_frame(json.dumps(ack), BIG).ids) == MAX_BATCH  # type: ignore[union-attr]
    link_error(json.dumps({**ack, "ids": [ULID] * (MAX_BATCH + 1)}), "invalid_frame")


def test_oversized_batch_cannot_be_built_locally() -> None:
    item = DeliverItem(envelope="{}", signature="sig")
    with pytest.raises(pydantic.ValidationError):
        Deliver(items=[item] * (MAX_BATCH + 1))
    with pytest.raises(pydantic.ValidationError):
        Ack(ids=[ULID] * (MAX_BATCH + 1))


def _signed(count: int) -> list[SignedEnvelope]:
    return [
        sign_envelope(
            Envelope(
                id=f"01JGZ6V7YH8M3Q5R2T4W6Y8Z{i:02d}", to=bob.id,
                source=Source(kind="producer", name="ci"), type="t",
                created_at=datetime(2025, 1, 2, tzinfo=UTC),
                payload={"i": i, "text": "caf\u00e9 \"quoted\" \\ back"}, signer=alice.id,
            ),
            alice,
        )
        for i in range(count)
    ]


def test_encode_deliver_wraps_stored_items_without_reserializing() -> None:
    signed = _signed(3)
    text = encode_deliver([s.to_wire() for s in signed])
    frame = decode_frame(text, BIG)
    assert isinstance(frame, Deliver)
    assert [(i.envelope, i.signature) for i in frame.items] == [
        (s.envelope, s.signature) for s in signed
    ]
    trusted = {alice.id: alice.public.verifier()}
    for item in frame.items:
        verify_envelope(SignedEnvelope(item.envelope, item.signature), trusted=trusted,
                        recipient=bob.id, now=datetime(2025, 1, 2, 1, tzinfo=UTC))
    model_built = Deliver(items=[DeliverItem(envelope=s.envelope, signature=s.signature)
                                 for s in signed])
    assert decode_frame(encode_frame(model_built), BIG) == frame


def test_encode_deliver_of_one_item_is_a_valid_frame() -> None:
    (signed,) = _signed(1)
    doc: dict[str, Any] = json.loads(encode_deliver([signed.to_wire()]))
    assert doc == {"type": "deliver",
                   "items": [{"envelope": signed.envelope, "signature": signed.signature}]}
