"""The edge's private identity on disk: one user-only file, never overwritten.

Rules this module keeps:

- the key file is created with mode 0600 atomically (``O_CREAT|O_EXCL``), so there is no
  moment where it exists with a looser mode, and an existing key is never replaced —
  losing it would orphan the identity the relay knows;
- a key file that group or others may read is refused, not silently fixed: the user must
  learn that the key may have leaked (as ssh does);
- no exception message or log line ever contains key material.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edge.config import FILE_MODE, private_dir
from edge.errors import KeyFileError, NotInitialized
from shared.errors import InvalidIdentity
from shared.identity import Identity

#: Refuse key files larger than this: an identity is ~150 bytes of JSON.
_MAX_KEY_FILE = 64 * 1024


def save_identity(path: Path, identity: Identity) -> None:
    """Store ``identity`` in a new file at ``path`` (mode 0600, parent 0700).

    Raises ``KeyFileError`` if a key already exists there; the caller must not retry
    with another path silently — tell the user an identity already exists."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        raise KeyFileError(
            f"{path}: an identity key already exists; refusing to overwrite it"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create key file ({exc.strerror})") from None
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have narrowed it; never widened
        os.write(fd, identity.to_private_bytes())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def load_identity(path: Path) -> Identity:
    """Read the identity at ``path``.

    Raises ``NotInitialized`` if there is none (run ``mailslot edge init``), and
    ``KeyFileError`` if group/others may access it or it is not a mailslot identity."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise NotInitialized(f"{path}: no identity key; run `mailslot edge init`") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open key file ({exc.strerror})") from None
    try:
        data = _read_private(fd, path)
    finally:
        os.close(fd)
    try:
        return Identity.from_private_bytes(data)
    except InvalidIdentity as exc:
        # ``from None``: the chained cause could quote parts of the file.
        raise KeyFileError(f"{path}: {exc.message}") from None


def _read_private(fd: int, path: Path) -> bytes:
    """Check the open file's mode (fstat: no race with a rename) and read it."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise KeyFileError(
            f"{path}: key file is accessible by other users (mode {mode:04o}); "
            f"run `chmod 600 {path}`"
        )
    if info.st_size > _MAX_KEY_FILE:
        raise KeyFileError(f"{path}: too large to be a mailslot identity")
    chunks = []
    while chunk := os.read(fd, _MAX_KEY_FILE):
        chunks.append(chunk)
    return b"".join(chunks)
