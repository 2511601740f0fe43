"""The JetStream side of the edge links (``relay.session`` owns the sockets): the pull
consumers an identity drains through, and the one place per relay process where the
core notifications for links arrive. The relay's second ``nats`` adapter: ``relay.store``
is the stream, the KV buckets and publishing; this module is the consumer side.

**An idle edge costs no JetStream consumer.** Consumers exist only while an identity has
work. A link that connects reads its pending counts (one ``STREAM.INFO`` with a subject
filter, which the ``welcome`` needs anyway); if nothing is pending it creates nothing and
waits. When something arrives (``ms.ntf.<id>``, published after every stored interrupt)
the session *opens* its queue: three pull consumers, one per priority (memory storage,
the stream's replicas, named ``edge_<id>_<priority>``), and drains them; once nothing is
left to take, nothing is in flight, no nak delay is running, a second has passed and the
identity's subjects hold no message (checked with the same ``STREAM.INFO``, so an ack
still on its way keeps them), it *closes* the queue: the consumers are deleted. A link
that ends deletes them too (its in-flight deliveries are released at once), except when
it was taken over: the new session owns consumers of the same names by then. The last
ack of each priority in an ack frame is confirmed by the consumer (``confirm``), so the
acks an edge sends just before it closes are applied before the consumers go. ``inactive_threshold`` (``consumer_idle``) stays as
the net for a relay process that died with consumers open.

Guarantees, as before: a session that connects while anything is pending deletes and
recreates the consumers (``open(release=True)``), which releases everything an older
session had in flight, in any relay process, for immediate redelivery; ``now`` is taken
until empty, then ``next``, then ``later`` (drain order), FIFO within a class is the
stream order; credit, nak delays and ``ack_wait`` are JetStream's, on those consumers.

**One subscription per process.** ``LinkHub`` subscribes once to ``ms.ntf.*`` (new
interrupts) and once to ``ms.ctl.*`` (takeovers, and the admin API closing an account's
links), and dispatches each message to the local sessions of that identity (a dict), so a
link costs no NATS subscription while it is idle. It also forwards NATS reconnects to
every session (notifications may have been lost meanwhile; memory consumers may be gone).
And it is the one safety net for a notification lost some other way (the producer's
relay process cut off from NATS between its write and the notification): every
``recheck_seconds`` (jittered) one ``STREAM.INFO`` lists the identities with anything
stored, and their idle local sessions are woken, so 10,000 idle links cost one request
per process per round instead of a timer and a request each.

**JetStream API throttle.** Every JetStream API request of the links (stream info,
consumer create and delete) waits for one of ``API_CONCURRENCY`` slots of the process's
``LinkHub.api`` semaphore: nats-server drops API requests beyond its queue limit
(``request_queue_limit``), and a reconnect storm of thousands of edges would otherwise
send them all at once. Edges wait for a slot instead of failing. Pulls
(``CONSUMER.MSG.NEXT``) and acks are not API requests (the consumer answers them) and
take no slot. Concurrent pending counts of one identity share one request
(``Store.pending``, ``relay.coalesce``).

``stream_leader`` is ``/readyz``'s one cheap question (``relay.readiness``): does the
interrupt stream have a leader right now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import count
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from relay.errors import ConsumerGone, StoreUnavailable
from relay.store import STREAM, Store, interrupt_subject
from shared.envelope import PRIORITIES, Priority
from shared.tokens import check_identity

log = logging.getLogger("mailslot.relay.drain")

#: JetStream API requests the links of one relay process may have in flight at once.
#: nats-server queues up to ``request_queue_limit`` (10,000 by default) for all its
#: clients together and drops the rest; a few dozen in flight keep the server busy
#: without approaching that, even with several relay processes in a storm.
API_CONCURRENCY = 32
#: Safety net only (see the module doc): how often, at most, a relay process looks for
#: idle links with something stored behind their back (jittered, half to whole).
RECHECK_SECONDS = 600.0
_REQUEST_TIMEOUT = 5.0
NOTIFY_WILDCARD = "ms.ntf.*"
CONTROL_WILDCARD = "ms.ctl.*"


async def stream_leader(store: Store, timeout: float) -> str:
    """The server leading the interrupt stream, from one ``STREAM.INFO`` (no subject
    state: cheap) answered within ``timeout``; raise ``StoreUnavailable`` if there is
    none (no quorum, an election, NATS away). A single server leads it itself."""
    try:
        reply = await store.nc.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=timeout)
        doc = json.loads(reply.data)
    except (TimeoutError, nats.errors.Error, ValueError) as exc:
        raise StoreUnavailable(f"the interrupt stream did not answer: {exc!r}") from exc
    if not isinstance(doc, dict) or "error" in doc:
        error = doc.get("error") if isinstance(doc, dict) else doc
        raise StoreUnavailable(f"the interrupt stream is not available: {error}")
    leader = (doc.get("cluster") or {}).get("leader")
    if not leader:
        raise StoreUnavailable("the interrupt stream has no leader")
    return str(leader)


def consumer_name(identity: str, priority: Priority) -> str:
    return f"edge_{check_identity(identity)}_{priority.value}"


@dataclass(frozen=True)
class PulledInterrupt:
    """One interrupt pulled from JetStream for a connected edge, in flight until the
    session acks, naks or terms it (the edge's own ``Delivery`` is a wake to a runtime)."""

    id: str
    priority: Priority
    data: bytes
    msg: Msg

    async def ack(self, confirm: bool = False) -> None:
        await self._settle(b"+ACK", confirm)

    async def nak(self, delay: float = 0) -> None:
        await _quietly(self.msg.nak(delay=delay or None))

    async def term(self) -> None:
        await self._settle(b"+TERM", True)

    async def _settle(self, verdict: bytes, confirm: bool) -> None:
        """Acks are fire-and-forget by design: if one is lost the interrupt is redelivered
        and the edge's idempotent inbox absorbs it. With ``confirm`` it waits until the
        consumer has applied it, and with it every earlier ack it was sent (one queue
        per consumer): a session deletes its consumers right after, and an ack the
        consumer had not applied yet would be lost with it (redelivered, not lost)."""
        client = self.msg._client
        if confirm:
            with contextlib.suppress(TimeoutError, nats.errors.Error):
                await client.request(self.msg.reply, verdict, timeout=_REQUEST_TIMEOUT)
        else:
            await _quietly(client.publish(self.msg.reply, verdict))


async def _quietly(op: Awaitable[Any]) -> None:
    with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
        await op


class LinkListener(Protocol):
    """What ``LinkHub`` tells a session (``relay.session.LinkSession``)."""

    def notify(self) -> None: ...  # something new is pending for its identity

    def replaced(self) -> None: ...  # another session (or the admin API) takes over

    def reconnected(self) -> None: ...  # the NATS connection came back


class LinkHub:
    """The links of one relay process: one ``ms.ntf.*`` and one ``ms.ctl.*``
    subscription, dispatched to the sessions registered per identity, and the JetStream
    API throttle (``api``). ``start`` after the store is set up; ``stop`` before it
    closes."""

    def __init__(self, store: Store, api_concurrency: int = API_CONCURRENCY,
                 recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.store = store
        #: Held around every JetStream API request of the links (see the module doc).
        self.api = asyncio.Semaphore(api_concurrency)
        self.recheck_seconds = recheck_seconds
        self._links: dict[str, dict[str, LinkListener]] = {}
        self._subs: list[Any] = []
        self._unregister: Callable[[], None] | None = None
        self._recheck: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._subs.append(await self.store.subscribe(NOTIFY_WILDCARD, self._on_notify))
        self._subs.append(await self.store.subscribe(CONTROL_WILDCARD, self._on_control))
        self._unregister = self.store.on_reconnect(self._on_reconnect)
        self._recheck = asyncio.create_task(self._recheck_loop(), name="links-recheck")

    async def stop(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recheck
            self._recheck = None
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        if self._unregister is not None:
            self._unregister()
            self._unregister = None

    @property
    def sessions(self) -> int:
        """Sessions registered on this process (authenticated links)."""
        return sum(len(sessions) for sessions in self._links.values())

    def register(self, identity: str, session: str, listener: LinkListener) -> Callable[[], None]:
        """Dispatch ``identity``'s notifications and takeovers to ``listener`` until the
        returned function is called. Any other local session of ``identity`` is replaced
        at once (the control message, for other processes, is the caller's to publish)."""
        sessions = self._links.setdefault(identity, {})
        for older in list(sessions.values()):
            older.replaced()
        sessions[session] = listener

        def unregister() -> None:
            mine = self._links.get(identity)
            if mine is not None and mine.get(session) is listener:
                del mine[session]
                if not mine:
                    del self._links[identity]

        return unregister

    def queue(self, identity: str) -> IdentityQueue:
        return IdentityQueue(self, check_identity(identity))

    async def _on_notify(self, msg: Msg) -> None:
        for listener in list(self._links.get(msg.subject.rpartition(".")[2], {}).values()):
            listener.notify()

    async def _on_control(self, msg: Msg) -> None:
        """``ms.ctl.<id>`` carries the session id of the new link (or ``admin``): every
        local session of that identity but the one named ends."""
        sessions = self._links.get(msg.subject.rpartition(".")[2], {})
        keep = msg.data.decode(errors="replace")
        for session, listener in list(sessions.items()):
            if session != keep:
                listener.replaced()

    def _on_reconnect(self) -> None:
        for sessions in list(self._links.values()):
            for listener in list(sessions.values()):
                listener.reconnected()

    async def _recheck_loop(self) -> None:
        """The safety net for lost notifications (see the module doc): a timer, one
        request a round, and a wake for the local sessions of the identities it names
        (each of every identity if the server's list was partial: they read their own
        counts, through the API throttle)."""
        while True:
            await asyncio.sleep(self.recheck_seconds * random.uniform(0.5, 1.0))
            try:
                await self.recheck()
            except StoreUnavailable as exc:
                log.info("links' recheck skipped: %s", exc)  # the next round, or a reconnect

    async def recheck(self) -> None:
        """One round of the recheck: wake the local sessions of every identity with
        anything stored (idle ones open their queue; draining ones just pull)."""
        if not self._links:
            return
        async with self.api:
            found = await self.store.pending_identities()
        if found is None:
            self._on_reconnect()
            return
        for identity in found & self._links.keys():
            for listener in list(self._links.get(identity, {}).values()):
                listener.notify()


class IdentityQueue:
    """The pull consumers of one connected identity, only while it has work.

    ``open`` creates the three (``release=True`` deletes them first, which releases every
    in-flight delivery of a previous connection at once: how a takeover redelivers
    immediately); ``take`` pulls with ``no_wait`` so an empty class answers at once;
    ``shut`` deletes them (``active`` is False again)."""

    def __init__(self, hub: LinkHub, identity: str) -> None:
        self.hub = hub
        self.store = hub.store
        self.identity = identity
        self.active = False
        self._inbox = ""
        self._sub: Any = None
        self._requests = count()

    async def pending(self) -> dict[str, int]:
        """Interrupts stored for this identity per priority (in flight included)."""
        async with self.hub.api:
            return await self.store.pending(self.identity)

    async def open(self, release: bool) -> None:
        js = self.store.js
        try:
            async with self.hub.api:
                for priority in PRIORITIES:
                    name = consumer_name(self.identity, priority)
                    if release:
                        with contextlib.suppress(nats.js.errors.NotFoundError):
                            await js.delete_consumer(STREAM, name)
                    try:
                        await js.add_consumer(STREAM, self._config(name, priority))
                    except nats.js.errors.BadRequestError:
                        # One of that name with another config (a relay process with
                        # other settings left it): replace it.
                        with contextlib.suppress(nats.js.errors.NotFoundError):
                            await js.delete_consumer(STREAM, name)
                        await js.add_consumer(STREAM, self._config(name, priority))
            # A fresh reply subscription per open: nothing from a request abandoned
            # before it can arrive in it.
            await self._unsubscribe()
            self._inbox = self.store.nc.new_inbox()
            self._sub = await self.store.nc.subscribe(self._inbox + ".*")
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"cannot create consumers: {exc}") from exc
        self.active = True

    def _config(self, name: str, priority: Priority) -> api.ConsumerConfig:
        settings = self.store.settings
        return api.ConsumerConfig(
            name=name,
            filter_subject=interrupt_subject(self.identity, priority),
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait,
            max_deliver=-1,
            max_ack_pending=-1,
            inactive_threshold=settings.consumer_idle,
            mem_storage=True,
            # The stream's: a work-queue stream refuses consumers with other replicas
            # (on a cluster an R3 stream has R3 consumers; in memory all the same).
            num_replicas=0,
        )

    async def shut(self) -> None:
        """Delete the consumers (what they had in flight is released at once)."""
        self.active = False
        await self._unsubscribe()
        try:
            async with self.hub.api:
                for priority in PRIORITIES:
                    with contextlib.suppress(nats.js.errors.NotFoundError):
                        await self.store.js.delete_consumer(
                            STREAM, consumer_name(self.identity, priority))
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            # Left to JetStream's inactive_threshold; nothing is lost either way.
            log.info("cannot delete the consumers of %s: %s", self.identity, exc)

    async def take(self, limit: int) -> list[PulledInterrupt]:
        """Up to ``limit`` deliveries from the highest non-empty priority class."""
        for priority in PRIORITIES:
            batch = await self._pull(priority, limit)
            if batch:
                return batch
        return []

    async def _pull(self, priority: Priority, limit: int) -> list[PulledInterrupt]:
        if self._sub is None:
            raise ConsumerGone("the queue is not open")
        reply = f"{self._inbox}.{next(self._requests)}"
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{consumer_name(self.identity, priority)}"
        request = json.dumps({"batch": limit, "no_wait": True}).encode()
        out: list[PulledInterrupt] = []
        try:
            await self.store.nc.publish(subject, request, reply=reply)
            while True:
                msg = await self._sub.next_msg(timeout=_REQUEST_TIMEOUT)
                status = (msg.headers or {}).get("Status")
                if status is not None and msg.subject != reply:
                    continue  # the end of an abandoned request
                if status is None:
                    msg_id = (msg.headers or {}).get("Nats-Msg-Id", "").rpartition(".")[2]
                    out.append(PulledInterrupt(msg_id, priority, msg.data, msg))
                    if len(out) >= limit:
                        return out
                elif status in ("404", "408"):
                    return out
                elif status in ("503", "409"):
                    raise ConsumerGone(status)
                else:
                    raise StoreUnavailable(f"pull failed with status {status}")
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            if out:
                return out
            raise ConsumerGone("pull timed out") from exc
        except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError) as exc:
            raise StoreUnavailable("NATS connection lost") from exc

    async def close(self) -> None:
        """Forget the reply subscription; the consumers stay (see ``shut``)."""
        await self._unsubscribe()
        self.active = False

    async def _unsubscribe(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
