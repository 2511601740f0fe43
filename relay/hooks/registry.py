"""Hooks as records of the registry KV bucket, so that a hook created through one relay
process is served by every other one (reads come from the watch-fed cache,
``relay.regcache``), and what the door remembers about deliveries, in the hooks bucket
(``relay.store.HOOKS_BUCKET``, entries gone 7 days after their last write).

Keys::

    hook.<hook id>          {"account", "created_at", "hook": Hook.stored()}
                            deleted: {"account", "created_at", "deleted_at", "name", "to"}
                            (a tombstone: a delivery to it is answered 410, not 404)

and in the hooks bucket::

    seen.<sha256(hook id, delivery id)>   a delivery claimed, {"at"} (see ``claim``)
    refusals.<hook id>                    {"last": [{"at", "status", "code", "message"}]}

The record holds the hook's secrets (HMAC needs them): they leave this module only in
``Hook`` objects, never in what ``shown`` returns, and are never logged. ``paused`` is a
field of the hook; counters are ``relay.metrics``'.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from relay.errors import Conflict, HookGone, NotFound, StoreUnavailable
from relay.hooks.model import HOOK_ID_RE, Hook
from relay.store import Store

PREFIX = "hook."
#: Refusals ``hook show`` lists (the newest last).
REFUSALS_KEPT = 10
_ID_RE = re.compile(HOOK_ID_RE)


def hook_key(hook_id: str) -> str:
    return PREFIX + hook_id


#: What ``HookRegistry.claim`` found.
Claim = Literal["made", "held", "stored"]


class DeliveryRef(NamedTuple):
    """One delivery of one hook, by a hash of the two ids (a provider's ids are unique
    only within that provider, and any text may be one), made once per delivery:
    ``key``, its claim's key in the hooks bucket, and ``msg_id``, the ``Nats-Msg-Id``
    (after the recipient) of its interrupt."""

    key: str
    msg_id: str


def delivery_ref(hook_id: str, delivery_id: str) -> DeliveryRef:
    digest = hashlib.sha256(f"{hook_id}\n{delivery_id}".encode()).hexdigest()[:40]
    return DeliveryRef(f"seen.{digest}", f"hook.{digest}")


def delivery_key(hook_id: str, delivery_id: str) -> str:
    """The hooks bucket's key of one delivery of one hook."""
    return delivery_ref(hook_id, delivery_id).key


def msg_id(hook_id: str, delivery_id: str) -> str:
    """The ``Nats-Msg-Id`` (after the recipient) of a hook's delivery."""
    return delivery_ref(hook_id, delivery_id).msg_id


@dataclass(frozen=True)
class HookRecord:
    """A live hook and the account it belongs to."""

    hook: Hook
    account: str
    created_at: str

    def shown(self) -> dict[str, Any]:
        """What the admin API and ``hook show`` see: every secret masked."""
        return {**self.hook.shown(), "account": self.account, "created_at": self.created_at,
                "path": f"/v1/hooks/{self.hook.id}"}


def _now() -> str:
    return datetime.now(UTC).isoformat()


class HookRegistry:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def find(self, hook_id: str) -> HookRecord:
        """The live hook ``hook_id``: ``NotFound`` ``unknown_hook`` if there never was one
        (or the id cannot be one), ``HookGone`` if it was deleted."""
        if _ID_RE.fullmatch(hook_id) is None:
            raise NotFound("no such hook", code="unknown_hook")
        key = hook_key(hook_id)
        found = await self.store.kv_get(key)
        if found is None:
            raise NotFound("no such hook", code="unknown_hook")
        record, revision = found
        if "hook" not in record:
            raise HookGone("this hook was deleted")
        hook = self.store.cache.memo(key, revision, lambda: Hook.model_validate(record["hook"]))
        return HookRecord(hook, str(record["account"]), str(record.get("created_at")))

    async def create(self, account: str, hook: Hook) -> HookRecord:
        """Store a new hook of ``account``; ``Conflict`` ``hook_exists`` if the account has
        one of that name (a hook's name is its interrupts' ``source.name``)."""
        for other in await self.hooks(account):
            if other.hook.name == hook.name:
                raise Conflict(f"account {account} has a hook named {hook.name!r} already",
                               code="hook_exists")
        created = _now()
        await self.store.kv_create(hook_key(hook.id), {
            "account": account, "created_at": created, "hook": hook.stored()})
        return HookRecord(hook, account, created)

    async def replace(self, found: HookRecord, hook: Hook) -> HookRecord:
        """Write ``hook`` (paused, resumed, its secret rotated) over ``found``."""
        await self.store.kv_put(hook_key(hook.id), {
            "account": found.account, "created_at": found.created_at, "hook": hook.stored()})
        return HookRecord(hook, found.account, found.created_at)

    async def delete(self, found: HookRecord) -> None:
        """Leave a tombstone (deliveries are then answered 410: providers stop)."""
        await self.store.kv_put(hook_key(found.hook.id), {
            "account": found.account, "created_at": found.created_at, "deleted_at": _now(),
            "name": found.hook.name, "to": found.hook.to})

    async def hooks(self, account: str | None = None, to: str | None = None
                    ) -> list[HookRecord]:
        """The live hooks (of ``account``, to ``to``), oldest first."""
        found: list[HookRecord] = []
        for key in await self.store.kv_keys(PREFIX):
            with contextlib.suppress(NotFound, HookGone):
                record = await self.find(key[len(PREFIX):])
                if (account is None or record.account == account) and (
                        to is None or record.hook.to == to):
                    found.append(record)
        return sorted(found, key=lambda r: r.created_at)

    async def delete_account(self, account: str) -> int:
        """Delete every hook of ``account`` (its deletion); how many there were."""
        hooks = await self.hooks(account)
        for record in hooks:
            await self.delete(record)
        return len(hooks)

    # -- what the door remembers ----------------------------------------------------------

    async def claim(self, delivery: DeliveryRef, window: float) -> Claim:
        """Whether to publish this delivery: ``made``, its key made now (one atomic write:
        the first time); ``held``, made by another delivery of it less than ``window``
        seconds ago (JetStream's duplicate window: the publish, with the same
        ``Nats-Msg-Id``, then says whether it is stored — so a relay that crashed between
        the two loses nothing to a prompt redelivery); ``stored``: stored before, not to
        publish. After a refused publish, ``release`` a key ``made``, never one ``held``
        (that other delivery may be stored: a later retry would be stored again)."""
        key = delivery.key
        if await self.store.hook_put(key, {"at": time.time()}, create=True):
            return "made"
        held = await self.store.hook_get(key)
        if held is None or time.time() - float(held.get("at", 0)) < window:
            return "held"
        return "stored"

    async def release(self, delivery: DeliveryRef) -> None:
        """Forget a claimed delivery that was not stored (best effort), so that the
        provider's retry is stored, however late it comes."""
        with contextlib.suppress(StoreUnavailable):
            await self.store.hook_put(delivery.key, None)

    async def seen(self, hook_id: str, delivery_id: str) -> bool:
        """Whether this delivery of this hook was claimed (in the last 7 days)."""
        return await self.store.hook_get(delivery_key(hook_id, delivery_id)) is not None

    async def refused(self, hook_id: str, status: int, code: str, message: str) -> None:
        """Add a refusal to the hook's last ones (best effort: never a reason to fail).
        ``message`` is the relay's own sentence, never the body."""
        key = f"refusals.{hook_id}"
        with contextlib.suppress(StoreUnavailable):
            held = await self.store.hook_get(key) or {}
            last = [r for r in held.get("last", []) if isinstance(r, dict)][-REFUSALS_KEPT + 1:]
            last.append({"at": _now(), "status": status, "code": code,
                         "message": message[:300]})
            await self.store.hook_put(key, {"last": last})

    async def refusals(self, hook_id: str) -> list[dict[str, Any]]:
        held = await self.store.hook_get(f"refusals.{hook_id}") or {}
        return [r for r in held.get("last", []) if isinstance(r, dict)]

