"""The plan's caps on what is queued: ``max_pending`` (interrupts queued for an account's
identities together), ``max_pending_per_identity`` (for any one of them), and through
``relay.usage`` the byte caps.

The interrupt counts come from JetStream (the stream's per-subject counts of each
identity, what ``Store.pending`` reads), so every relay process on a NATS counts the same
queue; a count is kept ``COUNT_TTL`` seconds (per account, per identity) and raised by
one for each interrupt this process lets through meanwhile, so that a burst into one
process cannot pass the cap. Other processes' interrupts in that window are seen at the
next count: across processes a count cap can be passed by what they accepted in under
``COUNT_TTL``. A refusal is ``429 quota_exceeded``; nothing queued is dropped, and once
the edges drain the queue the account is accepted again. The byte caps are
``relay.usage``'s (``reserve``: ``507 quota_bytes_exceeded``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from relay.config import Plan
from relay.errors import QuotaExceeded
from relay.store import Store
from relay.usage import Reservation, UsageLedger, byte_caps

#: Seconds one count of an account's (or an identity's) queue is used before it is read again.
COUNT_TTL = 1.0
#: Accounts (identities) whose count one process keeps (then it forgets them all).
_COUNTS_MAX = 10_000

Identities = Callable[[], Awaitable[list[str]]]


class PendingQuota:
    """``check`` before publishing: refuse when the account's (or the recipient's) queue
    is at its cap; then ``reserve`` the interrupt's bytes (the last check)."""

    def __init__(
        self, store: Store, ttl: float = COUNT_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        #: account → [interrupts queued, when that count is too old]
        self._counts: dict[str, list[float]] = {}
        #: identity → [interrupts queued, when that count is too old]
        self._identity_counts: dict[str, list[float]] = {}
        #: The byte ledger (shared with the links' acks, ``relay.connections``).
        self.ledger = UsageLedger(store, clock=clock)

    async def check(
        self, account: str, identities: Identities, plan: Plan, identity: str | None = None
    ) -> None:
        """Raise ``QuotaExceeded`` if ``account`` has ``plan.max_pending`` queued, or
        ``identity`` (the recipient) ``plan.max_pending_per_identity``; else count one
        more for both. ``identities`` gives the account's identity ids (awaitable)."""
        cap, identity_cap = plan.max_pending, plan.max_pending_per_identity
        entry = identity_entry = None
        if cap is not None:
            entry = await self._account_entry(account, identities)
            if entry[0] >= cap:
                raise QuotaExceeded(
                    f"account {account} has its plan's {cap} pending interrupts; new ones "
                    "are refused until its edges take some", code="quota_exceeded")
        if identity_cap is not None and identity is not None:
            identity_entry = await self._identity_entry(identity)
            if identity_entry[0] >= identity_cap:
                raise QuotaExceeded(
                    f"identity {identity} has its plan's {identity_cap} pending interrupts "
                    "(max_pending_per_identity); new ones are refused until its edge takes "
                    "some", code="quota_exceeded")
        for counted in (entry, identity_entry):
            if counted is not None:
                counted[0] += 1

    async def reserve(
        self, account: str, identities: Identities, plan: Plan, identity: str,
        size: Callable[[], int],
    ) -> Reservation | None:
        """The byte caps (``relay.usage``): ``size()`` is only called when the plan has
        one. Raise ``ByteQuotaExceeded``, or return what to settle after publishing."""
        if not byte_caps(plan):
            return None
        return await self.ledger.reserve(plan, account, identity, size(), identities)

    async def _account_entry(self, account: str, identities: Identities) -> list[float]:
        now = self.clock()
        entry = self._counts.get(account)
        if entry is None or entry[1] <= now:
            total = 0
            for identity in await identities():
                total += sum((await self.store.pending(identity)).values())
            if len(self._counts) >= _COUNTS_MAX:
                self._counts.clear()
            entry = self._counts[account] = [float(total), now + self.ttl]
        return entry

    async def _identity_entry(self, identity: str) -> list[float]:
        now = self.clock()
        entry = self._identity_counts.get(identity)
        if entry is None or entry[1] <= now:
            total = sum((await self.store.pending(identity)).values())
            if len(self._identity_counts) >= _COUNTS_MAX:
                self._identity_counts.clear()
            entry = self._identity_counts[identity] = [float(total), now + self.ttl]
        return entry
