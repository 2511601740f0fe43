"""The one table of limits: ``loads`` and ``check_json`` refuse exactly what breaks it,
with the code the README documents, and take everything at the limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from protocol_support import alice, bob, envelope_doc

from shared.envelope import Envelope
from shared.errors import LimitExceeded, MalformedInput
from shared.limits import (
    CLOCK_SKEW_SECONDS,
    MAX_DEPTH,
    MAX_SAFE_INTEGER,
    check_created_at,
    check_json,
    loads,
)
from shared.signing import sign_envelope, verify_envelope

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def code_of(fn: Any) -> str:
    with pytest.raises(LimitExceeded) as info:
        fn()
    assert info.value.status == 422
    return info.value.code


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_counts_containers() -> None:
    check_json(1, 0)
    check_json([], 1)
    check_json({"a": [1]}, 2)
    assert code_of(lambda: check_json({"a": [1]}, 1)) == "too_deep"
    assert code_of(lambda: check_json([[[]]], 2)) == "too_deep"
    # a document carries a payload: one level more than MAX_DEPTH parses
    assert loads(deep(MAX_DEPTH + 1)) == json.loads(deep(MAX_DEPTH + 1))
    assert code_of(lambda: loads(deep(MAX_DEPTH + 2))) == "too_deep"
    assert code_of(lambda: loads(deep(MAX_DEPTH + 1), max_depth=MAX_DEPTH)) == "too_deep"


@pytest.mark.parametrize("depth", [200, 1_000, 100_000])
def test_a_hostile_depth_never_reaches_the_recursion_limit(depth: int) -> None:
    assert code_of(lambda: loads(deep(depth))) == "too_deep"
    value: Any = []
    for _ in range(depth):  # built without recursion, checked without recursion
        value = [value]
    assert code_of(lambda: check_json(value)) == "too_deep"


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "[1e400]", '{"a": -1e999}'])
def test_non_finite_numbers_are_refused_at_parse_time(text: str) -> None:
    assert code_of(lambda: loads(text)) == "non_finite_number"


def test_non_finite_numbers_are_refused_in_values() -> None:
    for value in (float("nan"), [float("inf")], {"a": {"b": -float("inf")}}):
        assert code_of(lambda v=value: check_json(v)) == "non_finite_number"  # type: ignore[misc]


def test_integers_are_bounded_to_the_safe_range() -> None:
    check_json([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 0, True, None, 1.5])
    assert loads(str(MAX_SAFE_INTEGER)) == MAX_SAFE_INTEGER
    for value in (MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 10**400):
        assert code_of(lambda v=value: check_json({"n": [v]})) == "number_out_of_range"  # type: ignore[misc]
    assert code_of(lambda: loads("9" * 30)) == "number_out_of_range"


def test_strings_and_keys_must_be_unicode_text() -> None:
    check_json({"é": "ü", "k": ["日本", "🙂"]})
    for value in ("\ud800", ["a\udfffb"], {"\ud800": 1}, {"a": {"b\udc00": 1}}):
        assert code_of(lambda v=value: check_json(v)) == "invalid_string"  # type: ignore[misc]
    # Python's json turns the escape into a lone surrogate: refused, not stored.
    assert code_of(lambda: loads('{"a": "\\ud800"}')) == "invalid_string"
    assert loads('{"a": "\\ud83d\\ude42"}') == {"a": "🙂"}  # a pair is one character


def test_python_containers_are_checked_like_json_ones() -> None:
    """Tuples and dict subclasses (from the edge's own code, never from a parser) are
    walked like lists and objects."""
    from collections import OrderedDict

    check_json({"a": (1, "x"), "b": OrderedDict(c=[1])})
    assert code_of(lambda: check_json({"a": (1, float("nan"))})) == "non_finite_number"
    assert code_of(lambda: check_json(OrderedDict(a=(("\ud800",),)))) == "invalid_string"
    assert code_of(lambda: check_json({"a": ((((),),),)}, 3)) == "too_deep"


@pytest.mark.parametrize("body", [b"", b"{", b"\xff", b"[1,]", b"{'a': 1}"])
def test_what_is_not_json_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedInput) as info:
        loads(body)
    assert info.value.code == "malformed_json"


def test_created_at_may_be_old_but_not_in_the_future() -> None:
    check_created_at(NOW - timedelta(days=365), NOW)
    check_created_at(NOW + timedelta(seconds=CLOCK_SKEW_SECONDS), NOW)
    later = NOW + timedelta(seconds=CLOCK_SKEW_SECONDS + 1)
    assert code_of(lambda: check_created_at(later, NOW)) == "clock_skew"


def test_the_edge_takes_what_the_relay_dated_ahead_of_its_clock() -> None:
    """The relay bounds ``created_at`` by its own clock before 2xx; an edge whose clock
    is behind must still take the interrupt, or a 202 would be lost."""
    for created_at in (NOW + timedelta(seconds=60), NOW + timedelta(hours=2)):
        envelope = Envelope.model_validate(envelope_doc(created_at=created_at.isoformat()))
        signed = sign_envelope(envelope, alice)
        trusted = {alice.id: alice.public.verifier()}
        assert verify_envelope(signed, trusted=trusted, recipient=bob.id, now=NOW) == envelope
