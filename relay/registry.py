"""Accounts, identities, tokens and grants, kept in the JetStream KV registry.

Tokens are random, shown once, and stored only as SHA-256 hashes, so reading the
registry does not reveal a usable token. Every key is built from validated tokens.

Keys::

    account.<name>              {"name", "created_at", "disabled", "plan"}
    enroll.<sha256(token)>      {"account", "created_at", "expires_at"}    one-time
    identity.<id>               {"account", "doc", "created_at"}
    member.<account>.<id>       {"created_at"}: the index of identities by account
    member_index.v1             {"created_at"}: every identity has its index key
    token.<sha256(token)>       {"account", "to", "recipients", "types", "name",
                                 "created_at", "expires_at", "revoked_at"}
    grant.<recipient>.<signer>  {"created_at"}
    relay.key                   the relay's private identity (shared by relay processes)
    admin.credential            {"hash", "created_at"}: see ``relay.adminauth``
    admin.identity.<id>         {"id", "granted_at", "granted_by"}: see ``relay.adminauth``

A token's public id (for list and revoke) is the first ``PUBLIC_ID_CHARS`` hex digits
of its hash: it names the key without a read and reveals nothing usable. Every change
an operator makes (revoke, disable, delete) is one KV write, so it reaches every relay
process on the NATS at once (each read goes to KV, or to a cache fed by a KV watch).
Records written before scopes existed read as: one recipient (``to``), every type, no
expiry. ``identities(account)`` lists one account's ``member.<account>.`` keys (one
subject filter) instead of reading every identity record; identities enrolled before
the index existed get their key as a relay starts on that registry (or, before any has,
from the first listing), which then writes ``member_index.v1`` (a new registry gets it
with ``relay.key``). An index key is written before its identity record and counts only
while that record exists in that account, so a crash between the two writes hides
nobody.

and, in the nonce bucket (entries expire after ``NONCE_MEMORY_SECONDS``)::

    <identity>.<nonce>          one accepted signed request
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.config import RelayConfig
from relay.errors import Conflict, Forbidden, NotFound, QuotaExceeded, Unauthorized
from relay.store import Store, control_subject
from shared.auth import check_request_nonce
from shared.identity import Identity, PublicIdentity
from shared.tokens import check_identity, check_name

ENROLL_PREFIX = "mse_"
PRODUCER_PREFIX = "msp_"
#: Hex digits of a token's hash that make its public id.
PUBLIC_ID_CHARS = 20
PUBLIC_ID_RE = re.compile(rf"[0-9a-f]{{{PUBLIC_ID_CHARS}}}")
#: An allowed-type glob of a producer token (``fnmatch``: ``*``, ``?``, ``[...]``).
TYPE_GLOB_RE = re.compile(r"[A-Za-z0-9._:/*?\[\]!-]{1,128}")
#: Largest scope a token may carry.
MAX_RECIPIENTS, MAX_TYPE_GLOBS = 100, 32
#: The index of identities by account, and the key that says it is complete.
MEMBER_PREFIX, MEMBER_INDEX_KEY = "member.", "member_index.v1"
#: Most enrollment tokens one request makes, and the longest expiry of any token.
MAX_ENROLLMENT_COUNT = 1000
MAX_EXPIRES_SECONDS = 10 * 365 * 86_400


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _member_key(account: str, identity: str = "") -> str:
    """``identity``'s index key in ``account`` (without one: the account's prefix)."""
    return f"{MEMBER_PREFIX}{check_name(account, 'account')}." + (
        check_identity(identity) if identity else "")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def public_id(hashed: str) -> str:
    return hashed[:PUBLIC_ID_CHARS]


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def expiry(expires_in: float | None) -> str | None:
    """``expires_in`` seconds from now as an RFC 3339 time (None: never)."""
    if expires_in is None:
        return None
    return (datetime.now(UTC) + timedelta(seconds=expires_in)).isoformat()


def is_past(when: str | None, now: datetime | None = None) -> bool:
    return when is not None and datetime.fromisoformat(when) <= (now or datetime.now(UTC))


@dataclass(frozen=True)
class ProducerToken:
    """A producer token's scope, as ``Registry.producer`` found it valid: the recipients
    it may send to (``to`` is the first, kept for the one-recipient tokens of before),
    the types it may send (globs), and its public ``id``."""

    account: str
    to: str
    name: str
    id: str = ""
    recipients: tuple[str, ...] = ()
    types: tuple[str, ...] = ("*",)
    expires_at: str | None = None

    def check(self, to: str, type_: str | None = None) -> None:
        """Raise ``Forbidden`` unless this token may send an interrupt of ``type_`` to
        ``to``: ``recipient_not_allowed`` or ``type_not_allowed``."""
        if to not in (self.recipients or (self.to,)):
            raise Forbidden(f"this token may not send to {to}", code="recipient_not_allowed")
        if type_ is not None and not any(fnmatch.fnmatchcase(type_, g) for g in self.types):
            raise Forbidden(
                f"this token may not send type {type_!r} (allowed: {', '.join(self.types)})",
                code="type_not_allowed",
            )


def producer_from_record(record: dict[str, Any]) -> ProducerToken:
    """The scope a ``token.<hash>`` record holds (see the module docstring for old ones)."""
    recipients = tuple(record.get("recipients") or [record["to"]])
    return ProducerToken(
        account=str(record["account"]),
        to=str(record.get("to") or recipients[0]),
        name=str(record["name"]),
        id=str(record.get("id", "")),
        recipients=recipients,
        types=tuple(record.get("types") or ["*"]),
        expires_at=record.get("expires_at"),
    )


def token_state(record: dict[str, Any]) -> str:
    if record.get("revoked_at"):
        return "revoked"
    return "expired" if is_past(record.get("expires_at")) else "active"


def check_type_glob(value: object) -> str:
    if not isinstance(value, str) or TYPE_GLOB_RE.fullmatch(value) is None:
        raise ValueError(f"type glob {value!r} must match {TYPE_GLOB_RE.pattern}")
    return value


class Registry:
    def __init__(self, store: Store, config: RelayConfig | None = None) -> None:
        self.store = store
        #: The plans (``relay serve --config``); None: the default plan, no limits.
        self.config = config

    def plan_of(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The name and limits of the plan an account record runs under."""
        if self.config is None:
            return "default", {}
        name, plan = self.config.plan_of(record.get("plan"))
        return name, plan.model_dump()

    async def relay_identity(self) -> Identity:
        """The relay's signing identity: made once, then shared by every relay process.
        Read as a relay starts, which is also when a registry from before the index by
        account is indexed (``_index_members``): then no request has to."""
        found = await self.store.kv_get("relay.key")
        if found is None:
            fresh = Identity.generate()
            try:
                await self.store.kv_create("relay.key", {"key": fresh.to_private_bytes().decode()})
                await self._index_members()  # a new registry starts indexed
                return fresh
            except Conflict:
                found = await self.store.kv_get("relay.key")
        assert found is not None
        if await self.store.kv_get(MEMBER_INDEX_KEY) is None:
            await self._index_members()
        return Identity.from_private_bytes(found[0]["key"].encode())

    # -- accounts -------------------------------------------------------------------------

    async def create_account(self, name: str, plan: str | None = None) -> str:
        """Create ``name`` under ``plan`` (default: the config's default plan) and return
        its first one-time enrollment token."""
        check_name(name, "account")
        if plan is not None and (self.config is None or plan not in self.config.plans):
            known = ", ".join(sorted(self.config.plans)) if self.config else "default"
            raise NotFound(f"no plan {plan!r} (plans: {known})", code="unknown_plan")
        if plan is None and self.config is not None:
            plan = self.config.default_plan
        await self.store.kv_create(
            f"account.{name}",
            {"name": name, "created_at": _now(), "disabled": False, "plan": plan},
        )
        return await self.enrollment_token(name)

    async def accounts(self) -> list[str]:
        return sorted(k.split(".", 1)[1] for k in await self.store.kv_keys("account."))

    async def account(self, account: str) -> dict[str, Any]:
        """The account's record ``{name, created_at, disabled}``; ``NotFound``
        ``unknown_account`` if there is none."""
        found = await self.store.kv_get(f"account.{check_name(account, 'account')}")
        if found is None:
            raise NotFound(f"no account {account}", code="unknown_account")
        return {"disabled": False, **found[0]}

    async def _require_account(self, account: str) -> None:
        await self.account(account)

    async def require_active_account(self, account: str) -> None:
        """Raise ``Forbidden`` ``account_disabled`` if ``account`` is disabled (its
        producers and edges are refused; its data is kept), ``NotFound`` if it is gone."""
        if (await self.account(account)).get("disabled"):
            raise Forbidden(f"account {account} is disabled", code="account_disabled")

    async def set_disabled(self, account: str, disabled: bool) -> dict[str, Any]:
        """Disable (or enable) ``account``. Disabling also closes its edges' open links
        (in every relay process); their reconnects are then refused at auth."""
        record = {**await self.account(account), "disabled": disabled}
        await self.store.kv_put(f"account.{account}", record)
        if disabled:
            for identity in await self.identities(account):
                await self._close_links(identity["id"])
        return record

    async def _close_links(self, identity: str) -> None:
        """End ``identity``'s open link wherever it is served: a control message that is
        not the session's own id makes the session close (as on a takeover, 4409) and
        leave its deliveries to JetStream; the edge's reconnect meets the new state."""
        await self.store.publish_core(control_subject(identity), b"admin")

    async def delete_account(self, account: str) -> dict[str, int]:
        """Delete ``account`` with its identities (their queued interrupts purged from the
        stream, their grants removed), producer and enrollment tokens. It is disabled
        first, so nothing new is accepted for it while the rest goes."""
        await self.set_disabled(account, True)
        counts = {"identities": 0, "interrupts": 0, "producer_tokens": 0,
                  "enrollment_tokens": 0}
        for identity in await self.identities(account):
            counts["interrupts"] += await self._drop_identity(identity["id"])
            counts["identities"] += 1
        for prefix, what in (("token.", "producer_tokens"), ("enroll.", "enrollment_tokens")):
            for key, record in await self._records(prefix):
                if record.get("account") == account:
                    await self.store.kv_delete(key)
                    counts[what] += 1
        await self.store.kv_delete(f"account.{account}")
        return counts

    async def usage(self, account: str) -> dict[str, Any]:
        """What ``account`` holds: identities, live tokens, pending interrupts."""
        await self.account(account)
        identities = await self.identities(account)
        pending = {"now": 0, "next": 0, "later": 0}
        for identity in identities:
            for priority, n in (await self.store.pending(identity["id"])).items():
                pending[priority] += n
        tokens = [t for t in await self.producer_tokens(account) if t["state"] == "active"]
        plan, limits = self.plan_of(await self.account(account))
        enrollments = await self.enrollment_tokens(account)
        return {
            "identities": len(identities),
            "producer_tokens": len(tokens),
            "enrollment_tokens": len(enrollments),
            "pending": pending,
            "pending_total": sum(pending.values()),
            "plan": plan,
            "limits": limits,
        }

    async def _records(self, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for key in await self.store.kv_keys(prefix):
            found = await self.store.kv_get(key)
            if found is not None:
                out.append((key, found[0]))
        return out

    async def _find(self, prefix: str, account: str, token_id: str) -> tuple[str, dict[str, Any]]:
        """The record under ``prefix`` whose public id is ``token_id``, in ``account``."""
        await self.account(account)
        if PUBLIC_ID_RE.fullmatch(token_id):
            for key in await self.store.kv_keys(prefix + token_id):
                found = await self.store.kv_get(key)
                if found is not None and found[0].get("account") == account:
                    return key, found[0]
        what = "enrollment" if prefix == "enroll." else "token"
        raise NotFound(f"no {what} {token_id} in account {account}", code=f"unknown_{what}")

    # -- enrollment tokens ----------------------------------------------------------------

    async def enrollment_token(self, account: str, expires_in: float | None = None) -> str:
        await self.require_active_account(account)
        token = new_token(ENROLL_PREFIX)
        hashed = token_hash(token)
        await self.store.kv_create(
            f"enroll.{hashed}",
            {"account": account, "created_at": _now(), "expires_at": expiry(expires_in)},
        )
        return token

    async def enrollment_tokens(self, account: str) -> list[dict[str, Any]]:
        """The account's unspent enrollment tokens (never the secret), oldest first."""
        await self.account(account)
        return sorted(
            (
                {"id": public_id(key.split(".", 1)[1]), "account": account,
                 "created_at": r.get("created_at"), "expires_at": r.get("expires_at"),
                 "state": token_state(r)}
                for key, r in await self._records("enroll.") if r.get("account") == account
            ),
            key=lambda t: str(t["created_at"]),
        )

    async def revoke_enrollment(self, account: str, token_id: str) -> None:
        key, _ = await self._find("enroll.", account, token_id)
        await self.store.kv_delete(key)

    async def enroll(self, token: str, public: PublicIdentity) -> str:
        """Spend a one-time enrollment token on ``public``; return the account."""
        if not token.startswith(ENROLL_PREFIX):
            raise Unauthorized("not an enrollment token", code="invalid_token")
        key = f"enroll.{token_hash(token)}"
        found = await self.store.kv_get(key)
        if found is None:
            raise Unauthorized("enrollment token unknown or already used", code="invalid_token")
        record, revision = found
        if is_past(record.get("expires_at")):
            raise Unauthorized("this enrollment token has expired", code="token_expired")
        account = str(record["account"])
        await self.require_active_account(account)
        existing = await self.store.kv_get(f"identity.{public.id}")
        if existing is not None and existing[0]["account"] != account:
            # Refused before the token is spent: the user can still enroll another key.
            raise Conflict("identity is enrolled in another account")
        if existing is None:
            await self._check_identity_quota(account)
        try:
            await self.store.kv_delete(key, revision=revision)
        except Conflict as exc:
            raise Unauthorized("enrollment token already used", code="invalid_token") from exc
        if existing is not None:
            return account
        created = _now()
        await self.store.kv_put(_member_key(account, public.id), {"created_at": created})
        await self.store.kv_create(
            f"identity.{public.id}",
            {"account": account, "doc": public.to_doc(), "created_at": created},
        )
        return account

    async def _check_identity_quota(self, account: str) -> None:
        """``QuotaExceeded`` if the account already has its plan's ``max_identities``
        (checked before the token is spent, so it can still be used once one is revoked)."""
        _, limits = self.plan_of(await self.account(account))
        cap = limits.get("max_identities")
        if cap is not None and len(await self.identities(account)) >= cap:
            raise QuotaExceeded(
                f"account {account} has its plan's {cap} identities; revoke one first",
                code="quota_exceeded")

    # -- identities -----------------------------------------------------------------------

    async def identity(self, identity: str) -> tuple[PublicIdentity, str] | None:
        """The identity's public document and account, or None if unknown."""
        key = f"identity.{check_identity(identity)}"
        found = await self.store.kv_get(key)
        if found is None:
            return None
        record, revision = found
        # Parsed (and its self-signature verified) once per KV revision, not per request.
        public = self.store.cache.memo(key, revision, lambda: PublicIdentity.from_doc(record["doc"]))
        return public, str(record["account"])

    async def require_identity(self, identity: str) -> tuple[PublicIdentity, str]:
        found = await self.identity(identity)
        if found is None:
            raise NotFound(f"no identity {identity}", code="unknown_identity")
        return found

    async def identities(self, account: str) -> list[dict[str, Any]]:
        """The account's enrolled identities ``{id, created_at}``, oldest first (from the
        index by account: see the module docstring)."""
        await self.account(account)
        if await self.store.kv_get(MEMBER_INDEX_KEY) is None:
            await self._index_members()
        out = []
        for key in await self.store.kv_keys(_member_key(account)):
            identity = key.rpartition(".")[2]
            found = await self.store.kv_get(f"identity.{identity}")
            if found is not None and found[0].get("account") == account:
                out.append({"id": identity, "account": account,
                            "created_at": found[0].get("created_at")})
        return sorted(out, key=lambda i: str(i["created_at"]))

    async def _index_members(self) -> None:
        """Give every identity its index key (those enrolled before the index had none),
        then write ``MEMBER_INDEX_KEY``: once per registry."""
        for key, record in await self._records("identity."):
            await self.store.kv_put(_member_key(str(record["account"]), key.split(".", 1)[1]),
                                    {"created_at": record.get("created_at")})
        with contextlib.suppress(Conflict):  # another process finished it first
            await self.store.kv_create(MEMBER_INDEX_KEY, {"created_at": _now()})

    async def revoke_identity(self, account: str, identity: str) -> int:
        """Remove an identity from ``account``: its link is refused from then on
        (``unknown_identity``), its grants go and its queued interrupts are purged
        (nobody could drain them). Returns how many interrupts were purged."""
        await self.account(account)
        found = await self.identity(identity)
        if found is None or found[1] != account:
            raise NotFound(f"no identity {identity} in account {account}",
                           code="unknown_identity")
        return await self._drop_identity(identity)

    async def _drop_identity(self, identity: str) -> int:
        found = await self.store.kv_get(f"identity.{identity}")
        await self.store.kv_delete(f"identity.{identity}")
        if found is not None:
            await self.store.kv_delete(_member_key(str(found[0]["account"]), identity))
        await self._close_links(identity)
        for key in await self.store.kv_keys("grant."):
            _, recipient, signer = key.split(".", 2)
            if identity in (recipient, signer):
                await self.store.kv_delete(key)
        return await self.store.purge_identity(identity)

    # -- producer tokens ------------------------------------------------------------------

    async def create_producer_token(
        self,
        account: str,
        to: str | list[str],
        name: str = "producer",
        types: list[str] | None = None,
        expires_in: float | None = None,
    ) -> str:
        """A producer token for ``account`` that may send to the ``to`` identities (all in
        the account), types matching ``types`` (globs, default all), until ``expires_in``
        seconds from now (default: no expiry). Returned once; stored as a hash."""
        token, _ = await self.create_producer_token_record(account, to, name, types, expires_in)
        return token

    async def create_producer_token_record(
        self,
        account: str,
        to: str | list[str],
        name: str = "producer",
        types: list[str] | None = None,
        expires_in: float | None = None,
    ) -> tuple[str, dict[str, Any]]:
        await self.require_active_account(account)
        check_name(name, "token name")
        recipients = [to] if isinstance(to, str) else list(dict.fromkeys(to))
        if not 1 <= len(recipients) <= MAX_RECIPIENTS:
            raise Forbidden(f"a token names 1 to {MAX_RECIPIENTS} recipients",
                            code="invalid_scope")
        for recipient in recipients:
            _, owner = await self.require_identity(recipient)
            if owner != account:
                raise Forbidden(f"identity {recipient} is not in account {account}",
                                code="wrong_account")
        token = new_token(PRODUCER_PREFIX)
        hashed = token_hash(token)
        record = {
            "id": public_id(hashed), "account": account, "to": recipients[0],
            "recipients": recipients, "types": list(types or ["*"]), "name": name,
            "created_at": _now(), "expires_at": expiry(expires_in), "revoked_at": None,
        }
        await self.store.kv_create(f"token.{hashed}", record)
        return token, record

    async def producer(self, token: str) -> ProducerToken:
        """The scope of a valid producer token, else the refusal: ``invalid_token``
        (unknown or revoked), ``token_expired``, ``account_disabled``."""
        if not token.startswith(PRODUCER_PREFIX):
            raise Unauthorized("not a producer token", code="invalid_token")
        found = await self.store.kv_get(f"token.{token_hash(token)}")
        if found is None:
            raise Unauthorized("unknown producer token", code="invalid_token")
        record = found[0]
        if record.get("revoked_at"):
            raise Unauthorized("this producer token was revoked", code="invalid_token")
        if is_past(record.get("expires_at")):
            raise Unauthorized("this producer token has expired", code="token_expired")
        await self.require_active_account(str(record["account"]))
        return producer_from_record(record)

    async def producer_tokens(self, account: str) -> list[dict[str, Any]]:
        """The account's producer tokens, revoked and expired ones too (never the
        secret), oldest first."""
        await self.account(account)
        out = []
        for key, record in await self._records("token."):
            if record.get("account") != account:
                continue
            scope = producer_from_record(record)
            out.append({
                "id": public_id(key.split(".", 1)[1]), "account": account, "name": scope.name,
                "to": list(scope.recipients), "types": list(scope.types),
                "created_at": record.get("created_at"), "expires_at": scope.expires_at,
                "revoked_at": record.get("revoked_at"), "state": token_state(record),
            })
        return sorted(out, key=lambda t: str(t["created_at"]))

    async def revoke_producer_token(self, account: str, token_id: str) -> dict[str, Any]:
        """Mark the token revoked (one KV write: every relay process refuses it from its
        next read). The record stays, so ``list`` shows it as revoked."""
        key, record = await self._find("token.", account, token_id)
        if not record.get("revoked_at"):
            record = {**record, "revoked_at": _now()}
            await self.store.kv_put(key, record)
        return record

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
