"""The edge honours a refused handshake's ``Retry-After`` (``edge.link.client``): against
a real relay answering every handshake ``503 relay_full`` (its handshake cap at 0), an
edge whose own backoff is 0.05 to 0.5 s dials again only after the hint (1 s), and gets in
as soon as the relay takes handshakes again."""

from __future__ import annotations

import time

import websockets
from tests_support import running_edge, wait_until

from edge.link.client import RETRY_HINT_MAX_SECONDS, retry_hint


def refusal(retry_after: str | None) -> websockets.exceptions.InvalidStatus:
    headers = websockets.datastructures.Headers()
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return websockets.exceptions.InvalidStatus(
        websockets.http11.Response(503, "Service Unavailable", headers, b"{}"))


def test_the_hint_is_read_from_a_refused_handshake_only():
    assert retry_hint(refusal("7")) == 7.0
    assert retry_hint(refusal(None)) == 0.0
    assert retry_hint(refusal("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0  # a date: backoff
    assert retry_hint(refusal("-3")) == 0.0
    assert retry_hint(refusal("nan")) == 0.0
    assert retry_hint(refusal("1e9")) == RETRY_HINT_MAX_SECONDS
    assert retry_hint(OSError("refused")) == 0.0


async def test_an_edge_waits_the_retry_after_of_a_busy_relay_then_gets_in(relay, make_member):
    member = await make_member()
    gate = relay.app.state.handshakes
    gate.cap = 0  # every handshake refused, with Retry-After: 1 (nothing booked yet)
    async with running_edge(member):
        await wait_until(lambda: gate.refused >= 1, 10, "a first refusal")
        first = time.monotonic()
        await wait_until(lambda: gate.refused >= 3, 10, "two more refusals")
        # Its own backoff alone would have dialled again within 0.5 s each time.
        assert time.monotonic() - first >= 1.9
        gate.cap = 128
        await wait_until(lambda: relay.hub.sessions == 1, 5, "the edge linked")
