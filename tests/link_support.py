"""The edge end of the link handshake, written once for the tests and the scripts that
speak the link without an edge daemon (``relay_support.edge_link``, the storm child
``storm_support``, the idle edges of ``test_drain_idle_edges``, ``scripts/bench_cluster``):
dial ``/v1/connect`` with the subprotocol, receive the ``challenge``, answer it with an
``auth`` signed by the identity's key, receive the ``welcome``.

Only websockets and ``shared``: light enough for a child process that dials thousands of
links (the storm) to import at once. Scripts find it as the other test helpers, with
``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from shared.auth import auth_message, sign_b64
from shared.frames import RELAY_FRAME_MAX_BYTES, SUBPROTOCOL, Auth, Challenge, Frame, Welcome
from shared.identity import Identity
from shared.link import Link, Role

#: How long a handshake step may take unless told otherwise.
HANDSHAKE_TIMEOUT = 10.0


class Refused(AssertionError):
    """The relay answered the ``auth`` with ``frame`` (an ``error``), not a ``welcome``."""

    def __init__(self, frame: Frame) -> None:
        super().__init__(f"the relay refused the link: {frame!r}")
        self.frame = frame


@dataclass
class Handshake:
    """An authenticated link: the socket, the ``shared.link.Link`` that checked every
    frame so far (and checks the rest: credit included), what was exchanged."""

    ws: ClientConnection
    link: Link
    challenge: Challenge
    welcome: Welcome
    #: The ``auth`` frame as sent (JSON text).
    auth_text: str


def connect_url(relay_url: str) -> str:
    """``http://host:port`` → ``ws://host:port/v1/connect``."""
    return relay_url.replace("http://", "ws://", 1) + "/v1/connect"


def auth_frame(identity: Identity, challenge: Challenge, claimed: str | None = None) -> str:
    """The ``auth`` ``identity`` gives to ``challenge``, claiming ``claimed`` (default:
    itself), as JSON text."""
    claim = identity.id if claimed is None else claimed
    sig = sign_b64(identity, auth_message(challenge.nonce, challenge.time, claim, challenge.relay))
    return Auth(identity=claim, sig=sig).model_dump_json()


def dial(url: str, timeout: float = HANDSHAKE_TIMEOUT, **options: Any) -> websockets.connect:
    """``websockets.connect`` to ``url`` (a ``ws://…/v1/connect``) as an edge dials: the
    ``mailslot.v1`` subprotocol, the relay's frame limit, no compression, no pings (the
    link has its own keepalive); ``options`` override. Await it, or ``async with`` it."""
    settings: dict[str, Any] = {
        "subprotocols": [websockets.Subprotocol(SUBPROTOCOL)],
        "max_size": RELAY_FRAME_MAX_BYTES, "open_timeout": timeout, "ping_interval": None,
        "compression": None, "close_timeout": 2, **options,
    }
    return websockets.connect(url, **settings)


async def authenticate(ws: ClientConnection, identity: Identity,
                       timeout: float = HANDSHAKE_TIMEOUT) -> Handshake:
    """challenge → auth → welcome on an open socket; ``Refused`` if the relay answers the
    auth with anything but a welcome."""
    link = Link(Role.EDGE)
    challenge = link.receive(await asyncio.wait_for(ws.recv(), timeout))
    assert isinstance(challenge, Challenge), challenge
    text = link.send(Auth.model_validate_json(auth_frame(identity, challenge)))
    await ws.send(text)
    welcome = link.receive(await asyncio.wait_for(ws.recv(), timeout))
    if not isinstance(welcome, Welcome):
        raise Refused(welcome)
    return Handshake(ws, link, challenge, welcome, text)


@contextlib.asynccontextmanager
async def linked(url: str, identity: Identity, timeout: float = HANDSHAKE_TIMEOUT,
                 **options: Any) -> AsyncIterator[Handshake]:
    """An authenticated link to ``url`` for ``identity`` until the block ends (``dial``'s
    ``options``). A handshake refused over HTTP raises websockets' ``InvalidStatus``."""
    async with dial(url, timeout, **options) as ws:
        yield await authenticate(ws, identity, timeout)
