"""The relay's adapter to NATS JetStream: it sets up the streams and KV buckets that
``relay.layout`` names (``ensure``), publishes and counts interrupts, and reads and
writes the buckets. The drain's consumers are ``relay.drain``'s (the one other module
that imports ``nats``).

An identity has pull consumers only while a connected edge drains it (``relay.drain``):
an idle edge costs none, an offline identity never any.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.kv import KeyValue

from relay.coalesce import Coalescer
from relay.config import StreamSettings, nats_credentials
from relay.errors import Conflict, QueueFull, StorageFull, StoreUnavailable
from relay.layout import (
    BUCKETS,
    HOOKS_BUCKET,
    HOOKS_TTL_SECONDS,
    LINK_TTL_SECONDS,
    LINKS_STREAM,
    NONCE_BUCKET,
    RATES_BUCKET,
    RATES_IDLE_SECONDS,
    REGISTRY_BUCKET,
    STREAM,
    USAGE_STREAM,
    control_subject,
    interrupt_subject,
    link_subject,
    notify_subject,
    usage_subject,
)
from relay.regcache import RegistryCache
from shared.envelope import PRIORITIES, Priority
from shared.tokens import check_identity

#: The layout's names, importable from here as before ``relay.layout`` existed.
__all__ = [
    "HOOKS_BUCKET", "HOOKS_TTL_SECONDS", "LINKS_STREAM", "LINK_TTL_SECONDS", "NONCE_BUCKET",
    "RATES_BUCKET", "RATES_IDLE_SECONDS", "REGISTRY_BUCKET", "STREAM", "USAGE_STREAM",
    "Store", "control_subject", "interrupt_subject", "link_subject", "notify_subject",
    "usage_subject",
]

log = logging.getLogger("mailslot.relay.store")

_REQUEST_TIMEOUT = 5.0
#: Most subjects nats-server details in one ``STREAM.INFO`` (its ``JSMaxSubjectDetails``);
#: an answer that long may be a first page only.
SUBJECTS_PAGE = 100_000


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
        self._hooks: KeyValue | None = None
        self._reconnect_listeners: list[Callable[[], None]] = []
        self._ready = False
        self._closing = False
        #: The registry as last seen by ``watch_registry`` (empty and not live until then).
        self.cache = RegistryCache()
        self._watch_task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._counts: Coalescer[dict[str, int]] = Coalescer()  # one STREAM.INFO per id

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
                **nats_credentials(servers),
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
        """Set up the stream and KV buckets from ``self.settings``; only ``relay serve``
        calls this (any other client uses ``open_existing``). Missing ones are created; an existing
        stream gets the settings' limits (each change logged) and anything with fewer
        replicas is scaled up. Never down: with more replicas than configured anywhere,
        nothing changes and ``StartupFailed`` ``replicas_conflict`` (exit 6) says so."""
        s = self.settings
        try:
            found = {name: await self._info_or_none(name)
                     for name in (STREAM, *(f"KV_{b.name}" for b in BUCKETS),
                                  USAGE_STREAM, LINKS_STREAM)}
            for name, info in found.items():
                if info is not None:
                    s.check_replicas(name, info.config.num_replicas or 1)
            config = api.StreamConfig(
                name=STREAM, subjects=["ms.in.>"], retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE, discard=api.DiscardPolicy.NEW,
                discard_new_per_subject=True, allow_msg_ttl=True, max_msg_size=256 * 1024,
                **s.stream_limits(),
            )
            for name, info in found.items():
                have = info.config if info is not None else None
                changes = s.changes(vars(have) if have is not None else None, name == STREAM)
                if have is not None and changes:
                    log.warning("stream %s: %s (this relay's settings)", name, changes)
                    await self.js.update_stream(
                        config if name == STREAM else have.evolve(num_replicas=s.replicas))
                elif have is None and name == STREAM:
                    await self.js.add_stream(config)
            self._kv, self._nonces, self._rates, self._hooks = [
                await self._bucket(b.name, b.ttl, api.StorageType(b.storage)) for b in BUCKETS]
            await self._side_streams(found)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"cannot set up JetStream: {exc}") from exc
        self._ready = True

    async def open_existing(self) -> None:
        """Use the stream and buckets a relay set up, changing nothing (for tools and
        tests beside a relay: their ``settings`` are never applied)."""
        try:
            await self.js.stream_info(STREAM)
            self._kv, self._nonces, self._rates, self._hooks = [
                await self.js.key_value(b.name) for b in BUCKETS]
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"no relay has set up this NATS yet: {exc}") from exc
        self._ready = True

    async def _side_streams(self, found: dict[str, Any]) -> None:
        """Create the usage counters' and the live links' streams if they are missing."""
        n = self.settings.replicas
        for config in (
            api.StreamConfig(name=USAGE_STREAM, subjects=["ms.usage.>"], num_replicas=n,
                             allow_msg_counter=True, max_msgs_per_subject=1,
                             storage=api.StorageType.FILE),
            api.StreamConfig(name=LINKS_STREAM, subjects=["ms.link.>"], num_replicas=n,
                             max_msgs_per_subject=1, max_age=LINK_TTL_SECONDS,
                             storage=api.StorageType.MEMORY),
        ):
            if found.get(str(config.name)) is None:
                await self.js.add_stream(config)

    async def _info_or_none(self, name: str) -> api.StreamInfo | None:
        try:
            return await self.js.stream_info(name)
        except nats.js.errors.NotFoundError:
            return None

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
        self, identity: str, priority: Priority, msg_id: str, data: bytes, ttl: float | None,
        notify: bool = True,
    ) -> bool:
        """Store one interrupt; return True if JetStream already had this id (duplicate).
        Returns only after JetStream acknowledged the write: that is what a 2xx means.
        ``notify=False`` leaves waking the recipient's session to the caller (a batch
        sends one ``notify`` per recipient, not one per item)."""
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
        if notify:
            await self.notify(identity)
        return bool(ack.duplicate)

    async def notify(self, identity: str) -> None:
        """Wake ``identity``'s session, in whichever relay process holds it: new work is
        in its queue. Best effort: a lost one is caught by the session's re-check."""
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(notify_subject(identity), b"")

    async def pending(self, identity: str) -> dict[str, int]:
        """Interrupts stored for ``identity`` per priority (delivered-but-unacked included);
        concurrent calls for one identity share a request (``relay.coalesce``)."""
        return await self._counts.run(identity, lambda: self._pending(identity))

    async def _pending(self, identity: str) -> dict[str, int]:
        prefix = f"ms.in.{check_identity(identity)}."
        try:
            info = await self.js.stream_info(STREAM, subjects_filter=prefix + ">")
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"cannot read queue state: {exc}") from exc
        subjects = info.state.subjects or {}
        return {p.value: int(subjects.get(prefix + p.value, 0)) for p in PRIORITIES}

    async def pending_identities(self) -> set[str] | None:
        """The identities with anything stored (one ``STREAM.INFO`` for all of them, with
        a subject filter: an empty queue has no subject there, so idle identities cost
        nothing); None if the server answered a partial list (past its page of subjects)."""
        try:
            info = await self.js.stream_info(STREAM, subjects_filter="ms.in.>")
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"cannot read queue state: {exc}") from exc
        subjects = info.state.subjects or {}
        if len(subjects) >= SUBJECTS_PAGE:
            return None
        return {subject.split(".")[2] for subject in subjects}

    async def purge_identity(self, identity: str) -> int:
        """Drop every interrupt queued for ``identity`` (subjects ``ms.in.<id>.>``, all
        priorities); return how many there were. For an identity revoked or an account
        deleted: nobody could drain them any more."""
        count = sum((await self.pending(identity)).values())
        try:
            await self.js.purge_stream(STREAM, subject=f"ms.in.{check_identity(identity)}.>")
            await self._purge_usage(identity)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"cannot purge the queue of {identity}: {exc}") from exc
        return count

    # -- usage counters and live links (relay.usage, relay.connections) ----------------

    async def side_add(self, subject: str, delta: int | None = None) -> int:
        """With ``delta``: add it to the counter ``subject`` (``usage_subject``; atomic
        across processes) and return the new value. Without: beat the link ``subject``."""
        headers = {"Nats-Incr": f"{delta:+d}"} if delta is not None else None
        try:
            ack = await self.js.publish(subject, b"", headers=headers, timeout=_REQUEST_TIMEOUT)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"usage write failed: {exc}") from exc
        return int(ack.val or 0)

    async def _purge_usage(self, identity: str) -> None:
        """Drop ``identity``'s ledger counter and take what it held off its account's."""
        with contextlib.suppress(nats.js.errors.NotFoundError):  # no usage stream yet
            info = await self.js.stream_info(
                USAGE_STREAM, subjects_filter=f"ms.usage.i.*.{check_identity(identity)}")
            for subject in info.state.subjects or {}:
                value, _ = await self.usage_get(subject)
                await self.js.purge_stream(USAGE_STREAM, subject=subject)
                if value:
                    await self.side_add(usage_subject(subject.split(".")[3]), -value)

    async def usage_get(self, subject: str) -> tuple[int, datetime | None]:
        """A counter's value and last write (server clock); ``(0, None)`` if none."""
        try:
            msg = await self.js.get_last_msg(USAGE_STREAM, subject)
        except nats.js.errors.NotFoundError:
            return 0, None
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"usage read failed: {exc}") from exc
        return int(json.loads(msg.data or b"{}").get("val", 0)), msg.time

    async def link_identities(self, account: str) -> set[str]:
        """The identities of ``account`` with a live link (a beat under ``LINK_TTL``)."""
        try:
            info = await self.js.stream_info(LINKS_STREAM, subjects_filter=link_subject(account))
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"link count failed: {exc}") from exc
        return {subject.split(".")[3] for subject in (info.state.subjects or {})}

    async def side_purge(self, stream: str, subject: str) -> None:
        """Drop ``subject`` from ``stream`` (``USAGE_STREAM``, ``LINKS_STREAM``)."""
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):  # no stream: nothing
                await self.js.purge_stream(stream, subject=subject)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"usage purge failed: {exc}") from exc

    async def subscribe(self, subject: str, callback: Callable[[Msg], Awaitable[None]]) -> Any:
        try:
            return await self.nc.subscribe(subject, cb=callback)
        except nats.errors.Error as exc:  # closed or draining: as a failed consumer reset
            raise StoreUnavailable(f"cannot subscribe to {subject}: {exc}") from exc

    async def publish_core(self, subject: str, data: bytes) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(subject, data)

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

    async def hook_get(self, key: str) -> dict[str, Any] | None:
        """A record of the hooks bucket (``HOOKS_BUCKET``), from NATS; None if absent."""
        if self._hooks is None:
            raise StoreUnavailable("hook store is not ready")
        found = await _read_entry(self._hooks, key, "hook store")
        return None if found is None else found[0]

    async def hook_put(self, key: str, value: dict[str, Any] | None, create: bool = False
                       ) -> bool:
        """Write ``value`` (None: delete the key); with ``create``, only if the key is
        absent (atomic across processes): False when it exists."""
        if self._hooks is None:
            raise StoreUnavailable("hook store is not ready")
        try:
            if value is None:
                await self._hooks.delete(key)
            elif create:
                await self._hook_create(key, json.dumps(value).encode())
            else:
                await self._hooks.put(key, json.dumps(value).encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise StoreUnavailable(f"hook store write failed: {exc}") from exc
        return True

    async def _hook_create(self, key: str, data: bytes) -> None:
        """``KeyValue.create`` as one bare request (a webhook delivery's claim: one per
        delivery, and nats-py's layers, key checks and ``PubAck``, cost the relay more
        than the request). Only a refusal takes nats-py's own path, which tells a key
        that exists (``KeyWrongLastSequenceError``) from a deleted one (created again);
        an answer that is neither a refusal nor a ``PubAck`` is not a claim made."""
        assert self._hooks is not None
        reply = await self.nc.request(f"$KV.{HOOKS_BUCKET}.{key}", data, _REQUEST_TIMEOUT,
                                      headers={"Nats-Expected-Last-Subject-Sequence": "0"})
        if b'"error":' in reply.data:
            await self._hooks.create(key, data)
        elif b'"seq":' not in reply.data:
            raise StoreUnavailable("hook store write failed: its answer was no acknowledgement")

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
