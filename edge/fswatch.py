"""inotify for the edge: the one module that imports ``watchfiles``.

File watches (``edge.watches.files``), the hot reload of ``intents.toml``
(``edge.intents.reload``), the poke file (``edge.watches.runner``), an approval request
waiting for its decision (``edge.approvals.desk``) and the MCP channel
(``edge.mcp.channel``) all sleep on the kernel's change reports through ``FsWatch``.

Rules this module keeps:

* Callers never see watchfiles' types: a change is our ``Change`` (``"created"``,
  ``"modified"``, ``"deleted"``), a batch a frozenset of ``(change, path)``, and what
  watchfiles raises (``OSError`` for a folder that does not exist or the inotify limit,
  ``RuntimeError`` for its watch thread failing) becomes ``FsWatchError``.
* Nothing polls the file system. watchfiles' notify thread collects what the kernel
  reports and wakes every *step* ms (taking the GIL to check its stop flag); it hands a
  batch over once a step passed with no further change, or *debounce* ms after the
  first. So a large step keeps an idle edge quiet, and a stop takes effect within one
  step. The defaults are watchfiles' own (step 50 ms, debounce 1600 ms).
* A watch is armed when ``start()`` (or ``async with``) returns: the kernel's watches
  exist, and a change made after that is reported. (watchfiles' generator creates them
  in its first step, before it first awaits; ``start`` runs that step.)
* ``next()`` may be abandoned — cancelled, or given a timeout — without losing
  anything: the step in flight goes on, and the next call returns its batch.
* ``close()`` stops the watch thread and waits for it (at most one step): nothing is
  left running. The watch's stop flag is its own; the caller's ``stop`` event is only
  read, never set.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from types import TracebackType
from typing import Literal

from watchfiles import Change as _WatchfilesChange
from watchfiles import awatch

from edge.errors import FsWatchError
from shared.host.waiting import first_of, settle

Change = Literal["created", "modified", "deleted"]
#: One hand-over of the watch thread: every (change, path) it collected, after ``accept``.
Batch = frozenset[tuple[Change, str]]

_CHANGES: dict[_WatchfilesChange, Change] = {
    _WatchfilesChange.added: "created",
    _WatchfilesChange.modified: "modified",
    _WatchfilesChange.deleted: "deleted",
}


class FsWatch:
    """Change reports for the entries of ``folders`` (``recursive``: everything below
    them too) for which ``accept(change, path)`` is true (``None``: all of them).

    Use it as ``async with FsWatch(...) as changes: ... await changes.next()``, or call
    ``await start()`` and, in a ``finally``, ``await close()``. With ``stop``, ``next``
    returns ``None`` as soon as that event is set.
    """

    def __init__(
        self,
        *folders: str | Path,
        recursive: bool,
        accept: Callable[[Change, str], bool] | None = None,
        step_ms: int = 50,
        debounce_ms: int = 1600,
        ignore_permission_denied: bool = False,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._where = ", ".join(str(f) for f in folders)
        self._stop = stop
        self._halt = asyncio.Event()  # ours: awatch sets it when cancelled
        self._stream: AsyncGenerator[set[tuple[_WatchfilesChange, str]], None] = awatch(
            *folders,
            watch_filter=None if accept is None else (
                lambda change, path: accept(_CHANGES[change], path)),
            step=step_ms,
            debounce=debounce_ms,
            stop_event=self._halt,
            recursive=recursive,
            # None leaves watchfiles' default (off, unless its environment variable says)
            ignore_permission_denied=ignore_permission_denied or None,
        )
        self._pending: asyncio.Future[set[tuple[_WatchfilesChange, str]]] | None = None

    async def start(self) -> None:
        """Arm the watch: once this returns, a change is reported. Raises
        ``FsWatchError`` if the folders cannot be watched (close the watch all the same)."""
        if self._pending is not None:
            return
        self._pending = asyncio.ensure_future(anext(self._stream))
        await asyncio.sleep(0)  # one turn: the generator's first step runs to its first await
        if self._pending.done() and not self._pending.cancelled():
            failure = self._pending.exception()
            if isinstance(failure, OSError | RuntimeError):
                raise self._failed(failure) from failure
            if failure is not None and not isinstance(failure, StopAsyncIteration):
                raise failure

    async def next(self, timeout: float | None = None) -> Batch | None:
        """The next batch of changes, waiting for it; an empty batch if none came within
        ``timeout`` seconds; ``None`` once ``stop`` is set or the watch was halted (a batch
        handed over before the halt still comes first). Raises ``FsWatchError`` if
        watching failed. Call ``start`` first."""
        pending = self._pending
        if pending is None:
            raise RuntimeError("FsWatch.next() before start()")
        if self._stop is not None and self._stop.is_set():
            return None
        if not pending.done():
            stopping = () if self._stop is None else (self._stop.wait(),)
            # shielded: when the timer or ``stop`` wins, the step in flight goes on
            await first_of(asyncio.shield(pending), *stopping, timeout=timeout)
            if self._stop is not None and self._stop.is_set():
                return None
            if not pending.done():
                return frozenset()
        try:
            raw = pending.result()
        except StopAsyncIteration:
            return None
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc) from exc
        self._pending = asyncio.ensure_future(anext(self._stream))
        return frozenset((_CHANGES[change], path) for change, path in raw)

    def halt(self) -> None:
        """Tell the watch thread to stop; it does within one step, and then ``next``
        returns ``None``. ``close`` still has to be awaited."""
        self._halt.set()

    async def close(self) -> None:
        """Stop the watch thread and wait for it to end (within one step, even if the
        caller is cancelled meanwhile). Safe to call more than once."""
        self._halt.set()
        try:
            if self._pending is not None:
                await settle([self._pending])
        finally:
            with contextlib.suppress(RuntimeError):
                await self._stream.aclose()

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
        return FsWatchError(f"cannot watch {self._where}: {type(exc).__name__}: {exc}")
