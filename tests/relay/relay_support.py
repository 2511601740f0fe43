"""Helpers for the relay's failure and isolation tests: a raw, authenticated WebSocket
client speaking ``mailslot.v1`` frame by frame, producer-signed envelopes (well-formed or
deliberately broken), signed grant requests, and counts of what JetStream holds.

Not a conftest.py on purpose: fixtures are shared by importing them from here (a second
conftest.py would only apply to this folder). Test modules import what they need from this
module by its bare name (``tests/relay`` is on pytest's pythonpath), fixtures included: they are registered under ``name=`` so that importing
``alice_fixture`` provides the ``alice`` fixture without shadowing test parameters.

Links usually grant exactly the credit they are about to use, so that what the relay
sends is exactly what a test expects to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import nats
import pytest
import websockets
from link_support import Handshake, authenticate, connect_url, dial
from link_support import auth_frame as auth_frame  # re-exported: the frame-by-frame tool
from tests_support import Member, NatsServer, relay_processes
from ulid import ULID
from websockets.asyncio.client import ClientConnection

from relay.adminauth import ensure_admin_credential
from relay.config import RelayConfig, StreamSettings, parse_plans
from relay.drain import consumer_name
from relay.registry import Registry
from relay.server import RelayServer
from relay.store import STREAM
from shared.auth import new_request_nonce, request_message, sign_b64
from shared.encoding import b64d, b64e
from shared.envelope import Envelope, Priority, Source
from shared.frames import (
    SUBPROTOCOL,
    Challenge,
    Credit,
    Deliver,
    DeliverItem,
    Frame,
)
from shared.identity import Identity
from shared.link import Link, Role
from shared.signing import ENVELOPE_DOMAIN, sign_envelope

#: ack_wait of the relays in these tests. Far longer than any wait in a test, so a
#: redelivery a test sees can only come from a takeover, a nak or a released link —
#: never from ack_wait running out.
ACK_WAIT = 120.0
#: How long a test waits for something the relay should do at once.
SOON = 10.0

EMPTY = {"now": 0, "next": 0, "later": 0}


@pytest.fixture(name="relay_config")
def relay_config_fixture(tmp_path: Path, nats_server: NatsServer) -> RelayConfig:
    """Overrides ``tests/conftest.py``'s: same relay, with a long ack_wait (see
    ``ACK_WAIT``). Test modules import ``relay_config_fixture`` to put it in effect."""
    return RelayConfig(
        listen="127.0.0.1:0",
        nats=(nats_server.url,),
        data_dir=tmp_path / "relay",
        stream=StreamSettings(ack_wait=ACK_WAIT),
        auth_timeout=2.0,
    )


# -- JetStream counts -------------------------------------------------------------------


async def stored_total(relay: RelayServer) -> int:
    """Messages in the interrupt stream, all recipients together."""
    assert relay.store is not None
    info = await relay.store.js.stream_info(STREAM)
    return int(info.state.messages)


async def pending(relay: RelayServer, identity: str) -> dict[str, int]:
    assert relay.store is not None
    return await relay.store.pending(identity)


async def unacked(relay: RelayServer, identity: str, priority: str = "next") -> int:
    """Deliveries the identity's consumer has handed out and not had acked."""
    assert relay.store is not None
    name = consumer_name(identity, Priority(priority))
    info = await relay.store.js.consumer_info(STREAM, name)
    return int(info.num_ack_pending)


@contextlib.asynccontextmanager
async def pulls_answered(
    nats_url: str, identity: str, priority: str = "later"
) -> AsyncIterator[asyncio.Queue[str]]:
    """Watch, from a NATS connection of the test's own, the relay's pull requests to
    ``identity``'s ``priority`` consumer; yield a queue that gets an item each time
    JetStream has answered one. A relay pulls ``now``, ``next``, ``later`` in turn, so an
    answered ``later`` pull means the relay just looked and found nothing to send.
    One ``>`` subscription sees a request before its reply (one connection, in order)."""
    subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{consumer_name(identity, Priority(priority))}"
    replies: set[str] = set()
    answered: asyncio.Queue[str] = asyncio.Queue()

    async def on_msg(msg: Any) -> None:
        if msg.subject == subject and msg.reply:
            replies.add(msg.reply)
        elif msg.subject in replies:
            replies.discard(msg.subject)
            answered.put_nowait(msg.subject)

    nc = await nats.connect(nats_url)
    try:
        await nc.subscribe(">", cb=on_msg)
        await nc.flush()
        yield answered
    finally:
        await nc.close()


# -- HTTP -------------------------------------------------------------------------------


def draft(to: str, **fields: Any) -> dict[str, Any]:
    return {"to": to, "type": "test.failure", "payload": {"n": 1}, **fields}


async def post(
    relay: RelayServer,
    body: Any = None,
    *,
    token: str | None = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST /v1/interrupts with a JSON ``body`` (or raw ``content``, labelled JSON unless
    ``headers`` say otherwise) and a bearer token."""
    all_headers = dict(headers or {})
    if not any(name.lower() == "content-type" for name in all_headers):
        all_headers["Content-Type"] = "application/json"
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        if content is not None:
            return await client.post("/v1/interrupts", content=content, headers=all_headers)
        return await client.post("/v1/interrupts", json=body, headers=all_headers)


def refused(response: httpx.Response, status: int, code: str) -> None:
    """The response is the documented refusal: ``status`` and ``{"error": code, ...}``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body.get("message"), str) and body["message"], body


async def assert_still_serving(relay: RelayServer, member: Member) -> None:
    """A good draft is still accepted and stored after whatever the test did."""
    before = sum((await pending(relay, member.id)).values())
    response = await post(relay, draft(member.id), token=member.token)
    assert response.status_code == 202, response.text
    assert sum((await pending(relay, member.id)).values()) == before + 1
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        assert (await client.get("/healthz")).status_code == 200


async def send_drafts(relay: RelayServer, member: Member, n: int, **fields: Any) -> list[str]:
    """Store ``n`` drafts for ``member`` (one at a time: stream order = list order)."""
    ids = []
    for i in range(n):
        response = await post(relay, draft(member.id, payload={"n": i}, **fields),
                              token=member.token)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def grant_header(
    signer: Identity, method: str, path: str, *, claimed: str | None = None,
    ts: int | None = None, body: bytes = b"", nonce: str | None = None,
) -> str:
    """A ``Mailslot-Signature`` header, signed by ``signer`` and claiming ``claimed``
    (a fresh nonce unless ``nonce`` is given)."""
    ts = int(time.time()) if ts is None else ts
    nonce = new_request_nonce() if nonce is None else nonce
    sig = sign_b64(signer, request_message(method, path, ts, nonce, body))
    return f"Mailslot-Signature id={claimed or signer.id},ts={ts},nonce={nonce},sig={sig}"


def grant_path(recipient: str, signer_id: str) -> str:
    """The path of ``recipient``'s grant to ``signer_id``, as the relay decodes it (and
    as a ``Mailslot-Signature`` covers it)."""
    return f"/v1/identities/{recipient}/grants/{signer_id}"


async def granted(relay: RelayServer, recipient: str, signer_id: str) -> bool:
    """Whether the registry holds ``recipient``'s grant to ``signer_id``."""
    return bool(await Registry(relay.store).is_granted(recipient, signer_id))


async def grant_request(
    relay: RelayServer, method: str, recipient: str, signer_id: str,
    header: str | None, *, signed_by: Identity | None = None,
) -> httpx.Response:
    """PUT/DELETE a grant. ``header`` None: no Authorization; "sign": signed by
    ``signed_by`` as the recipient would; anything else is sent as it is."""
    path = grant_path(recipient, signer_id)
    url = f"/v1/identities/{quote(recipient, safe='')}/grants/{quote(signer_id, safe='')}"
    headers = {}
    if header == "sign":
        assert signed_by is not None
        headers["Authorization"] = grant_header(signed_by, method, path)
    elif header is not None:
        headers["Authorization"] = header
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        return await client.request(method, url, headers=headers)


async def grant(relay: RelayServer, recipient: Member, signer_id: str) -> None:
    response = await grant_request(
        relay, "PUT", recipient.id, signer_id, "sign", signed_by=recipient.identity
    )
    assert response.status_code == 200, response.text


# -- producer-signed envelopes ------------------------------------------------------------


def envelope(signer: Identity, to: str, **fields: Any) -> Envelope:
    """A valid envelope from ``signer`` to ``to``; ``fields`` override the defaults."""
    values: dict[str, Any] = {
        "id": str(ULID()),
        "to": to,
        "source": Source(kind="service", name="failure-tests"),  # producer is the relay's
        "type": "test.signed",
        "created_at": datetime.now(UTC),
        "payload": {"n": 1},
        "signer": signer.id,
    }
    values.update(fields)
    return Envelope(**values)


def signed_doc(signer: Identity, to: str, **fields: Any) -> dict[str, str]:
    """The wire form of a valid envelope signed by ``signer``."""
    signed = sign_envelope(envelope(signer, to, **fields), signer)
    return {"envelope": signed.envelope, "signature": signed.signature}


def raw_envelope_fields(key: Identity, to: str, **fields: Any) -> dict[str, Any]:
    """Envelope fields as plain JSON values, for envelopes the model would refuse."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "v": 1,
        "id": str(ULID()),
        "to": to,
        "source": {"kind": "service", "name": "failure-tests"},
        "type": "test.signed",
        "priority": "next",
        "created_at": now.isoformat(),
        "payload": {"n": 1},
        "signer": key.id,
    }
    values.update(fields)
    return values


def sign_text(signer: Identity, text: str) -> dict[str, str]:
    """Sign arbitrary envelope text exactly as ``shared.signing`` would sign a good one,
    so that the relay's refusal is about the content, not the signature."""
    return {"envelope": text, "signature": b64e(signer.sign(ENVELOPE_DOMAIN + text.encode()))}


def sign_raw(key: Identity, to: str, **fields: Any) -> dict[str, str]:
    """Envelope JSON built from plain fields (any field may be overridden, ``signer``
    included) and signed by ``key``."""
    return sign_text(key, json.dumps(raw_envelope_fields(key, to, **fields)))


def past(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


def flip_signature(doc: dict[str, str]) -> dict[str, str]:
    """The same envelope with one bit of its (decoded) signature flipped."""
    sig = bytearray(b64d(doc["signature"]))
    sig[10] ^= 0x01
    return {**doc, "signature": b64e(bytes(sig))}


# -- the WebSocket link ---------------------------------------------------------------------


def ws_url(relay: RelayServer) -> str:
    return connect_url(relay.url)


@contextlib.asynccontextmanager
async def raw_socket(
    relay: RelayServer, subprotocols: tuple[str, ...] | None = (SUBPROTOCOL,),
) -> AsyncIterator[ClientConnection]:
    """A plain WebSocket to /v1/connect, before any frame is exchanged."""
    protocols = [websockets.Subprotocol(p) for p in subprotocols] if subprotocols else None
    async with dial(ws_url(relay), SOON, subprotocols=protocols) as ws:
        yield ws


@dataclass
class Closed:
    """How the relay ended a link: close code, reason, and the frames it sent last."""

    code: int | None
    reason: str
    frames: list[dict[str, Any]] = field(default_factory=list)

    @property
    def error_codes(self) -> list[str]:
        return [f["code"] for f in self.frames if f.get("type") == "error"]


async def closed(ws: ClientConnection, timeout: float = SOON) -> Closed:
    """Read until the relay closes the socket; return the close code and reason."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        try:
            while True:
                frames.append(json.loads(await ws.recv()))
        except websockets.ConnectionClosed as exc:
            rcvd = exc.rcvd
            return Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "", frames)


async def read_challenge(ws: ClientConnection) -> Challenge:
    frame = Link(Role.EDGE).receive(await asyncio.wait_for(ws.recv(), SOON))
    assert isinstance(frame, Challenge)
    return frame


@dataclass
class EdgeLink(Handshake):
    """The edge end of an authenticated link, frame by frame. ``link`` is a real
    ``shared.link.Link``: it checks the relay's frames, including that no deliver
    exceeds the credit granted so far (``credit_exceeded``)."""

    async def send(self, frame: Frame) -> None:
        await self.ws.send(self.link.send(frame))

    async def credit(self, n: int) -> None:
        await self.send(Credit(n=n))

    async def recv(self, timeout: float = SOON) -> Frame:
        return self.link.receive(await asyncio.wait_for(self.ws.recv(), timeout))

    async def items(self, n: int, timeout: float = SOON) -> list[DeliverItem]:
        """Exactly ``n`` delivered items (from one or more deliver frames)."""
        got: list[DeliverItem] = []
        async with asyncio.timeout(timeout):
            while len(got) < n:
                frame = await self.recv(timeout)
                assert isinstance(frame, Deliver), frame
                got.extend(frame.items)
        assert len(got) == n, f"relay delivered {len(got)} items, expected {n}"
        return got


def item_id(item: DeliverItem) -> str:
    return str(json.loads(item.envelope)["id"])


@contextlib.asynccontextmanager
async def edge_link(
    relay: RelayServer, who: Member | Identity, credit: int = 0
) -> AsyncIterator[EdgeLink]:
    """An authenticated link for ``who``: challenge → auth → welcome, then ``credit``
    (grant exactly what the test will use; see the module docstring)."""
    identity = who.identity if isinstance(who, Member) else who
    async with raw_socket(relay) as ws:
        done = await authenticate(ws, identity, SOON)
        assert relay.identity is not None and done.challenge.relay == relay.identity.id
        edge = EdgeLink(ws, done.link, done.challenge, done.welcome, done.auth_text)
        if credit:
            await edge.credit(credit)
        yield edge


# -- the admin API ----------------------------------------------------------------------


@pytest.fixture(name="admin_key")
async def admin_key_fixture(relay: RelayServer) -> str:
    """The relay's admin credential, made as on a first ``relay serve``."""
    assert relay.store is not None
    key = await ensure_admin_credential(relay.store, relay.config.data_dir)
    assert key is not None and key.startswith("msa_")
    return key


@pytest.fixture(name="admin")
async def admin_fixture(relay: RelayServer, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the relay carrying the admin credential."""
    async with httpx.AsyncClient(
        base_url=relay.url, timeout=SOON, headers={"Authorization": f"Bearer {admin_key}"}
    ) as client:
        yield client


# -- members ------------------------------------------------------------------------------


@pytest.fixture(name="alice")
async def alice_fixture(make_member: Any) -> Member:
    """A recipient in account ``acme`` (no edge home: tests speak the link by hand)."""
    member: Member = await make_member("acme", with_home=False)
    return member


@pytest.fixture(name="bob")
async def bob_fixture(make_member: Any) -> Member:
    """Another recipient, in another account (``globex``)."""
    member: Member = await make_member("globex", with_home=False)
    return member


@pytest.fixture(name="producer")
async def producer_fixture(relay: RelayServer, make_member: Any, alice: Member) -> Identity:
    """An enrolled producer key that ``alice`` granted (signed PUT grant)."""
    member: Member = await make_member("producers", with_home=False)
    await grant(relay, alice, member.id)
    return member.identity


@contextlib.asynccontextmanager
async def planned_relays(
    nats_url: str, tmp_path: Path, plans: str, account: str, plan: str
) -> AsyncIterator[list[Any]]:
    """Two relay processes started with the plans file ``plans`` (``tmp_path/plans.toml``),
    ``account`` created on ``plan``; all closed when the block ends."""
    path = tmp_path / "plans.toml"
    path.write_text(plans)
    async with relay_processes(nats_url, tmp_path, "--config", str(path)) as relays:
        found = parse_plans(plans, "plans.toml")
        config = RelayConfig(nats=(nats_url,), data_dir=tmp_path, plans=found.plans,
                             default_plan=found.default_plan)
        await Registry(relays[0].store, config).create_account(account, plan)
        yield relays
