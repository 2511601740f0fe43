"""The admin credential: one bearer secret ``msa_…`` that authenticates the admin API
(``relay.admin``), made by the relay on its first start.

Only its SHA-256 hash is kept, in the registry KV (key ``admin.credential``), so that
every relay process on the NATS accepts it and reading the registry does not reveal it.
The secret itself is printed once by the process that made it and written to
``DATA_DIR/admin.key`` (0600), where the local ``mailslot relay …`` commands find it.
A presented credential is hashed and compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import contextlib
import hmac
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relay.errors import Conflict, RelayError, Unauthorized
from relay.registry import new_token, token_hash
from relay.store import Store
from shared.errors import RemoteProtocolError, TooLarge

ADMIN_PREFIX = "msa_"
ADMIN_KEY_FILE = "admin.key"
CREDENTIAL_KEY = "admin.credential"


async def ensure_admin_credential(store: Store, data_dir: Path) -> str | None:
    """Make the admin credential if the registry has none: write the secret to
    ``data_dir/admin.key`` (0600) and its hash to the registry; return the secret (the
    caller prints it, once). Return None when one exists already (made by an earlier
    start, or by another relay process on the same NATS)."""
    if await store.kv_get(CREDENTIAL_KEY) is not None:
        return None
    secret = new_token(ADMIN_PREFIX)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / ADMIN_KEY_FILE
    tmp = path.with_name(ADMIN_KEY_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    try:
        await store.kv_create(CREDENTIAL_KEY, {"hash": token_hash(secret)})
    except Conflict:  # another relay process made it first: theirs counts
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        return None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    os.replace(tmp, path)
    return secret


def read_admin_key(path: Path) -> str:
    """The secret in an ``admin.key`` file (surrounding whitespace ignored)."""
    return path.read_text().strip()


async def check_admin(store: Store, authorization: str | None) -> None:
    """Raise ``Unauthorized`` unless ``authorization`` is ``Bearer <the admin
    credential>``: ``missing_token`` without one, ``invalid_token`` for anything else
    (a malformed header, a producer token, a wrong secret)."""
    if authorization is None:
        raise Unauthorized("the admin API needs 'Authorization: Bearer msa_…'",
                           code="missing_token")
    scheme, _, secret = authorization.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("Authorization must be 'Bearer <admin credential>'",
                           code="invalid_token")
    found = await store.kv_get(CREDENTIAL_KEY)
    expected = str(found[0].get("hash", "")) if found is not None else ""
    # Hashes of equal length are compared in constant time, whatever was sent.
    if not hmac.compare_digest(token_hash(secret), expected) or not expected:
        raise Unauthorized("not the admin credential", code="invalid_token")


async def authorized_body(
    store: Store, authorization: str | None, read: Callable[[], Awaitable[Any]]
) -> Any:
    """The body of an admin request (``read`` it: JSON or nothing), once the credential
    is checked. It is read first (so that a refusal leaves the keep-alive connection
    usable), but a body the relay refuses is answered only after the credential: nobody
    learns anything without it. A body cut short (413) is answered at once: HTTP needs
    that connection closed anyway."""
    doc: Any = None
    refusal: RemoteProtocolError | RelayError | None = None
    try:
        doc = await read()
    except TooLarge:
        raise
    except (RemoteProtocolError, RelayError) as exc:
        refusal = exc
    await check_admin(store, authorization)
    if refusal is not None:
        raise refusal
    return doc
