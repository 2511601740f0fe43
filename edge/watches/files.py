"""File watches: inotify events on the paths a ``FileWatch`` names, as debounced events.

Rules this module keeps:

* ``edge.intents.declarations.FileWatch`` says what a file watch is; this module only checks that a
  definition can be watched (``check_file_watch``) and runs the watching (``FileWatcher``).
* It is the adapter for ``watchfiles`` of file watches (``edge.intents.file`` has its own
  for ``intents.toml``). The kernel reports changes (inotify); nothing here polls the file
  system. watchfiles' thread hands collected events over, and checks its stop flag, every
  *step*: half the smallest debounce in force, 10 to 50 ms.
* A folder created or moved into a recursively watched tree is read once, when it is
  reported: what it holds is reported as created (inotify cannot report what was put in
  it before it was watched). That creation comes before whatever inotify reported for the
  same path in the same step: a file written while its new folder was being watched is
  reported as a bare modification, and is still created.
* A path is a literal (a file, or a folder — if it is one when subscribing — meaning
  everything under it, itself included) or a glob. In a
  glob ``*``, ``?`` and ``[...]`` match within one path component (``fnmatchcase`` on each
  component, so ``/src/*.py`` does not match ``/src/pkg/x.py``) and a whole ``**``
  component matches any number of folders (``/src/**/*.py``). The *base folder* is the
  literal prefix before the first glob component; it must exist.
* Folders are watched recursively only when needed: a watched folder, or a glob with more
  than one component or a ``**`` below its base. A literal file is watched through its
  folder, non-recursively.
* Ignore patterns (``DEFAULT_IGNORES`` unless ``default_ignores = false``, plus the
  watch's ``ignore``) are matched against each component of the path *below* the watched
  folder or glob base (and, if they contain ``/``, against that whole relative path), so
  ``.git`` hides ``.git/HEAD`` and ``*~`` hides ``notes.txt~``. A file named literally is
  never ignored.
* Changes are merged per watch for ``debounce`` seconds after the first one, then emitted
  as one ``FileEvent``; per path the last change wins, except: created then deleted is
  nothing, created then modified is created, deleted then created (a replacement) is
  modified. ``changes`` filters after merging.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal

from edge.errors import EdgeError
from edge.intents.declarations import DEFAULT_IGNORES, FileWatch
from shared.envelope import PAYLOAD_MAX_BYTES
from shared.host.waiting import first_of, settle

log = logging.getLogger("mailslot.edge.watches.file")

Change = Literal["created", "modified", "deleted"]

#: ``watchfiles.Change`` values (an IntEnum) to our names.
_CHANGES: dict[int, Change] = {1: "created", 2: "modified", 3: "deleted"}
#: Bounds of the step (ms) at which watchfiles' thread hands over collected events; the
#: step also bounds how fast ``stop`` and ``set_watches`` take effect.
#: watchfiles' notify thread wakes every ``step`` ms (taking the GIL to check its stop
#: flag): 50 ms keeps an idle edge under 0.1 % CPU and a change under ~150 ms away.
STEP_MIN_MS, STEP_MAX_MS = 50, 50
#: Wait before re-subscribing after watchfiles failed (not a poll: a back-off).
RETRY_DELAY = 0.5
#: Room kept in a payload for everything but the change list and the content.
_PAYLOAD_OVERHEAD = 512
_GLOB_CHARS = frozenset("*?[")
#: Most entries reported for one folder that appeared in a recursively watched tree.
SCAN_MAX_ENTRIES = 10_000


class WatchDefinitionError(EdgeError):
    """A watch cannot be watched as defined: a relative path, a missing folder, a bad glob."""

    code = "invalid_watch"


# -- paths and globs (pure, but for ``check_file_watch`` and ``_resolve``) -------------


@dataclass(frozen=True)
class _PathSpec:
    """One entry of ``FileWatch.paths``, ``~`` expanded and normalized."""

    raw: str
    path: str
    #: The literal folder prefix of a glob; ``None`` for a literal path.
    base: str | None
    #: Glob components below ``base``.
    pattern: tuple[str, ...] = ()

    @property
    def recursive(self) -> bool:
        return len(self.pattern) > 1 or "**" in self.pattern


def _is_glob(component: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(component)


def _compile(watch_id: str, raw: str) -> _PathSpec:
    def refuse(why: str) -> WatchDefinitionError:
        return WatchDefinitionError(f"watch {watch_id!r}: path {raw!r} {why}")

    expanded = os.path.expanduser(raw)
    if not os.path.isabs(expanded):
        raise refuse("is not absolute (start it with / or ~)")
    if ".." in expanded.split("/"):
        raise refuse("contains '..'")
    path = "/" + os.path.normpath(expanded).lstrip("/")
    components = [c for c in path.split("/") if c]
    first = next((i for i, c in enumerate(components) if _is_glob(c)), None)
    if first is None:
        return _PathSpec(raw, path, None)
    pattern = tuple(components[first:])
    for component in pattern:
        if component.count("[") != component.count("]"):
            raise refuse(f"is a bad glob: unbalanced [ ] in {component!r}")
        if "**" in component and component != "**":
            raise refuse(f"is a bad glob: ** must be a whole component, not {component!r}")
    spec = _PathSpec(raw, path, "/" + "/".join(components[:first]), pattern)
    if spec.base == "/" and spec.recursive:
        raise refuse("would watch the whole file system")
    return spec


def _folder(spec: _PathSpec) -> str:
    """The folder that must exist: a glob's base, a watched folder, a file's folder."""
    if spec.base is not None:
        return spec.base
    return spec.path if os.path.isdir(spec.path) else os.path.dirname(spec.path)


def check_file_watch(watch: FileWatch) -> None:
    """Refuse a definition that cannot be watched: raise ``WatchDefinitionError`` naming
    the watch and the path. Call it before accepting a definition (``mailslot watch add``,
    loading ``intents.toml``); ``FileWatcher`` itself only logs and skips such paths."""
    for raw in watch.paths:
        spec = _compile(watch.id, raw)
        folder = _folder(spec)
        if not os.path.isdir(folder):
            raise WatchDefinitionError(
                f"watch {watch.id!r}: path {raw!r}: folder {folder} does not exist"
            )
    for pattern in watch.ignore:
        if pattern.count("[") != pattern.count("]"):
            raise WatchDefinitionError(f"watch {watch.id!r}: bad ignore glob {pattern!r}")


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _relative(path: str, folder: str) -> tuple[str, ...] | None:
    if path == folder:
        return ()
    prefix = folder.rstrip("/") + "/"
    return tuple(path[len(prefix):].split("/")) if path.startswith(prefix) else None


def _glob_match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_glob_match(rest, parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], head) and _glob_match(rest, parts[1:])


@dataclass(frozen=True)
class _Route:
    """A path spec resolved against the disk: what to subscribe to, what it matches."""

    spec: _PathSpec
    kind: Literal["file", "folder", "glob"]
    root: str
    recursive: bool

    def relative(self, path: str) -> tuple[str, ...] | None:
        """``None`` if ``path`` is not this route's; else the part below the watched
        folder or glob base, which ignores are checked against (empty: never ignored)."""
        if self.kind == "file":
            return () if path == self.spec.path else None
        rel = _relative(path, self.root)
        if rel is None or (self.kind == "glob" and not _glob_match(self.spec.pattern, rel)):
            return None
        return rel


def _resolve(spec: _PathSpec) -> _Route:
    if spec.base is not None:
        return _Route(spec, "glob", spec.base, spec.recursive)
    if os.path.isdir(spec.path):
        return _Route(spec, "folder", spec.path, True)
    return _Route(spec, "file", os.path.dirname(spec.path), False)


def _ignored(watch: FileWatch, rel: tuple[str, ...]) -> bool:
    if not rel:
        return False
    patterns = [*(DEFAULT_IGNORES if watch.default_ignores else ()), *watch.ignore]
    joined = "/".join(rel)
    return any(
        fnmatchcase(joined, p) if "/" in p else any(fnmatchcase(part, p) for part in rel)
        for p in patterns
    )


# -- merging --------------------------------------------------------------------------

#: (what the window holds, what happened next) → what it holds now; ``None``: nothing.
_MERGE: dict[tuple[Change, Change], Change | None] = {
    ("created", "created"): "created",
    ("created", "modified"): "created",
    ("created", "deleted"): None,
    ("modified", "created"): "modified",
    ("modified", "modified"): "modified",
    ("modified", "deleted"): "deleted",
    ("deleted", "created"): "modified",
    ("deleted", "modified"): "modified",
    ("deleted", "deleted"): "deleted",
}


_ORDER: tuple[Change, ...] = ("modified", "created", "deleted")


def _in_order(path: str, kinds: set[Change]) -> list[Change]:
    """watchfiles hands over an unordered set per step; put one path's changes in the
    order they must have happened. Both created and deleted: if the path exists now it
    was replaced (deleted, then created), else it came and went."""
    if "created" in kinds and "deleted" in kinds:
        if os.path.lexists(path):
            return ["deleted", "created"]
        return ["created", "deleted"]
    # watchfiles drops a modification that follows a creation in the same step, so a
    # modification seen with a creation came first (then a rename over the file).
    return [k for k in _ORDER if k in kinds]


def ordered(kinds: dict[str, set[Change]], found: Iterable[str] = ()
            ) -> dict[str, list[Change]]:
    """One step's changes per path (what watchfiles handed over), each path's in the order
    they must have happened: ``merge`` them in that order. ``found`` are paths a scan of a
    folder that just appeared found in it: they were there before that folder was
    watched, so their creation comes first, before anything inotify reported for them (a
    write racing the new watch shows up as a bare ``modified``: created then modified is
    still created)."""
    result = {path: _in_order(path, path_kinds) for path, path_kinds in kinds.items()}
    for path in dict.fromkeys(found):  # nested new folders find a path twice
        result[path] = ["created", *result.get(path, ())]
    return result


def merge(changes: dict[str, Change], path: str, change: Change) -> None:
    """Fold one more change of ``path`` into a debounce window's ``changes``."""
    before = changes.get(path)
    after = change if before is None else _MERGE[before, change]
    if after is None:
        del changes[path]
    else:
        changes[path] = after


# -- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEvent:
    """What one watch saw during one debounce window: ``changes`` sorted by path, each
    ``{"path": str, "change": "created" | "modified" | "deleted"}``, one per path."""

    watch: FileWatch
    changes: list[dict[str, str]]

    def event_type(self) -> str:
        """The interrupt type: the watch's ``type``, else ``file.<change>`` when all
        changes are of one kind, else ``file.changed``."""
        if self.watch.type:
            return self.watch.type
        kinds = {c["change"] for c in self.changes}
        return f"file.{kinds.pop()}" if len(kinds) == 1 else "file.changed"

    def payload(self) -> dict[str, Any]:
        """The interrupt payload, within ``PAYLOAD_MAX_BYTES``: ``changes`` (as many as
        fit), ``count`` (all of them) and, if the watch has ``include_content``,
        ``content`` ``{path: text}`` read *now* from created and modified regular files
        (never through a symlink), at most ``content_max`` bytes of JSON text in all
        (shared in path order, so that an event of many files still fits an interrupt).
        Anything cut adds ``"truncated": true``."""
        reading = self.watch.include_content
        budget = PAYLOAD_MAX_BYTES - _PAYLOAD_OVERHEAD
        if reading:
            budget -= self.watch.content_max
        listed: list[dict[str, str]] = []
        for change in self.changes:
            budget -= _json_size(change) + 1
            if reading and change["change"] != "deleted":
                budget -= _json_size(change["path"]) + 4  # its key in "content", '"":,'
            if budget < 0:
                break
            listed.append(change)
        doc: dict[str, Any] = {"changes": listed, "count": len(self.changes)}
        truncated = len(listed) < len(self.changes)
        if reading:
            paths = [c["path"] for c in listed if c["change"] != "deleted"]
            doc["content"], cut = _read_contents(paths, self.watch.content_max)
            truncated = truncated or cut
        if truncated:
            doc["truncated"] = True
        return doc


def _json_size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _read_contents(paths: list[str], limit: int) -> tuple[dict[str, str], bool]:
    """Texts of ``paths`` (in order) sharing ``limit`` bytes, measured as JSON strings
    (quotes and escapes included); whether anything was cut."""
    content: dict[str, str] = {}
    truncated = False
    remaining = limit
    for path in paths:
        if remaining < 2:  # not even the quotes of an empty text
            truncated = True
            break
        head = _read_head(path, remaining - 2)
        if head is None:
            continue
        data, more = head
        text = data.decode("utf-8", errors="replace")
        if _json_size(text) > remaining:  # escapes and replacement characters take room
            text, more = _fit(text, remaining), True
        content[path] = text
        truncated = truncated or more
        remaining -= _json_size(text)
    return content, truncated


def _fit(text: str, size: int) -> str:
    """The longest prefix of ``text`` whose JSON string takes at most ``size`` bytes."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if _json_size(text[:middle]) <= size:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def _read_head(path: str, size: int) -> tuple[bytes, bool] | None:
    """The first ``size`` bytes of a regular file and whether there is more; ``None`` for
    anything else (gone, unreadable, a symlink, a FIFO, a folder)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        want = size + 1
        while want > 0 and (chunk := os.read(fd, want)):
            chunks.append(chunk)
            want -= len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return data[:size], len(data) > size


# -- the watcher ----------------------------------------------------------------------


@dataclass
class _Window:
    watch: FileWatch
    handle: asyncio.TimerHandle
    changes: dict[str, Change] = field(default_factory=dict)


@dataclass
class _Plan:
    """What one subscription watches, built from the watches in force."""

    routes: list[tuple[FileWatch, list[_Route]]]
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
        routes: list[tuple[FileWatch, list[_Route]]] = []
        recursive: set[str] = set()
        flat: set[str] = set()
        missing: set[str] = set()
        debounces: list[float] = []
        for watch in watches:
            resolved: list[_Route] = []
            for raw in watch.paths:
                try:
                    route = _resolve(_compile(watch.id, raw))
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
        kept = [r for r in kept if not any(o != r and _under(r, o) for o in kept)]
        flats = sorted(f for f in flat if not any(_under(f, r) for r in kept))
        step = min(debounces, default=1.0) * 1000 / 2
        step_ms = int(min(max(step, STEP_MIN_MS), STEP_MAX_MS))
        files = frozenset(r.spec.path for _, rs in routes for r in rs if r.kind == "file")
        return cls(routes, kept, flats, sorted(missing), files, step_ms)


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

    def __init__(self, emit: Callable[[FileEvent], None]) -> None:
        self.ready = asyncio.Event()
        self._emit = emit
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
        try:
            while not stop.is_set():
                self._replan.clear()
                self._plan = _Plan.build(self._watches)
                if not await self._follow(self._plan, stop):
                    await first_of(stop.wait(), self._replan.wait(), timeout=RETRY_DELAY)
            for watch_id in list(self._windows):
                self._flush(watch_id)
        finally:
            for window in self._windows.values():
                window.handle.cancel()
            self._windows.clear()

    async def _follow(self, plan: _Plan, stop: asyncio.Event) -> bool:
        """Subscribe as ``plan`` says until stop or re-plan (True) or failure (False)."""
        from watchfiles import awatch

        halt = asyncio.Event()  # ours, not ``stop``: awatch sets it when cancelled
        streams = [
            awatch(*roots, watch_filter=None, step=plan.step_ms, debounce=2 * plan.step_ms,
                   stop_event=halt, recursive=recursive, ignore_permission_denied=True)
            for roots, recursive in ((plan.recursive, True), (plan.flat, False)) if roots
        ]
        # Each generator's first step creates its inotify watches before it first awaits;
        # one turn of the loop runs them all.
        firsts = [asyncio.ensure_future(anext(stream)) for stream in streams]
        pumps: list[asyncio.Task[None]] = []
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self._replan.wait())]
        try:
            await asyncio.sleep(0)
            pumps = [asyncio.create_task(self._pump(s, f)) for s, f in zip(streams, firsts, strict=True)]
            if not self._replan.is_set() and not any(f.done() and f.exception() for f in firsts):
                self.ready.set()
            await asyncio.wait([*pumps, *waiters], return_when=asyncio.FIRST_COMPLETED)
        finally:
            halt.set()  # watchfiles' threads see it within one step
            for waiter in waiters:
                waiter.cancel()
            for first in firsts[len(pumps):]:  # only if cancelled before the pumps began
                first.cancel()
            outcomes = await settle([*pumps, *firsts[len(pumps):]])
            for stream in streams:
                with contextlib.suppress(RuntimeError):
                    await stream.aclose()
        failures = [o for o in outcomes if isinstance(o, Exception)]
        for failure in failures:
            log.error("file watches: watching failed (%s: %s); subscribing again",
                      type(failure).__name__, failure)
        return not failures

    async def _pump(self, stream: AsyncGenerator[set[tuple[Any, str]], None],
                    pending: asyncio.Future[set[tuple[Any, str]]]) -> None:
        """Route every batch ``stream`` yields until it ends (after ``halt``)."""
        try:
            while True:
                batch = await pending
                self._route({(int(change), path) for change, path in batch})
                pending = asyncio.ensure_future(anext(stream))
        except StopAsyncIteration:
            return
        finally:
            if not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)

    # -- routing --------------------------------------------------------------------

    def _route(self, batch: set[tuple[int, str]]) -> None:
        by_path: dict[str, set[Change]] = {}
        for code, path in batch:
            by_path.setdefault(path, set()).add(_CHANGES[code])
        for path, order in sorted(ordered(by_path, self._scan_new_folders(by_path)).items()):
            self._note_folders(path, set(order))
            for watch, routes in self._plan.routes:
                rel = next((r for route in routes if (r := route.relative(path)) is not None),
                           None)
                if rel is None or _ignored(watch, rel):
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
                rel = _relative(folder, route.root) if route.recursive else None
                if rel is not None and not _ignored(watch, rel):
                    return True
        return False

    def _note_folders(self, path: str, kinds: set[Change]) -> None:
        """Re-plan when a watched folder goes, or when one that was gone may be back."""
        plan = self._plan
        if "deleted" in kinds and (path in plan.recursive or path in plan.flat):
            log.warning("file watches: folder %s was deleted", path)
        elif "created" not in kinds or not (
            any(_under(m, path) for m in plan.missing)
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
