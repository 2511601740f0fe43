"""What one file watch saw: the changes merged over a debounce window, and the
``FileEvent`` they become (its interrupt type and payload, with content excerpts).

Rules this module keeps:

* Changes are merged per watch for ``debounce`` seconds after the first one, then emitted
  as one ``FileEvent``; per path the last change wins, except: created then deleted is
  nothing, created then modified is created, deleted then created (a replacement) is
  modified. ``changes`` filters after merging.
* A payload always fits an interrupt (``PAYLOAD_MAX_BYTES``): what does not fit is cut
  and marked ``"truncated": true``. Content is read when the event is built, from regular
  files only, never through a symlink.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edge.fswatch import Change
from edge.intents.declarations import FileWatch
from shared.envelope import PAYLOAD_MAX_BYTES

#: Room kept in a payload for everything but the change list and the content.
_PAYLOAD_OVERHEAD = 512

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
    """``edge.fswatch`` hands over an unordered batch per step; put one path's changes in
    the order they must have happened. Both created and deleted: if the path exists now it
    was replaced (deleted, then created), else it came and went."""
    if "created" in kinds and "deleted" in kinds:
        if os.path.lexists(path):
            return ["deleted", "created"]
        return ["created", "deleted"]
    # edge.fswatch drops a modification that follows a creation in the same batch (as
    # watchfiles does), so a modification seen with a creation came first (then a rename
    # over the file).
    return [k for k in _ORDER if k in kinds]


def ordered(kinds: dict[str, set[Change]], found: Iterable[str] = ()
            ) -> dict[str, list[Change]]:
    """One step's changes per path (one ``edge.fswatch`` batch), each path's in the order
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
