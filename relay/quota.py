"""The plan's caps on what is queued: ``max_pending`` (interrupts queued for an account's
identities together), ``max_pending_per_identity`` (for any one of them), and through
``relay.usage`` the byte caps.

The interrupt counts come from JetStream (the stream's per-subject counts of each
identity, what ``Store.pending`` reads), so every relay process on a NATS counts the same
queue; a count is kept ``COUNT_TTL`` seconds (per account, per identity) and raised by
one for each interrupt this process lets through meanwhile, so that a burst into one
process cannot pass the cap. Other processes' interrupts in that window are seen at the
next count: across processes a count cap can be passed by what they accepted in under
``COUNT_TTL``. A count is read again in the background once it is half that old (one
read per account or identity at a time, however many requests need it), so that a
steady sender never waits for it; only the first request after a pause does, and the
requests that come meanwhile share its read. A refusal is ``429 quota_exceeded``;
nothing queued is dropped, and once the edges drain the queue the account is accepted
again. The byte caps are ``relay.usage``'s (``reserve``: ``507 quota_bytes_exceeded``).
"""

from __future__ import annotations

import asyncio
import contextlib
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
        #: ("a", account) or ("i", identity) → its count being read (one at a time).
        self._reads: dict[tuple[str, str], asyncio.Task[list[float]]] = {}

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
                raise self._account_full(account, cap)
        if identity_cap is not None and identity is not None:
            identity_entry = await self._identity_entry(identity)
            if identity_entry[0] >= identity_cap:
                raise QuotaExceeded(
                    f"identity {identity} has its plan's {identity_cap} pending interrupts "
                    "(max_pending_per_identity); new ones are refused until its edge takes "
                    "some", code="quota_exceeded")
        # Counted on the entries held now: a background read may have replaced one.
        for counts, key, counted in ((self._counts, account, entry),
                                     (self._identity_counts, identity, identity_entry)):
            held = counts.get(key) if counted is not None and key is not None else None
            if held is not None:
                held[0] += 1

    def known_refusal(self, account: str, plan: Plan) -> QuotaExceeded | None:
        """The refusal ``check`` would give ``account`` now for its own cap, from the
        count it holds (read less than ``COUNT_TTL`` ago), without asking NATS; else
        None (``check`` will tell)."""
        entry = self._fresh(account)
        cap = plan.max_pending
        if cap is not None and entry is not None and entry[0] >= cap:
            return self._account_full(account, cap)
        return None

    def fresh(self, account: str) -> bool:
        """Whether this process holds a current count of ``account``'s queue (then
        ``check`` decides its account cap from memory)."""
        return self._fresh(account) is not None

    def _fresh(self, account: str) -> list[float] | None:
        entry = self._counts.get(account)
        return entry if entry is not None and entry[1] > self.clock() else None

    @staticmethod
    def _account_full(account: str, cap: int) -> QuotaExceeded:
        return QuotaExceeded(
            f"account {account} has its plan's {cap} pending interrupts; new ones "
            "are refused until its edges take some", code="quota_exceeded")

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
        async def read() -> int:
            total = 0
            for identity in await identities():
                total += sum((await self.store.pending(identity)).values())
            return total

        return await self._entry(self._counts, ("a", account), read)

    async def _identity_entry(self, identity: str) -> list[float]:
        async def read() -> int:
            return sum((await self.store.pending(identity)).values())

        return await self._entry(self._identity_counts, ("i", identity), read)

    async def _entry(self, counts: dict[str, list[float]], key: tuple[str, str],
                     read: Callable[[], Awaitable[int]]) -> list[float]:
        """The count held for ``key``: as it is while it is current (read again in the
        background once half its lifetime is gone), else read now (shared)."""
        now = self.clock()
        entry = counts.get(key[1])
        if entry is not None and entry[1] > now:
            if entry[1] - now <= self.ttl / 2 and key not in self._reads:
                self._read(counts, key, read).add_done_callback(_retrieved)
            return entry
        flight = self._reads.get(key) or self._read(counts, key, read)
        return await asyncio.shield(flight)

    def _read(self, counts: dict[str, list[float]], key: tuple[str, str],
              read: Callable[[], Awaitable[int]]) -> asyncio.Task[list[float]]:
        async def run() -> list[float]:
            before = counts.get(key[1])
            counted = before[0] if before is not None else 0.0
            try:
                total = await read()
            finally:
                self._reads.pop(key, None)
            # What this process let through while the read was on its way may not be in
            # JetStream's count yet: it is kept (counted twice at worst, for one TTL).
            held = counts.get(key[1])
            meanwhile = held[0] - counted if held is not None and held is before else 0.0
            if len(counts) >= _COUNTS_MAX:
                counts.clear()
            entry = counts[key[1]] = [float(total) + max(0.0, meanwhile),
                                      self.clock() + self.ttl]
            return entry

        task = self._reads[key] = asyncio.ensure_future(run())
        return task


def _retrieved(task: asyncio.Task[list[float]]) -> None:
    """A background read's failure is nobody's to answer: the next request that needs
    the count reads it again (and gets the error, if it is still there)."""
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()
