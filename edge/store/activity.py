"""The decision engine's activity log: append-only, hash-chained, HMAC-signed, on disk.

Every step the engine takes for an interrupt (received, matched, suppressed, woken…) is
one line of canonical JSON in ``activity.log``::

    {"at":"2026-11-25T14:03:07.000000Z","detail":{…},"intent":…,"interrupt":…,
     "mac":"…","prev":"…","seq":1,"step":"received","type":"ci.failed"}

Rules this module keeps:

- ``seq`` counts from 1 without gaps; ``prev`` is the SHA-256 of the previous line's bytes
  (without its newline; ``"0"*64`` for the first); ``mac`` is HMAC-SHA256, with the key in
  ``activity.key``, over the canonical JSON of every other field (``canonical`` is the one
  function that makes those bytes). Editing, deleting or moving a line breaks a MAC, a
  ``prev`` link or the order of ``seq``, and ``verify`` says on which line.
- Removing lines from the end breaks nothing inside the log, so a *head anchor* lives
  next to it (``activity.log.head``, 0600): the last ``seq`` and line hash, HMAC-signed,
  replaced atomically (temp file + rename) after every batch.
- One writer at a time, across processes: ``append`` holds an exclusive ``flock`` on the
  log, continues the chain from whatever is on disk (another process may have appended),
  writes the batch, fsyncs once, then moves the head. A batch is acknowledged when
  ``append`` returns.
- A torn last line (a writer killed mid-write) that lies beyond the head was never
  acknowledged: it is cut off on the next open or append. One the head vouches for is
  damage: it stays, and ``verify`` reports it.
- Evidence is never written over. If the head records more than the log holds, new
  entries continue the head's numbering, so the gap stays visible; if the head itself is
  missing or fails its MAC, ``append`` refuses (``ActivityLogError``) until a person has
  looked (``mailslot log --verify``) and moved the log and head aside.
- Deleting the log *and* its head together leaves nothing in these two files to tell, so
  the chain is also anchored outside them: the engine state records the ``seq`` and hash
  of its last batch (``Anchor``) in the transaction that commits the batch, after the
  batch is on disk here. That anchor may lag the log, never lead it, so a crash between
  the two writes is no false alarm. ``verify(anchor)`` reports a log that no longer
  reaches it (``log_missing``, ``log_truncated``); ``continue_after(anchor)`` makes a
  recreated log continue the numbering, so the gap stays visible there too.
- One chain across files: ``rotate`` renames the active file to a segment, ``retain``
  deletes the oldest segments behind a signed retention record
  (``edge.store.activitysegments``); every reader reads them all, in order.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from edge.config import fsync_dir, private_dir
from edge.errors import ActivityLogError
from edge.store.activitycheck import Head, Verifier, VerifyReport
from edge.store.activityfiles import (
    first_line,
    last_line,
    load_key,
    open_log_fd,
    open_read_fd,
    oserrors,
    read_record,
    signed_record,
    write_small,
)
from edge.store.activityline import (
    STEP_SET,
    STEPS,
    ZERO_HASH,
    Anchor,
    BadLine,
    canonical,
    entry_texts,
    fields,
)
from edge.store.activitysegments import (
    Pruned,
    pruned_doc,
    pruned_file,
    read_pruned,
    segment_path,
    segments,
)
from edge.store.db import Closing

_SHA256_BLOCK = 64
_CHUNK = 1 << 20


def to_text(at: datetime) -> str:
    """ISO 8601 UTC with microseconds and ``Z``: fixed width, sorts as time."""
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError(f"activity time must be a timezone-aware datetime, not {at!r}")
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def head_file(log: Path) -> Path:
    """Where the head anchor of the log at ``log`` lives."""
    return log.with_name(log.name + ".head")


@dataclass(frozen=True, slots=True)
class Event:
    """One step the engine took, as it records it. ``step`` is one of ``STEPS``; ``at``
    is aware; ``detail`` is JSON-able (reason, rule, until, outcome, the judge's answer…)."""

    step: str
    at: datetime
    interrupt: str | None = None
    intent: str | None = None
    type: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.step not in STEP_SET:
            raise ValueError(f"unknown activity step {self.step!r} (one of {', '.join(STEPS)})")
        if not isinstance(self.at, datetime) or self.at.utcoffset() is None:
            raise ValueError(f"activity time must be a timezone-aware datetime, not {self.at!r}")
        if not isinstance(self.detail, dict):
            raise ValueError("activity detail must be a dict")


@dataclass(frozen=True, slots=True)
class Entry:
    """An ``Event`` as stored: with its place in the chain and its MAC. ``at`` is UTC."""

    seq: int
    at: datetime
    step: str
    interrupt: str | None
    intent: str | None
    type: str | None
    detail: dict[str, Any]
    prev: str
    mac: str

    def to_dict(self) -> dict[str, Any]:
        """The stored fields; ``canonical(entry.to_dict())`` is the entry's line."""
        return {
            "seq": self.seq, "at": to_text(self.at), "step": self.step,
            "interrupt": self.interrupt, "intent": self.intent, "type": self.type,
            "detail": self.detail, "prev": self.prev, "mac": self.mac,
        }

    @property
    def event(self) -> Event:
        return Event(self.step, self.at, self.interrupt, self.intent, self.type, self.detail)

    @property
    def anchor(self) -> Anchor:
        """This entry's place in the chain, to record outside the log."""
        return Anchor(self.seq, hashlib.sha256(canonical(self.to_dict()).encode()).hexdigest())


def _entry(doc: dict[str, Any], at: datetime) -> Entry:
    return Entry(doc["seq"], at, doc["step"], doc["interrupt"], doc["intent"],
                 doc["type"], doc["detail"], doc["prev"], doc["mac"])


class _Snapshot(NamedTuple):
    """What a reader reads: each file (segment name, None for the active one), an fd of
    its own and the size to read up to; the head anchor and retention record with them."""

    files: list[tuple[str | None, int, int]]
    head: Head
    pruned: Pruned


class ActivityLog(Closing):
    """The log (its segments, see ``edge.store.activitysegments``), its head anchor and
    its key. Build with ``open``; ``close`` when done (or use it as a context manager).
    Safe to share between threads; several processes may append to the same file."""

    def __init__(self, path: Path, key_file: Path, key: bytes, fd: int) -> None:
        self.path = path
        self.key_file = key_file
        self.head_path = head_file(path)
        self.pruned_path = pruned_file(path)
        if len(key) > _SHA256_BLOCK:  # RFC 2104; the log's own keys are 32 bytes
            key = hashlib.sha256(key).digest()
        block = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self._fd = fd
        self._lock = threading.Lock()
        self._tail: tuple[int, Anchor] | None = None  # (file size, link) after our last write
        self._floor: Anchor | None = None  # see ``continue_after``

    @classmethod
    def open(cls, path: Path, key_file: Path) -> ActivityLog:
        """Open (creating if missing) the log, its head and its key. Refuses a key file
        others may read (``KeyFileError``) and a missing key for a log that has entries.
        Cuts off a torn last line that was never acknowledged."""
        path, key_file = Path(path), Path(key_file)
        with oserrors(path):
            private_dir(path.parent)
            fresh = (not path.exists() or path.stat().st_size == 0) and not segments(path)
            key = load_key(key_file, create=fresh, log=path)
            log = cls(path, key_file, key, open_log_fd(path))
        try:
            with log._lock, log._exclusive() as fd:
                log._sync(fd, writing=False)
        except BaseException:
            log.close()
            raise
        return log

    def continue_after(self, anchor: Anchor | None) -> None:
        """Number new entries after ``anchor`` (recorded outside the log) if the log on
        disk ends before it: a deleted or truncated log then shows its gap rather than
        starting over at seq 1 where nobody can tell."""
        with self._lock:
            self._floor = anchor if anchor is not None and anchor.seq > 0 else None
            self._tail = None

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


    # -- writing ----------------------------------------------------------------------

    def record(self, step: str, *, at: datetime, interrupt: str | None = None,
               intent: str | None = None, type: str | None = None, **detail: Any) -> Entry:
        """Append one event; see ``append``."""
        return self.append([Event(step, at, interrupt, intent, type, detail)])[0]

    def append(self, events: Sequence[Event]) -> list[Entry]:
        """Append ``events`` as one batch, durable (one fsync) when this returns.

        Raises ``ValueError`` if a detail is not JSON (nothing is written then), and
        ``ActivityLogError`` if the disk refuses or the head anchor no longer vouches for
        the log: the caller must then treat the batch as not recorded."""
        if not events:
            return []
        with self._lock, self._exclusive() as fd:
            seq, prev = self._sync(fd, writing=True)
            lines: list[str] = []
            entries: list[Entry] = []
            stamp: tuple[datetime, datetime, str] | None = None  # an interrupt's steps share it
            for event in events:
                seq += 1
                if stamp is None or stamp[0] != event.at:
                    utc = event.at.astimezone(UTC)
                    stamp = (event.at, utc, to_text(utc))
                _, at, at_text = stamp
                try:
                    texts = entry_texts(seq, at_text, event.step, event.interrupt,
                                        event.intent, event.type, event.detail, prev)
                    if texts is None:
                        body = {"seq": seq, "at": at_text, "step": event.step,
                                "interrupt": event.interrupt, "intent": event.intent,
                                "type": event.type, "detail": event.detail, "prev": prev}
                        mac = self._mac(canonical(body).encode())
                        line = canonical({**body, "mac": mac})
                    else:
                        head, tail = texts
                        mac = self._mac(f"{head},{tail}".encode())
                        line = f'{head},"mac":"{mac}",{tail}'
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"detail of a {event.step!r} activity is not JSON: {exc}") from None
                lines.append(line)
                entries.append(Entry(seq, at, event.step, event.interrupt, event.intent,
                                     event.type, event.detail, prev, mac))
                prev = hashlib.sha256(line.encode()).hexdigest()
            lines.append("")
            self._write(fd, "\n".join(lines).encode(), Anchor(seq, prev))
        return entries

    def _mac(self, data: bytes) -> str:
        """HMAC-SHA256 of ``data`` under the log's key, as hex (RFC 2104: the hash of the
        outer key block and the hash of the inner key block and ``data``). Both key
        blocks are hashed once at open; each MAC copies the two states, which is what
        ``hmac.HMAC.copy`` does too, minus its Python-level overhead (three MACs and
        hashes per drained interrupt)."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def _write(self, fd: int, data: bytes, link: Anchor) -> None:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            self._write_head(link)
        except OSError as exc:
            self._tail = None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # not acknowledged: leave no half batch behind
            raise ActivityLogError(f"{self.path}: cannot append ({exc.strerror})") from None
        self._tail = (size + len(data), link)

    def _write_head(self, link: Anchor) -> None:
        """Replace the head anchor atomically (we hold the exclusive lock)."""
        write_small(self.head_path, signed_record({"seq": link.seq, "hash": link.hash},
                                                  self._mac))

    def _read_head(self) -> Head:
        read = read_record(self.head_path, ("seq", "hash"), _head_shape, self._mac,
                           what="head anchor", shown=str(self.head_path))
        link = None if read.body is None else Anchor(read.body["seq"], read.body["hash"])
        return Head(link, read.problem, read.bad_mac)

    @contextlib.contextmanager
    def _exclusive(self, kind: int = fcntl.LOCK_EX) -> Iterator[int]:
        """Hold the cross-process write lock (``kind``: or the shared one) on the file
        that is at ``path`` now (it may have been rotated, or moved aside, and recreated
        since we opened it). Caller holds ``_lock``."""
        if self._fd < 0:
            raise ActivityLogError(f"{self.path}: the activity log is closed")
        with oserrors(self.path):
            while True:
                fcntl.flock(self._fd, kind)
                mine = os.fstat(self._fd)
                with contextlib.suppress(FileNotFoundError):
                    there = os.stat(self.path)
                    if (there.st_ino, there.st_dev) == (mine.st_ino, mine.st_dev):
                        break
                os.close(self._fd)  # releases the lock too
                self._fd, self._tail = -1, None
                self._fd = open_log_fd(self.path)
            try:
                yield self._fd
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _sync(self, fd: int, *, writing: bool) -> Anchor:
        """Where the chain continues (under the exclusive lock). Re-reads the tail only if
        the file changed since our own last write; cuts off an unacknowledged torn line.
        With ``writing``, refuses an untrusted head and terminates an acknowledged torn
        line so that it stays visible."""
        size = os.fstat(fd).st_size
        if self._tail is not None and self._tail[0] == size:
            return self._tail[1]
        head = self._read_head()
        raw, end = last_line(fd, size)
        tail: Anchor | None = Anchor(0, ZERO_HASH)
        if raw is not None:
            try:
                tail = Anchor(fields(raw)[0]["seq"], hashlib.sha256(raw).hexdigest())
            except BadLine:
                tail = None
        anchor = head.link
        if anchor is None and head.problem is None and end == 0 and not segments(self.path):
            anchor = Anchor(0, ZERO_HASH)  # a new (or empty) log: anchor it now
            self._write_head(anchor)
        torn = size > end
        if torn and anchor is not None and tail is not None and (
            tail.seq > anchor.seq or tail == anchor
        ):
            os.ftruncate(fd, end)
            os.fsync(fd)
            size, torn = end, False
        if not writing:
            return tail or Anchor(0, ZERO_HASH)
        if anchor is None:
            why = head.problem or f"{self.head_path} is missing"
            raise ActivityLogError(
                f"{why}; entries may have been removed from {self.path}, so nothing more is "
                "appended to it. Run `mailslot log --verify`, then move the log, its segments "
                "and its .head aside (keep them as evidence); a new log starts on the next open"
            )
        if torn:
            os.write(fd, b"\n")  # an acknowledged line was torn: keep it, visibly damaged
            size += 1
        link = tail if tail is not None and tail.seq >= anchor.seq else anchor
        if self._floor is not None and self._floor.seq > link.seq:
            link = self._floor
        self._tail = (size, link)
        return link

    # -- segments and retention ---------------------------------------------------------

    def rotate(self, *, max_bytes: int, max_age: timedelta | None = None,
               now: datetime | None = None) -> Path | None:
        """Make the active file a rotated segment if it holds ``max_bytes`` or more, or
        its first entry is older than ``max_age``: one rename, under the exclusive lock
        (``edge.store.activitysegments``). Returns the segment's path, or None (nothing
        due). Raises ``ActivityLogError`` where ``append`` would."""
        with self._lock, self._exclusive() as fd:
            self._sync(fd, writing=True)  # cuts (or ends) a torn last line first
            size = os.fstat(fd).st_size
            raw = first_line(fd, size)
            if raw is None:
                return None
            try:
                doc, at = fields(raw)
            except BadLine:
                return None  # a damaged first line: left for `verify` to report
            old = max_age is not None and (now or datetime.now(UTC)) - at >= max_age
            if size < max_bytes and not old:
                return None
            target = segment_path(self.path, doc["seq"])
            with oserrors(target):
                if target.exists():
                    raise ActivityLogError(f"{target} exists: cannot rotate {self.path}")
                os.rename(self.path, target)
                fsync_dir(self.path.parent)
                fresh = open_log_fd(self.path)  # readers find an active file at once
            os.close(self._fd)  # the segment's: releases its lock
            self._fd, self._tail = fresh, None
        return target

    def retain(self, *, keep_after: datetime | None = None,
               max_bytes: int | None = None) -> list[Path]:
        """Delete rotated segments, oldest first, while their last entry is before
        ``keep_after`` or the log's files hold more than ``max_bytes``; never the active
        file. The retention record moves to the last entry removed before anything is
        deleted. Returns the deleted segments."""
        with self._lock, self._exclusive() as fd:
            pruned = read_pruned(self.pruned_path, self._mac)
            if pruned.problem is not None:
                raise ActivityLogError(f"{pruned.problem}; nothing is pruned until "
                                       "`mailslot log --verify` passes")
            found = [(s, os.stat(s.path).st_size) for s in segments(self.path)]
            total = os.fstat(fd).st_size + sum(size for _s, size in found)
            base, until, drop = pruned.link, pruned.until, []
            for seg, size in found:
                last = _segment_end(seg.path)
                if last is None:
                    break  # a damaged end: kept, for `verify` to report
                link, at = last
                done = base is not None and link.seq <= base.seq  # a crash left it
                if not (done or (keep_after is not None and at < keep_after)
                        or (max_bytes is not None and total > max_bytes)):
                    break
                drop.append(seg.path)
                total -= size
                if not done:
                    base, until = link, to_text(at)
            if not drop:
                return []
            with oserrors(self.pruned_path):
                if base is not None and until is not None and base != pruned.link:
                    write_small(self.pruned_path, pruned_doc(base, until, self._mac))
                for path in drop:
                    path.unlink(missing_ok=True)
                fsync_dir(self.path.parent)
        return drop

    # -- reading ----------------------------------------------------------------------

    def _snapshot(self) -> _Snapshot:
        """Every file up to a size at which no batch is half-written, each with a private
        fd, and the head anchor and retention record that go with them (taken under a
        shared lock: no rotation or retention happens meanwhile)."""
        with self._lock, self._exclusive(fcntl.LOCK_SH) as fd:
            files: list[tuple[str | None, int, int]] = []
            try:
                for seg in segments(self.path):
                    sfd = open_read_fd(seg.path)
                    if sfd is not None:
                        files.append((seg.path.name, sfd, os.fstat(sfd).st_size))
                files.append((None, os.dup(fd), os.fstat(fd).st_size))
                return _Snapshot(files, self._read_head(), read_pruned(self.pruned_path,
                                                                      self._mac))
            except BaseException:
                for _name, sfd, _size in files:
                    os.close(sfd)
                raise

    def _lines(self, snap: _Snapshot) -> Iterator[tuple[str | None, int, bytes, bool]]:
        """(file, line number, bytes without newline, complete?) of every file in order;
        closes the snapshot's fds."""
        try:
            for name, fd, size in snap.files:
                offset, number, rest = 0, 0, b""
                while offset < size:
                    with oserrors(self.path):
                        chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
                    if not chunk:
                        break
                    offset += len(chunk)
                    parts = (rest + chunk).split(b"\n")
                    rest = parts.pop()
                    for part in parts:
                        number += 1
                        yield name, number, part, True
                if rest:
                    yield name, number + 1, rest, False
        finally:
            for _name, fd, _size in snap.files:
                os.close(fd)

    def entries(self, *, since: datetime | None = None, intent: str | None = None,
                type: str | None = None, interrupt: str | None = None) -> Iterator[Entry]:
        """Entries in log order, across every segment, filtered (every given filter must
        hold; ``since`` is inclusive). Unreadable lines are skipped and MACs are not
        checked: that is what ``verify`` is for."""
        wanted = {k: v for k, v in (("intent", intent), ("type", type),
                                    ("interrupt", interrupt)) if v is not None}
        needles = [canonical(v).encode() for v in wanted.values()]  # cheap pre-filter
        snap = self._snapshot()
        floor = snap.pruned.link.seq if snap.pruned.link is not None else 0
        for _name, _number, raw, complete in self._lines(snap):
            if not complete or not all(n in raw for n in needles):
                continue
            try:
                doc, at = fields(raw)
            except BadLine:
                continue
            if doc["seq"] <= floor:
                continue  # retention removed it (a crash left the file)
            if (since is None or at >= since) and all(doc[k] == v for k, v in wanted.items()):
                yield _entry(doc, at)

    def trace(self, interrupt: str) -> list[Entry]:
        """Every entry of one interrupt, in order."""
        return list(self.entries(interrupt=interrupt))

    def verify(self, anchor: Anchor | None = None) -> VerifyReport:
        """Check every line of every segment: its shape and MAC, the ``prev`` chain
        (across segments, from the retention record if segments were pruned), the order
        of ``seq``, the head anchor and ``anchor`` (the engine state's, if the caller has
        one), and say where each problem is. Writers are not held up."""
        snap = self._snapshot()
        check = Verifier(self._mac, self.head_path, self.key_file, snap.pruned,
                         len(snap.files))
        torn = 0
        for name, number, raw, complete in self._lines(snap):
            check.file = name
            if complete or name is not None:
                check.line(number, raw)
            else:
                torn = number
        check.file = None
        return check.finish(snap.head, torn, anchor)


def _head_shape(body: dict[str, Any]) -> bool:
    return type(body["seq"]) is int and isinstance(body["hash"], str)


def _segment_end(path: Path) -> tuple[Anchor, datetime] | None:
    """The last entry of a rotated segment: its place in the chain and its time."""
    fd = open_read_fd(path)
    if fd is None:
        return None
    try:
        raw, _end = last_line(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    if raw is None:
        return None
    try:
        doc, at = fields(raw)
    except BadLine:
        return None
    return Anchor(doc["seq"], hashlib.sha256(raw).hexdigest()), at
