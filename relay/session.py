"""One edge's WebSocket link at the relay: authenticate, take over, drain, ack.

The rules of the link itself (which frame when, credit) live in ``shared.link``; the
JetStream side (consumers only while there is work, the one subscription per process for
notifications and takeovers, the API throttle) in ``relay.drain``; this module owns the
socket. Lifecycle of one session:

1. send ``challenge``; the edge must answer ``auth`` within the auth timeout with a
   signature over this connection's fresh nonce (a replayed answer never matches). The
   handshake holds one of the process's handshake slots (``relay.admission``) from the
   upgrade to the ``welcome``, and the deadline runs from the challenge, i.e. from when
   the relay works on this handshake: a relay busy with a storm turns the excess away
   with ``503 relay_full`` at once instead of accepting them all and timing them out;
2. register with the process's ``LinkHub`` (an older local session of the identity is
   replaced at once) and announce a takeover on ``ms.ctl.<id>`` (an older session in
   any other relay process closes with 4409); read the pending counts and, if anything
   is pending, recreate the identity's consumers, which releases everything the old
   session had in flight for immediate redelivery. With nothing pending there are no
   consumers: an idle link costs none;
3. ``welcome`` with pending counts, then two loops: the *pump* opens the consumers when
   a notification (or a recheck) says there is work, sends deliveries while the edge has
   credit, highest priority first, sleeps on an event (new interrupt, new credit, ack,
   NATS reconnect) when there is nothing to send, and deletes the consumers again once
   the identity's queue is empty and nothing is in flight; the *reader* applies
   ``credit``/``ack``/``nak``/``reject``;
4. on any exit, every delivery still in flight is nak'ed and the consumers are deleted,
   for immediate redelivery (not after a takeover: the new session owns them then).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from relay.connections import LinkQuotas
from relay.drain import IdentityQueue, LinkHub, PulledInterrupt
from relay.errors import ConsumerGone, RelayError, SessionClosed, StoreUnavailable
from relay.metrics import metrics_of
from relay.registry import Registry
from relay.store import control_subject
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

#: While draining, the pump re-pulls this often without a wake-up.
RECHECK_SECONDS = 60.0
#: How long an emptied queue keeps its consumers before they are deleted, so that an
#: identity receiving a steady trickle does not create and delete them per interrupt.
LINGER_SECONDS = 1.0
CLOSE_REPLACED = 4409
#: Tries at reading the pending counts (and opening the consumers) when a link opens.
OPEN_ATTEMPTS = 3


class LinkSession:
    def __init__(
        self, ws: WebSocket, hub: LinkHub, registry: Registry, relay: Identity,
        auth_timeout: float = 10.0, quotas: LinkQuotas | None = None,
        welcomed: Callable[[], None] | None = None,
    ) -> None:
        self.ws = ws
        #: Called once the ``welcome`` is sent: the handshake is over (``relay.admission``).
        self.welcomed = welcomed
        self.auth_timeout = auth_timeout
        #: The plans' edge cap and byte ledger (``relay.connections``); None: not applied.
        self.quotas = quotas
        self.hub = hub
        self.store = hub.store
        self.registry = registry
        self.relay = relay
        self.link = Link(Role.RELAY)
        self.session_id = b64e(os.urandom(12))
        self.identity = ""
        self.inflight: dict[str, PulledInterrupt] = {}
        #: Set on anything the pump may act on: credit, a notification, an ack that
        #: empties the in-flight set, a nak's delay over, a reconnect, the end.
        self.wake = asyncio.Event()
        #: Something may be there to take (a notification, a nak, a full batch last time,
        #: a timeout): the pump pulls only then, so an ack costs no pull.
        self.notified = False
        self._replaced: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: True when the session ends. The pump checks it as well as being cancelled: a
        #: cancellation can be swallowed inside nats-py's ``next_msg``.
        self.closing = False
        #: The consumers must be recreated (NATS reconnected, or a pull failed).
        self.stale = False
        #: With no consumers open: read the pending counts before the next wait (NATS
        #: reconnected, or the idle recheck came due): a notification may have been lost.
        self.recheck = False
        #: Until then (monotonic) a nak'ed delivery waits in JetStream for its delay.
        self._held_until = 0.0
        #: Since when (monotonic) the open queue had nothing to take and nothing in flight.
        self._empty_since: float | None = None
        self._unregister: Callable[[], None] | None = None
        self._queue: IdentityQueue | None = None
        #: Where the link's events are counted (``relay.metrics``); None: nowhere.
        self.metrics = metrics_of(self.store)
        self._counted = False

    async def run(self) -> None:
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
            await self._release()

    # -- what the hub tells us (relay.drain.LinkListener) --------------------------------

    def notify(self) -> None:
        self.notified = True
        self.wake.set()

    def replaced(self) -> None:
        if not self._replaced.done():
            self._replaced.set_result(None)

    def reconnected(self) -> None:
        # Memory consumers do not survive a server restart and pull subscriptions have
        # been seen not to recover (nats.py #504): rebuild open ones; an idle link
        # re-reads its counts, since a notification may have been lost meanwhile.
        if self._queue is not None and self._queue.active:
            self.stale = True
        else:
            self.recheck = True
        self.wake.set()

    # -- phases ---------------------------------------------------------------------------

    async def _authenticate(self) -> None:
        nonce, now = b64e(os.urandom(32)), int(time.time())
        await self.ws.send_text(
            self.link.send(Challenge(nonce=nonce, time=now, relay=self.relay.id))
        )
        try:
            async with asyncio.timeout(self.auth_timeout):  # no task per handshake
                data = await self._receive()
        except TimeoutError as exc:
            raise SessionClosed(4408, "auth_timeout") from exc
        frame = self.link.receive(data)
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
        if self.quotas is not None:  # 4429 edges_exceeded
            await self.quotas.admit(self.session_id, identity, found[1])
        self.identity = identity

    async def _open(self) -> None:
        self._unregister = self.hub.register(self.identity, self.session_id, self)
        await self.store.publish_core(control_subject(self.identity), self.session_id.encode())
        self._queue = self.hub.queue(self.identity)
        for attempt in range(OPEN_ATTEMPTS):
            try:
                pending = await self._queue.pending()
                if any(pending.values()):
                    # Also what releases an older session's deliveries (they count as
                    # pending).
                    await self._queue.open(release=True)
                    self.notified = True
                break
            except StoreUnavailable:
                # A JetStream request timed out (a busy server in a reconnect storm):
                # cheaper to ask again than to send the edge away to reconnect.
                if attempt == OPEN_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
        await self.ws.send_text(
            self.link.send(Welcome(session=self.session_id, pending=Pending(**pending)))
        )
        if self.welcomed is not None:
            self.welcomed()
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
        ]
        try:
            waited: list[asyncio.Future[None]] = [*tasks, self._replaced]
            done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.closing = True
            self.wake.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._replaced.done():
            raise SessionClosed(CLOSE_REPLACED, "replaced")
        for ended in done:
            ended.result()  # re-raise what ended the session

    # -- loops ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            frame = self.link.receive(await self._receive())
            if isinstance(frame, Credit):
                self.wake.set()
            elif isinstance(frame, Ack):
                confirm = _last_per_priority(frame.ids, self.inflight)
                for envelope_id in frame.ids:
                    delivery = self.inflight.pop(envelope_id, None)
                    if delivery is not None:
                        await delivery.ack(confirm=envelope_id in confirm)
                        if self.quotas is not None:
                            await self.quotas.settled(self.session_id, len(delivery.data))
                        if self.metrics is not None:
                            self.metrics.acks.inc()
                if not self.inflight:
                    self.wake.set()  # the pump may close the queue now
            elif isinstance(frame, Nak):
                delivery = self.inflight.pop(frame.id, None)
                if delivery is not None:
                    await delivery.nak(frame.delay)
                    if self.metrics is not None:
                        self.metrics.naks.inc()
                    # JetStream has it back (now, or after the delay): pull again then.
                    delay = frame.delay or 0.0
                    self._held_until = max(self._held_until, time.monotonic() + delay)
                    asyncio.get_running_loop().call_later(delay, self.notify)
            elif isinstance(frame, Reject):
                delivery = self.inflight.pop(frame.id, None)
                if delivery is not None:
                    log.warning("edge %s rejected %s: %s", self.identity, frame.id, frame.code)
                    await delivery.term()
                    if self.quotas is not None:
                        await self.quotas.settled(self.session_id, len(delivery.data))
                    if self.metrics is not None:
                        self.metrics.rejects.inc()
                if not self.inflight:
                    self.wake.set()
            elif isinstance(frame, Error):
                log.info("edge %s closed the link: %s", self.identity, frame.code)
                raise SessionClosed(1000, "edge_error")

    async def _pump(self) -> None:
        assert self._queue is not None
        queue = self._queue
        failures = 0
        while not self.closing:
            self.wake.clear()
            try:
                if self.link.credit > 0 and await self._ready_to_take(queue):
                    batch = await queue.take(min(self.link.credit, MAX_BATCH))
                    failures = 0
                    if batch:
                        self.notified = True  # there may be more
                        self._empty_since = None
                        for delivery in batch:
                            self.inflight[delivery.id] = delivery  # released if we stop
                        if self.closing:
                            return
                        await self._send(batch)
                        continue
                timeout = await self._rest(queue)
            except (ConsumerGone, StoreUnavailable) as exc:
                failures += 1
                log.info("queue of %s unavailable (%s); rebuilding", self.identity, exc)
                if queue.active:
                    self.stale = True
                    self.notified = True
                else:
                    self.recheck = True  # whatever woke us: read the counts again
                await self._wait_wake(min(0.05 * 2**failures, 5.0))
                continue
            if timeout is not None and not await self._wait_wake(timeout):
                self.notified = True  # a deadline of an open queue: pull again

    async def _ready_to_take(self, queue: IdentityQueue) -> bool:
        """Whether to pull now; opens the consumers first if there is work for them."""
        if queue.active:
            if self.stale:
                self.stale = False
                await queue.open(release=True)
                self.notified = True
        elif self.notified or self.recheck:
            if not self.notified:
                self.recheck = False
                if not any((await queue.pending()).values()):
                    return False
            self.recheck = False
            await queue.open(release=self.stale)
            self.stale = False
            self.notified = True
            self._empty_since = None
        if not self.notified:
            return False
        self.notified = False  # a notification during the pull sets it again
        return True

    async def _rest(self, queue: IdentityQueue) -> float | None:
        """Nothing to send now: how long to wait (None: look again at once; inf: until
        woken). Closes the
        queue once it is empty for good: nothing in flight, no nak delay running, empty
        for ``LINGER_SECONDS``, and no message left under the identity's subjects (an ack
        still on its way to JetStream keeps the consumers)."""
        now = time.monotonic()
        if not queue.active:
            # Idle: woken by a notification, a reconnect or the hub's recheck
            # (``LinkHub``: one request per process for every idle link), no timer.
            return math.inf
        if self.inflight:
            # Unacked deliveries come back after ack_wait without any notification.
            self._empty_since = None
            return self.store.settings.ack_wait
        if self._held_until > now:
            return self._held_until - now
        if self._empty_since is None:
            self._empty_since = now
        linger = self._empty_since + LINGER_SECONDS - now
        if linger > 0:
            return linger
        self._empty_since = None
        if any((await queue.pending()).values()):
            # In flight elsewhere (an ack on its way, a delivery JetStream holds back) or
            # waiting for credit: keep the consumers and look again later.
            return min(RECHECK_SECONDS, self.store.settings.ack_wait)
        if self.inflight or self.closing:
            return None
        await queue.shut()
        return None

    async def _send(self, batch: list[PulledInterrupt]) -> None:
        for chunk in _pack(batch):
            await self.ws.send_text(self.link.send_deliver([d.data for d in chunk]))
            if self.metrics is not None:
                for delivery in chunk:
                    self.metrics.delivered(delivery.priority, _delivered_before(delivery))

    async def _wait_wake(self, timeout: float) -> bool:
        """Wait for the wake event up to ``timeout``; True if it was set."""
        with contextlib.suppress(TimeoutError):
            # No task per wait, unlike wait_for; inf: no deadline, no timer at all.
            async with asyncio.timeout(None if timeout == math.inf else timeout):
                await self.wake.wait()
            return True
        return False

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
        if self._unregister is not None:
            self._unregister()
            self._unregister = None
        replaced = self._replaced.done()
        if not replaced:
            for delivery in self.inflight.values():
                await delivery.nak()
        self.inflight.clear()
        if self._queue is not None:
            if self._queue.active and not replaced:
                await self._queue.shut()  # releases at once what JetStream has in flight
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


def _last_per_priority(ids: list[str], inflight: dict[str, PulledInterrupt]) -> set[str]:
    """The ids of an ack frame whose ack is confirmed: the last in flight of each
    priority (one consumer each). Once the consumer confirms it, it has applied every
    earlier ack of the frame too, so the session may delete its consumers right after
    (the edge acks and then closes: the acks must not be lost with the consumers)."""
    last: dict[str, str] = {}
    for envelope_id in ids:
        delivery = inflight.get(envelope_id)
        if delivery is not None:
            last[delivery.priority.value] = envelope_id
    return set(last.values())


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
