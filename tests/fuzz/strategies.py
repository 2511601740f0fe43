"""Hypothesis strategies for hostile JSON: mostly well-formed documents with one field
(or a few) replaced by something a parser or a handler might trip on — non-finite and
huge numbers, lone surrogates, deep nesting, wrong types, unknown fields, dates far
away — plus plain junk bytes. Documents are built as JSON *text*, so that what Python's
``json`` would never write (``NaN``, a 600-deep array, ``1e400``) can still be sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st
from ulid import ULID

from shared.frames import EDGE_FRAME_MAX_BYTES, FRAME_TYPES

#: Text with everything in it, lone surrogates included (Hypothesis leaves those out by
#: default; JSON can carry them as ``\\ud800`` escapes, and that used to be a 500).
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
tokenish = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,20}", fullmatch=True)

numbers = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([2**53 - 1, 2**53, -(2**53), 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, any_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=16,
)

#: JSON text that only a hand-written document holds.
odd_number_text = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 40, "-0", "1E+2", "0.0000001"]
)


@st.composite
def deep_text(draw: st.DrawFn) -> str:
    """An array or object ``n`` containers deep around a value, ``n`` up to 2,000."""
    n = draw(st.one_of(st.integers(1, 40), st.integers(30, 2_000)))
    if draw(st.booleans()):
        return "[" * n + "1" + "]" * n
    return '{"a":' * n + "1" + "}" * n


def dumps(value: Any) -> str:
    """JSON text of ``value`` as Python writes it: ``NaN``/``Infinity`` for non-finite
    floats and ``\\udXXX`` escapes for lone surrogates."""
    return json.dumps(value, allow_nan=True)


payload_text = st.one_of(
    json_values.map(dumps),
    st.dictionaries(any_text, json_values, max_size=5).map(dumps),
    deep_text(),
    odd_number_text.map(lambda t: '{"x": ' + t + "}"),
    st.just('{"x": "\\ud800"}'),
    st.just('{"\\udfff": 1}'),
    st.integers(0, 20_000).map(lambda n: json.dumps({"b": "x" * n})),
)

PLACEHOLDER = "__FUZZ_VALUE__"


def with_raw(doc: dict[str, Any], raw: dict[str, str]) -> str:
    """``doc`` as JSON text, with the fields in ``raw`` replaced by raw JSON text."""
    text = json.dumps({**doc, **{k: f"{PLACEHOLDER}{k}" for k in raw}}, allow_nan=True)
    for key, value in raw.items():
        text = text.replace(json.dumps(f"{PLACEHOLDER}{key}"), value, 1)
    return text


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


#: Dates that are good, past, far future, naive, out of range or not dates.
date_text = st.one_of(
    st.sampled_from([timedelta(days=1), timedelta(days=3650), timedelta(seconds=-5),
                     timedelta(days=-400)]).map(lambda d: json.dumps(iso(d))),
    st.sampled_from([
        '"2999-01-01T00:00:00Z"', '"9999-12-31T23:59:59.999999+23:59"', '"0001-01-01T00:00:00Z"',
        '"2030-01-01T00:00:00"', '"not a date"', "1e400", "12345678901234567890", "null",
        '"2030-02-30T00:00:00Z"', '"+275760-09-13T00:00:00Z"',
    ]),
)

priority_text = st.one_of(st.sampled_from(['"now"', '"next"', '"later"']),
                          scalars.map(dumps))

sealed_text = st.one_of(
    st.fixed_dictionaries({
        "alg": st.sampled_from(["x25519-hkdf-sha256-chacha20poly1305", "none"]),
        "epk": st.one_of(st.just("A" * 43), any_text),
        "nonce": st.one_of(st.just("B" * 16), any_text),
        "ct": st.one_of(st.just("C" * 40), any_text),
    }).map(dumps),
    json_values.map(dumps),
)

permissions_text = st.one_of(
    st.fixed_dictionaries({"actions": st.lists(st.one_of(tokenish, any_text), max_size=3)})
    .map(dumps),
    json_values.map(dumps),
)

#: Each field of a draft or envelope, as raw JSON text that is likely hostile.
hostile_fields: dict[str, st.SearchStrategy[str]] = {
    "priority": priority_text,
    "session": st.one_of(tokenish, any_text).map(dumps),
    "expires_at": date_text,
    "dedupe_key": st.one_of(tokenish, any_text).map(dumps),
    "sealed": sealed_text,
    "permissions": permissions_text,
    "id": st.one_of(st.builds(lambda: str(ULID())), any_text).map(dumps),
    "created_at": date_text,
    "source": json_values.map(dumps),
    "type": st.one_of(tokenish, any_text).map(dumps),
    "to": any_text.map(dumps),
    "colour": scalars.map(dumps),
    "payload": payload_text,
}

#: Payloads every rule allows (finite numbers, safe integers, Unicode text).
good_payload = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1),
                  st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12)),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6),
                                                                    inner, max_size=3),
        max_leaves=8,
    ),
    max_size=4,
)


@st.composite
def hostile(draw: st.DrawFn, fields: list[str]) -> dict[str, str]:
    """None, one or a few of ``fields`` replaced by hostile raw JSON (one, mostly, so
    that each rule is reached rather than hidden behind an earlier refusal)."""
    chosen = draw(st.one_of(
        st.just([]),
        st.sampled_from(fields).map(lambda f: [f]),
        st.sampled_from(fields).map(lambda f: [f]),
        st.lists(st.sampled_from(fields), max_size=3, unique=True),
    ))
    return {name: draw(hostile_fields[name]) for name in chosen}


DRAFT_FIELDS = ["priority", "session", "expires_at", "dedupe_key", "sealed", "permissions",
                "id", "source", "type", "to", "colour", "payload", "payload", "payload"]
ENVELOPE_FIELDS = [*DRAFT_FIELDS, "created_at", "created_at"]


@st.composite
def draft_text(draw: st.DrawFn, to: str) -> str:
    """A good draft to ``to``, or one with one (or a few) hostile fields."""
    doc: dict[str, Any] = {"to": to, "type": "fuzz.event", "payload": draw(good_payload)}
    raw = draw(hostile([f for f in DRAFT_FIELDS if f != "source"]))
    if "sealed" in raw:
        doc.pop("payload")
    return with_raw(doc, raw)


@st.composite
def envelope_text(draw: st.DrawFn, to: str, signer: str) -> str:
    """A good envelope from ``signer`` to ``to``, or one with hostile fields; its
    ``created_at`` now, a little ahead (within the skew), far ahead, or long ago."""
    doc: dict[str, Any] = {
        "v": 1,
        "id": str(ULID()),
        "to": to,
        "source": {"kind": draw(st.sampled_from(["service", "ci", "service", "producer",
                                                 "file"])), "name": "fuzz"},
        "type": "fuzz.signed",
        "created_at": iso(draw(st.sampled_from([
            timedelta(0), timedelta(seconds=120), timedelta(seconds=600),
            timedelta(days=-30), timedelta(days=365 * 900)]))),
        "payload": draw(good_payload),
        "signer": signer,
    }
    raw = draw(hostile(ENVELOPE_FIELDS))
    if "sealed" in raw:
        doc.pop("payload")
    return with_raw(doc, raw)


content_types = st.one_of(
    st.just("application/json"),
    st.just("application/json"),
    st.just("application/json"),
    st.just("application/json"),
    st.sampled_from(["application/json; charset=utf-8", "text/plain",
                     "application/x-www-form-urlencoded", "application/problem+json",
                     "application/json; charset=latin-1", ""]),
    st.from_regex(r"[ -~]{0,40}", fullmatch=True).map(str.strip),
)

#: Header values httpx can send (visible ASCII and inner spaces).
header_value = st.from_regex(r"[ -~]{0,80}", fullmatch=True).map(str.strip)


# -- WebSocket frames ---------------------------------------------------------------

ulids = st.one_of(st.builds(lambda: str(ULID())), any_text)
frame_fields: dict[str, st.SearchStrategy[Any]] = {
    "n": st.one_of(st.integers(-5, 20_000), numbers, json_values),
    "ids": st.one_of(st.lists(ulids, max_size=5), json_values),
    "id": st.one_of(ulids, json_values),
    "delay": st.one_of(numbers, json_values),
    "code": st.one_of(st.from_regex(r"[a-z_]{1,64}", fullmatch=True), any_text),
    "message": any_text,
    "identity": st.one_of(st.from_regex(r"[a-z2-7]{32}", fullmatch=True), any_text),
    "sig": any_text,
    "items": json_values,
    "x": json_values,
}
#: Stands for a frame over the edge's cap (expanded when sent: a 64 KiB repr in every
#: report would help nobody).
BIG = "<a frame over EDGE_FRAME_MAX_BYTES>"
BIG_FRAME = '{"type": "credit", "n": 1, "x": "' + "x" * EDGE_FRAME_MAX_BYTES + '"}'
odd_number = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "1" * 400, "-0"])


@st.composite
def frame(draw: st.DrawFn) -> str | bytes:
    """A frame: mostly a known type with fuzzed fields, else junk of every kind."""
    kind = draw(st.sampled_from(["typed", "typed", "typed", "odd-number", "json", "deep",
                                 "text", "bytes", "big"]))
    if kind in ("typed", "odd-number"):
        type_ = draw(st.one_of(st.sampled_from(sorted(FRAME_TYPES)), any_text))
        fields = draw(st.dictionaries(st.sampled_from(sorted(frame_fields)), st.just(None),
                                      max_size=3))
        doc = {"type": type_, **{k: draw(frame_fields[k]) for k in fields}}
        raw = {}
        if kind == "odd-number":
            raw[draw(st.sampled_from(["n", "delay", "time"]))] = draw(odd_number)
        return with_raw(doc, raw)
    if kind == "json":
        return dumps(draw(json_values))
    if kind == "deep":
        return '{"type": "ack", "ids": ' + draw(deep_text()) + "}"
    if kind == "text":
        return draw(any_text)
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    return BIG
