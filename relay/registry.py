"""Accounts, identities, tokens and grants, kept in the JetStream KV registry.

Tokens are random, shown once, and stored only as SHA-256 hashes, so reading the
registry does not reveal a usable token. Every key is built from validated tokens.

Keys::

    account.<name>              {"name", "created_at"}
    enroll.<sha256(token)>      {"account", "created_at"}          one-time
    identity.<id>               {"account", "doc", "created_at"}
    token.<sha256(token)>       {"account", "to", "name", "created_at"}
    grant.<recipient>.<signer>  {"created_at"}
    relay.key                   the relay's private identity (shared by relay processes)

and, in the nonce bucket (entries expire after ``NONCE_MEMORY_SECONDS``)::

    <identity>.<nonce>          one accepted signed request
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from relay.errors import Conflict, Forbidden, NotFound, Unauthorized
from relay.store import Store
from shared.auth import check_request_nonce
from shared.identity import Identity, PublicIdentity
from shared.tokens import check_identity, check_name

ENROLL_PREFIX = "mse_"
PRODUCER_PREFIX = "msp_"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ProducerToken:
    account: str
    to: str
    name: str


class Registry:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def relay_identity(self) -> Identity:
        """The relay's signing identity: made once, then shared by every relay process."""
        found = await self.store.kv_get("relay.key")
        if found is None:
            fresh = Identity.generate()
            try:
                await self.store.kv_create("relay.key", {"key": fresh.to_private_bytes().decode()})
                return fresh
            except Conflict:
                found = await self.store.kv_get("relay.key")
        assert found is not None
        return Identity.from_private_bytes(found[0]["key"].encode())

    # -- accounts and enrollment ----------------------------------------------------------

    async def create_account(self, name: str) -> str:
        """Create ``name`` and return its first one-time enrollment token."""
        check_name(name, "account")
        await self.store.kv_create(f"account.{name}", {"name": name, "created_at": _now()})
        return await self.enrollment_token(name)

    async def enrollment_token(self, account: str) -> str:
        await self._require_account(account)
        token = new_token(ENROLL_PREFIX)
        await self.store.kv_create(
            f"enroll.{token_hash(token)}", {"account": account, "created_at": _now()}
        )
        return token

    async def accounts(self) -> list[str]:
        return sorted(k.split(".", 1)[1] for k in await self.store.kv_keys("account."))

    async def _require_account(self, account: str) -> None:
        if await self.store.kv_get(f"account.{check_name(account, 'account')}") is None:
            raise NotFound(f"no account {account}", code="unknown_account")

    async def enroll(self, token: str, public: PublicIdentity) -> str:
        """Spend a one-time enrollment token on ``public``; return the account."""
        if not token.startswith(ENROLL_PREFIX):
            raise Unauthorized("not an enrollment token", code="invalid_token")
        key = f"enroll.{token_hash(token)}"
        found = await self.store.kv_get(key)
        if found is None:
            raise Unauthorized("enrollment token unknown or already used", code="invalid_token")
        record, revision = found
        account = str(record["account"])
        existing = await self.store.kv_get(f"identity.{public.id}")
        if existing is not None and existing[0]["account"] != account:
            # Refused before the token is spent: the user can still enroll another key.
            raise Conflict("identity is enrolled in another account")
        try:
            await self.store.kv_delete(key, revision=revision)
        except Conflict as exc:
            raise Unauthorized("enrollment token already used", code="invalid_token") from exc
        if existing is not None:
            return account
        await self.store.kv_create(
            f"identity.{public.id}",
            {"account": account, "doc": public.to_doc(), "created_at": _now()},
        )
        return account

    async def identity(self, identity: str) -> tuple[PublicIdentity, str] | None:
        """The identity's public document and account, or None if unknown."""
        found = await self.store.kv_get(f"identity.{check_identity(identity)}")
        if found is None:
            return None
        return PublicIdentity.from_doc(found[0]["doc"]), str(found[0]["account"])

    async def require_identity(self, identity: str) -> tuple[PublicIdentity, str]:
        found = await self.identity(identity)
        if found is None:
            raise NotFound(f"no identity {identity}", code="unknown_identity")
        return found

    # -- producer tokens ------------------------------------------------------------------

    async def create_producer_token(self, account: str, to: str, name: str = "producer") -> str:
        await self._require_account(account)
        check_name(name, "token name")
        _, owner = await self.require_identity(to)
        if owner != account:
            raise Forbidden(f"identity {to} is not in account {account}", code="wrong_account")
        token = new_token(PRODUCER_PREFIX)
        await self.store.kv_create(
            f"token.{token_hash(token)}",
            {"account": account, "to": to, "name": name, "created_at": _now()},
        )
        return token

    async def producer(self, token: str) -> ProducerToken:
        if not token.startswith(PRODUCER_PREFIX):
            raise Unauthorized("not a producer token", code="invalid_token")
        found = await self.store.kv_get(f"token.{token_hash(token)}")
        if found is None:
            raise Unauthorized("unknown producer token", code="invalid_token")
        record = found[0]
        return ProducerToken(str(record["account"]), str(record["to"]), str(record["name"]))

    # -- grants: which producer keys a recipient accepts -----------------------------------

    async def grant(self, recipient: str, signer: str) -> None:
        check_identity(recipient)
        await self.require_identity(signer)
        await self.store.kv_put(
            f"grant.{recipient}.{check_identity(signer)}", {"created_at": _now()}
        )

    async def revoke(self, recipient: str, signer: str) -> None:
        key = f"grant.{check_identity(recipient)}.{check_identity(signer)}"
        if await self.store.kv_get(key) is not None:
            await self.store.kv_delete(key)

    # -- signed requests: each nonce works once -------------------------------------------

    async def spend_request_nonce(self, identity: str, nonce: str) -> None:
        """Record that ``identity`` used ``nonce`` (call only after its signature verified,
        so nobody can burn another identity's nonces); raise ``Unauthorized``
        ``replayed_request`` if it was used before, in any relay process."""
        key = f"{check_identity(identity)}.{check_request_nonce(nonce)}"
        try:
            await self.store.remember_nonce(key)
        except Conflict as exc:
            raise Unauthorized(
                "this signed request was already used (same nonce): sign a fresh one",
                code="replayed_request",
            ) from exc

    async def is_granted(self, recipient: str, signer: str) -> bool:
        key = f"grant.{check_identity(recipient)}.{check_identity(signer)}"
        return await self.store.kv_get(key) is not None
