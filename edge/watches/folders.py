"""The folders a new watch names must exist: checked by ``mailslot watch add`` and the MCP
``watch_add`` tool before the watch is written. Only adding checks this: a watch in the
file whose folder disappears later is the daemon's to report."""

from __future__ import annotations

from pathlib import Path

from edge.errors import InvalidWatch
from edge.intents.declarations import CommandWatch, FileWatch, Watch

_GLOB_CHARS = frozenset("*?[")


def check_folders(watch: Watch) -> None:
    """Refuse a file watch on a relative path, or whose folder (the part before the first
    glob character) does not exist, and a command watch whose ``cwd`` is not an existing
    absolute folder: ``InvalidWatch``."""
    if isinstance(watch, FileWatch):
        for text in watch.paths:
            path = Path(text).expanduser()
            if not path.is_absolute():
                raise InvalidWatch(f"--path {text!r}: must be absolute (or start with ~)")
            parts = path.parts
            first_glob = next((i for i, part in enumerate(parts) if _GLOB_CHARS & set(part)), None)
            folder = path.parent if first_glob is None else Path(*parts[:first_glob])
            if not folder.is_dir():
                raise InvalidWatch(f"--path {text!r}: folder {str(folder)!r} does not exist")
    if isinstance(watch, CommandWatch) and watch.cwd is not None:
        cwd = Path(watch.cwd).expanduser()
        if not cwd.is_absolute() or not cwd.is_dir():
            raise InvalidWatch(f"--cwd {watch.cwd!r}: not an existing absolute folder")
