"""Every WebSocket frame an edge can send, before and after auth, fuzzed against a real
relay process.

Properties: the relay answers a bad frame with the documented ``error`` frame and close
code (never 1011 or a dropped socket: an unhandled exception in the session task would
end in one of those, and in the relay's log); a frame it takes leaves the session
serving — credit granted afterwards brings a new interrupt within seconds, and acking it
removes it from JetStream.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st
from websockets import ConnectionClosed, Subprotocol
from websockets.sync.client import ClientConnection, connect

from fuzz.fuzz_support import CODE_RE, SOON, Harness
from fuzz.strategies import BIG, BIG_FRAME, frame
from shared.auth import auth_message, sign_b64
from shared.frames import (
    RELAY_FRAME_MAX_BYTES,
    SUBPROTOCOL,
    Ack,
    Auth,
    Challenge,
    Credit,
    Deliver,
    Error,
    Welcome,
)
from shared.link import Link, Role

#: How the relay may end a link that an edge misused, before auth: protocol error,
#: bad auth, frame too big.
BEFORE_AUTH = {4400, 4401, 1009}
#: ... and after auth: those, and a normal close when the edge sent ``error``.
AFTER_AUTH = {4400, 1009, 1000}

def open_link(harness: Harness) -> ClientConnection:
    return connect(
        harness.relay.ws_url,
        subprotocols=[Subprotocol(SUBPROTOCOL)],
        max_size=RELAY_FRAME_MAX_BYTES,
        open_timeout=SOON,
        close_timeout=2,
    )


def send_all(ws: ClientConnection, frames: list[str | bytes]) -> bool:
    """Send ``frames``; False if the relay closed the link on the way."""
    try:
        for data in frames:
            if data == BIG:  # the WebSocket layer fails the connection: nothing after it
                ws.send(BIG_FRAME)
                break
            ws.send(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data,
                    text=isinstance(data, str))
    except ConnectionClosed:
        return False
    return True


def read_until_closed(ws: ClientConnection) -> tuple[int | None, list[dict[str, Any]]]:
    """Everything the relay sends until it closes: close code and frames."""
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frames.append(json.loads(ws.recv(timeout=SOON)))
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd else None), frames


def allowed_after(frames: list[str | bytes], allowed: set[int]) -> set[int | None]:
    """``allowed``, plus what the WebSocket layer itself does before any handler sees a
    frame: 1007 for a text frame that is not UTF-8, and for an oversized frame no close
    frame at all (the socket is closed while the frame still arrives, and the kernel's
    reset can overtake the 1009)."""
    codes: set[int | None] = set(allowed)
    if BIG in frames:
        codes.add(None)
    if any(isinstance(f, str) and not is_utf8(f) for f in frames):
        codes.add(1007)
    return codes


def is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def assert_refused(code: int | None, frames: list[dict[str, Any]], allowed: set[int | None]
                   ) -> None:
    assert code in allowed, (code, frames)
    for f in frames:
        if f.get("type") == "error":
            assert CODE_RE.fullmatch(f["code"]) and f["code"] != "internal", f


def authenticate(harness: Harness, ws: ClientConnection) -> Link:
    link = Link(Role.EDGE)
    challenge = link.receive(ws.recv(timeout=SOON))
    assert isinstance(challenge, Challenge)
    carol = harness.carol.identity
    sig = sign_b64(carol, auth_message(challenge.nonce, challenge.time, carol.id,
                                       challenge.relay))
    ws.send(link.send(Auth(identity=carol.id, sig=sig)))
    assert isinstance(link.receive(ws.recv(timeout=SOON)), Welcome)
    return link


def test_fuzz_frames_before_auth(harness: Harness) -> None:
    @given(frames=st.lists(frame(), min_size=1, max_size=3))
    def run(frames: list[str | bytes]) -> None:
        with open_link(harness) as ws:
            assert json.loads(ws.recv(timeout=SOON))["type"] == "challenge"
            send_all(ws, frames)
            code, sent = read_until_closed(ws)
        assert_refused(code, sent, allowed_after(frames, BEFORE_AUTH))

    run()
    with open_link(harness) as ws:  # a good edge still gets in
        authenticate(harness, ws)
    assert harness.relay.errors_logged() == []


def test_fuzz_frames_after_auth(harness: Harness) -> None:
    http = httpx.Client(base_url=harness.relay.url, timeout=SOON)  # closed below

    @given(frames=st.lists(frame(), min_size=1, max_size=3))
    def run(frames: list[str | bytes]) -> None:
        with open_link(harness) as ws:
            link = authenticate(harness, ws)
            if send_all(ws, frames) and still_serving(harness, http, ws, link):
                return
            code, sent = read_until_closed(ws)
        assert_refused(code, sent, allowed_after(frames, AFTER_AUTH))

    try:
        run()
    finally:
        http.close()
    assert harness.relay.errors_logged() == []


def still_serving(harness: Harness, http: httpx.Client, ws: ClientConnection, link: Link
                  ) -> bool:
    """Grant credit, post a new interrupt for carol, and expect it delivered (after any
    older ones still pending from earlier examples) then gone once acked. False if the
    relay closed the link instead (the frames before were refused)."""
    carol = harness.carol
    # The fuzzed frames went out raw: whatever credit they granted, the relay may use.
    link.credit = 10**9
    try:
        ws.send(Credit(n=1024).model_dump_json())
    except ConnectionClosed:
        return False
    before = harness.stored()
    response = http.post("/v1/interrupts", json={"to": carol.id, "type": "fuzz.probe"},
                         headers={"Authorization": f"Bearer {carol.token}"})
    assert response.status_code == 202, response.text
    probe = response.json()["id"]
    try:
        while True:
            data = ws.recv(timeout=SOON)
            delivered = link.receive(data)
            if isinstance(delivered, Error):  # the fuzzed frames were refused
                assert_refused(4400, [delivered.model_dump()], set(AFTER_AUTH))
                return False
            assert isinstance(delivered, Deliver), delivered
            ids = [json.loads(item.envelope)["id"] for item in delivered.items]
            ws.send(Ack(ids=ids).model_dump_json())
            if probe in ids:
                break
    except ConnectionClosed:
        return False
    deadline = time.monotonic() + SOON
    while harness.stored() > before:  # the acks reach JetStream: everything of carol's gone
        assert time.monotonic() < deadline, "acked interrupts stayed in JetStream"
        time.sleep(0.01)  # JetStream state in another process: no event to await
    return True
