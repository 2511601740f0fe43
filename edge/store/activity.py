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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.config import FILE_MODE, private_dir
from edge.errors import ActivityLogError, KeyFileError
from edge.store.activitycheck import Head, Verifier, VerifyReport
from edge.store.activityline import (
    STEP_SET,
    STEPS,
    ZERO_HASH,
    Anchor,
    BadLine,
    canonical,
    encode_str,
    fields,
)
from edge.store.db import Closing

KEY_SIZE = 32
_SHA256_BLOCK = 64
_CHUNK = 1 << 20


def _json_text(value: str | None) -> str:
    """``canonical(value)`` for the plain-string fields of an entry (or null)."""
    return "null" if value is None else encode_str(value)


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
    head = (f'{{"at":{encode_str(at)},"detail":{canonical(event.detail)},'
            f'"intent":{_json_text(intent)},"interrupt":{_json_text(interrupt)}')
    tail = (f'"prev":{encode_str(prev)},"seq":{seq:d},"step":{encode_str(step)},'
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


class ActivityLog(Closing):
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
        self._tail: tuple[int, Anchor] | None = None  # (file size, link) after our last write
        self._floor: Anchor | None = None  # see ``continue_after``

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

    def _read_head(self) -> Head:
        try:
            raw = self.head_path.read_bytes()
        except FileNotFoundError:
            return Head(None)
        try:
            doc = json.loads(raw)
            body, mac = {"seq": doc["seq"], "hash": doc["hash"]}, doc["mac"]
            if type(body["seq"]) is not int or not isinstance(body["hash"], str) or not isinstance(mac, str):
                raise ValueError("wrong types")
        except (ValueError, KeyError, TypeError):
            return Head(None, f"{self.head_path} is garbled (not a head anchor)")
        if not hmac.compare_digest(self._mac(canonical(body).encode()), mac):
            return Head(None, f"{self.head_path}: MAC mismatch: the head anchor was edited, "
                               "or written with another key", bad_mac=True)
        return Head(Anchor(body["seq"], body["hash"]))

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

    def _sync(self, fd: int, *, writing: bool) -> Anchor:
        """Where the chain continues (under the exclusive lock). Re-reads the tail only if
        the file changed since our own last write; cuts off an unacknowledged torn line.
        With ``writing``, refuses an untrusted head and terminates an acknowledged torn
        line so that it stays visible."""
        size = os.fstat(fd).st_size
        if self._tail is not None and self._tail[0] == size:
            return self._tail[1]
        head = self._read_head()
        raw, end = _last_line(fd, size)
        tail: Anchor | None = Anchor(0, ZERO_HASH)
        if raw is not None:
            try:
                tail = Anchor(fields(raw)[0]["seq"], hashlib.sha256(raw).hexdigest())
            except BadLine:
                tail = None
        anchor = head.link
        if anchor is None and head.problem is None and end == 0:
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

    def _snapshot(self) -> tuple[int, int, Head]:
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
                doc, at = fields(raw)
            except BadLine:
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
        check = Verifier(self._mac, self.head_path, self.key_file)
        torn = 0
        for number, raw, complete in self._lines(fd, size):
            if complete:
                check.line(number, raw)
            else:
                torn = number
        return check.finish(head, torn, anchor)


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
