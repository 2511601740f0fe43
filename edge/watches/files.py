"""File watches: the kernel's change reports on the paths a ``FileWatch`` names, as
debounced events.

Rules this module keeps:

* ``edge.intents.declarations.FileWatch`` says what a file watch is,
  ``edge.watches.filepaths`` what its paths and ignores match, ``edge.watches.fileevents``
  how changes merge and what event they become; this module runs the watching
  (``FileWatcher``): it subscribes, routes each change to the watches it concerns and
  keeps one debounce window per watch.
* It subscribes through ``edge.fswatch`` (the daemon's one ``FsWatchService``: on Linux
  one inotify instance, read when the kernel reports); nothing here polls the file
  system. Collected changes are handed over once a *step* passed without more: half the
  smallest debounce in force, within ``STEP_MIN_MS`` and ``STEP_MAX_MS`` (both 50 ms
  today). (Where watchfiles runs instead, its thread also checks its stop flag every
  step.)
* A folder created or moved into a recursively watched tree is read once, when it is
  reported: what it holds is reported as created (inotify cannot report what was put in
  it before it was watched). That creation comes before whatever inotify reported for the
  same path in the same step: a file written while its new folder was being watched is
  reported as a bare modification, and is still created.
* A watched folder that is deleted is logged, and its nearest existing parent is watched
  until it comes back; a failing subscription is retried after ``RETRY_DELAY``.
* A re-plan (``set_watches``, a watched folder gone or back) arms the new subscription
  before it halts the old one, with no await between: on inotify every change goes to
  exactly one of them, so a watch that stays in force misses nothing meanwhile. (On
  watchfiles, where the two are separate threads, a change at that moment can be lost.)
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from edge.errors import WatchDefinitionError
from edge.fswatch import Batch, Change, FsWatch, FsWatchService
from edge.intents.declarations import FileWatch
from edge.watches.fileevents import FileEvent, merge, ordered
from edge.watches.filepaths import (
    PathRoute,
    compile_path,
    ignored,
    is_under,
    relative_parts,
    resolve,
)
from shared.host.waiting import first_of, settle

log = logging.getLogger("mailslot.edge.watches.file")

#: Bounds of the step (ms): collected changes are handed over once a step passed without
#: more, so a change is under ~150 ms away. (A watchfiles thread, where inotify is not,
#: also wakes every step to check its stop flag, which bounds how fast ``stop`` and
#: ``set_watches`` take effect there; inotify wakes only when the kernel reports.)
STEP_MIN_MS, STEP_MAX_MS = 50, 50
#: Wait before re-subscribing after watching failed (not a poll: a back-off).
RETRY_DELAY = 0.5
#: Most entries reported for one folder that appeared in a recursively watched tree.
SCAN_MAX_ENTRIES = 10_000


@dataclass
class _Window:
    watch: FileWatch
    handle: asyncio.TimerHandle
    changes: dict[str, Change] = field(default_factory=dict)


@dataclass
class _Plan:
    """What one subscription watches, built from the watches in force."""

    routes: list[tuple[FileWatch, list[PathRoute]]]
    recursive: list[str]
    flat: list[str]
    #: Watched folders that are gone; a creation on the way to one re-plans.
    missing: list[str]
    #: Literal paths watched as files (they were not folders): one becoming a folder
    #: (created, or deleted and created again) re-plans.
    files: frozenset[str]
    step_ms: int

    @classmethod
    def build(cls, watches: Iterable[FileWatch]) -> _Plan:
        routes: list[tuple[FileWatch, list[PathRoute]]] = []
        recursive: set[str] = set()
        flat: set[str] = set()
        missing: set[str] = set()
        debounces: list[float] = []
        for watch in watches:
            resolved: list[PathRoute] = []
            for raw in watch.paths:
                try:
                    route = resolve(compile_path(watch.id, raw))
                except WatchDefinitionError as exc:
                    log.warning("%s; not watched", exc)
                    continue
                resolved.append(route)
                if os.path.isdir(route.root):
                    (recursive if route.recursive else flat).add(route.root)
                    continue
                log.warning("watch %r: folder %s is gone; watching for it to come back",
                            watch.id, route.root)
                missing.add(route.root)
                flat.add(_nearest_folder(route.root))
            if resolved:
                routes.append((watch, resolved))
                debounces.append(watch.debounce)
        # One subscription per folder: drop what a recursive one already covers.
        kept = sorted(recursive)
        kept = [r for r in kept if not any(o != r and is_under(r, o) for o in kept)]
        flats = sorted(f for f in flat if not any(is_under(f, r) for r in kept))
        step = min(debounces, default=1.0) * 1000 / 2
        step_ms = int(min(max(step, STEP_MIN_MS), STEP_MAX_MS))
        files = frozenset(r.spec.path for _, rs in routes for r in rs if r.kind == "file")
        return cls(routes, kept, flats, sorted(missing), files, step_ms)


@dataclass
class _Subscribed:
    """The watches of one plan and the tasks routing what they report."""

    watches: list[FsWatch]
    pumps: list[asyncio.Task[None]]


def _failed(exc: BaseException) -> None:
    log.error("file watches: watching failed (%s: %s); subscribing again",
              type(exc).__name__, exc)


def _nearest_folder(path: str) -> str:
    while not os.path.isdir(path) and path != "/":
        path = os.path.dirname(path)
    return path


class FileWatcher:
    """Runs file watches: ``set_watches(watches)`` (any time, from the event loop's
    thread), then ``await run(stop)`` until ``stop`` is set. Each debounced batch of
    changes of a watch becomes one ``emit(FileEvent)``, called in the event loop's thread:
    it must not block.

    ``ready`` is set once the watches in force are subscribed (a change made after that
    is seen); it is cleared while re-subscribing: after ``set_watches``, and when a
    watched folder is deleted or comes back. Paused watches are not watched. A deleted
    watched folder is logged, and its nearest existing parent is watched until it comes
    back; the other watches carry on. When ``run`` returns after ``stop``, pending
    windows have been emitted and nothing is left running; if ``run`` is cancelled
    instead, they are dropped.
    """

    def __init__(self, emit: Callable[[FileEvent], None],
                 service: FsWatchService | None = None) -> None:
        self.ready = asyncio.Event()
        self._emit = emit
        self._service = service
        self._watches: list[FileWatch] = []
        self._replan = asyncio.Event()
        self._plan = _Plan.build([])
        self._windows: dict[str, _Window] = {}

    def set_watches(self, watches: list[FileWatch]) -> None:
        """Replace the watches in force; the subscription follows within one step. A
        pending window of a watch that is removed, paused or redefined is dropped."""
        active = {w.id: w for w in watches if not w.paused}
        if list(active.values()) == self._watches:
            return  # nothing to re-subscribe (the daemon reloads intents.toml as a whole)
        for watch_id, window in list(self._windows.items()):
            if active.get(watch_id) != window.watch:
                window.handle.cancel()
                del self._windows[watch_id]
        self._watches = list(active.values())
        self.ready.clear()
        self._replan.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set; returns within one step (≤ 50 ms) of it."""
        held: _Subscribed | None = None
        try:
            while not stop.is_set():
                self._replan.clear()
                self._plan = _Plan.build(self._watches)
                try:
                    current = await self._subscribe(self._plan)  # armed when it returns
                except Exception as exc:  # FsWatchError, or anything else: subscribe again
                    _failed(exc)
                    current = None
                if held is not None:
                    # Only now, and at once (no await since the new ones were armed): on
                    # inotify each change goes to the old watches or the new, never both
                    # or neither.
                    for watch in held.watches:
                        watch.halt()
                    await self._release(held)
                held = current
                if held is None:
                    await first_of(stop.wait(), self._replan.wait(), timeout=RETRY_DELAY)
                    continue
                if not self._replan.is_set():
                    self.ready.set()
                ended = ([asyncio.wait(held.pumps, return_when=asyncio.FIRST_COMPLETED)]
                         if held.pumps else [])
                await first_of(stop.wait(), self._replan.wait(), *ended)
                if any(pump.done() for pump in held.pumps):  # watching failed
                    await self._release(held)
                    held = None
                    await first_of(stop.wait(), self._replan.wait(), timeout=RETRY_DELAY)
            if held is not None:
                last: _Subscribed = held
                held = None  # released here, not again in ``finally``
                await self._release(last)  # what was collected is routed first
            for watch_id in list(self._windows):
                self._flush(watch_id)
        finally:
            if held is not None:
                await self._release(held)
            for window in self._windows.values():
                window.handle.cancel()
            self._windows.clear()

    async def _subscribe(self, plan: _Plan) -> _Subscribed:
        """Watches for ``plan``, armed, each with a task routing what it reports. On a
        re-plan the old ones are halted only once the new ones are armed: with inotify the
        kernel watches they share stay in place, so no change falls between them."""
        watches = [
            FsWatch(*roots, recursive=recursive, step_ms=plan.step_ms,
                    debounce_ms=2 * plan.step_ms, ignore_permission_denied=True,
                    service=self._service)
            for roots, recursive in ((plan.recursive, True), (plan.flat, False)) if roots
        ]
        try:
            for watch in watches:
                await watch.start()
        except BaseException:
            for watch in watches:
                await watch.close()
            raise
        return _Subscribed(watches, [asyncio.create_task(self._pump(w)) for w in watches])

    async def _release(self, held: _Subscribed) -> None:
        """Halt ``held``'s watches, route what they still hand over, close them; log a
        failure one of them ended with."""
        for watch in held.watches:
            watch.halt()
        outcomes = await settle(list(held.pumps))
        for watch in held.watches:
            await watch.close()
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                _failed(outcome)

    async def _pump(self, watch: FsWatch) -> None:
        """Route every batch ``watch`` hands over until it ends (after ``halt``)."""
        while (batch := await watch.next()) is not None:
            self._route(batch)

    # -- routing --------------------------------------------------------------------

    def _route(self, batch: Batch) -> None:
        by_path: dict[str, set[Change]] = {}
        for change, path in batch:
            by_path.setdefault(path, set()).add(change)
        for path, order in sorted(ordered(by_path, self._scan_new_folders(by_path)).items()):
            self._note_folders(path, set(order))
            for watch, routes in self._plan.routes:
                rel = next((r for route in routes if (r := route.relative(path)) is not None),
                           None)
                if rel is None or ignored(watch, rel):
                    continue
                window = self._windows.get(watch.id)
                if window is None:
                    handle = asyncio.get_running_loop().call_later(
                        watch.debounce, self._flush, watch.id)
                    window = self._windows[watch.id] = _Window(watch, handle)
                for change in order:
                    merge(window.changes, path, change)

    def _scan_new_folders(self, by_path: dict[str, set[Change]]) -> list[str]:
        """A folder created (or moved) into a recursively watched tree is watched only
        once inotify reported it: what was put in it before that has no event. Return
        what it holds, to be reported as created (``ordered``: before any real event for
        the same file)."""
        found: list[str] = []
        for path, kinds in by_path.items():
            if ("created" in kinds and self._wanted_below(path) and not os.path.islink(path)
                    and os.path.isdir(path)):
                found.extend(_walk(path, SCAN_MAX_ENTRIES))
        return found

    def _wanted_below(self, folder: str) -> bool:
        """Whether some watch looks into ``folder`` recursively without ignoring it."""
        for watch, routes in self._plan.routes:
            for route in routes:
                rel = relative_parts(folder, route.root) if route.recursive else None
                if rel is not None and not ignored(watch, rel):
                    return True
        return False

    def _note_folders(self, path: str, kinds: set[Change]) -> None:
        """Re-plan when a watched folder goes, or when one that was gone may be back."""
        plan = self._plan
        if "deleted" in kinds and (path in plan.recursive or path in plan.flat):
            log.warning("file watches: folder %s was deleted", path)
        elif "created" not in kinds or not (
            any(is_under(m, path) for m in plan.missing)
            or (path in plan.files and os.path.isdir(path))
        ):
            return
        self.ready.clear()
        self._replan.set()

    def _flush(self, watch_id: str) -> None:
        window = self._windows.pop(watch_id, None)
        if window is None:
            return
        window.handle.cancel()  # when flushed early, at stop
        wanted = set(window.watch.changes)
        changes = [{"path": path, "change": change}
                   for path, change in sorted(window.changes.items()) if change in wanted]
        if not changes:
            return
        try:
            self._emit(FileEvent(window.watch, changes))
        except Exception:  # the receiver's fault must not stop the watching
            log.exception("file watch %s: emit failed", watch_id)


def _walk(folder: str, limit: int) -> list[str]:
    """Paths under ``folder`` (folders too, symlinks not followed), at most ``limit``."""
    found: list[str] = []
    for parent, folders, files in os.walk(folder):
        for name in (*folders, *files):
            found.append(os.path.join(parent, name))
            if len(found) >= limit:
                log.warning("file watches: %s holds more than %d entries; reporting %d",
                            folder, limit, limit)
                return found
    return found
