"""The relay's one adapter to NATS JetStream. Nothing else in the relay imports ``nats``.

Layout in JetStream:

* stream ``MAILSLOT``, subjects ``ms.in.<identity>.<priority>``, work-queue retention
  (an acked interrupt is gone), file storage, per-subject cap with discard-new-per-subject
  (a full recipient gets 429 and nobody else is affected), a duplicate window keyed by the
  interrupt id (``Nats-Msg-Id``), per-message TTL from ``expires_at`` (``Nats-TTL``).
* KV bucket ``mailslot_registry``: accounts, enrollment and producer tokens (hashed),
  identities, grants and the relay's signing key, so relay processes hold no state.
* KV bucket ``mailslot_nonces``: the nonce of every signed request accepted in the last
  ``NONCE_MEMORY_SECONDS`` (the bucket's max age), so that a captured request replayed to
  any relay process is refused; ``create`` is the atomic check-and-set.
* Core subjects ``ms.ntf.<identity>`` (something new is pending) and
  ``ms.ctl.<identity>`` (a new connection takes over), which work across relay processes.

Per connected identity there are three pull consumers, one per priority, created when it
connects (memory storage, one replica, reaped by JetStream when idle) — never a durable
consumer per identity forever. Taking from ``now`` until it is empty, then ``next``, then
``later`` gives the drain order; FIFO within a class is the stream order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import count
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.kv import KeyValue

from relay.config import StreamSettings
from relay.errors import Conflict, ConsumerGone, QueueFull, StorageFull, StoreUnavailable
from relay.regcache import RegistryCache
from shared.auth import NONCE_MEMORY_SECONDS
from shared.envelope import PRIORITIES, Priority
from shared.tokens import check_identity

log = logging.getLogger("mailslot.relay.store")

STREAM = "MAILSLOT"
REGISTRY_BUCKET = "mailslot_registry"
NONCE_BUCKET = "mailslot_nonces"
#: Rate-limit buckets (``relay.ratelimit``): in memory, shared by every relay process on
#: the NATS; an entry idle this long is gone, i.e. its bucket is full again.
RATES_BUCKET = "mailslot_rates"
RATES_IDLE_SECONDS = 86_400
_REQUEST_TIMEOUT = 5.0


def interrupt_subject(identity: str, priority: Priority) -> str:
    """The subject of one recipient's queue. ``identity`` is validated here, at the last
    moment before it becomes a subject token, whatever the caller checked before."""
    return f"ms.in.{check_identity(identity)}.{priority.value}"


def notify_subject(identity: str) -> str:
    return f"ms.ntf.{check_identity(identity)}"


def control_subject(identity: str) -> str:
    return f"ms.ctl.{check_identity(identity)}"


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

    async def ack(self) -> None:
        await _quietly(self.msg.ack())

    async def nak(self, delay: float = 0) -> None:
        await _quietly(self.msg.nak(delay=delay or None))

    async def term(self) -> None:
        await _quietly(self.msg.term())


async def _quietly(op: Awaitable[Any]) -> None:
    """Acks are fire-and-forget by design: if one is lost the interrupt is redelivered
    and the edge's idempotent inbox absorbs it."""
    with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
        await op


class Store:
    """A connection to NATS plus the stream and registry bucket. ``connect`` then
    ``ensure`` (idempotent) before use; ``close`` when done."""

    def __init__(self, nc: Client, settings: StreamSettings) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=_REQUEST_TIMEOUT)
        self.settings = settings
        self._kv: KeyValue | None = None
        self._nonces: KeyValue | None = None
        self._rates: KeyValue | None = None
        self._reconnect_listeners: list[Callable[[], None]] = []
        self._ready = False
        self._closing = False
        #: The registry as last seen by ``watch_registry`` (empty and not live until then).
        self.cache = RegistryCache()
        self._watch_task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()

    @classmethod
    async def connect(cls, servers: list[str], settings: StreamSettings) -> Store:
        holder: list[Store] = []

        #: While NATS is down nats-py reports every failed reconnect (4 a second): log an
        #: error once, and the same error again only after we were connected in between.
        last_error = [""]

        async def reconnected() -> None:
            last_error[0] = ""
            log.info("reconnected to NATS")
            for listener in list(holder[0]._reconnect_listeners):
                listener()

        async def disconnected() -> None:
            if holder and holder[0]._closing:
                log.debug("disconnected from NATS (closing)")  # asked for: not a warning
            else:
                log.warning("disconnected from NATS")

        async def error(exc: Exception) -> None:
            text = f"{type(exc).__name__}: {exc}"
            if text == last_error[0]:
                log.debug("NATS error (repeated): %s", text)
                return
            last_error[0] = text
            log.warning("NATS error: %s", text)

        try:
            nc = await nats.connect(
                servers=servers,
                name="mailslot-relay",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                connect_timeout=5,
                allow_reconnect=True,
                reconnected_cb=reconnected,
                disconnected_cb=disconnected,
                error_cb=error,
            )
        except (nats.errors.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot connect to NATS: {exc}") from exc
        store = cls(nc, settings)
        holder.append(store)
        return store

    def on_reconnect(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every reconnect; returns a function that unregisters."""
        self._reconnect_listeners.append(listener)
        return lambda: self._reconnect_listeners.remove(listener)

    @property
    def ready(self) -> bool:
        return self._ready and self.nc.is_connected

    async def ensure(self) -> None:
        """Create or update the stream and the registry bucket (idempotent)."""
        s = self.settings
        config = api.StreamConfig(
            name=STREAM,
            subjects=["ms.in.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.NEW,
            discard_new_per_subject=True,
            max_msgs_per_subject=s.max_per_recipient,
            duplicate_window=s.duplicate_window,
            allow_msg_ttl=True,
            max_age=s.max_age or None,
            max_bytes=s.max_bytes or -1,
            num_replicas=s.replicas,
            max_msg_size=256 * 1024,
        )
        try:
            try:
                await self.js.stream_info(STREAM)
                await self.js.update_stream(config)
            except nats.js.errors.NotFoundError:
                await self.js.add_stream(config)
            file, memory = api.StorageType.FILE, api.StorageType.MEMORY
            self._kv = await self._bucket(REGISTRY_BUCKET, None, file)
            self._nonces = await self._bucket(NONCE_BUCKET, NONCE_MEMORY_SECONDS, file)
            self._rates = await self._bucket(RATES_BUCKET, RATES_IDLE_SECONDS, memory)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"cannot set up JetStream: {exc}") from exc
        self._ready = True

    async def _bucket(self, name: str, ttl: float | None,
                      storage: api.StorageType) -> KeyValue:
        """The KV bucket ``name``, created with one value per key, ``ttl`` (None: entries
        never expire), ``storage`` and the configured replicas if it does not exist yet."""
        try:
            return await self.js.key_value(name)
        except nats.js.errors.BucketNotFoundError:
            return await self.js.create_key_value(
                bucket=name, history=1, ttl=ttl, replicas=self.settings.replicas,
                storage=storage,
            )

    async def close(self) -> None:
        """Drain and close the connection. The disconnect this causes is expected, so it
        is not reported as a warning (admin commands exit quietly)."""
        self._closing = True
        self._ready = False
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
            self._watch_task = None
        self.cache.suspend()
        with contextlib.suppress(Exception):
            await self.nc.drain()

    async def watch_registry(self, caught_up_timeout: float = 10.0) -> None:
        """Keep ``self.cache`` current from a watch of the whole registry bucket (call
        after ``ensure``; ``close`` stops it). Returns once the cache has caught up, or
        after ``caught_up_timeout`` (reads then go to NATS until it has). If the watch
        fails — NATS restarted, the consumer was lost — the cache stops answering and a
        new watch starts; after a reconnect the watch is restarted too, since a deletion
        may have happened while this process was cut off."""
        if self._watch_task is not None:
            return
        self._watch_task = asyncio.create_task(self._watch_loop(), name="registry-watch")
        self.on_reconnect(self._restart_watch)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), caught_up_timeout)

    def _restart_watch(self) -> None:
        self.cache.suspend()
        if self._watch_task is not None and not self._closing:
            self._watch_task.cancel()
            self._watch_task = asyncio.create_task(self._watch_loop(), name="registry-watch")

    async def _watch_loop(self) -> None:
        while not self._closing:
            watcher = None
            try:
                watcher = await self.kv.watchall()
                async for entry in watcher:
                    if entry is None:
                        self.cache.caught_up()
                        self._caught_up.set()
                    elif entry.operation in ("DEL", "PURGE") or entry.value is None:
                        self.cache.deleted(entry.key, int(entry.revision or 0))
                    else:
                        self.cache.apply(entry.key, entry.value, int(entry.revision or 0))
            except asyncio.CancelledError:
                self.cache.suspend()
                raise
            except Exception as exc:  # any failure: stop answering, then watch again
                log.warning("registry watch failed (%s: %s); reading the registry from "
                            "NATS until it is back", type(exc).__name__, exc)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]
            self.cache.suspend()
            await asyncio.sleep(0.25)  # back off before the next attempt (NATS is down)

    # -- interrupts ---------------------------------------------------------------------

    async def publish(
        self, identity: str, priority: Priority, msg_id: str, data: bytes, ttl: float | None
    ) -> bool:
        """Store one interrupt; return True if JetStream already had this id (duplicate).
        Returns only after JetStream acknowledged the write: that is what a 2xx means."""
        subject = interrupt_subject(identity, priority)
        # Deduplication is stream-wide: scope the id to its recipient, or an id used
        # for one identity would swallow another identity's interrupt as a duplicate.
        headers = {"Nats-Msg-Id": f"{identity}.{msg_id}"}
        try:
            ack = await self.js.publish(
                subject,
                data,
                headers=headers,
                timeout=_REQUEST_TIMEOUT,
                msg_ttl=max(1, int(ttl + 0.999)) if ttl is not None else None,
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code == 10077 and "bytes" in (exc.description or ""):
                # The same code as below, for the stream's max_bytes: told by its text.
                raise StorageFull("the relay's interrupt store is full (its max_bytes); "
                                  "nothing stored was dropped") from exc
            if exc.err_code == 10077:  # maximum messages per subject exceeded
                raise QueueFull(f"{priority.value} queue of {identity} is full") from exc
            raise StoreUnavailable(f"JetStream refused the write: {exc.description}") from exc
        except (TimeoutError, nats.errors.Error) as exc:
            raise StoreUnavailable("JetStream did not acknowledge the write") from exc
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(notify_subject(identity), b"")
        return bool(ack.duplicate)

    async def pending(self, identity: str) -> dict[str, int]:
        """Interrupts stored for ``identity`` per priority (delivered-but-unacked included)."""
        prefix = f"ms.in.{check_identity(identity)}."
        try:
            info = await self.js.stream_info(STREAM, subjects_filter=prefix + ">")
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"cannot read queue state: {exc}") from exc
        subjects = info.state.subjects or {}
        return {p.value: int(subjects.get(prefix + p.value, 0)) for p in PRIORITIES}

    async def purge_identity(self, identity: str) -> int:
        """Drop every interrupt queued for ``identity`` (subjects ``ms.in.<id>.>``, all
        priorities); return how many there were. For an identity revoked or an account
        deleted: nobody could drain them any more."""
        count = sum((await self.pending(identity)).values())
        try:
            await self.js.purge_stream(STREAM, subject=f"ms.in.{check_identity(identity)}.>")
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"cannot purge the queue of {identity}: {exc}") from exc
        return count

    async def subscribe(self, subject: str, callback: Callable[[Msg], Awaitable[None]]) -> Any:
        try:
            return await self.nc.subscribe(subject, cb=callback)
        except nats.errors.Error as exc:  # closed or draining: as a failed consumer reset
            raise StoreUnavailable(f"cannot subscribe to {subject}: {exc}") from exc

    async def publish_core(self, subject: str, data: bytes) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(subject, data)

    def queue(self, identity: str) -> IdentityQueue:
        return IdentityQueue(self, check_identity(identity))

    # -- registry (KV) -----------------------------------------------------------------

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise StoreUnavailable("registry is not ready")
        return self._kv

    async def kv_get(self, key: str) -> tuple[dict[str, Any], int] | None:
        """The record and its revision; from the watch-fed cache when it holds the key
        (see ``relay.regcache`` for why that is as good as a read), else from NATS."""
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        return await _read_entry(self.kv, key, "registry")

    async def kv_create(self, key: str, value: dict[str, Any]) -> None:
        """Create ``key``; raise ``Conflict`` if it exists (atomic, across processes)."""
        self.cache.invalidate(key)
        try:
            await self.kv.create(key, json.dumps(value).encode())
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise Conflict(f"{key} already exists") from exc
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"registry write failed: {exc}") from exc

    async def kv_put(self, key: str, value: dict[str, Any]) -> None:
        self.cache.invalidate(key)
        try:
            await self.kv.put(key, json.dumps(value).encode())
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"registry write failed: {exc}") from exc

    async def kv_delete(self, key: str, revision: int | None = None) -> None:
        """Delete ``key``; with ``revision``, only if unchanged since (else ``Conflict``)."""
        self.cache.invalidate(key)
        try:
            await self.kv.delete(key, last=revision)
        except nats.js.errors.APIError as exc:
            if exc.err_code in (10071, 10164):
                raise Conflict(f"{key} changed concurrently") from exc
            raise StoreUnavailable(f"registry write failed: {exc}") from exc
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"registry write failed: {exc}") from exc

    async def remember_nonce(self, key: str) -> None:
        """Record a signed request's nonce; raise ``Conflict`` if it is already recorded
        (a replay), atomically across relay processes. Entries expire by themselves."""
        if self._nonces is None:
            raise StoreUnavailable("nonce store is not ready")
        try:
            await self._nonces.create(key, b"")
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise Conflict(f"nonce {key} already used") from exc
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"nonce store write failed: {exc}") from exc

    async def rate_get(self, key: str) -> tuple[dict[str, Any], int] | None:
        """A rate bucket's state and revision (None: never used, or idle long enough to
        have expired). Always read from NATS: other relay processes change it."""
        if self._rates is None:
            raise StoreUnavailable("rate store is not ready")
        return await _read_entry(self._rates, key, "rate store")

    async def rate_swap(
        self, key: str, value: dict[str, Any], revision: int | None
    ) -> int | None:
        """Write a rate bucket's state if it is still at ``revision`` (None: if it does
        not exist) and return its new revision; None when another writer got there first
        (read again and retry)."""
        if self._rates is None:
            raise StoreUnavailable("rate store is not ready")
        data = json.dumps(value).encode()
        try:
            if revision is None:
                return int(await self._rates.create(key, data))
            return int(await self._rates.update(key, data, last=revision))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        except nats.js.errors.APIError as exc:
            if exc.err_code in (10071, 10164):
                return None
            raise StoreUnavailable(f"rate store write failed: {exc}") from exc
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"rate store write failed: {exc}") from exc

    async def kv_keys(self, prefix: str) -> list[str]:
        """The registry's live keys that start with ``prefix``, sorted.

        Read from the bucket stream's per-subject state, not with nats-py's ``keys()``:
        that one ends at a marker which, on a busy machine, can arrive before the values
        (its consumer reports nothing pending before the first message was handled) and
        then answers an empty or short list — an admin listing, or an account deletion,
        would miss records. A deleted key keeps a marker message under its subject, so
        each candidate is confirmed with a read (from the cache when it holds it)."""
        base = f"$KV.{REGISTRY_BUCKET}."
        whole = prefix[: prefix.rfind(".") + 1]  # a subject filter names whole tokens
        try:
            info = await self.js.stream_info(
                f"KV_{REGISTRY_BUCKET}", subjects_filter=base + whole + ">"
            )
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"registry read failed: {exc}") from exc
        candidates = sorted(
            key for key in (s[len(base):] for s in (info.state.subjects or {}))
            if key.startswith(prefix)
        )
        return [key for key in candidates if await self.kv_get(key) is not None]


class IdentityQueue:
    """The three per-priority pull consumers of one connected identity.

    ``reset`` (re)creates them: deleting first releases every in-flight delivery of a
    previous connection at once, which is how a takeover redelivers immediately.
    ``take`` pulls with ``no_wait`` so an empty class answers at once."""

    def __init__(self, store: Store, identity: str) -> None:
        self.store = store
        self.identity = identity
        self._inbox = store.nc.new_inbox()
        self._sub: Any = None
        self._requests = count()

    async def reset(self) -> None:
        js = self.store.js
        try:
            for priority in PRIORITIES:
                name = consumer_name(self.identity, priority)
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_consumer(STREAM, name)
                await js.add_consumer(
                    STREAM,
                    api.ConsumerConfig(
                        name=name,
                        filter_subject=interrupt_subject(self.identity, priority),
                        deliver_policy=api.DeliverPolicy.ALL,
                        ack_policy=api.AckPolicy.EXPLICIT,
                        ack_wait=self.store.settings.ack_wait,
                        max_deliver=-1,
                        max_ack_pending=-1,
                        inactive_threshold=self.store.settings.consumer_idle,
                        mem_storage=True,
                        num_replicas=1,
                    ),
                )
            # A fresh reply subscription per reset: nothing from a request abandoned
            # before the reset can arrive in it.
            await self.close()
            self._inbox = self.store.nc.new_inbox()
            self._sub = await self.store.nc.subscribe(self._inbox + ".*")
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"cannot create consumers: {exc}") from exc

    async def take(self, limit: int) -> list[PulledInterrupt]:
        """Up to ``limit`` deliveries from the highest non-empty priority class."""
        for priority in PRIORITIES:
            batch = await self._pull(priority, limit)
            if batch:
                return batch
        return []

    async def _pull(self, priority: Priority, limit: int) -> list[PulledInterrupt]:
        assert self._sub is not None, "call reset() first"
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
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None


async def _read_entry(bucket: KeyValue, key: str, what: str) -> tuple[dict[str, Any], int] | None:
    """``key``'s JSON value and revision in ``bucket`` (None: absent or deleted)."""
    try:
        entry = await bucket.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None
    except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
        raise StoreUnavailable(f"{what} read failed: {exc}") from exc
    if entry.value is None:
        return None
    return json.loads(entry.value), int(entry.revision or 0)
