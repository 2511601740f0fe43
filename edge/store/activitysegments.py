"""The activity log's segments and its retention record (``edge.store.activity``).

The log is one chain over several files, read in this order::

    activity.log.000000000001   a rotated segment: its name is the seq of its first line
    activity.log.000000004711   the next one: its first line's ``prev`` is the hash of
                                the last line of the one before
    activity.log                the active segment, the only one written to

Rules this module keeps:

- **Rotation is one rename.** The active file is renamed to its segment name (under the
  log's exclusive lock, then the folder is fsynced); the next writer creates a new
  ``activity.log`` and continues the chain from the head anchor. There is no moment at
  which a line is in two files or in none, so a ``kill -9`` at any point loses nothing
  and repeats nothing.
- **Retention drops whole segments, oldest first, and says so.** Before a segment is
  deleted, the *retention record* ``activity.log.pruned`` (0600, HMAC-signed, replaced
  atomically) is moved to the last entry being dropped: its ``seq``, line hash and time.
  ``verify`` starts the chain there, so what retention removed is reported as pruned,
  not as missing; lines at or below the record's ``seq`` still on disk (a crash between
  the record and the unlink) are skipped by every reader and deleted next time.
- The record's MAC covers ``"kind": "pruned"`` too, so a head anchor copied over it
  does not pass as one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from edge.store.activityfiles import read_record, signed_record
from edge.store.activityline import Anchor

#: Rotated segments: the log's name, a dot, the first seq in 12 digits.
SEGMENT_DIGITS = 12
_SEGMENT = re.compile(rf"^\.(\d{{{SEGMENT_DIGITS}}})$")
_KIND = "pruned"


class Segment(NamedTuple):
    """A rotated segment: its file and the seq of its first line (from its name)."""

    path: Path
    first: int


def segment_path(log: Path, first: int) -> Path:
    return log.with_name(f"{log.name}.{first:0{SEGMENT_DIGITS}d}")


def pruned_file(log: Path) -> Path:
    """Where the retention record of the log at ``log`` lives."""
    return log.with_name(log.name + ".pruned")


def segments(log: Path) -> list[Segment]:
    """The rotated segments of ``log``, oldest first."""
    found = []
    prefix = log.name
    try:
        names = [p for p in log.parent.iterdir() if p.name.startswith(prefix)]
    except FileNotFoundError:
        return []
    for path in names:
        match = _SEGMENT.match(path.name[len(prefix):])
        if match:
            found.append(Segment(path, int(match.group(1))))
    return sorted(found, key=lambda s: s.first)


@dataclass(frozen=True)
class Pruned:
    """The retention record as read: the last entry retention removed (``link``: its seq
    and line hash; ``until``: its time, as stored), or what is wrong with the record
    (all None: there is none, nothing was ever pruned)."""

    link: Anchor | None = None
    until: str | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any] | None:
        if self.link is None:
            return None
        return {"seq": self.link.seq, "hash": self.link.hash, "until": self.until}


def pruned_doc(link: Anchor, until: str, mac: Callable[[bytes], str]) -> bytes:
    """The bytes of a retention record for ``link`` (the last entry removed, at ``until``)."""
    return signed_record({"kind": _KIND, "seq": link.seq, "hash": link.hash, "until": until},
                         mac)


def read_pruned(path: Path, mac: Callable[[bytes], str]) -> Pruned:
    """The retention record at ``path``, checked against the log's key."""
    read = read_record(path, ("kind", "seq", "hash", "until"), _pruned_shape, mac,
                       what="retention record", shown=path.name)
    if read.body is None:
        return Pruned(problem=read.problem)
    return Pruned(Anchor(read.body["seq"], read.body["hash"]), read.body["until"])


def _pruned_shape(body: dict[str, Any]) -> bool:
    return (body["kind"] == _KIND and type(body["seq"]) is int and body["seq"] >= 1
            and isinstance(body["hash"], str) and isinstance(body["until"], str))
