"""The edge's outbound link to its relay (the websockets client side of ``shared.link``).

It only ever dials out: no listening socket. Per connection: check the challenge comes
from the pinned relay, answer it, grant credit, then for each ``deliver`` frame hand the
batch to the ``Receiver`` (verify → commit) and only after that send ``ack`` (and
``reject`` for refused ones) and new credit. Frames are received by one task and
processed by another, so the socket is read while a batch is being verified.

Reconnects use exponential backoff with full jitter, capped, reset after a successful
welcome; a handshake refused with ``Retry-After`` (a busy or full relay) waits at least
that long; a dial that got no answer at all (timed out after ``OPEN_TIMEOUT``, no route,
no resolver: ``network_away``) is followed within ``AWAY_RETRY`` seconds, so the link is
back as soon as the network is. Keepalive (``edge.link.keepalive``) is a WebSocket ping
after three quarters of ``keepalive`` without any frame from the relay, the last quarter
to answer: a connection that died without a FIN (a laptop that slept or changed
networks, a black-holed route) is given up within ``keepalive`` seconds (20) of its last
sign of life, and dialled again within a second (the backoff starts over after a link
that was up).

This is the project's one ``websockets`` import (the relay's WebSocket side is uvicorn's),
and websockets' exceptions end here: a connection that drops, is refused or times out is
logged and dialled again, so ``run`` returns only when asked to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import websockets
from websockets.asyncio.client import ClientConnection

from edge.config import EdgeConfig
from edge.errors import LinkClosed
from edge.link.keepalive import Liveness, PingSchedule
from edge.link.receiver import Receiver
from edge.store.inbox import Inbox, InboxItem
from shared.auth import auth_message, sign_b64
from shared.errors import LinkError, RemoteProtocolError
from shared.frames import (
    MAX_BATCH,
    RELAY_FRAME_MAX_BYTES,
    SUBPROTOCOL,
    Ack,
    Auth,
    Challenge,
    Credit,
    Deliver,
    DeliverItem,
    Error,
    Frame,
    Reject,
    Welcome,
)
from shared.host.waiting import first_of
from shared.identity import Identity
from shared.link import Link, Role

log = logging.getLogger("mailslot.edge.link")
#: Seconds a dial (TCP, TLS, the WebSocket upgrade) may take before it is given up.
OPEN_TIMEOUT = 10.0
#: Longest wait before the next dial while the network is away (``network_away``).
AWAY_RETRY = 2.0
#: What a dial fails with when this machine has no usable network: no route, no
#: interface, the resolver unreachable. (A refusal means someone answered: back off.)
_AWAY_ERRNOS = frozenset({errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTUNREACH,
                          errno.EADDRNOTAVAIL})
F = TypeVar("F", Challenge, Welcome)


class EdgeLink:
    def __init__(
        self,
        config: EdgeConfig,
        identity: Identity,
        inbox: Inbox,
        receiver: Receiver,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        on_stored: Callable[[list[InboxItem]], None] | None = None,
    ) -> None:
        """``inbox`` is used on the event loop (status); ``receiver`` runs in a worker
        thread and must own a separate ``Inbox`` connection. ``on_stored`` is called on
        the event loop with the interrupts each batch newly committed, once acked (the
        daemon hands them to the engine: ``Engine.offer``)."""
        self.config = config
        self.identity = identity
        self.inbox = inbox
        self.relay = config.relay_public()
        self.receiver = receiver
        self.on_event = on_event or (lambda _kind, _data: None)
        self.on_stored = on_stored or (lambda _items: None)
        self.connected = asyncio.Event()
        self.delivered = 0
        #: Deliver frames received and not yet taken into a commit (the link's backlog).
        self.backlog: asyncio.Queue[Deliver] = asyncio.Queue()

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop`` is set, reconnecting with jittered backoff."""
        attempt = 0
        while not stop.is_set():
            hint = 0.0  # a refused handshake's Retry-After
            away = False  # no answer at all: the network is away
            try:
                await self._connect_once(stop)
                attempt = 0
            except (OSError, TimeoutError, websockets.WebSocketException, LinkClosed) as exc:
                log.info("link to %s down: %s", self.config.relay_url, exc)
                hint = retry_hint(exc)
                away = network_away(exc)
            except RemoteProtocolError as exc:
                log.warning("relay broke the protocol: %s (%s)", exc.message, exc.code)
            finally:
                if self.connected.is_set():  # it was up (welcomed): back off from the start
                    attempt = 0
                    self.connected.clear()
                    self._status(connected=False)
            if stop.is_set():
                break
            if away:
                # Nobody refused: the next dial follows within ``AWAY_RETRY`` seconds (a
                # dial that timed out waited ``OPEN_TIMEOUT`` already), so the link is
                # back as soon as the network is, and the backoff starts over then.
                attempt = 0
                delay = random.uniform(AWAY_RETRY / 2, AWAY_RETRY)
            else:
                attempt += 1
                ceiling = min(self.config.reconnect_cap,
                              self.config.reconnect_base * 2**attempt)
                delay = random.uniform(0, ceiling)
            await first_of(stop.wait(), timeout=max(hint, delay))

    async def _connect_once(self, stop: asyncio.Event) -> None:
        async with websockets.connect(
            self.config.ws_url(),
            subprotocols=[websockets.Subprotocol(SUBPROTOCOL)],
            max_size=RELAY_FRAME_MAX_BYTES,
            # Our own keepalive (``Liveness``, from the welcome on): websockets' pings on
            # a fixed period whatever arrives, twice as many for the relay to answer.
            ping_interval=None,
            open_timeout=OPEN_TIMEOUT,
            close_timeout=min(5.0, self.config.keepalive / 4),
            # Deliveries are small signed JSON; deflate costs more CPU than it saves on
            # the wire, and a relay-side compression bomb is one less thing to fear.
            compression=None,
        ) as ws:
            link = Link(Role.EDGE)
            welcome = await self._handshake(ws, link)
            self.connected.set()
            self._status(
                connected=True,
                session=welcome.session,
                relay_pending=welcome.pending.model_dump(),
                connected_at=_now(),
            )
            log.info("connected to %s, pending %s", self.config.relay_url, welcome.pending)
            await ws.send(link.send(Credit(n=self.config.initial_credit)))
            await self._serve(ws, link, stop)

    async def _handshake(self, ws: ClientConnection, link: Link) -> Welcome:
        challenge = _expect(link.receive(await asyncio.wait_for(ws.recv(), 10)), Challenge)
        if challenge.relay != self.relay.id:
            raise LinkError(
                f"relay identifies as {challenge.relay}, pinned {self.relay.id}",
                code="wrong_relay",
            )
        sig = sign_b64(
            self.identity,
            auth_message(challenge.nonce, challenge.time, self.identity.id, challenge.relay),
        )
        await ws.send(link.send(Auth(identity=self.identity.id, sig=sig)))
        try:
            return _expect(link.receive(await asyncio.wait_for(ws.recv(), 15)), Welcome)
        except websockets.ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd else "closed"
            raise LinkClosed(f"relay refused the link: {reason}") from exc

    async def _serve(self, ws: ClientConnection, link: Link, stop: asyncio.Event) -> None:
        batches = self.backlog = asyncio.Queue()
        in_flight: list[asyncio.Future[Any]] = []
        liveness = Liveness(PingSchedule.of(self.config.keepalive))

        async def read() -> None:
            async for raw in ws:
                liveness.seen()
                frame = link.receive(raw)
                if isinstance(frame, Deliver):
                    batches.put_nowait(frame)

        async def work() -> None:
            carry: Deliver | None = None
            while True:
                # Every frame already queued goes into one commit: one fsync, one status
                # write and one Credit for all of them, so a busy CPU (frames piling up
                # behind a commit) makes the batches larger, not the queue longer.
                items, carry = take_batch(carry or await batches.get(), batches)
                # Shielded: a commit that started must finish before the link closes,
                # or the inbox could be closed under the worker thread.
                processing = asyncio.ensure_future(
                    asyncio.to_thread(self.receiver.process, items)
                )
                in_flight.append(processing)
                outcome = await asyncio.shield(processing)
                in_flight.remove(processing)
                if outcome.acked:
                    await ws.send(link.send(Ack(ids=outcome.acked)))
                for envelope_id, code in outcome.rejected:
                    await ws.send(link.send(Reject(id=envelope_id, code=code)))
                await ws.send(link.send(Credit(n=len(items))))
                self.delivered += outcome.new
                self._status(last_delivery=_now(), delivered_total=self.delivered)
                if outcome.stored:
                    self.on_stored(outcome.stored)
                self.on_event("delivered", {"new": outcome.new, "batch": len(items)})

        tasks = [
            asyncio.create_task(read()),
            asyncio.create_task(work()),
            asyncio.create_task(liveness.watch(ws)),
            asyncio.create_task(stop.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, *in_flight, return_exceptions=True)
        for task in done:
            task.result()
        if not stop.is_set():
            raise LinkClosed(_close_reason(ws))

    def _status(self, **values: Any) -> None:
        with contextlib.suppress(Exception):
            self.inbox.set_status(**values)


def take_batch(first: Deliver,
               backlog: asyncio.Queue[Deliver]) -> tuple[list[DeliverItem], Deliver | None]:
    """The items of ``first`` and of every frame queued behind it in ``backlog``, in
    order, up to ``MAX_BATCH`` (the most one Ack may carry): one commit, one Ack, one
    Credit for as many as were delivered. The frame that would not fit is handed back
    (it begins the next batch), never split: the relay granted credit per item, and each
    item is committed and credited exactly once."""
    items = list(first.items)
    while not backlog.empty():
        more = backlog.get_nowait()
        if len(items) + len(more.items) > MAX_BATCH:
            return items, more
        items.extend(more.items)
    return items, None


def _close_reason(ws: ClientConnection) -> str:
    if ws.close_code is None:
        return "connection ended"
    return f"closed {ws.close_code} {ws.close_reason}".strip()


def network_away(exc: BaseException) -> bool:
    """Whether a failed dial got no answer at all — the network is away (a laptop
    asleep, off its Wi-Fi, between networks; a black-holed route) rather than the relay
    refusing: timed out, no route or interface, or the resolver unreachable."""
    if isinstance(exc, TimeoutError):
        return True
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN  # "temporary failure in name resolution"
    return isinstance(exc, OSError) and exc.errno in _AWAY_ERRNOS


#: The longest ``Retry-After`` an edge honours (a wrong header cannot park it for long).
RETRY_HINT_MAX_SECONDS = 600.0


def retry_hint(exc: BaseException) -> float:
    """The ``Retry-After`` seconds of a handshake the relay refused over HTTP (``503
    relay_full``, ``429 rate_limited``), else 0: the edge waits at least that long, or
    its own jittered backoff if longer."""
    if not isinstance(exc, websockets.exceptions.InvalidStatus):
        return 0.0
    try:
        seconds = float(exc.response.headers.get("Retry-After", "0"))
    except ValueError:  # an HTTP date, or garbage: the backoff alone
        return 0.0
    return min(max(seconds, 0.0), RETRY_HINT_MAX_SECONDS) if seconds == seconds else 0.0


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _expect(frame: Frame, kind: type[F]) -> F:
    """The handshake frame the link needs next. An ``error`` frame instead is the relay
    refusing this link (``account_disabled``, ``edges_exceeded``, ``store_unavailable``…):
    a link that is down, dialled again with backoff — never a reason for the daemon to
    stop."""
    if isinstance(frame, Error):
        raise LinkClosed(f"relay refused the link: {frame.code}: {frame.message}")
    if not isinstance(frame, kind):
        raise LinkError(f"expected {kind.__name__.lower()}, got {frame.type}",
                        code="unexpected_frame")
    return frame
