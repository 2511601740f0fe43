"""Who may use the admin API (``relay.admin``, and the hook routes' admin side): the
holder of the admin credential, or an admin identity signing its request.

The admin credential is one bearer secret ``msa_…``, made by the relay on its first
start. Only its SHA-256 hash is kept, in the registry KV (key ``admin.credential``), so
that every relay process on the NATS accepts it and reading the registry does not reveal
it. The secret itself is printed once by the process that made it and written to
``DATA_DIR/admin.key`` (0600), where the local ``mailslot relay …`` commands find it. A
presented credential is hashed and compared with ``hmac.compare_digest``. Rotating it
(``rotate_admin_credential``) is one KV write of the new hash: every relay process reads
the credential through the registry cache that the KV watch keeps current
(``relay.regcache``), so each refuses the old secret within milliseconds.

An admin identity is an enrolled identity an operator named (key
``admin.identity.<id>`` in the registry KV, ``grant_admin`` / ``revoke_admin``: in KV,
not in a config file, so that granting or revoking reaches every relay process at once,
without a restart). It administers the relay with ``Authorization: Mailslot-Signature
…``, checked exactly as an identity's own signed requests are (``relay.signedrequest``:
the format, ``400 missing_auth``; the time, ``401 stale_request``; the signature,
``401 bad_signature``; the nonce, spent once across processes, ``401
replayed_request``), then: the signer enrolled (else ``401 bad_auth``), named an admin
(else ``403 not_admin``: the signature proved who it is, that identity is simply not
allowed), its account not disabled (``403 account_disabled``). Each of these is read
per request, so a revoked identity, a withdrawn admin flag or a disabled account loses
admin at once in every process.
"""

from __future__ import annotations

import contextlib
import hmac
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay.errors import Conflict, Forbidden, NotFound, RelayError, Unauthorized
from relay.registry import Registry, new_token, token_hash
from relay.signedrequest import verify_signed_request
from relay.store import Store
from shared.auth import SIGNATURE_SCHEME, parse_request_header
from shared.errors import RemoteProtocolError, TooLarge
from shared.tokens import check_identity

ADMIN_PREFIX = "msa_"
ADMIN_KEY_FILE = "admin.key"
CREDENTIAL_KEY = "admin.credential"
#: ``admin.identity.<id>`` → ``{"id", "granted_at"}``: an identity that may administer.
ADMIN_IDENTITY_PREFIX = "admin.identity."
#: Who a checked admin request came from, when it was the credential (not an identity).
BY_KEY = "admin-key"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _staged(path: Path, secret: str) -> Path:
    """``secret`` written to a temporary file made 0600 beside ``path`` (for the caller
    to rename over it, or unlink)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older temporary file may have had another mode
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()


def write_key_file(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path`` (0600) atomically: a temporary file made 0600, then
    renamed over it, so that no moment shows a partial or looser file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = _staged(path, secret)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


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
    tmp = _staged(path, secret)
    try:
        await store.kv_create(CREDENTIAL_KEY, {"hash": token_hash(secret),
                                               "created_at": _now()})
    except Conflict:  # another relay process made it first: theirs counts
        _unlink(tmp)
        return None
    except BaseException:
        _unlink(tmp)
        raise
    os.replace(tmp, path)
    return secret


async def rotate_admin_credential(store: Store) -> tuple[str, str]:
    """Replace the admin credential with a new one; return ``(secret, rotated_at)``.
    One KV write: from then on every relay process refuses the old secret. The caller
    shows the secret once (and the CLI writes it to its key file)."""
    secret = new_token(ADMIN_PREFIX)
    rotated_at = _now()
    await store.kv_put(CREDENTIAL_KEY, {"hash": token_hash(secret), "created_at": rotated_at})
    return secret, rotated_at


def read_admin_key(path: Path) -> str:
    """The secret in an ``admin.key`` file (surrounding whitespace ignored)."""
    return path.read_text().strip()


# -- admin identities ---------------------------------------------------------------------


async def grant_admin(registry: Registry, identity: str, by: str) -> dict[str, Any]:
    """Let ``identity`` (enrolled: else ``404 unknown_identity``) administer the relay
    with signed requests. Granting it again keeps the first record."""
    _, account = await registry.require_identity(check_identity(identity))
    key = ADMIN_IDENTITY_PREFIX + identity
    found = await registry.store.kv_get(key)
    if found is None:
        with contextlib.suppress(Conflict):  # granted concurrently: the same outcome
            await registry.store.kv_create(key, {"id": identity, "granted_at": _now(),
                                                 "granted_by": by})
        found = await registry.store.kv_get(key)
    record = found[0] if found is not None else {"id": identity}
    return {**record, "account": account, "admin": True}


async def revoke_admin(store: Store, identity: str) -> bool:
    """Withdraw ``identity``'s admin flag; True if it had one. Its next signed admin
    request, to any relay process, is ``403 not_admin``."""
    key = ADMIN_IDENTITY_PREFIX + check_identity(identity)
    if await store.kv_get(key) is None:
        return False
    await store.kv_delete(key)
    return True


async def admin_identities(registry: Registry) -> list[dict[str, Any]]:
    """The identities named admin ``{id, account, granted_at, granted_by}``, oldest
    first; ``account`` is None for one no longer enrolled (its flag grants nothing)."""
    out = []
    for key in await registry.store.kv_keys(ADMIN_IDENTITY_PREFIX):
        found = await registry.store.kv_get(key)
        if found is None:
            continue
        identity = key[len(ADMIN_IDENTITY_PREFIX):]
        enrolled = await registry.identity(identity)
        out.append({"id": identity, "account": enrolled[1] if enrolled else None,
                    "granted_at": found[0].get("granted_at"),
                    "granted_by": found[0].get("granted_by")})
    return sorted(out, key=lambda r: str(r["granted_at"]))


# -- checking a request -------------------------------------------------------------------


def is_signed(authorization: str | None) -> bool:
    """Whether ``authorization`` claims to be a ``Mailslot-Signature`` (checked then as
    one, strictly), rather than a bearer credential."""
    return authorization is not None and authorization.partition(" ")[0] == SIGNATURE_SCHEME


async def check_admin(
    registry: Registry, method: str, path: str, authorization: str | None, body: bytes
) -> str:
    """Who this admin request comes from: ``BY_KEY`` for ``Bearer <the admin
    credential>``, else the id of the admin identity that signed it (see the module's
    docstring for each refusal). Without ``Authorization``: ``401 missing_token``; any
    other scheme, a producer token, a wrong secret: ``401 invalid_token``."""
    if authorization is None:
        raise Unauthorized("the admin API needs 'Authorization: Bearer msa_…' or a "
                           "Mailslot-Signature by an admin identity", code="missing_token")
    if is_signed(authorization):
        return await _check_signed(registry, method, path, authorization, body)
    scheme, _, secret = authorization.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("Authorization must be 'Bearer <admin credential>' or a "
                           "Mailslot-Signature", code="invalid_token")
    found = await registry.store.kv_get(CREDENTIAL_KEY)
    expected = str(found[0].get("hash", "")) if found is not None else ""
    # Hashes of equal length are compared in constant time, whatever was sent.
    if not hmac.compare_digest(token_hash(secret), expected) or not expected:
        raise Unauthorized("not the admin credential", code="invalid_token")
    return BY_KEY


async def _check_signed(
    registry: Registry, method: str, path: str, authorization: str, body: bytes
) -> str:
    signed = parse_request_header(authorization)
    try:
        account = await verify_signed_request(registry, signed, method, path, body)
    except NotFound as exc:  # a signer the relay does not know (never enrolled, revoked)
        raise Unauthorized(f"no identity {signed.identity} is enrolled on this relay",
                           code="bad_auth") from exc
    if await registry.store.kv_get(ADMIN_IDENTITY_PREFIX + signed.identity) is None:
        raise Forbidden(f"identity {signed.identity} is not an admin of this relay",
                        code="not_admin")
    await registry.require_active_account(account)
    return signed.identity


async def authorized_body(
    registry: Registry, method: str, path: str, authorization: str | None,
    read: Callable[[], Awaitable[tuple[bytes, Any]]],
) -> Any:
    """The body of an admin request (``read`` it: the raw bytes and their JSON, or None),
    once the request is checked (``check_admin``). It is read first (so that a refusal
    leaves the keep-alive connection usable), but a body the relay refuses is answered
    only after the credential: nobody learns anything without it. Two exceptions: a body
    cut short (413) is answered at once, as HTTP needs that connection closed anyway;
    and a refused body of a signed request, whose signature cannot be checked without
    the bytes, gets its own refusal (it says nothing but what is wrong with that body)."""
    raw, doc = b"", None
    refusal: RemoteProtocolError | RelayError | None = None
    try:
        raw, doc = await read()
    except TooLarge:
        raise
    except (RemoteProtocolError, RelayError) as exc:
        refusal = exc
    if refusal is not None and is_signed(authorization):
        raise refusal
    await check_admin(registry, method, path, authorization, raw)
    if refusal is not None:
        raise refusal
    return doc
