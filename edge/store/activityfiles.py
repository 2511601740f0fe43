"""The activity log's files on disk (``edge.store.activity``): how they are opened, read
from the end, replaced atomically, and where its key comes from; and the one way a small
signed file (the head anchor, the retention record) is signed and read back
(``signed_record``, ``read_record``). No chain logic here.

Rules this module keeps:

- Every file of the log is 0600 and opened with ``O_NOFOLLOW``; the log is opened
  ``O_APPEND``, so concurrent writers (each holding the ``flock``) never overwrite.
- ``write_small`` replaces a small file (the head anchor, the retention record) with a
  temp file, fsync and rename: a reader sees the old file or the new one, never half.
- The key is made once, for a new log, and never replaced (``load_key``).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from edge.config import FILE_MODE, private_dir
from edge.errors import ActivityLogError, KeyFileError
from edge.store.activityline import canonical

KEY_SIZE = 32
#: How much of a file's end ``last_line`` reads at a time.
_BACK_STEP = 65536


@contextlib.contextmanager
def oserrors(path: Path) -> Iterator[None]:
    """Translate the OS's refusals into ``ActivityLogError`` naming the file."""
    try:
        yield
    except OSError as exc:
        raise ActivityLogError(f"{exc.filename or path}: {exc.strerror or exc}") from None


def open_log_fd(path: Path) -> int:
    """The log at ``path`` opened for appending (created 0600 if missing)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def open_read_fd(path: Path) -> int | None:
    """``path`` opened for reading, or None if it is gone (a segment retention removed)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def last_line(fd: int, size: int) -> tuple[bytes | None, int]:
    """The last complete line (without newline) and the offset just past its newline;
    (None, 0) if there is none. Bytes after that offset are a torn line."""
    buf, start = b"", size
    end = -1
    while start > 0:
        step = min(_BACK_STEP, start)
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


def first_line(fd: int, size: int) -> bytes | None:
    """The first complete line (without newline), or None if there is none."""
    buf, offset = b"", 0
    while offset < size:
        chunk = os.pread(fd, min(_BACK_STEP, size - offset), offset)
        if not chunk:
            break
        offset += len(chunk)
        buf += chunk
        nl = buf.find(b"\n")
        if nl >= 0:
            return buf[:nl]
    return None


def write_small(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename), mode 0600.
    The caller holds the log's exclusive lock, so one temp name is enough."""
    tmp = path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class Record(NamedTuple):
    """A small signed file as read: its fields, or what is wrong with it (both None: there
    is no such file); ``bad_mac``: well formed, but its MAC does not match."""

    body: dict[str, Any] | None
    problem: str | None = None
    bad_mac: bool = False


def signed_record(body: dict[str, Any], mac: Callable[[bytes], str]) -> bytes:
    """The bytes of a small signed file: ``body`` with the MAC of its canonical JSON
    (``mac``: the log's keyed HMAC), as one canonical line."""
    return canonical({**body, "mac": mac(canonical(body).encode())}).encode() + b"\n"


def read_record(path: Path, keys: tuple[str, ...], valid: Callable[[dict[str, Any]], bool],
                mac: Callable[[bytes], str], *, what: str, shown: str) -> Record:
    """The signed file at ``path`` (``signed_record``) read back: its fields ``keys``, all
    present, ``valid`` (their types), its MAC a string that matches (compared in constant
    time). Else the problem, naming the file as ``shown`` and the record as ``what``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Record(None)
    try:
        doc = json.loads(raw)
        body = {key: doc[key] for key in keys}
        sign = doc["mac"]
        if not isinstance(sign, str) or not valid(body):
            raise ValueError("wrong types")
    except (ValueError, KeyError, TypeError):
        return Record(None, f"{shown} is garbled (not a {what})")
    if not hmac.compare_digest(mac(canonical(body).encode()), sign):
        return Record(None, f"{shown}: MAC mismatch: the {what} was edited, or written with "
                            "another key", bad_mac=True)
    return Record(body)


def load_key(path: Path, *, create: bool, log: Path) -> bytes:
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
        return load_key(path, create=False, log=log)
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
