"""``shared.match``: predicates over a document and globs, the one match language of
intents, watches and relay hooks. Pure: no sockets, no files."""

from __future__ import annotations

import fnmatch
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.match import (
    MISSING,
    Predicate,
    any_glob,
    describe,
    field_value,
    glob_regex,
    globs_regex,
    holds,
    unmet,
)

DOC = {
    "type": "ci.failed",
    "payload": {"branch": "main", "attempt": 3, "ok": False, "note": None, "tags": ["a"]},
    "headers": {"x-github-event": "push"},
}


def p(field: str, op: str = "eq", value: object = None) -> Predicate:
    return Predicate.model_validate({"field": field, "op": op, "value": value})


def test_field_value_walks_dotted_paths_and_says_missing() -> None:
    assert field_value(DOC, "payload.branch") == "main"
    assert field_value(DOC, "headers.x-github-event") == "push"
    assert field_value(DOC, "payload.note") is None
    assert field_value(DOC, "payload.nothing") is MISSING
    assert field_value(DOC, "payload.branch.deeper") is MISSING
    assert field_value(["not", "a", "dict"], "a") is MISSING
    assert repr(MISSING) == "MISSING"


@pytest.mark.parametrize(("predicate", "expected"), [
    (p("payload.branch", "eq", "main"), True),
    (p("payload.branch", "ne", "main"), False),
    (p("payload.missing", "ne", "main"), True),  # missing: only ne and absent hold
    (p("payload.missing", "eq", None), False),
    (p("payload.attempt", "in", [1, 2, 3]), True),
    (p("payload.attempt", "gt", 2), True),
    (p("payload.attempt", "le", 2.5), False),
    (p("payload.ok", "lt", 1), False),  # a bool is not a number
    (p("payload.branch", "ge", 1), False),
    (p("type", "glob", "ci.*"), True),
    (p("type", "glob", "ci"), False),  # a glob matches the whole string
    (p("payload.attempt", "glob", "*"), False),  # only strings
    (p("type", "regex", r"fail"), True),  # a regex searches
    (p("type", "regex", r"^fail"), False),
    (p("payload.note", "present"), False),  # null counts as missing
    (p("payload.note", "absent"), True),
    (p("payload.tags", "present"), True),
    (p("headers.x-github-event", "eq", "push"), True),
])
def test_each_op(predicate: Predicate, expected: bool) -> None:
    assert holds(predicate, DOC) is expected


@pytest.mark.parametrize(("raw", "message"), [
    ({"field": "a", "op": "regex", "value": "("}, "bad regular expression"),
    ({"field": "a", "op": "regex", "value": 3}, "op regex needs a string value"),
    ({"field": "a", "op": "glob", "value": None}, "op glob needs a string value"),
    ({"field": "a", "op": "gt", "value": "3"}, "op gt needs a number value"),
    ({"field": "a", "op": "gt", "value": True}, "op gt needs a number value"),
    ({"field": "a", "op": "in", "value": "abc"}, "op in needs a list value"),
    ({"field": "a", "op": "present", "value": 1}, "op present takes no value"),
    ({"field": "a", "op": "like"}, "Input should be"),
    ({"field": "a..b"}, "should match pattern"),
    ({"field": "-a"}, "should match pattern"),
    ({"field": "a", "extra": 1}, "Extra inputs are not permitted"),
])
def test_invalid_predicates_are_refused_with_reasons(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Predicate.model_validate(raw)


def test_a_copy_with_another_value_never_uses_the_old_pattern() -> None:
    glob = p("type", "glob", "ci.*")
    assert holds(glob, DOC)
    other = glob.model_copy(update={"value": "deploy.*"})
    assert not holds(other, DOC) and holds(glob, DOC)
    assert glob == p("type", "glob", "ci.*") and hash(glob) == hash(p("type", "glob", "ci.*"))


def test_describe_and_unmet_say_why_in_words() -> None:
    assert describe(p("payload.branch", "eq", "main")) == "payload.branch eq 'main'"
    assert describe(p("title", "present")) == "title present"
    assert unmet([], [], DOC) is None
    assert unmet([p("payload.branch", "eq", "dev")], [], DOC) == "payload.branch eq 'dev' does not hold"
    assert unmet([], [p("type", "eq", "x"), p("type", "eq", "y")], DOC) == (
        "none of the 'any' predicates holds")
    assert unmet([p("payload.attempt", "ge", 3)], [p("type", "eq", "x"), p("type", "glob", "ci.*")],
                 DOC) is None


def test_globs() -> None:
    assert any_glob("github.push", ["stripe.*", "github.*"])
    assert not any_glob("github.push", [])
    assert not any_glob(3, ["*"])
    several = globs_regex(["stripe.*", "github.pu?h"])
    assert several.match("github.push") and several.match("stripe.x")
    assert not several.match("github.pushed")
    assert not globs_regex([]).match("")
    assert glob_regex("a[!b]c").match("axc") and not glob_regex("a[!b]c").match("abc")
    assert glob_regex("*\n*").match("x\ny")  # a star crosses lines, as in fnmatch


def test_the_glob_translation_is_fnmatchs_for_every_short_pattern() -> None:
    """Every pattern up to 3 characters over the glob's own metacharacters."""
    for length in range(1, 4):
        for chars in itertools.product("a*?[]!-^\\", repeat=length):
            pattern = "".join(chars)
            assert glob_regex(pattern).pattern == fnmatch.translate(pattern), pattern


@settings(max_examples=300)
@given(st.text(alphabet="ab.*?[]!-^\\&~|z", max_size=12), st.text(alphabet="ab.-!^z]", max_size=10))
def test_a_glob_matches_what_fnmatchcase_matches(pattern: str, text: str) -> None:
    assert (glob_regex(pattern).match(text) is not None) is fnmatch.fnmatchcase(text, pattern)
    assert any_glob(text, [pattern]) is fnmatch.fnmatchcase(text, pattern)


def test_the_pattern_memos_stay_bounded_and_right() -> None:
    for i in range(5000):
        assert glob_regex(f"p{i}*").match(f"p{i}x")
        assert holds(p("a", "regex", f"^r{i}$"), {"a": f"r{i}"})
    assert glob_regex("p1*").match("p1") and not glob_regex("p1*").match("q1")
