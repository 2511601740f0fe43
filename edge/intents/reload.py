"""Hot reload of ``intents.toml``: the daemon's declarations follow the file.

Rules this module keeps:

* The last good content is in force: a broken file is reported (``on_error``) and
  changes nothing until it is fixed; a deleted file declares nothing.
* It sleeps on the kernel's change reports for the file's folder (``edge.fswatch``):
  the file may be rewritten, replaced by a rename, created or deleted. Nothing polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from edge.config import private_dir
from edge.errors import IntentFileError
from edge.fswatch import FsWatch, FsWatchService
from edge.intents.declarations import Declarations
from edge.intents.file import load_intents


class IntentWatcher:
    """Keeps ``current`` equal to the last good content of ``path``, and says so.

    The file is loaded once at construction: good → ``on_load(declarations)``; bad →
    ``on_error(err)`` and ``current`` declares nothing (no intent wakes anything, no watch
    runs, every interrupt still reaches the inbox, the daemon keeps running until the file
    is fixed).
    ``run(stop)`` then waits on inotify events for the file's folder (the file may be
    rewritten, replaced by a rename, created or deleted) and reloads once the changes
    pause for one step of the watch thread (``debounce``, but at least half a second):

    * good → ``current`` is replaced and ``on_load(new)`` is called, if the declarations
      changed or the previous load had failed; a deleted file is good and declares nothing;
    * bad → ``on_error(err)``, and the last good declarations stay in force.

    Callbacks run in the event loop's thread and must not block. ``ready`` is set once
    changes are being captured: a change made after that is never missed.
    """

    def __init__(
        self,
        path: Path,
        on_load: Callable[[Declarations], None],
        on_error: Callable[[IntentFileError], None],
        debounce: float = 0.05,
        fs: FsWatchService | None = None,
    ) -> None:
        """``fs``: the process's file-system watcher (the daemon's one); without it the
        watch has its own."""
        self.path = path
        self._fs = fs
        self.ready = asyncio.Event()
        self._on_load = on_load
        self._on_error = on_error
        self._debounce_ms = max(1, int(debounce * 1000))
        self._current = Declarations()
        self._error: IntentFileError | None = None
        self._reload(initial=True)

    @property
    def current(self) -> Declarations:
        """The declarations in force: the last file content that loaded without error."""
        return self._current

    @property
    def error(self) -> IntentFileError | None:
        """Why the file on disk is not in force, or ``None`` if it is."""
        return self._error

    async def run(self, stop: asyncio.Event) -> None:
        """Reload on every change until ``stop`` is set; returns within one step of it
        (the watch thread's). Raises ``FsWatchError`` if the folder cannot be watched."""
        private_dir(self.path.parent)
        name = self.path.name
        async with FsWatch(
            self.path.parent,
            recursive=False,
            accept=lambda _change, path: Path(path).name == name,
            # the watch thread wakes every ``step`` ms; an edited config can wait half a
            # second, an idle daemon should not spin.
            step_ms=max(self._debounce_ms, 500),
            stop=stop,
            service=self._fs,
        ) as changes:
            # Armed: a change from now on is reported; a reload catches what came before.
            self._reload(catch_up=True)
            self.ready.set()
            while await changes.next() is not None:
                self._reload()

    def _reload(self, initial: bool = False, catch_up: bool = False) -> None:
        try:
            loaded = load_intents(self.path)
        except IntentFileError as exc:
            repeated = self._error is not None and str(self._error) == str(exc)
            self._error = exc
            if not (catch_up and repeated):
                self._on_error(exc)
            return
        failed, self._error = self._error is not None, None
        if initial or failed or loaded != self._current:
            self._current = loaded
            self._on_load(loaded)
