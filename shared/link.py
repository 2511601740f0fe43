"""The link's state machine: which frame may be sent or received in which state.

Everything that decides whether a frame is legal now lives in this file. Both ends run
the same table; ``send`` raises ``LocalProtocolError`` for a frame this side may not send
now (a bug here), ``receive`` raises ``LinkError`` for one the peer may not send now (the
peer's fault; close with its ``close_code``). Credit is part of the state: a relay may
never deliver more envelopes than the edge granted.
"""

from __future__ import annotations

from enum import Enum

from shared.errors import LinkError, LocalProtocolError
from shared.frames import (
    EDGE_FRAME_MAX_BYTES,
    RELAY_FRAME_MAX_BYTES,
    Credit,
    Deliver,
    Frame,
    decode_frame,
    encode_deliver,
    encode_frame,
)


class Role(Enum):
    RELAY = "relay"
    EDGE = "edge"


class State(Enum):
    AWAIT_CHALLENGE = "await_challenge"
    AWAIT_AUTH = "await_auth"
    AWAIT_WELCOME = "await_welcome"
    OPEN = "open"
    CLOSED = "closed"


#: (state, frame type) → next state. Anything not here is illegal in that state.
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.AWAIT_CHALLENGE, "challenge"): State.AWAIT_AUTH,
    (State.AWAIT_AUTH, "auth"): State.AWAIT_WELCOME,
    (State.AWAIT_WELCOME, "welcome"): State.OPEN,
    **{(State.OPEN, t): State.OPEN for t in ("credit", "deliver", "ack", "nak", "reject")},
    **{(s, "error"): State.CLOSED for s in State if s is not State.CLOSED},
}

#: Who may send each frame type.
SENDER: dict[str, Role] = {
    "challenge": Role.RELAY,
    "welcome": Role.RELAY,
    "deliver": Role.RELAY,
    "auth": Role.EDGE,
    "credit": Role.EDGE,
    "ack": Role.EDGE,
    "nak": Role.EDGE,
    "reject": Role.EDGE,
}


class Link:
    """One end of one connection. Feed it every frame you send and every message you
    receive; it keeps the state and the credit balance and refuses what is illegal."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self.state = State.AWAIT_CHALLENGE
        self.credit = 0  # envelopes the relay may still deliver on this link

    def send(self, frame: Frame) -> str:
        """Check ``frame`` is legal to send now, advance, and return the text to send."""
        sender = SENDER.get(frame.type, self.role)
        if sender is not self.role:
            raise LocalProtocolError(f"{self.role.value} may not send {frame.type}")
        next_state = TRANSITIONS.get((self.state, frame.type))
        if next_state is None:
            raise LocalProtocolError(f"cannot send {frame.type} in state {self.state.value}")
        self._account(frame, LocalProtocolError)
        self.state = next_state
        return encode_frame(frame)

    def send_deliver(self, items: list[bytes]) -> str:
        """Like ``send(Deliver(...))`` for items already in wire form (the relay's fast
        path): same state and credit rules, no per-item re-serialization."""
        if self.role is not Role.RELAY or self.state is not State.OPEN:
            raise LocalProtocolError(f"cannot send deliver in state {self.state.value}")
        if not items or len(items) > self.credit:
            raise LocalProtocolError("delivery must be non-empty and within granted credit")
        self.credit -= len(items)
        return encode_deliver(items)

    def receive(self, data: str | bytes) -> Frame:
        """Parse a received message, check it is legal now, advance, and return it."""
        if self.state is State.CLOSED:
            raise LinkError("link is closed", code="closed")
        limit = EDGE_FRAME_MAX_BYTES if self.role is Role.RELAY else RELAY_FRAME_MAX_BYTES
        frame = decode_frame(data, limit)
        sender = SENDER.get(frame.type)
        next_state = TRANSITIONS.get((self.state, frame.type))
        if sender is self.role or next_state is None:
            raise LinkError(
                f"unexpected {frame.type} in state {self.state.value}", code="unexpected_frame"
            )
        self._account(frame, LinkError)
        self.state = next_state
        return frame

    def close(self) -> None:
        self.state = State.CLOSED

    def _account(self, frame: Frame, error: type[Exception]) -> None:
        if isinstance(frame, Credit):
            self.credit += frame.n
        elif isinstance(frame, Deliver):
            if len(frame.items) > self.credit:
                if error is LinkError:
                    raise LinkError("delivery exceeds granted credit", code="credit_exceeded")
                raise LocalProtocolError("delivery exceeds granted credit")
            self.credit -= len(frame.items)
