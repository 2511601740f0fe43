"""The relay's layout in NATS JetStream: the names of its streams and KV buckets, how long
their entries live, and the subjects it publishes on. Pure names, no I/O: ``relay.store``
(the ``nats`` adapter) creates and uses what is named here, and re-exports every name,
so ``from relay.store import STREAM`` keeps working.

* stream ``MAILSLOT``, subjects ``ms.in.<identity>.<priority>``, work-queue retention
  (an acked interrupt is gone), file storage, per-subject cap with discard-new-per-subject
  (a full recipient gets 429 and nobody else is affected), a duplicate window keyed by the
  interrupt id (``Nats-Msg-Id``), per-message TTL from ``expires_at`` (``Nats-TTL``).
* KV bucket ``mailslot_registry``: accounts, enrollment and producer tokens (hashed),
  identities, grants and the relay's signing key, so relay processes hold no state.
* KV bucket ``mailslot_nonces``: the nonce of every signed request accepted in the last
  ``NONCE_MEMORY_SECONDS`` (the bucket's max age), so that a captured request replayed to
  any relay process is refused; ``create`` is the atomic check-and-set.
* KV buckets ``mailslot_rates`` and ``mailslot_hooks`` (memory): the rate limits' buckets
  and the webhook ingress's delivery ids and refusals (see ``BUCKETS``).
* stream ``MAILSLOT_USAGE`` (file): JetStream counters (``Nats-Incr``) of the bytes and
  interrupts queued per identity (``ms.usage.i.<account>.<id>``) and per account
  (``ms.usage.a.<account>``), the plans' byte ledger (``relay.usage``).
* stream ``MAILSLOT_LINKS`` (memory): one message per live link of a capped account,
  ``ms.link.<account>.<identity>.<session>``, beaten by its session and gone
  ``LINK_TTL_SECONDS`` after the last beat (``relay.connections``).
* Core subjects ``ms.ntf.<identity>`` (something new is pending) and
  ``ms.ctl.<identity>`` (a new connection takes over), which work across relay processes.

Every subject is built here from validated tokens, at the last moment before it becomes
a subject, whatever the caller checked before.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

from shared.auth import NONCE_MEMORY_SECONDS
from shared.envelope import Priority
from shared.tokens import check_identity, check_name

STREAM = "MAILSLOT"
REGISTRY_BUCKET = "mailslot_registry"
NONCE_BUCKET = "mailslot_nonces"
#: Rate-limit buckets (``relay.ratelimit``): in memory, shared by every relay process on
#: the NATS; an entry idle this long is gone, i.e. its bucket is full again.
RATES_BUCKET = "mailslot_rates"
RATES_IDLE_SECONDS = 86_400
#: Webhook ingress (``relay.hooks.registry``): a key per hook and delivery id stored
#: (providers redeliver for days, JetStream's duplicate window is minutes) and each
#: hook's last refusals, kept this long after their last write; in memory, like the
#: rates (one more write per delivery, without an fsync).
HOOKS_BUCKET = "mailslot_hooks"
HOOKS_TTL_SECONDS = 7 * 86_400
USAGE_STREAM, LINKS_STREAM = "MAILSLOT_USAGE", "MAILSLOT_LINKS"
#: A live link's message is gone this long after its session's last beat.
LINK_TTL_SECONDS = 6.0
_SESSION_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")


class Bucket(NamedTuple):
    """A KV bucket: one value per key, entries gone ``ttl`` seconds after their last
    write (None: never), on disk or in memory, with the configured replicas."""

    name: str
    ttl: float | None
    storage: Literal["file", "memory"]


#: Every KV bucket, in the order ``Store`` holds them (registry, nonces, rates, hooks).
BUCKETS = (
    Bucket(REGISTRY_BUCKET, None, "file"),
    Bucket(NONCE_BUCKET, NONCE_MEMORY_SECONDS, "file"),
    Bucket(RATES_BUCKET, RATES_IDLE_SECONDS, "memory"),
    Bucket(HOOKS_BUCKET, HOOKS_TTL_SECONDS, "memory"),
)


def interrupt_subject(identity: str, priority: Priority) -> str:
    """The subject of one recipient's queue."""
    return f"ms.in.{check_identity(identity)}.{priority.value}"


def notify_subject(identity: str) -> str:
    return f"ms.ntf.{check_identity(identity)}"


def control_subject(identity: str) -> str:
    return f"ms.ctl.{check_identity(identity)}"


def usage_subject(account: str, identity: str | None = None) -> str:
    """The ledger counter of one account, or of one of its identities."""
    if identity is None:
        return f"ms.usage.a.{check_name(account, 'account')}"
    return f"ms.usage.i.{check_name(account, 'account')}.{check_identity(identity)}"


def link_subject(account: str, identity: str = "*", session: str = "*") -> str:
    """One live link's subject (``*``: a wildcard, to count an account's links)."""
    if session != "*" and _SESSION_RE.fullmatch(session) is None:
        raise ValueError("a session id is base64url")
    ident = identity if identity == "*" else check_identity(identity)
    return f"ms.link.{check_name(account, 'account')}.{ident}.{session}"
