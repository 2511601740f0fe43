"""The envelope, wire-document, frame and identity parsers, fuzzed in process (pure
functions: no relay needed, so many more examples per second).

Properties: every input either parses or raises a ``RemoteProtocolError`` with a status
below 500 and a snake_case code — never another exception (a ``RecursionError``, a
``UnicodeEncodeError``...); and the two ways an envelope is checked agree — what the
relay builds from parsed JSON (a draft, in Python) the edge accepts from the bytes it
receives (``verify_envelope``), and the reverse.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge.link.receiver import Receiver
from edge.store.inbox import Inbox
from fuzz.fuzz_support import CODE_RE
from fuzz.strategies import any_text, draft_text, envelope_text, frame, json_values
from shared.encoding import b64e
from shared.envelope import Envelope, envelope_bytes, parse_envelope, validation_error
from shared.errors import RemoteProtocolError
from shared.frames import EDGE_FRAME_MAX_BYTES, RELAY_FRAME_MAX_BYTES, DeliverItem, decode_frame
from shared.identity import Identity, PublicIdentity
from shared.limits import MAX_DEPTH, loads
from shared.signing import ENVELOPE_DOMAIN, sign_envelope, signed_from_wire, verify_envelope

RELAY = Identity.from_seeds(bytes(range(32)), bytes(range(32, 64)))
PRODUCER = Identity.from_seeds(bytes(range(64, 96)), bytes(range(96, 128)))
ALICE = Identity.from_seeds(bytes(range(128, 160)), bytes(range(160, 192)))
TRUSTED = {RELAY.id: RELAY.public.verifier(), PRODUCER.id: PRODUCER.public.verifier()}

#: Pure functions are cheap: more examples than the tests that talk to a relay.
many = settings(max_examples=settings.default.max_examples * 4)


def outcome(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or the refusal it raised (checked to be a documented one)."""
    try:
        return fn(*args)
    except RemoteProtocolError as exc:
        assert 400 <= exc.status < 500, exc
        assert CODE_RE.fullmatch(exc.code), exc
        assert isinstance(exc.message, str) and exc.message, exc
        return exc


def as_data(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


junk = st.one_of(st.binary(max_size=200), any_text,
                 json_values.map(lambda v: json.dumps(v, allow_nan=True)))


@many
@given(st.one_of(envelope_text(ALICE.id, PRODUCER.id), junk))
def test_envelope_parser_refuses_with_a_code(text: str | bytes) -> None:
    for data in ((text, as_data(text)) if isinstance(text, str) else (text,)):
        outcome(parse_envelope, data)


@many
@given(st.one_of(junk, envelope_text(ALICE.id, PRODUCER.id).map(
    lambda t: json.dumps({"envelope": t, "signature": "A" * 86}))))
def test_wire_parser_refuses_with_a_code(data: str | bytes) -> None:
    outcome(signed_from_wire, data)
    outcome(loads, data)


@many
@given(frame())
def test_frame_parser_refuses_with_a_code(data: str | bytes) -> None:
    for limit in (EDGE_FRAME_MAX_BYTES, RELAY_FRAME_MAX_BYTES):
        outcome(decode_frame, data, limit)


@many
@given(st.one_of(json_values, st.fixed_dictionaries({
    "id": st.one_of(st.just(ALICE.id), any_text), "sign_key": any_text,
    "box_key": any_text, "box_sig": any_text})))
def test_identity_documents_refuse_with_a_code(doc: Any) -> None:
    outcome(PublicIdentity.from_doc, doc)


@many
@given(envelope_text(ALICE.id, PRODUCER.id))
def test_what_the_relay_builds_the_edge_accepts(text: str) -> None:
    """The relay parses a body with ``loads`` and builds an ``Envelope`` from Python
    values (a draft); the edge parses the signed bytes with pydantic's JSON parser. Both
    must accept exactly the same envelopes, or something answered 202 is refused later."""
    parsed = outcome(loads, as_data(text))
    built = outcome(build, parsed) if isinstance(parsed, dict) else parsed
    from_text = outcome(parse_envelope, as_data(text))
    if isinstance(built, Envelope):
        assert isinstance(from_text, Envelope), (text, from_text)
        assert from_text == built
        # Re-signed by the relay, as a draft would be: the edge takes those bytes.
        relayed = Envelope.model_validate({**built.model_dump(), "signer": RELAY.id})
        got = verify_or_refusal(relayed)
        if isinstance(got, RemoteProtocolError):
            assert got.code == "expired", got  # time-bound, not shape
        else:
            assert parse_envelope(envelope_bytes(got)) == got
    else:
        assert isinstance(from_text, RemoteProtocolError), (text, built)


def build(doc: dict[str, Any]) -> Envelope:
    """An envelope from Python values, refused as the relay refuses a draft."""
    try:
        return Envelope.model_validate(doc)
    except ValidationError as exc:
        raise validation_error(exc, "envelope") from exc


def verify_or_refusal(envelope: Envelope) -> Any:
    signed = sign_envelope(envelope, RELAY)
    return outcome(lambda: verify_envelope(signed, trusted=TRUSTED, recipient=ALICE.id,
                                           now=datetime.now(UTC)))


@many
@given(draft_text(ALICE.id))
def test_drafts_parse_or_refuse_with_a_code(text: str) -> None:
    outcome(loads, as_data(text))


@pytest.mark.parametrize("depth", [10, 1_000, 100_000])
def test_hostile_depth_is_a_refusal_everywhere(depth: int) -> None:
    text = "[" * depth + "]" * depth
    # Within the depth limit a bare array is JSON (``loads`` takes it) but no envelope,
    # wire document or frame; past it, every parser refuses.
    parsed = outcome(loads, text)
    if depth <= MAX_DEPTH:
        assert parsed == json.loads(text), parsed
    else:
        assert isinstance(parsed, RemoteProtocolError), parsed
    for result in (outcome(parse_envelope, text), outcome(signed_from_wire, text),
                   outcome(decode_frame, text, 10**7)):
        assert isinstance(result, RemoteProtocolError), result


def test_the_edge_receiver_accounts_for_every_item(tmp_path: Path) -> None:
    """The edge's ``Receiver`` on a real SQLite inbox, fed what a relay (or something
    posing as one) could deliver: it never raises, and every item is either committed
    (acked) or recorded as a rejection — a refused text may be anything, 5,000 deep
    included (that once escaped as a ``RecursionError`` from the rejection path)."""
    inbox = Inbox.open(tmp_path / "inbox.sqlite3")
    receiver = Receiver(ALICE, RELAY.public, inbox)

    def last_seq() -> int:
        newest = inbox.rejections(1)
        return newest[0].seq if newest else 0

    @many
    @given(st.lists(st.one_of(
        envelope_text(ALICE.id, RELAY.id).map(lambda t: (t, "relay")),
        junk.map(lambda t: (t if isinstance(t, str) else t.decode("latin-1"), "relay")),
        st.just(("[" * 5_000 + "]" * 5_000, "junk")),
        envelope_text(ALICE.id, PRODUCER.id).map(lambda t: (t, "producer")),
    ), min_size=1, max_size=4))
    def run(texts: list[tuple[str, str]]) -> None:
        items = []
        for text, signer in texts:
            key = {"relay": RELAY, "producer": PRODUCER}.get(signer)
            data = text.encode("utf-8", "surrogatepass")
            signature = b64e(key.sign(ENVELOPE_DOMAIN + data)) if key else "A" * 86
            items.append(DeliverItem(envelope=text, signature=signature))
        before = last_seq()
        outcome = receiver.process(items)
        assert len(outcome.acked) + (last_seq() - before) == len(items), outcome

    try:
        run()
    finally:
        inbox.close()
