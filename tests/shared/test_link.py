"""The link's state machine, checked against a table written out here independently of
``shared.link.TRANSITIONS``: for every role, every state and every frame type, sending and
receiving is either legal (and moves to the expected state) or refused with the typed
error, leaving state and credit untouched. Then credit accounting, and one whole
conversation between a relay link and an edge link."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import product

import pytest
from protocol_support import alice, bob, frame_samples, mallory

from shared.auth import auth_message, check_b64_signature, sign_b64
from shared.envelope import Envelope, Source
from shared.errors import LinkError, LocalProtocolError, TooLarge
from shared.frames import (
    EDGE_FRAME_MAX_BYTES,
    FRAME_TYPES,
    Ack,
    Auth,
    Challenge,
    Credit,
    Deliver,
    DeliverItem,
    Error,
    Frame,
    Nak,
    Pending,
    Reject,
    Welcome,
    encode_frame,
)
from shared.link import SENDER, TRANSITIONS, Link, Role, State
from shared.signing import SignedEnvelope, sign_envelope, verify_envelope

R, E = Role.RELAY, Role.EDGE
AC, AA, AW, OPEN, CLOSED = (State.AWAIT_CHALLENGE, State.AWAIT_AUTH, State.AWAIT_WELCOME,
                            State.OPEN, State.CLOSED)
ULID = "01JGZ6V7YH8M3Q5R2T4W6Y8Z0A"

#: role → state → {frame type this role may send: next state}
LEGAL_SEND: dict[Role, dict[State, dict[str, State]]] = {
    R: {
        AC: {"challenge": AA, "error": CLOSED},
        AA: {"error": CLOSED},
        AW: {"welcome": OPEN, "error": CLOSED},
        OPEN: {"deliver": OPEN, "error": CLOSED},
        CLOSED: {},
    },
    E: {
        AC: {"error": CLOSED},
        AA: {"auth": AW, "error": CLOSED},
        AW: {"error": CLOSED},
        OPEN: {"credit": OPEN, "ack": OPEN, "nak": OPEN, "reject": OPEN, "error": CLOSED},
        CLOSED: {},
    },
}

#: role → state → {frame type this role may receive: next state}
LEGAL_RECEIVE: dict[Role, dict[State, dict[str, State]]] = {
    R: {
        AC: {"error": CLOSED},
        AA: {"auth": AW, "error": CLOSED},
        AW: {"error": CLOSED},
        OPEN: {"credit": OPEN, "ack": OPEN, "nak": OPEN, "reject": OPEN, "error": CLOSED},
        CLOSED: {},
    },
    E: {
        AC: {"challenge": AA, "error": CLOSED},
        AA: {"error": CLOSED},
        AW: {"welcome": OPEN, "error": CLOSED},
        OPEN: {"deliver": OPEN, "error": CLOSED},
        CLOSED: {},
    },
}

CASES = list(product(Role, State, sorted(FRAME_TYPES)))
CASE_IDS = [f"{role.value}-{state.value}-{t}" for role, state, t in CASES]


def link_in(role: Role, state: State, samples: dict[str, Frame]) -> Link:
    """A link of ``role`` driven into ``state`` through the real handshake."""
    link = Link(role)
    steps = {
        R: [("send", "challenge"), ("receive", "auth"), ("send", "welcome")],
        E: [("receive", "challenge"), ("send", "auth"), ("receive", "welcome")],
    }[role]
    if state is CLOSED:
        link.close()
    else:
        for action, frame_type in steps[: [AC, AA, AW, OPEN].index(state)]:
            frame = samples[frame_type]
            if action == "send":
                link.send(frame)
            else:
                link.receive(encode_frame(frame))
    assert link.state is state
    return link


def test_tables_cover_every_role_and_state() -> None:
    for table in (LEGAL_SEND, LEGAL_RECEIVE):
        assert set(table) == set(Role)
        for role in Role:
            assert set(table[role]) == set(State)


def test_table_in_shared_uses_only_known_frame_types() -> None:
    assert {t for _, t in TRANSITIONS} <= FRAME_TYPES
    assert set(SENDER) == FRAME_TYPES - {"error"}  # error: either side


@pytest.mark.parametrize(("role", "state", "frame_type"), CASES, ids=CASE_IDS)
def test_send(role: Role, state: State, frame_type: str) -> None:
    link = link_in(role, state, frame_samples)
    frame = frame_samples[frame_type]
    expected = LEGAL_SEND[role][state].get(frame_type)
    if expected is not None:
        if frame_type == "deliver":
            link.receive(encode_frame(Credit(n=1)))  # deliveries need credit
        assert link.send(frame) == encode_frame(frame)
        assert link.state is expected
    else:
        if frame_type == "deliver":
            link.credit = 1  # so that only the state or the role can be the reason
        credit = link.credit
        with pytest.raises(LocalProtocolError):
            link.send(frame)
        assert (link.state, link.credit) == (state, credit)


@pytest.mark.parametrize(("role", "state", "frame_type"), CASES, ids=CASE_IDS)
def test_receive(role: Role, state: State, frame_type: str) -> None:
    link = link_in(role, state, frame_samples)
    frame = frame_samples[frame_type]
    expected = LEGAL_RECEIVE[role][state].get(frame_type)
    if expected is not None:
        if frame_type == "deliver":
            link.send(Credit(n=1))
        assert link.receive(encode_frame(frame)) == frame
        assert link.state is expected
    else:
        credit = link.credit
        with pytest.raises(LinkError) as info:
            link.receive(encode_frame(frame))
        assert info.value.code == ("closed" if state is CLOSED else "unexpected_frame")
        assert info.value.close_code == 4400
        assert (link.state, link.credit) == (state, credit)


# --- credit -------------------------------------------------------------------------------


@pytest.fixture
def relay() -> Link:
    return link_in(R, OPEN, frame_samples)


@pytest.fixture
def edge() -> Link:
    return link_in(E, OPEN, frame_samples)


def items(count: int) -> list[bytes]:
    return [b'{"envelope":"{}","signature":"sig"}'] * count


def deliver(count: int) -> Deliver:
    return Deliver(items=[DeliverItem(envelope="{}", signature="sig")] * count)


def test_links_start_without_credit() -> None:
    assert Link(R).credit == Link(E).credit == 0
    assert Link(R).state is Link(E).state is AC


def test_relay_cannot_deliver_without_credit(relay: Link) -> None:
    with pytest.raises(LocalProtocolError):
        relay.send_deliver(items(1))
    with pytest.raises(LocalProtocolError):
        relay.send(deliver(1))
    assert relay.credit == 0


def test_relay_delivers_within_credit_and_is_replenished(relay: Link) -> None:
    relay.receive(encode_frame(Credit(n=2)))
    relay.receive(encode_frame(Credit(n=3)))
    assert relay.credit == 5
    relay.send_deliver(items(2))
    assert relay.credit == 3
    with pytest.raises(LocalProtocolError):
        relay.send_deliver(items(4))
    assert relay.credit == 3  # a refused delivery spends nothing
    relay.send(deliver(3))
    assert relay.credit == 0
    with pytest.raises(LocalProtocolError):
        relay.send_deliver(items(1))
    relay.receive(encode_frame(Credit(n=1)))
    relay.send_deliver(items(1))
    assert relay.credit == 0
    assert relay.state is OPEN


def test_send_deliver_refuses_empty_wrong_role_and_wrong_state(relay: Link, edge: Link) -> None:
    relay.receive(encode_frame(Credit(n=4)))
    with pytest.raises(LocalProtocolError):
        relay.send_deliver([])
    edge.credit = 4
    with pytest.raises(LocalProtocolError):
        edge.send_deliver(items(1))
    early = link_in(R, AW, frame_samples)
    early.credit = 4
    with pytest.raises(LocalProtocolError):
        early.send_deliver(items(1))
    assert relay.credit == 4


def test_edge_refuses_deliveries_beyond_the_credit_it_granted(edge: Link) -> None:
    edge.send(Credit(n=2))
    assert edge.credit == 2
    with pytest.raises(LinkError) as info:
        edge.receive(encode_frame(deliver(3)))
    assert (info.value.code, info.value.close_code) == ("credit_exceeded", 4400)
    assert (edge.credit, edge.state) == (2, OPEN)
    edge.receive(encode_frame(deliver(2)))
    assert edge.credit == 0
    with pytest.raises(LinkError, match="credit"):
        edge.receive(encode_frame(deliver(1)))
    edge.send(Credit(n=1))
    edge.receive(encode_frame(deliver(1)))
    assert edge.credit == 0


@pytest.mark.parametrize(
    "frame",
    [Ack(ids=[ULID]), Nak(id=ULID, delay=5), Reject(id=ULID, code="expired")],
    ids=["ack", "nak", "reject"],
)
def test_acks_do_not_change_credit(relay: Link, edge: Link, frame: Frame) -> None:
    """Credit counts deliveries the relay may still send, not unacknowledged ones."""
    edge.send(Credit(n=3))
    relay.receive(encode_frame(Credit(n=3)))
    edge.receive(encode_frame(deliver(2)))
    relay.send_deliver(items(2))
    assert relay.receive(edge.send(frame)) == frame
    assert edge.credit == relay.credit == 1


def test_relay_refuses_an_oversized_edge_frame(relay: Link) -> None:
    text = encode_frame(Ack(ids=[ULID]))
    with pytest.raises(TooLarge) as info:
        relay.receive(text + " " * EDGE_FRAME_MAX_BYTES)
    assert info.value.close_code == 1009
    assert relay.state is OPEN


def test_edge_accepts_relay_frames_larger_than_the_edge_limit(edge: Link) -> None:
    edge.send(Credit(n=1))
    big = Deliver(items=[DeliverItem(envelope="x" * EDGE_FRAME_MAX_BYTES, signature="s")])
    assert edge.receive(encode_frame(big)) == big


def test_unknown_frame_is_refused_by_the_link(relay: Link) -> None:
    with pytest.raises(LinkError) as info:
        relay.receive('{"type": "subscribe"}')
    assert info.value.code == "unknown_frame"


def test_error_frame_closes_and_a_closed_link_refuses_everything(relay: Link) -> None:
    relay.receive(encode_frame(Error(code="bye", message="going away")))
    assert relay.state is CLOSED
    for frame in frame_samples.values():
        with pytest.raises(LocalProtocolError):
            relay.send(frame)
        with pytest.raises(LinkError):
            relay.receive(encode_frame(frame))
    with pytest.raises(LocalProtocolError):
        relay.send_deliver(items(1))


# --- a whole conversation ------------------------------------------------------------------


def test_conversation_between_relay_and_edge() -> None:
    """bob's edge authenticates to the relay (mallory's key stands in for the relay),
    grants credit, receives alice's envelopes, verifies them and acks them."""
    relay, edge = Link(R), Link(E)
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    nonce, t = "n" * 32, int(now.timestamp())

    challenge = edge.receive(relay.send(Challenge(nonce=nonce, time=t, relay=mallory.id)))
    assert isinstance(challenge, Challenge)
    sig = sign_b64(bob, auth_message(challenge.nonce, challenge.time, bob.id, challenge.relay))
    auth = relay.receive(edge.send(Auth(identity=bob.id, sig=sig)))
    assert isinstance(auth, Auth)
    check_b64_signature(bob.public.verifier(), auth.sig,
                        auth_message(nonce, t, auth.identity, mallory.id))
    edge.receive(relay.send(Welcome(session="s1", pending=Pending(next=3))))
    assert relay.state is edge.state is OPEN

    relay.receive(edge.send(Credit(n=2)))
    stored = [
        sign_envelope(Envelope(id=f"01JGZ6V7YH8M3Q5R2T4W6Y8Z{i:02d}", to=bob.id,
                               source=Source(kind="producer", name="ci"), type="t",
                               created_at=now, signer=alice.id), alice)
        for i in range(3)
    ]
    with pytest.raises(LocalProtocolError):
        relay.send_deliver([s.to_wire() for s in stored])  # 3 > credit 2
    batch = edge.receive(relay.send_deliver([s.to_wire() for s in stored[:2]]))
    assert isinstance(batch, Deliver)
    ids = [
        verify_envelope(SignedEnvelope(item.envelope, item.signature),
                        trusted={alice.id: alice.public.verifier()}, recipient=bob.id,
                        now=now).id
        for item in batch.items
    ]
    assert relay.receive(edge.send(Ack(ids=ids))) == Ack(ids=ids)
    assert relay.credit == edge.credit == 0

    relay.receive(edge.send(Credit(n=1)))
    edge.receive(relay.send_deliver([stored[2].to_wire()]))
    relay.receive(edge.send(Error(code="shutdown", message="bye")))
    assert relay.state is edge.state is CLOSED
