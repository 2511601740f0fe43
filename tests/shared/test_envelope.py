"""The envelope: strict parsing, caps at parse time, and a specific refusal (status and
machine-readable code) for every kind of bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest
from protocol_support import CREATED_AT, ENVELOPE_ID, alice, bob, envelope_doc, make_envelope

from shared.envelope import (
    _FITS_BYTES,
    ENVELOPE_MAX_BYTES,
    PAYLOAD_MAX_BYTES,
    PRIORITIES,
    Envelope,
    Priority,
    Sealed,
    envelope_bytes,
    parse_envelope,
)
from shared.errors import (
    InvalidEnvelope,
    InvalidToken,
    LimitExceeded,
    MalformedInput,
    RemoteProtocolError,
    TooLarge,
)
from shared.limits import MAX_DEPTH

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
SEALED = {
    "alg": "x25519-hkdf-sha256-chacha20poly1305",
    "epk": "A" * 43,
    "nonce": "B" * 16,
    "ct": "C" * 40,
}


def refused(body: str | bytes, cls: type[RemoteProtocolError], status: int, code: str) -> str:
    """Parse ``body``, expect exactly ``cls`` with ``status`` and ``code``; return the message."""
    with pytest.raises(RemoteProtocolError) as info:
        parse_envelope(body)
    error = info.value
    assert type(error) is cls, f"{type(error).__name__}: {error}"
    assert (error.status, error.code) == (status, code), error
    return error.message


def text(doc: dict[str, Any]) -> str:
    return json.dumps(doc)


# --- accepted ---------------------------------------------------------------------------


def test_parses_a_good_envelope() -> None:
    envelope = parse_envelope(text(envelope_doc()))
    assert envelope.v == 1
    assert envelope.id == ENVELOPE_ID
    assert envelope.to == bob.id
    assert envelope.signer == alice.id
    assert envelope.source.kind == "producer"
    assert envelope.type == "build.failed"
    assert envelope.priority is Priority.next
    assert envelope.created_at == T0
    assert envelope.payload == {"repo": "mailslot", "run": 42}
    assert envelope.session is None and envelope.sealed is None
    assert parse_envelope(text(envelope_doc()).encode()) == envelope


def test_parses_every_optional_field() -> None:
    doc = envelope_doc(
        session="workspace.main-1",
        source={"kind": "webhook", "name": "github", "event_id": "gh:12345-abc"},
        priority="now",
        expires_at="2025-01-02T06:04:05+02:00",
        dedupe_key="push/refs/heads/main@abc123",
        permissions={"actions": ["repo:read", "ci/*"], "expires_at": "2025-01-03T00:00:00Z"},
    )
    envelope = parse_envelope(text(doc))
    assert envelope.session == "workspace.main-1"
    assert envelope.source.event_id == "gh:12345-abc"
    assert envelope.priority is Priority.now
    assert envelope.expires_at == T0 + timedelta(hours=1)
    assert envelope.dedupe_key == "push/refs/heads/main@abc123"
    assert envelope.permissions is not None
    assert envelope.permissions.actions == ["repo:read", "ci/*"]


def test_defaults_v_and_priority() -> None:
    envelope = parse_envelope(text(envelope_doc(v=None, priority=None, payload=None)))
    assert envelope.v == 1
    assert envelope.priority is Priority.next
    assert envelope.payload is None


def test_a_sealed_payload_is_accepted() -> None:
    envelope = parse_envelope(text(envelope_doc(payload=None, sealed=SEALED)))
    assert envelope.sealed == Sealed.model_validate(SEALED)
    assert envelope.payload is None


def test_envelope_bytes_are_compact_ordered_and_without_nulls() -> None:
    shuffled = dict(reversed(list(envelope_doc(session=None).items())))
    envelope = parse_envelope(text(shuffled))
    assert envelope_bytes(envelope) == (
        '{"v":1,"id":"' + ENVELOPE_ID + '","to":"' + bob.id + '",'
        '"source":{"kind":"producer","name":"ci"},"type":"build.failed","priority":"next",'
        '"created_at":"' + CREATED_AT + '","payload":{"repo":"mailslot","run":42},'
        '"signer":"' + alice.id + '"}'
    ).encode()
    again = parse_envelope(envelope_bytes(envelope))
    assert again == envelope
    assert envelope_bytes(again) == envelope_bytes(envelope)


def test_envelope_bytes_keep_non_ascii_as_utf8() -> None:
    envelope = make_envelope(payload={"msg": "caf\u00e9 \u2603"})
    assert '"msg":"caf\u00e9 \u2603"'.encode() in envelope_bytes(envelope)


def test_envelopes_are_immutable() -> None:
    envelope = make_envelope()
    with pytest.raises(pydantic.ValidationError):
        envelope.type = "other"


# --- identities and tokens ----------------------------------------------------------------

BAD_ID_CHARS = {
    "dot": ".",
    "star": "*",
    "gt": ">",
    "space": " ",
    "tab": "\t",
    "newline": "\n",
    "non-ascii": "\u00e9",
    "uppercase": "A",
    "digit 1 (not base32)": "1",
    "dash": "-",
}


@pytest.mark.parametrize("field", ["to", "signer"])
@pytest.mark.parametrize("char", list(BAD_ID_CHARS.values()), ids=list(BAD_ID_CHARS))
def test_identity_with_a_bad_character_is_refused(field: str, char: str) -> None:
    bad = bob.id[:10] + char + bob.id[11:]
    assert len(bad) == 32
    message = refused(text(envelope_doc(**{field: bad})), InvalidToken, 422, "invalid_identity")
    assert message.startswith(f"{field}:")


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_identity_of_the_wrong_length_is_refused(length: int) -> None:
    refused(text(envelope_doc(to="a" * length)), InvalidToken, 422, "invalid_identity")


def test_identity_that_is_not_a_string_is_refused() -> None:
    refused(text(envelope_doc(to=12345)), InvalidEnvelope, 422, "invalid_envelope")


@pytest.mark.parametrize(
    "value",
    ["", ".hidden", "-x", "has space", "a*b", "a>b", "caf\u00e9", "tab\there", "x" * 65],
    ids=["empty", "leading dot", "leading dash", "space", "star", "gt", "non-ascii", "tab",
         "too long"],
)
def test_bad_session_is_refused(value: str) -> None:
    message = refused(text(envelope_doc(session=value)), InvalidToken, 422, "invalid_token")
    assert message.startswith("session:")


@pytest.mark.parametrize(
    "value",
    ["", ".dot", "has space", "a*", "a>b", "caf\u00e9", "x" * 129],
    ids=["empty", "leading dot", "space", "star", "gt", "non-ascii", "too long"],
)
def test_bad_type_is_refused(value: str) -> None:
    message = refused(text(envelope_doc(type=value)), InvalidToken, 422, "invalid_token")
    assert message.startswith("type:")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "Producer"),
        ("kind", "a.b"),
        ("kind", "_x"),
        ("kind", "x" * 65),
        ("name", "gh hooks"),
        ("name", "a>b"),
        ("name", ""),
        ("event_id", "has space"),
        ("event_id", "caf\u00e9"),
        ("event_id", "x" * 201),
        ("event_id", ""),
    ],
)
def test_bad_source_token_is_refused(field: str, value: str) -> None:
    source = {"kind": "producer", "name": "ci", field: value}
    message = refused(text(envelope_doc(source=source)), InvalidToken, 422, "invalid_token")
    assert message.startswith(f"source.{field}:")


@pytest.mark.parametrize("value", ["has space", "tab\t", "caf\u00e9", "x" * 201, ""])
def test_bad_dedupe_key_is_refused(value: str) -> None:
    refused(text(envelope_doc(dedupe_key=value)), InvalidToken, 422, "invalid_token")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("session", "ws-1"),
        ("session", "My.Session_2"),
        ("type", "github.push"),
        ("type", "a:b/c-d.e_f"),
        ("dedupe_key", "!~" + "x" * 198),
    ],
)
def test_good_tokens_are_accepted(field: str, value: str) -> None:
    assert getattr(parse_envelope(text(envelope_doc(**{field: value}))), field) == value


# --- other field rules --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["urgent", "NOW", "", 0, None], ids=repr)
def test_unknown_priority_is_refused(value: Any) -> None:
    doc = envelope_doc()
    doc["priority"] = value
    message = refused(text(doc), InvalidEnvelope, 422, "invalid_priority")
    assert message.startswith("priority:")


@pytest.mark.parametrize(
    ("doc_changes", "where"),
    [
        ({"colour": "red"}, "colour"),
        ({"source": {"kind": "producer", "name": "ci", "extra": 1}}, "source.extra"),
        ({"permissions": {"actions": [], "scope": "all"}}, "permissions.scope"),
    ],
    ids=["top level", "in source", "in permissions"],
)
def test_unknown_field_is_refused(doc_changes: dict[str, Any], where: str) -> None:
    message = refused(text(envelope_doc(**doc_changes)), InvalidEnvelope, 422, "unknown_field")
    assert message.startswith(f"{where}:")


@pytest.mark.parametrize(
    "envelope_id",
    [
        ENVELOPE_ID.lower(),
        ENVELOPE_ID[:25],
        ENVELOPE_ID + "0",
        ENVELOPE_ID[:25] + "I",
        ENVELOPE_ID[:25] + "U",
        ENVELOPE_ID + "\n",
        "",
    ],
    ids=["lowercase", "25 chars", "27 chars", "letter I", "letter U", "trailing newline",
         "empty"],
)
def test_id_that_is_not_a_ulid_is_refused(envelope_id: str) -> None:
    message = refused(text(envelope_doc(id=envelope_id)), InvalidEnvelope, 422,
                      "invalid_envelope")
    assert message.startswith("id:")


@pytest.mark.parametrize(
    "changes",
    [
        {"v": 2},
        {"created_at": "2025-01-02T03:04:05"},  # naive: no zone
        {"created_at": "yesterday"},
        {"expires_at": CREATED_AT},  # not after created_at
        {"expires_at": "2025-01-02T03:04:04Z"},
        {"payload": [1, 2, 3]},
        {"sealed": SEALED},  # payload and sealed together
        {"sealed": {**SEALED, "alg": "rot13"}, "payload": None},
        {"source": None},
        {"permissions": {"actions": ["bad action"]}},
        {"permissions": {"actions": ["a"] * 65}},
    ],
    ids=["v2", "naive created_at", "bad created_at", "expires at creation",
         "expires before creation", "payload list", "payload and sealed", "bad alg",
         "source missing", "bad action", "too many actions"],
)
def test_envelope_breaking_a_rule_is_refused(changes: dict[str, Any]) -> None:
    refused(text(envelope_doc(**changes)), InvalidEnvelope, 422, "invalid_envelope")


# --- caps ---------------------------------------------------------------------------------


def _payload_of_size(size: int, char: str = "a") -> dict[str, str]:
    """A payload whose compact UTF-8 JSON is exactly ``size`` bytes."""
    overhead = len('{"x":""}')
    width = len(char.encode())
    assert (size - overhead) % width == 0
    payload = {"x": char * ((size - overhead) // width)}
    assert len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()) == size
    return payload


def test_payload_at_the_cap_is_accepted() -> None:
    payload = _payload_of_size(PAYLOAD_MAX_BYTES)
    assert parse_envelope(text(envelope_doc(payload=payload))).payload == payload


@pytest.mark.parametrize("char", ["a", "\u00e9"], ids=["ascii", "two-byte utf-8"])
def test_payload_over_the_cap_is_refused(char: str) -> None:
    payload = _payload_of_size(PAYLOAD_MAX_BYTES + len(char.encode()), char)
    # The cap counts UTF-8 bytes, not characters, even when sent with \\u escapes.
    for body in (json.dumps(envelope_doc(payload=payload), ensure_ascii=False),
                 text(envelope_doc(payload=payload))):
        refused(body, TooLarge, 413, "payload_too_large")


def test_short_envelopes_skip_measuring_the_payload_but_never_hide_an_oversize_one() -> None:
    """``parse_envelope`` does not serialize the payload of an envelope too short to carry
    one over the cap: floats that grow the most when written out again (``1e15``, 4 bytes
    -> 18) stay under the cap in the longest envelope that skips the measure, and one
    byte more is measured (and refused when over)."""
    doc = envelope_doc(payload={"x": []})
    numbers = (_FITS_BYTES - len(text(doc).encode()) + 1) // len(",1e15")
    assert text(doc).count("[]") == 1
    body = text(doc).replace("[]", "[" + ",".join(["1e15"] * numbers) + "]")
    assert len(body.encode()) <= _FITS_BYTES
    payload = parse_envelope(body).payload
    compact = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(compact) <= PAYLOAD_MAX_BYTES
    # Past the bound the payload is measured again: 1e15s that grow over the cap.
    over = body.replace("[", "[" + "1e15," * (PAYLOAD_MAX_BYTES // 18), 1)
    assert len(over.encode()) > _FITS_BYTES
    refused(over, TooLarge, 413, "payload_too_large")


def test_envelope_at_the_cap_is_accepted_and_over_it_refused() -> None:
    body = text(envelope_doc()).encode()
    at_cap = body + b" " * (ENVELOPE_MAX_BYTES - len(body))
    assert len(at_cap) == ENVELOPE_MAX_BYTES
    assert parse_envelope(at_cap) == parse_envelope(body)
    refused(at_cap + b" ", TooLarge, 413, "too_large")
    refused(b"{" * (ENVELOPE_MAX_BYTES + 1), TooLarge, 413, "too_large")


def test_envelope_cap_counts_utf8_bytes_for_text_input() -> None:
    sealed = {**SEALED, "ct": "\u20ac" * 32000}  # 3 bytes each in UTF-8
    body = json.dumps(envelope_doc(payload=None, sealed=sealed), ensure_ascii=False)
    assert len(body) < ENVELOPE_MAX_BYTES < len(body.encode())
    refused(body.encode(), TooLarge, 413, "too_large")
    try:
        parse_envelope(body)
    except TooLarge:
        return
    raise AssertionError("an envelope over ENVELOPE_MAX_BYTES (as UTF-8) was accepted as str")


# --- malformed input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    ["", "   ", "{", "not json", '{"v": 1,}', b"\xff\xfe", "{'v': 1}"],
    ids=["empty", "blank", "truncated", "word", "trailing comma", "not utf-8", "single quotes"],
)
def test_malformed_json_is_refused(body: str | bytes) -> None:
    refused(body, MalformedInput, 400, "malformed_json")


@pytest.mark.parametrize("body", ["[]", "1", '"text"', "null"])
def test_json_that_is_not_an_object_is_refused(body: str) -> None:
    refused(body, InvalidEnvelope, 422, "invalid_envelope")


# --- expiry and priority ------------------------------------------------------------------


def test_is_expired() -> None:
    expires = T0 + timedelta(minutes=5)
    envelope = make_envelope(expires_at=expires.isoformat())
    assert not envelope.is_expired(T0)
    assert not envelope.is_expired(expires - timedelta(microseconds=1))
    assert envelope.is_expired(expires)
    assert envelope.is_expired(expires + timedelta(days=1))


def test_without_expires_at_never_expires() -> None:
    assert not make_envelope().is_expired(datetime(9999, 1, 1, tzinfo=UTC))


def test_priority_rank_orders_now_next_later() -> None:
    assert Priority.now.rank < Priority.next.rank < Priority.later.rank
    assert [p.rank for p in PRIORITIES] == [0, 1, 2]
    assert sorted(Priority, key=lambda p: p.rank, reverse=True) == [
        Priority.later, Priority.next, Priority.now
    ]
    assert set(PRIORITIES) == set(Priority)
    assert [str(p) for p in PRIORITIES] == ["now", "next", "later"]
    assert Priority("later") is Priority.later


def test_model_built_in_python_obeys_the_same_rules() -> None:
    doc = envelope_doc(to=bob.id.upper())
    with pytest.raises(pydantic.ValidationError) as info:
        Envelope.model_validate(doc)
    assert info.value.errors()[0]["loc"] == ("to",)


def test_nulls_inside_the_payload_are_kept() -> None:
    """``envelope_bytes`` drops unset optional fields, never values inside the payload."""
    payload = {"a": None, "b": {"c": None}, "l": [None]}
    envelope = make_envelope(payload=payload)
    assert b'"payload":{"a":null,"b":{"c":null},"l":[null]}' in envelope_bytes(envelope)
    assert parse_envelope(envelope_bytes(envelope)).payload == payload


def test_deeply_nested_json_is_refused_as_too_deep() -> None:
    depth = 5000
    refused("[" * depth + "]" * depth, LimitExceeded, 422, "too_deep")
    body = text(envelope_doc(payload=None))[:-1] + ', "payload": ' + '{"a":' * depth
    refused(body + "1" + "}" * (depth + 1), LimitExceeded, 422, "too_deep")


def nested(depth: int) -> dict[str, Any]:
    """A payload ``depth`` containers deep (the payload object counts as one)."""
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return {"a": value}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 150, 250, 900])
def test_a_payload_deeper_than_the_limit_is_refused(depth: int) -> None:
    """250 deep once got past the relay (Python's json) and failed at the edge (pydantic's
    parser stops at 200): now both refuse anything past MAX_DEPTH with one code."""
    refused(text(envelope_doc(payload=nested(depth))), LimitExceeded, 422, "too_deep")
    with pytest.raises(LimitExceeded) as info:  # built in Python, as the relay does
        Envelope.model_validate(envelope_doc(payload=nested(depth)))
    assert info.value.code == "too_deep"


def test_a_payload_at_the_depth_limit_is_accepted() -> None:
    envelope = parse_envelope(text(envelope_doc(payload=nested(MAX_DEPTH))))
    assert envelope.payload == nested(MAX_DEPTH)
    assert parse_envelope(envelope_bytes(envelope)) == envelope


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("NaN", "non_finite_number"),
        ("Infinity", "non_finite_number"),
        ("-Infinity", "non_finite_number"),
        ("1e400", "non_finite_number"),
        ("-1e400", "non_finite_number"),
        (str(2**53), "number_out_of_range"),
        (str(-(2**53)), "number_out_of_range"),
        ("1" * 400, "number_out_of_range"),
    ],
)
def test_a_number_outside_the_limits_is_refused(number: str, code: str) -> None:
    """These used to be stored as ``null`` (or as a number no JavaScript reader gets)."""
    body = text(envelope_doc(payload={"x": 0})).replace('"x": 0', f'"x": [{number}]')
    refused(body, LimitExceeded, 422, code)


def test_numbers_at_the_limits_are_accepted() -> None:
    payload = {"big": 2**53 - 1, "small": -(2**53 - 1), "float": 1.7976931348623157e308}
    assert parse_envelope(text(envelope_doc(payload=payload))).payload == payload


def test_a_lone_surrogate_is_refused_from_text_and_from_python() -> None:
    body = text(envelope_doc(payload={"x": "\ud800"}))  # the JSON escape, as sent
    assert "\\ud800" in body
    refused(body, MalformedInput, 400, "malformed_json")
    for payload in ({"x": "\ud800"}, {"\udfff": 1}, {"x": [{"y": "a\ud800b"}]}):
        with pytest.raises(LimitExceeded) as info:
            Envelope.model_validate(envelope_doc(payload=payload))
        assert info.value.code == "invalid_string"


@pytest.mark.parametrize("field", ["epk", "nonce", "ct"])
def test_sealed_fields_are_base64url_only(field: str) -> None:
    # a lone surrogate is not even JSON text the parser takes; the others are not base64url
    for bad, status, code in (("\ud800", 400, "malformed_json"), ("é", 422, "invalid_envelope"),
                              ("a b", 422, "invalid_envelope"),
                              ("a+b/", 422, "invalid_envelope")):
        doc = envelope_doc(payload=None, sealed={**SEALED, field: bad})
        with pytest.raises(RemoteProtocolError) as info:
            parse_envelope(json.dumps(doc))
        assert (info.value.status, info.value.code) == (status, code), (bad, info.value)
