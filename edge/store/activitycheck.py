"""``mailslot log --verify``: what is wrong with an activity log, and on which line.

The verifier reads the log one line at a time, segment after segment
(``edge.store.activity`` feeds it and sets ``file``), and reports ``Problem``s with codes
(``PROBLEM_CODES``, most serious first) and where they are. The chain starts from the
retention record when retention pruned old segments: what it removed is reported as
pruned (``VerifyReport.pruned``), not missing. It never writes and needs only the log's
MAC function, not the log.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from edge.store.activityline import ZERO_HASH, Anchor, BadLine, canonical, fields
from edge.store.activitysegments import Pruned

#: How far back ``verify`` remembers line hashes to link reordered entries.
_WINDOW = 100_000


#: The codes of ``verify``'s findings, most serious first (``VerifyReport.code`` is the
#: first that occurs).
PROBLEM_CODES = (
    "log_missing",        # no log, but the engine state records entries
    "log_truncated",      # the log ends before the seq the head or the engine records
    "key_mismatch",       # nothing matches the key: another key, or a replaced key file
    "entries_missing",    # a gap in seq inside the log
    "entry_replaced",     # a line whose hash is not what its successor (or an anchor) holds
    "entry_edited",       # a MAC mismatch
    "entry_moved",        # out of order, or a duplicate seq
    "line_unreadable",    # not an entry at all
    "retention_invalid",  # the retention record is garbled or fails its MAC
    "head_invalid",       # the head anchor is missing, garbled or fails its MAC
)


@dataclass(frozen=True)
class Problem:
    """One finding of ``verify``: ``line`` is 1-based in ``file`` (None: the active
    ``activity.log``; else a rotated segment's name), 0 for the head anchor (or, with a
    ``file``, the retention record); ``code`` is one of ``PROBLEM_CODES``."""

    seq: int | None
    line: int
    what: str
    code: str = "entry_edited"
    file: str | None = None

    def __str__(self) -> str:
        if self.line == 0:
            return f"{self.file or 'head anchor'}: {self.what}"
        where = f"{self.file} line {self.line}" if self.file else f"line {self.line}"
        return where + (f" (seq {self.seq})" if self.seq is not None else "") + f": {self.what}"

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "line": self.line, "what": self.what, "code": self.code,
                "file": self.file}


@dataclass(frozen=True)
class VerifyReport:
    """``count``: entries checked, in ``segments`` files (rotated ones and the active
    one); ``pruned``: the last entry retention removed (``seq``, ``hash``, ``until``: its
    time), None if it never removed any."""

    ok: bool
    count: int
    problems: list[Problem]
    segments: int = 1
    pruned: dict[str, Any] | None = None

    @property
    def code(self) -> str | None:
        """The most serious finding's code (``PROBLEM_CODES`` order); None when ok."""
        found = {p.code for p in self.problems}
        return next((c for c in PROBLEM_CODES if c in found), None)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "count": self.count, "code": self.code,
                "problems": [p.to_dict() for p in self.problems],
                "segments": self.segments, "pruned": self.pruned}


class Head(NamedTuple):
    """The head anchor as read: its link, or what is wrong with it (both None: missing)."""

    link: Anchor | None
    problem: str | None = None
    bad_mac: bool = False


class _Seen(NamedTuple):
    hash: str
    line: int
    bad_mac: bool
    file: str | None = None

    def where(self) -> str:
        return f"{self.file} line {self.line}" if self.file else f"line {self.line}"


class Verifier:
    """The checks of ``verify``, one line at a time (the log need not fit in memory).

    Links are checked by ``seq``, not by position, so that two swapped lines read as one
    "out of order" finding rather than a cascade of broken links; an entry whose MAC
    fails is reported once, not again as a broken link of its successor. Set ``file``
    before feeding the lines of each file (None for the active one, fed last)."""

    def __init__(self, mac: Callable[[bytes], str], head_path: Path, key_file: Path,
                 pruned: Pruned | None = None, files: int = 1) -> None:
        self.mac = mac
        self.head_path = head_path
        self.key_file = key_file
        self.pruned = pruned or Pruned()
        self.files = files
        self.file: str | None = None
        self.problems: list[Problem] = []
        self.bad_macs: list[Problem] = []
        self.count = 0
        self.unreadable = 0
        self.last_line = 0  # in the active file
        self.any_line = False
        base = self.pruned.link or Anchor(0, ZERO_HASH)
        record = head_path.with_name(head_path.name.removesuffix(".head") + ".pruned")
        self.floor = base.seq
        self.top = base  # the highest seq so far
        self.top_seen = _Seen(base.hash, 0, False, record.name if base.seq else None)
        self.seen: dict[int, _Seen] = {base.seq: self.top_seen}
        # predecessor seq -> (line, seq, prev, first missing, file) of an entry whose
        # predecessor is not seen yet
        self.waiting: dict[int, tuple[int, int, str, int, str | None]] = {}

    def _problem(self, seq: int | None, line: int, what: str, code: str) -> Problem:
        return Problem(seq, line, what, code, self.file)

    def line(self, number: int, raw: bytes) -> None:
        self.any_line = True
        if self.file is None:
            self.last_line = number
        try:
            doc, _at = fields(raw)
        except BadLine as exc:
            self.problems.append(self._problem(None, number, f"unreadable line: {exc}",
                                               "line_unreadable"))
            self.unreadable += 1
            return
        seq, prev, mac = doc["seq"], doc["prev"], doc.pop("mac")
        if seq <= self.floor and self.floor:
            return  # retention removed it; a crash left its file behind
        self.count += 1
        bad_mac = not hmac.compare_digest(self.mac(canonical(doc).encode()), mac)
        if bad_mac:
            self.bad_macs.append(self._problem(seq, number, "MAC mismatch: the entry was edited",
                                               "entry_edited"))
        digest = hashlib.sha256(raw).hexdigest()
        if seq in self.seen:
            where = self.seen[seq].where()
            self.problems.append(self._problem(seq, number, f"duplicate of seq {seq} on {where}",
                                               "entry_moved"))
            return
        if seq < self.top.seq:
            self.problems.append(self._problem(seq, number, (
                f"out of order: comes after seq {self.top.seq} ({self.top_seen.where()}); "
                "entries were moved"), "entry_moved"))
        before = self.seen.get(seq - 1)
        if before is not None:
            if prev != before.hash and not before.bad_mac:
                self.problems.append(self._problem(seq, number, (
                    f"prev does not match seq {seq - 1} ({before.where()}): "
                    "an entry was replaced"), "entry_replaced"))
        elif seq - 1 > self.top.seq:
            self.waiting[seq - 1] = (number, seq, prev, self.top.seq + 1, self.file)
        later = self.waiting.pop(seq, None)
        here = _Seen(digest, number, bad_mac, self.file)
        if later is not None and later[2] != digest and not bad_mac:
            self.problems.append(Problem(later[1], later[0], (
                f"prev does not match seq {seq} ({here.where()}): an entry was replaced"),
                "entry_replaced", later[4]))
        self.seen[seq] = here
        if seq > self.top.seq:
            self.top, self.top_seen = Anchor(seq, digest), here
        if len(self.seen) > 2 * _WINDOW:
            floor = self.top.seq - _WINDOW
            self.seen = {s: v for s, v in self.seen.items() if s > floor}

    def finish(self, head: Head, torn: int, outside: Anchor | None = None) -> VerifyReport:
        how = "deleted, or on an unreadable line" if self.unreadable else "entries were deleted"
        for number, seq, _prev, first, file in self.waiting.values():
            gap = f"seq {first}" if first == seq - 1 else f"seq {first} to {seq - 1}"
            self.problems.append(Problem(seq, number, f"{gap} missing before this entry: {how}",
                                         "entries_missing", file))
        anchor = head.link
        if anchor is not None and anchor.seq > self.top.seq:
            lost = anchor.seq - self.top.seq
            lost_text = f"{lost} {'entry' if lost == 1 else 'entries'} missing at the end"
            ends = (f"the log ends at seq {self.top.seq} but the head anchor records seq "
                    f"{anchor.seq}: {lost_text}")
            if torn:
                self.problems.append(Problem(self.top.seq + 1, torn, (
                    f"torn last line: {ends} (a write that did not finish, or truncated)"),
                    "log_truncated"))
            else:
                self.problems.append(Problem(self.top.seq + 1, self.last_line + 1,
                                             f"{ends} (truncated)", "log_truncated"))
        elif anchor is not None and (mark := self.seen.get(anchor.seq)) is not None:
            if mark.hash != anchor.hash and not mark.bad_mac:
                self.problems.append(Problem(anchor.seq, mark.line, (
                    "not the entry the head anchor records: it was replaced"),
                    "entry_replaced", mark.file))
        elif anchor is None and head.problem is None and (self.any_line or torn):
            head = Head(None, f"{self.head_path} is missing: cannot tell whether entries "
                               "were removed from the end")
        if head.bad_mac and self.count and len(self.bad_macs) == self.count:
            one = self.bad_macs[0]
            self.problems.append(Problem(one.seq, one.line, (
                f"no MAC matches the key in {self.key_file} ({self.count} of "
                f"{self.count} entries and the head anchor fail): the log was written with "
                "another key; was the key file replaced?"), "key_mismatch"))
        else:
            self.problems.extend(self.bad_macs)
            if head.problem is not None:
                self.problems.append(Problem(None, 0, head.problem, "head_invalid"))
        if self.pruned.problem is not None:
            record = self.head_path.name.removesuffix(".head") + ".pruned"
            self.problems.append(Problem(None, 0, self.pruned.problem, "retention_invalid",
                                         record))
        if outside is not None and outside.seq > 0:
            self._check_outside(outside, torn)
        # rotated segments first (their names sort in seq order), the active file last
        self.problems.sort(key=lambda p: (p.line == 0, p.file is None, p.file or "", p.line))
        return VerifyReport(not self.problems, self.count, self.problems, self.files,
                            self.pruned.to_dict())


    def _check_outside(self, outside: Anchor, torn: int) -> None:
        """The engine state's anchor: entries it vouches for must still be here."""
        recorded = f"the engine state records seq {outside.seq}"
        if not self.any_line and not torn and not self.floor:
            self.problems.append(Problem(outside.seq, 1, (
                f"the log is empty but {recorded}: the log (and its head) were deleted "
                "or replaced"), "log_missing"))
        elif outside.seq > self.top.seq:
            if any(p.code == "log_truncated" for p in self.problems):
                return  # the head anchor already said so
            lost = outside.seq - self.top.seq
            self.problems.append(Problem(self.top.seq + 1, self.last_line + 1, (
                f"the log ends at seq {self.top.seq} but {recorded}: {lost} "
                f"{'entry' if lost == 1 else 'entries'} missing at the end (truncated, "
                "or the log and its head were replaced)"), "log_truncated"))
        elif ((mark := self.seen.get(outside.seq)) is not None
              and mark.hash != outside.hash and not mark.bad_mac):
            self.problems.append(Problem(outside.seq, mark.line, (
                "not the entry the engine state records: it was replaced"), "entry_replaced",
                mark.file))
