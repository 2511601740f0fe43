"""``mailslot edge run``: the edge daemon's lifecycle, and nothing else.

``start`` (sync): take the home's lock, load config and key (refusing a key file others
can read), open the stores and the intents file, build every part → ``run``: one
``asyncio.TaskGroup`` owns every part's task (the link, the decision engine, the intents
watcher, the watches, the deliverer, the upkeep that bounds the disk), until the caller's
``stop`` event is set or a part fails → ``stop(timeout)``: every part is asked to stop
(they all watch one event), given ``timeout`` seconds, and what is still running then is
cancelled and reported by name → ``close``: the link's status says disconnected, every
store is closed (its WAL checkpointed first: no megabytes of ``-wal`` stay behind), the
lock goes back. Nothing of the daemon runs after ``run`` returns.

Rules this module keeps:

- it wires the parts together and owns their lifetime; what a part does lives in its
  own package (``edge.link``, ``edge.engine``, ``edge.watches``, ``edge.delivery``…);
- every part gets what it needs at construction, nothing is patched in afterwards; each
  role that touches the inbox has its own connection (``Inboxes``), because they run on
  different threads: the link's status on the event loop, the receiver's commits and
  the engine's reads in worker threads, the watches' local interrupts;
- a part that fails stops the daemon the way a signal does (the others stop cleanly),
  and ``run`` raises that one error once; a second failure while stopping is logged in
  one line, never as one traceback per task;
- the daemon installs no signal handler: its caller does (``shared.host.signals``: the
  first SIGINT/SIGTERM sets ``stop``, a second Ctrl-C forces the process out), so that
  ``mailslot up`` runs a relay and an edge under one handler, like ``relay.server``.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.approvals.expiry import ApprovalTimer
from edge.config import EdgeConfig, EdgePaths, load_config
from edge.delivery.deliverer import Deliverer
from edge.engine.decide import Engine
from edge.errors import IntentFileError
from edge.fswatch import FsWatchService
from edge.intents.declarations import Declarations
from edge.intents.model import IntentSet
from edge.intents.reload import IntentWatcher
from edge.link.client import EdgeLink
from edge.link.keystore import load_identity
from edge.link.receiver import Receiver
from edge.store.activity import ActivityLog, Entry, Event
from edge.store.enginestate import EngineState, append_anchored
from edge.store.inbox import Inbox, InboxItem
from edge.store.instances import Instance
from edge.store.watchstate import WatchState
from edge.upkeep import Upkeep
from edge.watches.events import LocalRaiser
from edge.watches.runner import WatchRunner
from shared.host.lockfile import FolderLock, edge_lock
from shared.host.notify import ServiceNotifier
from shared.host.waiting import first_of, settle
from shared.identity import Identity

log = logging.getLogger("mailslot.edge")

#: Seconds ``stop`` gives the parts to end by themselves before it cancels them (as
#: uvicorn's ``timeout_graceful_shutdown``; the relay's HTTP server uses the same).
STOP_TIMEOUT = 5.0

#: A part of the daemon: a coroutine function that runs until the event it is given is
#: set, then returns.
Part = Callable[[asyncio.Event], Awaitable[None]]


@dataclass(frozen=True)
class Inboxes:
    """One ``Inbox`` connection per role: SQLite connections are not shared across the
    threads the roles run on, and a role's transaction never waits on another's."""

    link: Inbox  # the link's status, on the event loop
    receiver: Inbox  # verify → commit, in a worker thread
    engine: Inbox  # what to decide next and the woken interrupts' documents
    watches: Inbox  # the local interrupts watches raise

    @classmethod
    def open(cls, path: Path) -> Inboxes:
        """Open one connection per role; if one fails, close those already open."""
        opened: list[Inbox] = []
        try:
            for _role in fields(cls):
                opened.append(Inbox.open(path))
        except BaseException:
            for inbox in opened:
                inbox.close()
            raise
        return cls(*opened)

    def all(self) -> tuple[Inbox, ...]:
        return (self.link, self.receiver, self.engine, self.watches)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.link.set_status(connected=False, pid=None)
        for inbox in self.all():
            inbox.close(checkpoint=True)  # the first one empties the WAL


class EdgeDaemon:
    """Call ``start()``, then ``await run(stop)``; ``run`` stops and closes everything
    before it returns. ``cancelled``: the parts the last ``stop`` had to cancel."""

    def __init__(self, paths: EdgePaths, *, stop_timeout: float = STOP_TIMEOUT,
                 notifier: ServiceNotifier | None = None) -> None:
        self.paths = paths
        self.stop_timeout = stop_timeout
        #: Tells systemd (``Type=notify``) READY, WATCHDOG, STOPPING; silent without it.
        self.notifier = notifier if notifier is not None else ServiceNotifier.from_environ()
        self.config: EdgeConfig | None = None
        self.identity: Identity | None = None
        self.inboxes: Inboxes | None = None
        self.link: EdgeLink | None = None
        self.engine: Engine | None = None
        self.activity: ActivityLog | None = None
        self.watcher: IntentWatcher | None = None
        self.watches: WatchRunner | None = None
        self.deliverer: Deliverer | None = None
        self.instance: Instance | None = None
        #: Rotates and prunes the activity log, prunes the inbox and deliveries (``edge.upkeep``).
        self.upkeep: Upkeep | None = None
        #: Expires pending approval requests when their time comes (``edge.approvals.expiry``).
        self.approvals: ApprovalTimer | None = None
        #: The daemon's one file-system watcher (intents file, poke file, file watches).
        self.fs: FsWatchService | None = None
        self.arrived = asyncio.Event()
        self.cancelled: list[str] = []
        self._watch_state: WatchState | None = None
        self._state: EngineState | None = None
        self._lock: FolderLock | None = None
        self._stopping = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failure: Exception | None = None

    # -- start ---------------------------------------------------------------------

    def start(self, lock: FolderLock | None = None) -> None:
        """Take the home's lock first (``already_running`` if another daemon or
        ``mailslot up`` holds it: then nothing was opened or written), then open
        everything. ``lock``: one the caller already holds on this home (``mailslot up``);
        the caller releases it. On failure, what was opened is closed and the error
        raised."""
        if lock is None:
            self._lock = edge_lock(self.paths.data_dir).acquire()
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        paths = self.paths
        self.config = load_config(paths)
        identity = self.identity = load_identity(paths.key_file)
        self.upkeep = Upkeep(self.config.retention, paths)
        self.upkeep.convert()  # once per older home, before anything else opens the stores
        inboxes = self.inboxes = Inboxes.open(paths.inbox_file)
        receiver = Receiver(identity, self.config.relay_public(), inboxes.receiver)
        self.link = EdgeLink(
            self.config, identity, inboxes.link, receiver, on_event=self._on_link_event,
            on_stored=self._on_stored,
        )
        activity = self.activity = ActivityLog.open(paths.activity_file, paths.activity_key_file)
        state = self._state = EngineState.open(paths.engine_file)
        activity.continue_after(state.log_anchor())
        fs = self.fs = FsWatchService()
        self.watcher = IntentWatcher(paths.intents_file, self._intents_loaded,
                                     self._intents_refused, fs=fs)
        engine = self.engine = Engine(self.watcher.current, state, self._record_decisions,
                                      inbox=inboxes.engine)
        self._watch_state = WatchState.open(paths.watches_file)
        self.watches = WatchRunner(
            self._watch_state,
            LocalRaiser(identity, inboxes.watches, on_new=self.arrived.set),
            activity.append,
            last_activity=lambda session, at: state.last_activity(session, at),
            poke_file=paths.poke_file,
            fs=fs,
        )
        # Who holds this daemon's delivery claims: a fresh id per start, alive while this
        # process is (a held lock), so a restart takes back a crashed life's claims at once.
        self.instance = Instance.start(paths.instances_dir, "daemon")
        self.deliverer = Deliverer(
            engine.deliveries, activity.append, paths.data_dir / "permissions",
            self.instance,
            spend_tokens=lambda tokens, at: state.spend(engine.day_of(at.timestamp()),
                                                        tokens=tokens),
            poke_file=paths.poke_file, fs=fs,
        )
        intents = self.watcher
        self.approvals = ApprovalTimer(
            paths, lambda: _declarations(intents.current).approvals, fs=fs)
        engine.on_decided.append(self.watches.observe)
        engine.on_woken.append(self.watches.woken)
        self.watches.set_declarations(_declarations(self.watcher.current))
        inboxes.link.set_status(
            identity=identity.id, relay=self.config.relay_url, pid=os.getpid(),
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

    # -- run -----------------------------------------------------------------------

    def parts(self) -> dict[str, Part]:
        """The parts ``run`` starts, by the task name ``stop`` reports them under."""
        link, engine, watcher = self.link, self.engine, self.watcher
        watches, deliverer, approvals = self.watches, self.deliverer, self.approvals
        upkeep = self.upkeep
        assert link is not None and engine is not None and watcher is not None, "start() first"
        assert watches is not None and deliverer is not None and approvals is not None
        assert upkeep is not None
        return {
            "link": link.run,
            "engine": lambda stop: engine.run(self.arrived, stop),
            "intents": watcher.run,
            "watches": watches.run,
            "deliveries": lambda stop: deliverer.run(engine.queued, stop),
            "approvals": approvals.run,
            "upkeep": upkeep.run,
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Run every part until ``stop`` is set or one of them fails; then
        ``stop(self.stop_timeout)`` and ``close()``. Raises the failed part's error."""
        parts = self.parts()
        assert self.link is not None
        log.info("edge %s starting; relay %s", self.link.identity.id, self.link.config.relay_url)
        # Everything loaded so far (modules, pydantic schemas, config) lives as long as the
        # process: freezing it keeps the cyclic collector, which runs every few hundred
        # allocations while draining, from walking that heap again and again (it was
        # ~10 µs of CPU per drained interrupt, ~5 since). New objects are collected as before.
        gc.freeze()
        self._stopping.clear()
        self._failure = None
        try:
            async with asyncio.TaskGroup() as group:
                for name, part in parts.items():
                    self._tasks[name] = group.create_task(self._guard(name, part), name=name)
                await asyncio.sleep(0)  # every part has begun: the inbox is open, the link dials
                self.notifier.ready(f"edge {self.link.identity.id}")
                group.create_task(self.notifier.watchdog(self._stopping), name="watchdog")
                await first_of(stop.wait(), self._stopping.wait())
                self.notifier.stopping()
                await self.stop(self.stop_timeout)
        finally:
            self._tasks = {}
            self.close()
        if self._failure is not None:
            raise self._failure

    async def _guard(self, name: str, part: Part) -> None:
        """Run ``part``; if it fails, keep its error for ``run`` to raise and have the
        others stop cleanly (rather than the task group cancelling them mid-step)."""
        try:
            await part(self._stopping)
        except Exception as exc:
            if self._failure is None:
                self._failure = exc
                log.info("%s failed (%s); stopping", name, type(exc).__name__)
            else:
                log.warning("%s failed too while stopping: %s: %s", name,
                            type(exc).__name__, exc)
            self._stopping.set()

    # -- stop ----------------------------------------------------------------------

    async def stop(self, timeout: float = STOP_TIMEOUT) -> list[str]:
        """Ask every running part to stop, wait up to ``timeout`` seconds for them, then
        cancel the ones still running and wait for those too. Returns the names of the
        cancelled parts (also logged, and added to ``cancelled``); ``[]``: all stopped by
        themselves. ``run`` calls this once its ``stop`` event is set; to stop a running
        daemon, set that event (a signal handler does)."""
        self._stopping.set()
        running = [task for task in self._tasks.values() if not task.done()]
        if not running:
            return []
        _, pending = await asyncio.wait(running, timeout=timeout)
        late = sorted(task.get_name() for task in pending)
        if late:
            log.warning("%s did not stop within %gs: cancelled", ", ".join(late), timeout)
            self.cancelled.extend(late)
        for task in pending:
            task.cancel()
        await settle(list(pending))
        return late

    def close(self) -> None:
        """Mark the status disconnected and close every store, then give the lock back.
        Safe to call more than once, and after a failed ``start``."""
        if self.inboxes is not None:
            self.inboxes.close()
            self.inboxes = None
        if self._state is not None:
            self._state.close(checkpoint=True)
            self._state = None
        if self._watch_state is not None:
            self._watch_state.close(checkpoint=True)
            self._watch_state = None
        if self.instance is not None:  # after the deliverer gave its claims back
            self.instance.stop()
            self.instance = None
        if self.activity is not None:
            self.activity.close()
            self.activity = None
        if self.fs is not None:  # after every part's watch ended (``run`` waited for them)
            self.fs.close()
            self.fs = None
        if self._lock is not None:  # last: nothing of this daemon is open any more
            self._lock.release()
            self._lock = None


def _declarations(intents: IntentSet) -> Declarations:
    """The intents file declares watches too; an older caller may hand a bare set."""
    if isinstance(intents, Declarations):
        return intents
    return Declarations(settings=intents.settings, intents=intents.intents)
