"""``shared.encoding``: base64url without padding round-trips and refuses junk as
``MalformedInput``; a moment's text is ISO 8601, and a missing one stays missing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.encoding import b64d, b64e, iso_time
from shared.errors import MalformedInput


@pytest.mark.parametrize("data", [b"", b"\x00", b"ab", b"\xff" * 33])
def test_base64url_round_trips_without_padding(data: bytes) -> None:
    text = b64e(data)
    assert "=" not in text and b64d(text) == data


@pytest.mark.parametrize("junk", ["a", "ä", 7])
def test_junk_is_malformed_input_naming_what(junk: object) -> None:
    with pytest.raises(MalformedInput, match="nonce"):
        b64d(junk, "nonce")  # type: ignore[arg-type]


def test_a_moment_is_iso_8601_with_its_offset() -> None:
    assert iso_time(datetime(2026, 12, 1, 23, 5, tzinfo=UTC)) == "2026-12-01T23:05:00+00:00"
    moment = datetime(2026, 12, 1, 9, 30, 0, 250000, tzinfo=timezone(timedelta(hours=2)))
    assert iso_time(moment) == "2026-12-01T09:30:00.250000+02:00"
    assert iso_time(None) is None
