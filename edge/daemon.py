"""``mailslot edge run``: the edge daemon's lifecycle.

start: load config and key (refusing a key file others can read), open the inbox, the
engine state, the activity log and the intents file → run: the outbound link, the decision
engine and the intents watcher, until stopped → stop: close the link (unacked deliveries
go back to the relay), mark the status disconnected, close everything. Nothing runs after
stop.

The link and the engine meet at the inbox: the link commits, then hands the new items to
the engine (``Engine.offer``) and sets ``arrived``; the engine decides everything past its
cursor, from the items handed over when they continue it, else read from the inbox. A
crash between the two loses nothing: on start the engine catches up from its cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from datetime import UTC, datetime
from typing import Any

from edge.config import EdgeConfig, EdgePaths, load_config
from edge.delivery.deliverer import Deliverer
from edge.engine.decide import Engine
from edge.intents.declarations import Declarations
from edge.intents.file import IntentFileError, IntentWatcher
from edge.intents.model import IntentSet
from edge.link.client import EdgeLink
from edge.link.keystore import load_identity
from edge.link.receiver import Receiver
from edge.store.activity import ActivityLog, Entry, Event
from edge.store.enginestate import EngineState, append_anchored
from edge.store.inbox import Inbox, InboxItem
from edge.store.instances import Instance
from edge.store.watchstate import WatchState
from edge.watches.events import LocalRaiser
from edge.watches.runner import WatchRunner
from shared.host.lockfile import FolderLock, edge_lock
from shared.identity import Identity

log = logging.getLogger("mailslot.edge")


class EdgeDaemon:
    def __init__(self, paths: EdgePaths) -> None:
        self.paths = paths
        self.config: EdgeConfig | None = None
        self.identity: Identity | None = None
        self.link: EdgeLink | None = None
        self.engine: Engine | None = None
        self.activity: ActivityLog | None = None
        self.watcher: IntentWatcher | None = None
        self.watches: WatchRunner | None = None
        self.deliverer: Deliverer | None = None
        self.instance: Instance | None = None
        self._watch_state: WatchState | None = None
        self.arrived = asyncio.Event()
        self._inboxes: list[Inbox] = []
        self._state: EngineState | None = None
        self._lock: FolderLock | None = None

    def start(self, lock: FolderLock | None = None) -> None:
        """Take the home's lock first (``already_running`` if another daemon or
        ``mailslot up`` holds it: then nothing was opened or written), then open
        everything. ``lock``: one the caller already holds on this home (``mailslot up``);
        the caller releases it."""
        if lock is None:
            self._lock = edge_lock(self.paths.data_dir).acquire()
        try:
            self._open()
        except BaseException:
            self.stop()
            raise

    def _open(self) -> None:
        self.config = load_config(self.paths)
        self.identity = load_identity(self.paths.key_file)
        status_inbox = Inbox.open(self.paths.inbox_file)
        receiver_inbox = Inbox.open(self.paths.inbox_file)
        engine_inbox = Inbox.open(self.paths.inbox_file)
        local_inbox = Inbox.open(self.paths.inbox_file)
        self._inboxes = [status_inbox, receiver_inbox, engine_inbox, local_inbox]
        receiver = Receiver(self.identity, self.config.relay_public(), receiver_inbox)
        self.link = EdgeLink(
            self.config, self.identity, status_inbox, receiver, on_event=self._on_link_event,
            on_stored=self._on_stored,
        )
        self.activity = ActivityLog.open(self.paths.activity_file, self.paths.activity_key_file)
        self._state = EngineState.open(self.paths.engine_file)
        self.activity.continue_after(self._state.log_anchor())
        self.watcher = IntentWatcher(
            self.paths.intents_file, self._intents_loaded, self._intents_refused
        )
        self.engine = Engine(self.watcher.current, self._state, self._record_decisions)
        self._watch_state = WatchState.open(self.paths.watches_file)
        state = self._state
        self.watches = WatchRunner(
            self._watch_state,
            LocalRaiser(self.identity, local_inbox, on_new=self.arrived.set),
            self.activity.append,
            last_activity=lambda session, at: state.last_activity(session, at),
            poke_file=self.paths.poke_file,
        )
        self.engine.inbox = engine_inbox
        engine = self.engine
        # Who holds this daemon's delivery claims: a fresh id per start, alive while this
        # process is (a held lock), so a restart takes back a crashed life's claims at once.
        self.instance = Instance.start(self.paths.instances_dir, "daemon")
        self.deliverer = Deliverer(
            self.engine.deliveries, self.activity.append, self.paths.data_dir / "permissions",
            self.instance,
            spend_tokens=lambda tokens, at: state.spend(engine.day_of(at.timestamp()),
                                                        tokens=tokens),
        )
        self.engine.on_decided.append(self.watches.observe)
        self.engine.on_woken.append(self.watches.woken)
        self.watches.set_declarations(_declarations(self.watcher.current))
        status_inbox.set_status(
            identity=self.identity.id,
            relay=self.config.relay_url,
            pid=os.getpid(),
            connected=False,
        )

    def _on_link_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "delivered" and data.get("new"):
            self.arrived.set()

    def _on_stored(self, items: list[InboxItem]) -> None:
        """What the link just committed goes to the engine as it is (see
        ``Engine.offer``); the inbox stays the record it catches up from."""
        if self.engine is not None:
            self.engine.offer(items)
        self.arrived.set()

    def _intents_loaded(self, intents: IntentSet) -> None:
        if self.engine is not None:
            self.engine.set_intents(intents)
        if self.watches is not None:
            self.watches.set_declarations(_declarations(intents))
        self._record("intents_loaded", count=len(intents.intents))
        log.info("intents loaded: %d", len(intents.intents))
        self.arrived.set()  # re-arm the engine's timer against the new set

    def _intents_refused(self, error: IntentFileError) -> None:
        self._record("intents_refused", reason=error.reason, line=error.line, file=str(error.path))
        log.warning("intents file refused, keeping the last good set: %s", error)

    def _record_decisions(self, events: list[Event]) -> list[Entry]:
        """The engine's recorder: append, then anchor the chain in the engine state inside
        the engine's open transaction, so the anchor commits with the batch (never before
        the entries are on disk) and a vanished log is detected (``edge.store.activity``)."""
        assert self.activity is not None and self._state is not None
        return append_anchored(self._state, self.activity, events)

    def _record(self, step: str, **detail: Any) -> None:
        if self.activity is not None:
            self.activity.append([Event(step, datetime.now(UTC), detail=detail)])

    async def run(self, stop: asyncio.Event) -> None:
        assert self.link is not None and self.engine is not None, "call start() first"
        assert self.watcher is not None
        log.info("edge %s starting; relay %s", self.link.identity.id, self.link.config.relay_url)
        # Everything loaded so far (modules, pydantic schemas, config) lives as long as the
        # process: freezing it keeps the cyclic collector, which runs every few hundred
        # allocations while draining, from walking that heap again and again (it was
        # ~10 µs of CPU per drained interrupt, ~5 since). New objects are collected as before.
        gc.freeze()
        tasks = [
            asyncio.create_task(self.link.run(stop), name="link"),
            asyncio.create_task(
                self.engine.run(self._inboxes[2], self.arrived, stop), name="engine"
            ),
            asyncio.create_task(self.watcher.run(stop), name="intents"),
        ]
        if self.watches is not None:
            tasks.append(asyncio.create_task(self.watches.run(stop), name="watches"))
        if self.deliverer is not None:
            tasks.append(asyncio.create_task(
                self.deliverer.run(self.engine.queued, stop), name="deliveries"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    stop.set()
                    raise task.exception()  # type: ignore[misc]
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.stop()

    def stop(self) -> None:
        for inbox in self._inboxes:
            with contextlib.suppress(Exception):
                inbox.set_status(connected=False, pid=None)
                break
        for inbox in self._inboxes:
            inbox.close()
        self._inboxes = []
        if self._state is not None:
            self._state.close()
            self._state = None
        if self._watch_state is not None:
            self._watch_state.close()
            self._watch_state = None
        if self.instance is not None:  # after the deliverer gave its claims back
            self.instance.stop()
            self.instance = None
        if self.activity is not None:
            self.activity.close()
            self.activity = None
        if self._lock is not None:  # last: nothing of this daemon is open any more
            self._lock.release()
            self._lock = None


def _declarations(intents: IntentSet) -> Declarations:
    """The intents file declares watches too; an older caller may hand a bare set."""
    if isinstance(intents, Declarations):
        return intents
    return Declarations(settings=intents.settings, intents=intents.intents)
