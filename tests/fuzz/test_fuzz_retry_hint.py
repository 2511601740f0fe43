"""A relay's ``Retry-After`` is outside input to the edge (``edge.link.client.retry_hint``):
whatever the header says, the edge waits a finite time between 0 and its ceiling, and
never fails on it."""

from __future__ import annotations

import math

import websockets
from hypothesis import given
from hypothesis import strategies as st

from edge.link.client import RETRY_HINT_MAX_SECONDS, retry_hint

HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@given(value=st.one_of(HEADER_TEXT, st.integers().map(str),
                       st.floats(allow_nan=True, allow_infinity=True).map(repr)),
       status=st.sampled_from([429, 503, 500, 404]))
def test_any_retry_after_gives_a_bounded_wait(value: str, status: int) -> None:
    headers = websockets.datastructures.Headers()
    headers["Retry-After"] = value
    refused = websockets.exceptions.InvalidStatus(
        websockets.http11.Response(status, "refused", headers, b""))
    hint = retry_hint(refused)
    assert math.isfinite(hint)
    assert 0.0 <= hint <= RETRY_HINT_MAX_SECONDS
