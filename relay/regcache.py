"""A local copy of the registry KV bucket, kept current by a watch of the whole bucket.

The request path reads the registry on every interrupt (token → record, recipient →
identity, recipient + signer → grant). Answered from NATS that is a round trip each; this
cache answers them from memory instead. ``relay.store`` feeds it from one KV watch (every
write to the bucket, by any relay process or admin command, arrives here in milliseconds)
and consults it in ``Store.kv_get``, so ``Registry``'s read methods stay the interface.

The rules that keep it correct:

* A hit is served only while the cache is *live*: the watch has delivered the bucket's
  current contents and is still running. Until then, and after the watch fails (the store
  restarts it and marks the cache live again when it has caught up), every read goes to
  NATS.
* A miss is not an answer: it goes to NATS. A key written a moment ago (by this process
  or another) may not have arrived yet, so only a positive entry is trusted — which is
  what makes a deletion (a revoked token, a withdrawn grant) safe: the watch removes the
  entry, and the next read asks NATS and finds nothing.
* A write by this process (``Store.kv_put`` / ``kv_create`` / ``kv_delete``) drops the
  key at once, so this process never serves its own superseded value; the watch brings
  the new one.
* Entries only move forward: an update whose revision is not newer than the one held is
  ignored (a watch restarted after a reconnect replays the bucket).

No I/O here: pure bookkeeping, driven by the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class RegistryCache:
    """Key → (decoded JSON record, revision). Read with ``get``; fed with ``apply`` and
    ``deleted`` by the watch, ``caught_up`` once it has delivered the current contents,
    ``suspend`` when it stops; ``invalidate`` on a local write."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[dict[str, Any], int]] = {}
        self._revisions: dict[str, int] = {}
        self._live = False
        #: key → (revision, a value derived from that revision's record): see ``memo``.
        self._derived: dict[str, tuple[int, Any]] = {}
        #: Counters for tests and the bench: reads answered here, and those sent on.
        self.hits = 0
        self.misses = 0

    @property
    def live(self) -> bool:
        return self._live

    def get(self, key: str) -> tuple[dict[str, Any], int] | None:
        """The record and its revision if the cache may answer for ``key``, else None
        (the caller must then read NATS). The record is a copy: change it freely."""
        if self._live:
            found = self._entries.get(key)
            if found is not None:
                self.hits += 1
                return dict(found[0]), found[1]
        self.misses += 1
        return None

    def memo(self, key: str, revision: int, make: Callable[[], T]) -> T:
        """``make()``'s result for ``key`` at ``revision``, made once per revision: a KV
        revision names one write, so what is derived from it (an identity document
        parsed and its self-signature verified) never changes. Valid whether the record
        came from the cache or from NATS."""
        held = self._derived.get(key)
        if held is not None and held[0] == revision:
            value: T = held[1]
            return value
        value = make()
        self._derived[key] = (revision, value)
        return value

    def apply(self, key: str, value: bytes, revision: int) -> None:
        """A put seen by the watch (ignored if not newer than what is held)."""
        if revision <= self._revisions.get(key, 0):
            return
        self._revisions[key] = revision
        self._derived.pop(key, None)
        try:
            record = json.loads(value)
        except ValueError:
            record = None
        if isinstance(record, dict):
            self._entries[key] = (record, revision)
        else:  # not a record this relay wrote: let NATS answer (and the caller refuse)
            self._entries.pop(key, None)

    def deleted(self, key: str, revision: int) -> None:
        """A delete or purge seen by the watch."""
        if revision <= self._revisions.get(key, 0):
            return
        self._revisions[key] = revision
        self._entries.pop(key, None)
        self._derived.pop(key, None)

    def invalidate(self, key: str) -> None:
        """This process is writing ``key``: stop serving the value held."""
        self._entries.pop(key, None)
        self._derived.pop(key, None)

    def caught_up(self) -> None:
        """The watch has delivered everything the bucket held when it started."""
        self._live = True

    def suspend(self) -> None:
        """The watch stopped: answer nothing until a new one has caught up. What is held
        is dropped, so a deletion missed while the watch was down cannot be served."""
        self._live = False
        self._entries.clear()
        self._revisions.clear()
        self._derived.clear()

    def __len__(self) -> int:
        return len(self._entries)
