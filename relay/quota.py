"""The plan's ``max_pending``: interrupts queued for an account's identities together.

Counted from JetStream (the stream's per-subject counts of each identity, what
``Store.pending`` reads), so every relay process on a NATS counts the same queue; the
count is kept ``COUNT_TTL`` seconds per account and raised by one for each interrupt
this process lets through meanwhile, so that a burst into one process cannot pass the
cap. Other processes' interrupts in that window are seen at the next count: across
processes the cap can be passed by what they accepted in under ``COUNT_TTL``. A refusal
is ``429 quota_exceeded``; nothing queued is dropped, and once the edges drain the
queue the account is accepted again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from relay.config import Plan
from relay.errors import QuotaExceeded
from relay.store import Store

#: Seconds one count of an account's queue is used before it is read again.
COUNT_TTL = 1.0
#: Accounts whose count one process keeps (then it forgets them all).
_COUNTS_MAX = 10_000


class PendingQuota:
    """``check`` before publishing: refuse when the account's queue is at its cap."""

    def __init__(
        self, store: Store, ttl: float = COUNT_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        #: account → [interrupts queued, when that count is too old]
        self._counts: dict[str, list[float]] = {}

    async def check(
        self, account: str, identities: Callable[[], Awaitable[list[str]]], plan: Plan
    ) -> None:
        """Raise ``QuotaExceeded`` if ``account`` has ``plan.max_pending`` queued; else
        count one more. ``identities`` gives the account's identity ids (awaitable)."""
        cap = plan.max_pending
        if cap is None:
            return
        now = self.clock()
        entry = self._counts.get(account)
        if entry is None or entry[1] <= now:
            ids = await identities()
            total = 0
            for identity in ids:
                total += sum((await self.store.pending(identity)).values())
            if len(self._counts) >= _COUNTS_MAX:
                self._counts.clear()
            entry = self._counts[account] = [float(total), now + self.ttl]
        if entry[0] >= cap:
            raise QuotaExceeded(
                f"account {account} has its plan's {cap} pending interrupts; new ones are "
                "refused until its edges take some", code="quota_exceeded")
        entry[0] += 1
