"""The edge's file-system watcher: one ``FsWatchService`` per process, and the one module
that imports ``watchfiles``.

File watches (``edge.watches.files``), the hot reload of ``intents.toml``
(``edge.intents.reload``), the poke file (``edge.watches.runner``), an approval request
waiting for its decision (``edge.approvals.desk``) and the MCP channel
(``edge.mcp.channel``) all sleep on the kernel's change reports through ``FsWatch``. The
daemon builds one ``FsWatchService`` and hands it to every part that watches.

Rules this module keeps:

* One service per process multiplexes every watch's folders, on one of two back-ends.
  On Linux (``"inotify"``) it is one inotify instance (``edge.inotify``): every watch
  shares its kernel watches, and reports are read on the event loop when they come — an
  idle process does not wake at all. Elsewhere (``"watchfiles"``) at most two watchfiles
  streams (recursive, not) watch the union of the folders; each is a notify thread that
  wakes every 50 ms to check its stop flag, restarted (the new one armed first) when the
  union changes.
* Callers never see a library's types: a change is our ``Change`` (``"created"``,
  ``"modified"``, ``"deleted"``), a batch a frozenset of ``(change, path)``, and what the
  library raises (``OSError`` for a folder that does not exist or the inotify limit,
  ``RuntimeError`` for watchfiles' thread failing) becomes ``FsWatchError``.
* Batches are the same on both: handed over once *step* ms passed with no further
  change, or *debounce* ms after the first; a modification of a path created in the same
  batch is not reported (watchfiles' rule). The defaults are watchfiles' own (step 50 ms,
  debounce 1600 ms).
* A watch is armed when ``start()`` (or ``async with``) returns: the kernel's watches
  exist, and a change made after that is reported. (watchfiles' generator creates them
  in its first step, before it first awaits; ``start`` runs that step.)
* ``next()`` may be abandoned — cancelled, or given a timeout — without losing
  anything: the next call returns what was collected meanwhile.
* ``close()`` ends the watch and waits for it (watchfiles: a thread its folders no
  longer need stops within one step): nothing is left running. The watch's stop flag is its own; the caller's
  ``stop`` event is only read, never set.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from types import TracebackType
from typing import Literal

from watchfiles import Change as _WatchfilesChange
from watchfiles import awatch

from edge.errors import FsWatchError
from edge.inotify import AVAILABLE, Change, InotifyHub, Subscription
from shared.host.waiting import first_of, settle

__all__ = ["Backend", "Batch", "Change", "FsWatch", "FsWatchService"]

#: One hand-over of the watch: every (change, path) it collected, after ``accept``.
Batch = frozenset[tuple[Change, str]]
Backend = Literal["inotify", "watchfiles"]
Accept = Callable[[Change, str], bool]

_CHANGES: dict[_WatchfilesChange, Change] = {
    _WatchfilesChange.added: "created",
    _WatchfilesChange.modified: "modified",
    _WatchfilesChange.deleted: "deleted",
}


class FsWatchService:
    """The process's file-system watcher. Build one (``backend``: default inotify on
    Linux, watchfiles elsewhere), get watches from it (``watch(...)``, or
    ``FsWatch(..., service=it)``), and ``close()`` it once they are closed. Used from the
    event loop's thread only."""

    def __init__(self, backend: Backend | None = None) -> None:
        if backend == "inotify" and not AVAILABLE:
            raise FsWatchError("inotify is Linux's: use the watchfiles back-end here")
        self.backend: Backend = backend or ("inotify" if AVAILABLE else "watchfiles")
        self._hub: InotifyHub | _WatchfilesHub = (
            InotifyHub() if self.backend == "inotify" else _WatchfilesHub())

    def watch(self, *folders: str | Path, recursive: bool, accept: Accept | None = None,
              step_ms: int = 50, debounce_ms: int = 1600,
              ignore_permission_denied: bool = False,
              stop: asyncio.Event | None = None) -> FsWatch:
        """A watch of ``folders`` sharing this service (see ``FsWatch``)."""
        return FsWatch(*folders, recursive=recursive, accept=accept, step_ms=step_ms,
                       debounce_ms=debounce_ms,
                       ignore_permission_denied=ignore_permission_denied, stop=stop,
                       service=self)

    @property
    def kernel_watches(self) -> int:
        """Folders the kernel watches for this service (inotify; 0 for watchfiles)."""
        return self._hub.watched if isinstance(self._hub, InotifyHub) else 0

    @property
    def threads(self) -> int:
        """Watch threads running for this service (watchfiles; 0 for inotify)."""
        return self._hub.streams if isinstance(self._hub, _WatchfilesHub) else 0

    def close(self) -> None:
        """Release the inotify instance (watchfiles: tell a thread still running to stop;
        there is none once every watch was closed). Safe to call more than once."""
        self._hub.close()


class FsWatch:
    """Change reports for the entries of ``folders`` (``recursive``: everything below
    them too) for which ``accept(change, path)`` is true (``None``: all of them).

    Use it as ``async with FsWatch(...) as changes: ... await changes.next()``, or call
    ``await start()`` and, in a ``finally``, ``await close()``. With ``stop``, ``next``
    returns ``None`` as soon as that event is set. ``service``: the process's watcher
    (without one, the watch has a service of its own, closed with it).
    """

    def __init__(
        self,
        *folders: str | Path,
        recursive: bool,
        accept: Accept | None = None,
        step_ms: int = 50,
        debounce_ms: int = 1600,
        ignore_permission_denied: bool = False,
        stop: asyncio.Event | None = None,
        service: FsWatchService | None = None,
    ) -> None:
        self._where = ", ".join(str(f) for f in folders)
        self._stop = stop
        self._own = service is None
        self.service = service = service or FsWatchService()
        self._impl = _Notified(service._hub, [str(f) for f in folders], recursive, accept,
                               step_ms, debounce_ms, ignore_permission_denied)

    async def start(self) -> None:
        """Arm the watch: once this returns, a change is reported. Raises
        ``FsWatchError`` if the folders cannot be watched (close the watch all the same)."""
        try:
            await self._impl.start()
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc) from exc

    async def next(self, timeout: float | None = None) -> Batch | None:
        """The next batch of changes, waiting for it; an empty batch if none came within
        ``timeout`` seconds; ``None`` once ``stop`` is set or the watch was halted (a batch
        handed over before the halt still comes first). Raises ``FsWatchError`` if
        watching failed. Call ``start`` first."""
        if self._stop is not None and self._stop.is_set():
            return None
        try:
            return await self._impl.next(timeout, self._stop)
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc) from exc

    def halt(self) -> None:
        """End the watch (watchfiles: its thread stops within one step); ``next`` then
        returns what was collected until now (inotify: everything the kernel reported
        before this call), then ``None``. ``close`` still has to be awaited."""
        self._impl.halt()

    async def close(self) -> None:
        """End the watch and wait for it (within one step, even if the caller is
        cancelled meanwhile). Safe to call more than once."""
        try:
            await self._impl.close()
        finally:
            if self._own:
                self.service.close()

    async def __aenter__(self) -> FsWatch:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    def _failed(self, exc: OSError | RuntimeError) -> FsWatchError:
        if isinstance(exc, FsWatchError):
            return exc
        return FsWatchError(f"cannot watch {self._where}: {type(exc).__name__}: {exc}")


class _Notified:
    """A watch on the service's hub: the hub delivers each change as it is read; this
    collects them into batches on timers that exist only while changes come."""

    def __init__(self, hub: InotifyHub | _WatchfilesHub, folders: list[str], recursive: bool,
                 accept: Accept | None, step_ms: int, debounce_ms: int,
                 ignore_permission_denied: bool) -> None:
        self._hub = hub
        self._folders = folders
        self._recursive = recursive
        self._accept = accept
        self._step = step_ms / 1000
        self._debounce = debounce_ms / 1000
        self._ignore_permission_denied = ignore_permission_denied
        self._subscription: Subscription | None = None
        self._collected: dict[tuple[Change, str], None] = {}  # an ordered set
        self._first: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._ready: collections.deque[Batch] = collections.deque()
        self._arrived = asyncio.Event()
        self._error: OSError | None = None
        self._halted = False

    async def start(self) -> None:
        if self._subscription is not None or self._halted:
            return
        if isinstance(self._hub, InotifyHub):
            self._subscription = self._hub.subscribe(
                self._folders, recursive=self._recursive, deliver=self._deliver,
                on_error=self._on_error,
                ignore_permission_denied=self._ignore_permission_denied)
        else:
            self._subscription = await self._hub.subscribe(
                self._folders, recursive=self._recursive, deliver=self._deliver,
                on_error=self._on_error,
                ignore_permission_denied=self._ignore_permission_denied)

    async def next(self, timeout: float | None, stop: asyncio.Event | None) -> Batch | None:
        if self._subscription is None and not self._halted:
            raise RuntimeError("FsWatch.next() before start()")
        if not self._ready and self._error is None and not self._halted:
            self._arrived.clear()
            stopping = () if stop is None else (stop.wait(),)
            await first_of(self._arrived.wait(), *stopping, timeout=timeout)
            if stop is not None and stop.is_set():
                return None
        if self._ready:
            return self._ready.popleft()
        if self._error is not None:
            raise self._error
        if self._halted:
            return None
        return frozenset()

    def halt(self) -> None:
        if self._halted:
            return
        if self._subscription is not None:
            self._hub.unsubscribe(self._subscription)  # inotify: delivers what is queued
        self._hand_over()  # what was collected comes before the end
        self._halted = True
        self._arrived.set()

    async def close(self) -> None:
        self.halt()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if isinstance(self._hub, _WatchfilesHub):
            await self._hub.settle()  # its folders' thread stops, if no one else needs it

    def _deliver(self, change: Change, path: str) -> None:
        if self._accept is not None and not self._accept(change, path):
            return
        if change == "modified" and ("created", path) in self._collected:
            return
        self._collected[change, path] = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._first is None:
            self._first = now
        if self._timer is not None:
            self._timer.cancel()
        left = self._first + self._debounce - now
        if left <= 0:
            self._hand_over()
        else:
            self._timer = loop.call_later(min(self._step, left), self._hand_over)

    def _hand_over(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._first = None
        if self._collected:
            self._ready.append(frozenset(self._collected))
            self._collected = {}
            self._arrived.set()

    def _on_error(self, exc: OSError) -> None:
        self._hand_over()
        self._error = exc
        self._arrived.set()


class _WatchfilesHub:
    """Where inotify is not: the subscriptions' folders watched by at most two watchfiles
    streams (one recursive, one not) over their union, each a notify thread that wakes
    every ``STEP_MS``. When the union changes, the new stream is armed before the old one
    stops: nothing is missed in between (a change may be reported twice, which batches
    absorb)."""

    STEP_MS = 50

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._streams: dict[bool, _Stream] = {}

    @property
    def streams(self) -> int:
        return len(self._streams)

    async def subscribe(self, folders: list[str], *, recursive: bool,
                        deliver: Callable[[Change, str], None],
                        on_error: Callable[[OSError], None],
                        ignore_permission_denied: bool = False) -> Subscription:
        roots = tuple(os.path.abspath(f) for f in folders)
        subscription = Subscription(roots, recursive, deliver, on_error,
                                    ignore_permission_denied)
        self._subscriptions.append(subscription)
        try:
            await self.settle()
        except BaseException:
            self._subscriptions.remove(subscription)
            raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Nothing more is delivered to it; its folders stop being watched at the next
        ``settle`` (a closing watch awaits it)."""
        subscription.active = False
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    async def settle(self) -> None:
        """Make the streams match the subscriptions: start what is missing (armed when
        this returns; raises what watchfiles raised, the old stream still running), then
        stop what is no longer needed and wait for its thread."""
        for recursive in (True, False):
            wanted = [s for s in self._subscriptions if s.recursive is recursive]
            roots = tuple(sorted({r for s in wanted for r in s.roots}))
            ignore = any(s.ignore_permission_denied for s in wanted)
            old = self._streams.get(recursive)
            if old is not None and (old.roots, old.ignore) == (roots, ignore):
                continue
            if roots:
                new = _Stream(roots, recursive, ignore, self._dispatch, self._failed)
                try:
                    await new.start()
                except BaseException:
                    await new.stop()
                    raise
                self._streams[recursive] = new
            else:
                self._streams.pop(recursive, None)
            if old is not None:
                await old.stop()

    def close(self) -> None:
        self._subscriptions.clear()
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream.halt()

    def _dispatch(self, change: Change, path: str) -> None:
        for subscription in list(self._subscriptions):
            if subscription.active and subscription.covers(path):
                subscription.deliver(change, path)

    def _failed(self, recursive: bool, exc: OSError | RuntimeError) -> None:
        error = exc if isinstance(exc, OSError) else OSError(f"{type(exc).__name__}: {exc}")
        for subscription in [s for s in self._subscriptions if s.recursive is recursive]:
            self.unsubscribe(subscription)
            subscription.on_error(error)


class _Stream:
    """One watchfiles stream and the task that hands its batches to the hub."""

    def __init__(self, roots: tuple[str, ...], recursive: bool, ignore: bool,
                 dispatch: Callable[[Change, str], None],
                 failed: Callable[[bool, OSError | RuntimeError], None]) -> None:
        self.roots, self.recursive, self.ignore = roots, recursive, ignore
        self._dispatch = dispatch
        self._failed = failed
        self._halt = asyncio.Event()  # ours: awatch sets it when cancelled
        self._stream: AsyncGenerator[set[tuple[_WatchfilesChange, str]], None] = awatch(
            *roots, watch_filter=None, step=_WatchfilesHub.STEP_MS,
            debounce=2 * _WatchfilesHub.STEP_MS, stop_event=self._halt, recursive=recursive,
            # None leaves watchfiles' default (off, unless its environment variable says)
            ignore_permission_denied=ignore or None,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        first = asyncio.ensure_future(anext(self._stream))
        await asyncio.sleep(0)  # one turn: the generator's first step runs to its first await
        if first.done() and not first.cancelled():
            failure = first.exception()
            if failure is not None and not isinstance(failure, StopAsyncIteration):
                raise failure
        self._task = asyncio.create_task(self._pump(first))

    async def _pump(self, pending: asyncio.Future[set[tuple[_WatchfilesChange, str]]]) -> None:
        while True:
            try:
                raw = await pending
            except StopAsyncIteration:
                return
            except (OSError, RuntimeError) as exc:
                self._failed(self.recursive, exc)
                return
            for change, path in raw:
                self._dispatch(_CHANGES[change], path)
            pending = asyncio.ensure_future(anext(self._stream))

    def halt(self) -> None:
        self._halt.set()

    async def stop(self) -> None:
        """Stop the thread (within one step) and wait for it."""
        self._halt.set()
        try:
            if self._task is not None:
                await settle([self._task])
        finally:
            with contextlib.suppress(RuntimeError):
                await self._stream.aclose()
