"""File watches' paths: what a ``FileWatch``'s ``paths`` and ``ignore`` mean on disk.

Rules this module keeps:

* A path is a literal (a file, or a folder — if it is one when subscribing — meaning
  everything under it, itself included) or a glob. In a glob ``*``, ``?`` and ``[...]``
  match within one path component (``fnmatchcase`` on each component, so ``/src/*.py``
  does not match ``/src/pkg/x.py``) and a whole ``**`` component matches any number of
  folders (``/src/**/*.py``). The *base folder* is the literal prefix before the first
  glob component; it must exist.
* Folders are watched recursively only when needed: a watched folder, or a glob with more
  than one component or a ``**`` below its base. A literal file is watched through its
  folder, non-recursively.
* Ignore patterns (``DEFAULT_IGNORES`` unless ``default_ignores = false``, plus the
  watch's ``ignore``) are matched against each component of the path *below* the watched
  folder or glob base (and, if they contain ``/``, against that whole relative path), so
  ``.git`` hides ``.git/HEAD`` and ``*~`` hides ``notes.txt~``. A file named literally is
  never ignored.
* Pure, but for ``check_file_watch`` and ``resolve``, which look at the disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from edge.errors import WatchDefinitionError
from edge.intents.declarations import DEFAULT_IGNORES, FileWatch

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class PathSpec:
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


def compile_path(watch_id: str, raw: str) -> PathSpec:
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
        return PathSpec(raw, path, None)
    pattern = tuple(components[first:])
    for component in pattern:
        if component.count("[") != component.count("]"):
            raise refuse(f"is a bad glob: unbalanced [ ] in {component!r}")
        if "**" in component and component != "**":
            raise refuse(f"is a bad glob: ** must be a whole component, not {component!r}")
    spec = PathSpec(raw, path, "/" + "/".join(components[:first]), pattern)
    if spec.base == "/" and spec.recursive:
        raise refuse("would watch the whole file system")
    return spec


def _folder(spec: PathSpec) -> str:
    """The folder that must exist: a glob's base, a watched folder, a file's folder."""
    if spec.base is not None:
        return spec.base
    return spec.path if os.path.isdir(spec.path) else os.path.dirname(spec.path)


def check_file_watch(watch: FileWatch) -> None:
    """Refuse a definition that cannot be watched: raise ``WatchDefinitionError`` naming
    the watch and the path. Call it before accepting a definition (``mailslot watch add``,
    loading ``intents.toml``); ``FileWatcher`` itself only logs and skips such paths."""
    for raw in watch.paths:
        spec = compile_path(watch.id, raw)
        folder = _folder(spec)
        if not os.path.isdir(folder):
            raise WatchDefinitionError(
                f"watch {watch.id!r}: path {raw!r}: folder {folder} does not exist"
            )
    for pattern in watch.ignore:
        if pattern.count("[") != pattern.count("]"):
            raise WatchDefinitionError(f"watch {watch.id!r}: bad ignore glob {pattern!r}")


def is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def relative_parts(path: str, folder: str) -> tuple[str, ...] | None:
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
class PathRoute:
    """A path spec resolved against the disk: what to subscribe to, what it matches."""

    spec: PathSpec
    kind: Literal["file", "folder", "glob"]
    root: str
    recursive: bool

    def relative(self, path: str) -> tuple[str, ...] | None:
        """``None`` if ``path`` is not this route's; else the part below the watched
        folder or glob base, which ignores are checked against (empty: never ignored)."""
        if self.kind == "file":
            return () if path == self.spec.path else None
        rel = relative_parts(path, self.root)
        if rel is None or (self.kind == "glob" and not _glob_match(self.spec.pattern, rel)):
            return None
        return rel


def resolve(spec: PathSpec) -> PathRoute:
    if spec.base is not None:
        return PathRoute(spec, "glob", spec.base, spec.recursive)
    if os.path.isdir(spec.path):
        return PathRoute(spec, "folder", spec.path, True)
    return PathRoute(spec, "file", os.path.dirname(spec.path), False)


def ignored(watch: FileWatch, rel: tuple[str, ...]) -> bool:
    if not rel:
        return False
    patterns = [*(DEFAULT_IGNORES if watch.default_ignores else ()), *watch.ignore]
    joined = "/".join(rel)
    return any(
        fnmatchcase(joined, p) if "/" in p else any(fnmatchcase(part, p) for part in rel)
        for p in patterns
    )
