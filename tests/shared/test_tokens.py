"""The strict alphabets for values that may reach a NATS subject, a key, a file name or a
log line: allow-lists, matched in full, refused with ``InvalidToken``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.errors import InvalidToken
from shared.tokens import check_identity, check_name, check_opaque, check_session, check_type

GOOD_ID = "abcdefghijklmnopqrstuvwxyz234567"

Checker = Callable[[object], str]
CHECKERS: dict[str, tuple[Checker, str, list[str], list[object]]] = {
    # name: (checker, code, accepted, refused)
    "identity": (
        check_identity, "invalid_identity",
        [GOOD_ID, "a" * 32],
        ["", GOOD_ID[:-1], GOOD_ID + "a", GOOD_ID.upper(), GOOD_ID[:-1] + ".",
         GOOD_ID[:-1] + "*", GOOD_ID[:-1] + ">", GOOD_ID[:-1] + " ", GOOD_ID[:-1] + "1",
         GOOD_ID[:-1] + "\u00e9", GOOD_ID + "\n", None, 7, b"a" * 32],
    ),
    "name": (
        check_name, "invalid_token",
        ["acme", "a", "0-team_x", "a" * 64],
        ["", "Acme", "-a", "_a", "a.b", "a*", "a>", "a b", "a" * 65, "caf\u00e9", "a\n", None],
    ),
    "type": (
        check_type, "invalid_token",
        ["github.push", "A:b/c-d_e.f", "x" * 128],
        ["", ".a", "-a", "a b", "a*", "a>b", "x" * 129, "caf\u00e9", "a\n", 1],
    ),
    "session": (
        check_session, "invalid_token",
        ["ws", "My.Session_2-x", "s" * 64],
        ["", ".s", "_s", "a/b", "a:b", "a*", "a>", "a b", "s" * 65, "caf\u00e9", "a\n"],
    ),
    "opaque": (
        lambda v: check_opaque(v, "event_id"), "invalid_token",
        ["!", "~", "gh:123/abc?x=1", "x" * 200],
        ["", "a b", "a\tb", "x" * 201, "caf\u00e9", "\x7f", "a\n", None],
    ),
}

ACCEPT = [(kind, value) for kind, (_, _, good, _) in CHECKERS.items() for value in good]
REFUSE = [(kind, value) for kind, (_, _, _, bad) in CHECKERS.items() for value in bad]


@pytest.mark.parametrize(("kind", "value"), ACCEPT, ids=[f"{k}-{v!r}"[:60] for k, v in ACCEPT])
def test_accepted(kind: str, value: str) -> None:
    assert CHECKERS[kind][0](value) == value


@pytest.mark.parametrize(("kind", "value"), REFUSE, ids=[f"{k}-{v!r}"[:60] for k, v in REFUSE])
def test_refused_with_invalid_token(kind: str, value: object) -> None:
    checker, code, _, _ = CHECKERS[kind]
    with pytest.raises(InvalidToken) as info:
        checker(value)
    assert (info.value.status, info.value.code) == (422, code)
    assert isinstance(info.value, ValueError)


def test_nats_subject_characters_never_pass_any_checker() -> None:
    """``.``, ``*``, ``>`` and whitespace split or widen a NATS subject: none of the
    checkers whose values may become subject tokens lets them through."""
    for char in ".*> \t\r\n":
        for checker in (check_identity, check_name):
            with pytest.raises(InvalidToken):
                checker(("a" * 31 + char) if checker is check_identity else "a" + char)
