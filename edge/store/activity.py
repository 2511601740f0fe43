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
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from edge.config import FILE_MODE, private_dir
from edge.errors import EdgeError, KeyFileError

STEPS = (
    "received", "verified", "rejected", "matched", "unmatched", "judged", "suppressed",
    "deferred", "coalesced", "woken", "delivered", "outcome", "activity",
    "intents_loaded", "intents_refused", "replayed",
    # local watches (see edge.watches.runner)
    "watch_fired", "watch_skipped", "watch_error", "sleep_started", "sleep_ended",
    "sleep_interrupted",
    # approvals (see edge.approvals)
    "approval_requested", "approval_decided", "approval_suggested",
)
_STEP_SET = frozenset(STEPS)
ZERO_HASH = "0" * 64
KEY_SIZE = 32
_SHA256_BLOCK = 64
_FIELDS = frozenset({"seq", "at", "step", "interrupt", "intent", "type", "detail", "prev", "mac"})
_HEX = frozenset("0123456789abcdef")
_CHUNK = 1 << 20
#: How far back ``verify`` remembers line hashes to link reordered entries.
_WINDOW = 100_000


class Anchor(NamedTuple):
    """A place in the chain recorded outside the log: the ``seq`` of an entry and the
    SHA-256 of its line (what the next entry's ``prev`` holds)."""

    seq: int
    hash: str


class ActivityLogError(EdgeError):
    """The activity log cannot be written or read: an OS error, a missing key for an
    existing log, or a head anchor that no longer vouches for the log."""

    code = "activity_log_error"


class NoRecord(EdgeError):
    """The log has no entry for the interrupt asked about (unknown id, or not decided
    yet); ``mailslot explain`` and the MCP ``explain`` tool refuse with it."""

    code = "no_record"


#: Built once: ``json.dumps`` with options builds a new encoder on every call, which was
#: half the cost of a log entry while draining (three entries per interrupt).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)
#: What ``_CANONICAL`` writes for a ``str`` (``ensure_ascii=False``), as one C call.
_encode_str: Callable[[str], str] = json.encoder.encode_basestring


def canonical(obj: Any) -> str:
    """The one serialization of entries and head: what is hashed, signed and stored."""
    return _CANONICAL.encode(obj)


def _json_text(value: str | None) -> str:
    """``canonical(value)`` for the plain-string fields of an entry (or null)."""
    return "null" if value is None else _encode_str(value)


def _entry_texts(seq: int, at: str, event: Event, prev: str) -> tuple[str, str] | None:
    """The canonical JSON of an entry split around where ``mac`` goes: ``head + "," +
    tail`` is ``canonical(body)`` (what the MAC covers) and ``head + ',"mac":"…",' +
    tail`` is the stored line (sorted keys put ``mac`` between ``interrupt`` and
    ``prev``). Built from the fields, so that an entry costs one encoding of its
    ``detail`` rather than two of the whole entry: the log is written three times per
    drained interrupt. ``None`` when a field is not a plain string (or null), which only
    ``canonical`` itself may encode; the caller then falls back to it. Raises what
    ``canonical`` raises for a ``detail`` that is not JSON."""
    interrupt, intent, type_, step = event.interrupt, event.intent, event.type, event.step
    if not (_plain(interrupt) and _plain(intent) and _plain(type_) and type(step) is str
            and type(prev) is str):
        return None
    head = (f'{{"at":{_encode_str(at)},"detail":{canonical(event.detail)},'
            f'"intent":{_json_text(intent)},"interrupt":{_json_text(interrupt)}')
    tail = (f'"prev":{_encode_str(prev)},"seq":{seq:d},"step":{_encode_str(step)},'
            f'"type":{_json_text(type_)}}}')
    return head, tail


def _plain(value: object) -> bool:
    return value is None or type(value) is str


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
        if self.step not in _STEP_SET:
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
    "head_invalid",       # the head anchor is missing, garbled or fails its MAC
)


@dataclass(frozen=True)
class Problem:
    """One finding of ``verify``: ``line`` is 1-based in the log (0: the head anchor);
    ``code`` is one of ``PROBLEM_CODES``."""

    seq: int | None
    line: int
    what: str
    code: str = "entry_edited"

    def __str__(self) -> str:
        if self.line == 0:
            return f"head anchor: {self.what}"
        return f"line {self.line}" + (f" (seq {self.seq})" if self.seq is not None else "") + f": {self.what}"

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "line": self.line, "what": self.what, "code": self.code}


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    count: int
    problems: list[Problem]

    @property
    def code(self) -> str | None:
        """The most serious finding's code (``PROBLEM_CODES`` order); None when ok."""
        found = {p.code for p in self.problems}
        return next((c for c in PROBLEM_CODES if c in found), None)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "count": self.count, "code": self.code,
                "problems": [p.to_dict() for p in self.problems]}


_Link = Anchor  # a place in the chain: the last ``seq`` and the hash of its line


class _BadLine(ValueError):
    pass


def _fields(line: bytes) -> tuple[dict[str, Any], datetime]:
    """Parse and shape-check one line: its fields as stored, and its time. Raises
    ``_BadLine`` saying what is wrong."""
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise _BadLine("not JSON") from None
    if not isinstance(doc, dict) or doc.keys() != _FIELDS:
        raise _BadLine("not an activity entry (wrong fields)")
    seq, prev, mac = doc["seq"], doc["prev"], doc["mac"]
    if type(seq) is not int or seq < 1:
        raise _BadLine("seq is not a positive integer")
    for name, value in (("prev", prev), ("mac", mac)):
        if not (isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)):
            raise _BadLine(f"{name} is not a SHA-256 hex digest")
    if doc["step"] not in _STEP_SET:
        raise _BadLine(f"unknown step {doc['step']!r}")
    if any(doc[k] is not None and not isinstance(doc[k], str) for k in ("interrupt", "intent", "type")):
        raise _BadLine("interrupt, intent and type must be strings or null")
    if not isinstance(doc["detail"], dict):
        raise _BadLine("detail is not an object")
    try:
        at = datetime.fromisoformat(doc["at"]) if isinstance(doc["at"], str) else None
    except ValueError:
        at = None
    if at is None or at.utcoffset() is None:
        raise _BadLine("at is not an ISO 8601 UTC time")
    return doc, at


def _entry(doc: dict[str, Any], at: datetime) -> Entry:
    return Entry(doc["seq"], at, doc["step"], doc["interrupt"], doc["intent"],
                 doc["type"], doc["detail"], doc["prev"], doc["mac"])


class _Head(NamedTuple):
    """The head anchor as read: its link, or what is wrong with it (both None: missing)."""

    link: _Link | None
    problem: str | None = None
    bad_mac: bool = False


class ActivityLog:
    """The log file, its head anchor and its key. Build with ``open``; ``close`` when done
    (or use it as a context manager). Safe to share between threads; several processes
    may append to the same file."""

    def __init__(self, path: Path, key_file: Path, key: bytes, fd: int) -> None:
        self.path = path
        self.key_file = key_file
        self.head_path = head_file(path)
        if len(key) > _SHA256_BLOCK:  # RFC 2104; the log's own keys are 32 bytes
            key = hashlib.sha256(key).digest()
        block = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self._fd = fd
        self._lock = threading.Lock()
        self._tail: tuple[int, _Link] | None = None  # (file size, link) after our last write
        self._floor: _Link | None = None  # see ``continue_after``

    @classmethod
    def open(cls, path: Path, key_file: Path) -> ActivityLog:
        """Open (creating if missing) the log, its head and its key. Refuses a key file
        others may read (``KeyFileError``) and a missing key for a log that has entries.
        Cuts off a torn last line that was never acknowledged."""
        path, key_file = Path(path), Path(key_file)
        with _oserrors(path):
            private_dir(path.parent)
            fresh = not path.exists() or path.stat().st_size == 0
            key = _load_key(key_file, create=fresh, log=path)
            log = cls(path, key_file, key, _open_log(path))
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

    def __enter__(self) -> ActivityLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

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
                    texts = _entry_texts(seq, at_text, event, prev)
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
            self._write(fd, "\n".join(lines).encode(), _Link(seq, prev))
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

    def _write(self, fd: int, data: bytes, link: _Link) -> None:
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

    def _write_head(self, link: _Link) -> None:
        """Replace the head anchor atomically (we hold the exclusive lock)."""
        body = {"seq": link.seq, "hash": link.hash}
        doc = canonical({**body, "mac": self._mac(canonical(body).encode())}).encode()
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            os.write(fd, doc + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.head_path)

    def _read_head(self) -> _Head:
        try:
            raw = self.head_path.read_bytes()
        except FileNotFoundError:
            return _Head(None)
        try:
            doc = json.loads(raw)
            body, mac = {"seq": doc["seq"], "hash": doc["hash"]}, doc["mac"]
            if type(body["seq"]) is not int or not isinstance(body["hash"], str) or not isinstance(mac, str):
                raise ValueError("wrong types")
        except (ValueError, KeyError, TypeError):
            return _Head(None, f"{self.head_path} is garbled (not a head anchor)")
        if not hmac.compare_digest(self._mac(canonical(body).encode()), mac):
            return _Head(None, f"{self.head_path}: MAC mismatch: the head anchor was edited, "
                               "or written with another key", bad_mac=True)
        return _Head(_Link(body["seq"], body["hash"]))

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[int]:
        """Hold the cross-process write lock on the file that is at ``path`` now (it may
        have been moved aside and recreated since we opened it). Caller holds ``_lock``."""
        if self._fd < 0:
            raise ActivityLogError(f"{self.path}: the activity log is closed")
        with _oserrors(self.path):
            while True:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
                mine = os.fstat(self._fd)
                with contextlib.suppress(FileNotFoundError):
                    there = os.stat(self.path)
                    if (there.st_ino, there.st_dev) == (mine.st_ino, mine.st_dev):
                        break
                os.close(self._fd)  # releases the lock too
                self._fd, self._tail = -1, None
                self._fd = _open_log(self.path)
            try:
                yield self._fd
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _sync(self, fd: int, *, writing: bool) -> _Link:
        """Where the chain continues (under the exclusive lock). Re-reads the tail only if
        the file changed since our own last write; cuts off an unacknowledged torn line.
        With ``writing``, refuses an untrusted head and terminates an acknowledged torn
        line so that it stays visible."""
        size = os.fstat(fd).st_size
        if self._tail is not None and self._tail[0] == size:
            return self._tail[1]
        head = self._read_head()
        raw, end = _last_line(fd, size)
        tail: _Link | None = _Link(0, ZERO_HASH)
        if raw is not None:
            try:
                tail = _Link(_fields(raw)[0]["seq"], hashlib.sha256(raw).hexdigest())
            except _BadLine:
                tail = None
        anchor = head.link
        if anchor is None and head.problem is None and end == 0:
            anchor = _Link(0, ZERO_HASH)  # a new (or empty) log: anchor it now
            self._write_head(anchor)
        torn = size > end
        if torn and anchor is not None and tail is not None and (
            tail.seq > anchor.seq or tail == anchor
        ):
            os.ftruncate(fd, end)
            os.fsync(fd)
            size, torn = end, False
        if not writing:
            return tail or _Link(0, ZERO_HASH)
        if anchor is None:
            why = head.problem or f"{self.head_path} is missing"
            raise ActivityLogError(
                f"{why}; entries may have been removed from {self.path}, so nothing more is "
                "appended to it. Run `mailslot log --verify`, then move the log and its "
                ".head aside (keep them as evidence); a new log starts on the next open"
            )
        if torn:
            os.write(fd, b"\n")  # an acknowledged line was torn: keep it, visibly damaged
            size += 1
        link = tail if tail is not None and tail.seq >= anchor.seq else anchor
        if self._floor is not None and self._floor.seq > link.seq:
            link = self._floor
        self._tail = (size, link)
        return link

    # -- reading ----------------------------------------------------------------------

    def _snapshot(self) -> tuple[int, int, _Head]:
        """A size at which no batch is half-written, a private fd to read up to it, and
        the head anchor that goes with it (taken under a shared lock)."""
        with self._lock:
            if self._fd < 0:
                raise ActivityLogError(f"{self.path}: the activity log is closed")
            with _oserrors(self.path):
                fcntl.flock(self._fd, fcntl.LOCK_SH)
                try:
                    return os.fstat(self._fd).st_size, os.dup(self._fd), self._read_head()
                finally:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _lines(self, fd: int, size: int) -> Iterator[tuple[int, bytes, bool]]:
        """(line number, bytes without newline, complete?) up to ``size``; closes ``fd``."""
        try:
            offset, number, rest = 0, 0, b""
            while offset < size:
                with _oserrors(self.path):
                    chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
                if not chunk:
                    break
                offset += len(chunk)
                parts = (rest + chunk).split(b"\n")
                rest = parts.pop()
                for part in parts:
                    number += 1
                    yield number, part, True
            if rest:
                yield number + 1, rest, False
        finally:
            os.close(fd)

    def entries(self, *, since: datetime | None = None, intent: str | None = None,
                type: str | None = None, interrupt: str | None = None) -> Iterator[Entry]:
        """Entries in log order, filtered (every given filter must hold; ``since`` is
        inclusive). Unreadable lines are skipped and MACs are not checked: that is what
        ``verify`` is for."""
        wanted = {k: v for k, v in (("intent", intent), ("type", type),
                                    ("interrupt", interrupt)) if v is not None}
        needles = [canonical(v).encode() for v in wanted.values()]  # cheap pre-filter
        size, fd, _head = self._snapshot()
        for _number, raw, complete in self._lines(fd, size):
            if not complete or not all(n in raw for n in needles):
                continue
            try:
                doc, at = _fields(raw)
            except _BadLine:
                continue
            if (since is None or at >= since) and all(doc[k] == v for k, v in wanted.items()):
                yield _entry(doc, at)

    def trace(self, interrupt: str) -> list[Entry]:
        """Every entry of one interrupt, in order."""
        return list(self.entries(interrupt=interrupt))

    def verify(self, anchor: Anchor | None = None) -> VerifyReport:
        """Check every line's shape and MAC, the ``prev`` chain, the order of ``seq``, the
        head anchor and ``anchor`` (the engine state's, if the caller has one), and say
        where each problem is. Writers are not held up."""
        size, fd, head = self._snapshot()
        check = _Verifier(self)
        torn = 0
        for number, raw, complete in self._lines(fd, size):
            if complete:
                check.line(number, raw)
            else:
                torn = number
        return check.finish(head, torn, anchor)


class _Seen(NamedTuple):
    hash: str
    line: int
    bad_mac: bool


class _Verifier:
    """The checks of ``verify``, one line at a time (the log need not fit in memory).

    Links are checked by ``seq``, not by position, so that two swapped lines read as one
    "out of order" finding rather than a cascade of broken links; an entry whose MAC
    fails is reported once, not again as a broken link of its successor."""

    def __init__(self, log: ActivityLog) -> None:
        self.log = log
        self.problems: list[Problem] = []
        self.bad_macs: list[Problem] = []
        self.count = 0
        self.unreadable = 0
        self.last_line = 0
        self.top, self.top_line = _Link(0, ZERO_HASH), 0  # the highest seq so far
        self.seen: dict[int, _Seen] = {0: _Seen(ZERO_HASH, 0, False)}
        # predecessor seq -> (line, seq, prev) of an entry whose predecessor is not seen yet
        self.waiting: dict[int, tuple[int, int, str, int]] = {}

    def line(self, number: int, raw: bytes) -> None:
        self.last_line = number
        try:
            doc, _at = _fields(raw)
        except _BadLine as exc:
            self.problems.append(Problem(None, number, f"unreadable line: {exc}",
                                         "line_unreadable"))
            self.unreadable += 1
            return
        self.count += 1
        seq, prev, mac = doc["seq"], doc["prev"], doc.pop("mac")
        bad_mac = not hmac.compare_digest(self.log._mac(canonical(doc).encode()), mac)
        if bad_mac:
            self.bad_macs.append(Problem(seq, number, "MAC mismatch: the entry was edited"))
        digest = hashlib.sha256(raw).hexdigest()
        if seq in self.seen:
            where = self.seen[seq].line
            self.problems.append(Problem(seq, number, f"duplicate of seq {seq} on line {where}",
                                         "entry_moved"))
            return
        if seq < self.top.seq:
            self.problems.append(Problem(seq, number, (
                f"out of order: comes after seq {self.top.seq} (line {self.top_line}); "
                "entries were moved"), "entry_moved"))
        before = self.seen.get(seq - 1)
        if before is not None:
            if prev != before.hash and not before.bad_mac:
                self.problems.append(Problem(seq, number, (
                    f"prev does not match seq {seq - 1} (line {before.line}): "
                    "an entry was replaced"), "entry_replaced"))
        elif seq - 1 > self.top.seq:
            self.waiting[seq - 1] = (number, seq, prev, self.top.seq + 1)
        later = self.waiting.pop(seq, None)
        if later is not None and later[2] != digest and not bad_mac:
            self.problems.append(Problem(later[1], later[0], (
                f"prev does not match seq {seq} (line {number}): an entry was replaced"),
                "entry_replaced"))
        self.seen[seq] = _Seen(digest, number, bad_mac)
        if seq > self.top.seq:
            self.top, self.top_line = _Link(seq, digest), number
        if len(self.seen) > 2 * _WINDOW:
            floor = self.top.seq - _WINDOW
            self.seen = {s: v for s, v in self.seen.items() if s > floor}

    def finish(self, head: _Head, torn: int, outside: Anchor | None = None) -> VerifyReport:
        how = "deleted, or on an unreadable line" if self.unreadable else "entries were deleted"
        for number, seq, _prev, first in self.waiting.values():
            gap = f"seq {first}" if first == seq - 1 else f"seq {first} to {seq - 1}"
            self.problems.append(Problem(seq, number, f"{gap} missing before this entry: {how}",
                                         "entries_missing"))
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
                    "entry_replaced"))
        elif anchor is None and head.problem is None and (self.last_line or torn):
            head = _Head(None, f"{self.log.head_path} is missing: cannot tell whether entries "
                               "were removed from the end")
        if head.bad_mac and self.count and len(self.bad_macs) == self.count:
            one = self.bad_macs[0]
            self.problems.append(Problem(one.seq, one.line, (
                f"no MAC matches the key in {self.log.key_file} ({self.count} of "
                f"{self.count} entries and the head anchor fail): the log was written with "
                "another key; was the key file replaced?"), "key_mismatch"))
        else:
            self.problems.extend(self.bad_macs)
            if head.problem is not None:
                self.problems.append(Problem(None, 0, head.problem, "head_invalid"))
        if outside is not None and outside.seq > 0:
            self._check_outside(outside, torn)
        self.problems.sort(key=lambda p: (p.line == 0, p.line))
        return VerifyReport(not self.problems, self.count, self.problems)


    def _check_outside(self, outside: Anchor, torn: int) -> None:
        """The engine state's anchor: entries it vouches for must still be here."""
        recorded = f"the engine state records seq {outside.seq}"
        if not self.last_line and not torn:
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
                "not the entry the engine state records: it was replaced"), "entry_replaced"))


# -- files --------------------------------------------------------------------------------


@contextlib.contextmanager
def _oserrors(path: Path) -> Iterator[None]:
    """Translate the OS's refusals into ``ActivityLogError`` naming the file."""
    try:
        yield
    except OSError as exc:
        raise ActivityLogError(f"{exc.filename or path}: {exc.strerror or exc}") from None


def _open_log(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def _last_line(fd: int, size: int) -> tuple[bytes | None, int]:
    """The last complete line (without newline) and the offset just past its newline;
    (None, 0) if there is none. Bytes after that offset are a torn line."""
    buf, start = b"", size
    end = -1
    while start > 0:
        step = min(65536, start)
        start -= step
        buf = os.pread(fd, step, start) + buf
        if end < 0:
            nl = buf.rfind(b"\n")
            if nl < 0:
                continue
            end = start + nl
        begin = buf.rfind(b"\n", 0, end - start)
        if begin >= 0:
            return buf[begin + 1:end - start], end + 1
    if end < 0:
        return None, 0
    return buf[:end - start], end + 1


def _load_key(path: Path, *, create: bool, log: Path) -> bytes:
    """The log's HMAC key: created (0600, never replaced) for a new log only."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if not create:
            raise ActivityLogError(
                f"{path}: the activity log key is missing, but {log} has entries signed with "
                "it; restore the key, or move the log and its .head aside to start anew"
            ) from None
        _create_key(path)
        return _load_key(path, create=False, log=log)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"{path}: key file is accessible by other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
            )
        key = os.read(fd, KEY_SIZE + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_SIZE:
        raise KeyFileError(f"{path}: not an activity log key ({KEY_SIZE} bytes expected)")
    return key


def _create_key(path: Path) -> None:
    """Write a random key to a temp file and link it into place: readers never see a
    half-written key, and a key another process created first wins."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, secrets.token_bytes(KEY_SIZE))
        os.fsync(fd)
        os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
