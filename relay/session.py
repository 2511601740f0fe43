"""One edge's WebSocket link at the relay: authenticate, take over, drain, ack.

The rules of the link itself (which frame when, credit) live in ``shared.link``; this
module owns the socket and JetStream side. Lifecycle of one session:

1. send ``challenge``; the edge must answer ``auth`` within the auth timeout with a
   signature over this connection's fresh nonce (a replayed answer never matches);
2. announce a takeover on ``ms.ctl.<id>`` (any older session, in any relay process,
   closes with 4409) and recreate the identity's consumers, which releases everything the
   old session had in flight for immediate redelivery;
3. ``welcome`` with pending counts, then two loops: the *pump* sends deliveries while the
   edge has credit, highest priority first, and sleeps on an event (new interrupt, new
   credit, NATS reconnect) when there is nothing to send; the *reader* applies
   ``credit``/``ack``/``nak``/``reject``;
4. on any exit, every delivery still in flight is nak'ed for immediate redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from relay.errors import ConsumerGone, RelayError, SessionClosed, StoreUnavailable
from relay.metrics import metrics_of
from relay.registry import Registry
from relay.store import IdentityQueue, PulledInterrupt, Store, control_subject, notify_subject
from shared.auth import auth_message, check_b64_signature
from shared.encoding import b64e
from shared.errors import RemoteProtocolError
from shared.frames import (
    MAX_BATCH,
    RELAY_FRAME_MAX_BYTES,
    Ack,
    Auth,
    Challenge,
    Credit,
    Error,
    Nak,
    Pending,
    Reject,
    Welcome,
)
from shared.identity import Identity
from shared.link import Link, Role
from shared.tokens import check_identity

log = logging.getLogger("mailslot.relay.session")

#: Safety net only: the pump re-checks JetStream this often even without a wake-up, in
#: case a notification was lost while NATS reconnected. Not a polling loop.
RECHECK_SECONDS = 60.0
CLOSE_REPLACED = 4409


class LinkSession:
    def __init__(
        self, ws: WebSocket, store: Store, registry: Registry, relay: Identity,
        auth_timeout: float = 10.0,
    ) -> None:
        self.ws = ws
        self.auth_timeout = auth_timeout
        self.store = store
        self.registry = registry
        self.relay = relay
        self.link = Link(Role.RELAY)
        self.session_id = b64e(os.urandom(12))
        self.identity = ""
        self.inflight: dict[str, PulledInterrupt] = {}
        self.wake = asyncio.Event()
        self.credit_event = asyncio.Event()
        self.replaced = asyncio.Event()
        #: Set when the session ends. The pump checks it as well as being cancelled: a
        #: cancellation can be swallowed inside nats-py's ``next_msg``.
        self.closing = asyncio.Event()
        self.stale = False
        self._subs: list[Any] = []
        self._queue: IdentityQueue | None = None
        #: Where the link's events are counted (``relay.metrics``); None: nowhere.
        self.metrics = metrics_of(store)
        self._counted = False

    async def run(self) -> None:
        unregister = self.store.on_reconnect(self._on_reconnect)
        try:
            await self._authenticate()
            await self._open()
            await self._serve()
        except SessionClosed as closed:
            await self._close(closed.close_code, closed.code)
        except (RemoteProtocolError, RelayError) as exc:
            await self._send_error(exc.code, exc.message)
            await self._close(exc.close_code, exc.code)
        except WebSocketDisconnect:
            pass
        except Exception:
            # A bug, not input: logged once, and the edge told so (1011, "internal error")
            # rather than left with a dropped socket; its deliveries are released below.
            log.exception("link of %s (session %s) failed", self.identity or "?",
                          self.session_id)
            await self._send_error("internal", "the relay failed to serve this link")
            await self._close(1011, "internal")
        finally:
            unregister()
            await self._release()

    # -- phases ---------------------------------------------------------------------------

    async def _authenticate(self) -> None:
        nonce, now = b64e(os.urandom(32)), int(time.time())
        await self.ws.send_text(
            self.link.send(Challenge(nonce=nonce, time=now, relay=self.relay.id))
        )
        try:
            frame = self.link.receive(await asyncio.wait_for(self._receive(), self.auth_timeout))
        except TimeoutError as exc:
            raise SessionClosed(4408, "auth_timeout") from exc
        if not isinstance(frame, Auth):  # the edge gave up (an ``error`` frame)
            raise SessionClosed(4400, "auth_expected")
        identity = check_identity(frame.identity)
        found = await self.registry.identity(identity)
        if found is None:
            raise SessionClosed(4401, "unknown_identity")
        try:
            check_b64_signature(
                found[0].verifier(), frame.sig, auth_message(nonce, now, identity, self.relay.id)
            )
        except RemoteProtocolError as exc:
            raise SessionClosed(4401, "bad_auth") from exc
        await self.registry.require_active_account(found[1])  # 4403 account_disabled
        self.identity = identity

    async def _open(self) -> None:
        ctl = control_subject(self.identity)

        async def on_control(msg: Any) -> None:
            if msg.data.decode() != self.session_id:
                self.replaced.set()

        async def on_notify(_msg: Any) -> None:
            self.wake.set()

        self._subs.append(await self.store.subscribe(ctl, on_control))
        await self.store.publish_core(ctl, self.session_id.encode())
        self._subs.append(await self.store.subscribe(notify_subject(self.identity), on_notify))
        self._queue = self.store.queue(self.identity)
        await self._queue.reset()
        pending = await self.store.pending(self.identity)
        await self.ws.send_text(
            self.link.send(Welcome(session=self.session_id, pending=Pending(**pending)))
        )
        if self.metrics is not None:
            self.metrics.edge_connected()
            self._counted = True
        log.info(
            "edge %s connected (session %s, pending %s)", self.identity, self.session_id, pending
        )

    async def _serve(self) -> None:
        tasks = [
            asyncio.create_task(self._read_loop()),
            asyncio.create_task(self._pump()),
            asyncio.create_task(self.replaced.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.closing.set()
            self.wake.set()
            self.credit_event.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.replaced.is_set():
            raise SessionClosed(CLOSE_REPLACED, "replaced")
        for task in done:
            task.result()  # re-raise what ended the session

    # -- loops ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            frame = self.link.receive(await self._receive())
            if isinstance(frame, Credit):
                self.credit_event.set()
            elif isinstance(frame, Ack):
                for envelope_id in frame.ids:
                    delivery = self.inflight.pop(envelope_id, None)
                    if delivery is not None:
                        await delivery.ack()
                        if self.metrics is not None:
                            self.metrics.acks.inc()
            elif isinstance(frame, Nak):
                delivery = self.inflight.pop(frame.id, None)
                if delivery is not None:
                    await delivery.nak(frame.delay)
                    if self.metrics is not None:
                        self.metrics.naks.inc()
                    # JetStream has it back (now, or after the delay): pull again then.
                    asyncio.get_running_loop().call_later(frame.delay or 0.0, self.wake.set)
            elif isinstance(frame, Reject):
                delivery = self.inflight.pop(frame.id, None)
                if delivery is not None:
                    log.warning("edge %s rejected %s: %s", self.identity, frame.id, frame.code)
                    await delivery.term()
                    if self.metrics is not None:
                        self.metrics.rejects.inc()
            elif isinstance(frame, Error):
                log.info("edge %s closed the link: %s", self.identity, frame.code)
                raise SessionClosed(1000, "edge_error")

    async def _pump(self) -> None:
        assert self._queue is not None
        failures = 0
        while not self.closing.is_set():
            if self.link.credit <= 0:
                self.credit_event.clear()
                await self.credit_event.wait()
                continue
            self.wake.clear()
            try:
                if self.stale:
                    self.stale = False
                    await self._queue.reset()
                batch = await self._queue.take(min(self.link.credit, MAX_BATCH))
                failures = 0
            except (ConsumerGone, StoreUnavailable) as exc:
                failures += 1
                log.info("queue of %s unavailable (%s); rebuilding", self.identity, exc)
                self.stale = True
                await self._wait_wake(min(0.05 * 2**failures, 5.0))
                continue
            for delivery in batch:
                self.inflight[delivery.id] = delivery  # released (nak) if we stop now
            if self.closing.is_set():
                return
            if not batch:
                # Unacked deliveries come back after ack_wait without any notification.
                recheck = self.store.settings.ack_wait if self.inflight else RECHECK_SECONDS
                await self._wait_wake(recheck)
                continue
            for chunk in _pack(batch):
                await self.ws.send_text(self.link.send_deliver([d.data for d in chunk]))
                if self.metrics is not None:
                    for delivery in chunk:
                        self.metrics.delivered(delivery.priority, _delivered_before(delivery))

    async def _wait_wake(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout)

    def _on_reconnect(self) -> None:
        # Memory consumers do not survive a server restart and pull subscriptions have
        # been seen not to recover (nats.py #504): rebuild on every reconnect.
        self.stale = True
        self.wake.set()

    # -- plumbing -------------------------------------------------------------------------

    async def _receive(self) -> str | bytes:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        return message.get("text") or message.get("bytes") or b""

    async def _send_error(self, code: str, message: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.send_text(
                json.dumps(Error(code=code, message=message[:1000]).model_dump())
            )

    async def _close(self, code: int, reason: str) -> None:
        self.link.close()
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, reason=reason)

    async def _release(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if not self.replaced.is_set():
            for delivery in self.inflight.values():
                await delivery.nak()
        self.inflight.clear()
        if self._queue is not None:
            await self._queue.close()
        if self._counted and self.metrics is not None:
            self.metrics.edge_disconnected()
            self._counted = False
        if self.identity:
            log.info("edge %s disconnected (session %s)", self.identity, self.session_id)


def _delivered_before(delivery: PulledInterrupt) -> bool:
    """Whether JetStream delivered this interrupt before on the same consumer (after a
    nak or ``ack_wait``). A takeover recreates the consumers, which count afresh."""
    try:
        return int(delivery.msg.metadata.num_delivered or 1) > 1
    except Exception:  # not a JetStream delivery (no ack subject to read it from)
        return False


def _pack(batch: list[PulledInterrupt]) -> list[list[PulledInterrupt]]:
    """Split a batch so that no deliver frame exceeds the frame cap."""
    chunks: list[list[PulledInterrupt]] = [[]]
    size = 0
    for delivery in batch:
        if chunks[-1] and size + len(delivery.data) + 64 > RELAY_FRAME_MAX_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(delivery)
        size += len(delivery.data) + 1
    return chunks
