"""relay.plaintext without a relay: which bodies count as text, how query parameters and
headers become a draft, and what is refused (the HTTP side is test_app_send.py)."""

from __future__ import annotations

import pytest

from relay.errors import UnsupportedMediaType
from relay.plaintext import check_text_media, decode_text, options, send_draft
from shared.errors import InvalidEnvelope, LimitExceeded


@pytest.mark.parametrize("label", [None, "text/plain", "text/plain; charset=UTF-8",
                                   "application/x-www-form-urlencoded", "text/markdown",
                                   "TEXT/PLAIN"])
def test_text_labels_are_taken(label: str | None) -> None:
    check_text_media(label)


@pytest.mark.parametrize("label", ["application/json", "application/octet-stream",
                                   "image/png", "text/plain; charset=latin-1"])
def test_other_labels_are_refused(label: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_text_media(label)


def test_query_and_headers_make_the_draft() -> None:
    opts = options([("type", "alert.disk"), ("title", "nas ✓")],
                   {"x-priority": "now", "x-session": "s1", "x-type": "alert.disk"})
    assert send_draft("a" * 32, "disk full", opts) == {
        "to": "a" * 32, "type": "alert.disk", "priority": "now", "session": "s1",
        "payload": {"text": "disk full", "title": "nas ✓"}}
    assert send_draft("a" * 32, "hi", {}) == {"to": "a" * 32, "type": "text",
                                              "payload": {"text": "hi"}}
    assert send_draft("a" * 32, "", {"title": "ping"})["payload"] == {"text": "",
                                                                      "title": "ping"}


@pytest.mark.parametrize(("query", "headers", "code"), [
    ([("prio", "now")], {}, "unknown_parameter"),
    ([("type", "a"), ("type", "a")], {}, "repeated_parameter"),
    ([("type", "a")], {"x-type": "b"}, "conflicting_parameter"),
    ([], {"x-title": "caf\xe9"}, "invalid_string"),
])
def test_bad_options_are_refused(query: list[tuple[str, str]], headers: dict[str, str],
                                 code: str) -> None:
    with pytest.raises(InvalidEnvelope) as caught:
        options(query, headers)
    assert caught.value.code == code


def test_bodies_must_be_utf8_text_and_not_empty() -> None:
    assert decode_text("ünïcode".encode()) == "ünïcode"
    with pytest.raises(InvalidEnvelope) as caught:
        decode_text(b"\xff")
    assert caught.value.code == "invalid_string"
    with pytest.raises(InvalidEnvelope) as caught:
        send_draft("a" * 32, "", {})
    assert caught.value.code == "empty_message"
    with pytest.raises(LimitExceeded):
        options([("title", "\ud800")], {})
