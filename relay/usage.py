"""The plans' byte caps (``max_pending_bytes``, ``max_pending_bytes_per_identity``): a
ledger of what is queued per identity and per account, kept in NATS so that every relay
process on it counts the same.

JetStream counts messages per subject but not bytes, so the relay keeps the bytes itself,
in two JetStream counters per interrupt (``Store.side_add``: ``Nats-Incr``, an atomic
add across processes): the recipient's ``ms.usage.i.<account>.<id>`` and its account's
``ms.usage.a.<account>``. Each counter holds ``bytes * SHIFT + interrupts`` in one integer,
so that one write moves both numbers. Only accounts whose plan has a byte cap are kept
(an account without one pays nothing); the size of an interrupt is its stored document
(the signed wire form), headers aside.

* ``reserve``, the last check before publishing: add the interrupt to both counters, and
  if a capped one is now over its cap, take it back and refuse (``ByteQuotaExceeded``,
  507 ``quota_bytes_exceeded``). Add first, check after: two processes racing for the
  last room cannot both get it (under that race both may be refused, never both let
  through). ``Reservation.done``: a publish that failed or was a duplicate is taken back.
* ``settle``, when an edge acks or rejects a delivery: subtracted in the background,
  coalesced (one write per counter for the acks of ``SETTLE_SECONDS``).
* an identity revoked or an account deleted: ``Store.purge_identity`` drops the
  identity's counter with its queue, and takes what it held off the account's.

Interrupts can leave without an ack (their per-message TTL, the stream's ``max_age``, an
ack lost on its way, a crash between two of the steps above), which leaves the ledger
high. So before a refusal the ledger is recounted (at most once every ``RECOUNT_SECONDS``
per counter), but only a counter nobody wrote for ``QUIET_SECONDS``: one written lately
may count a publish still on its way to JetStream, which JetStream's count does not have
yet. Then the identity's exact count from JetStream ``n`` against the ledger's ``m``:
``n == 0`` sets its bytes to 0 (exact); ``n < m`` scales them by ``n / m`` (those that
left are taken as of average size); corrections are added (not set), so that a change
made meanwhile is kept, and go to the account's counter too. An account's counter is set
to the sum of its identities when it is quiet. A refusal is repeated for ``FULL_SECONDS``
without asking NATS; after that the counters are read (not written) first, so a full
account that keeps sending leaves them quiet; a refusal is forgotten as soon as this
process sees an ack of that account, or the cap changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from relay.coalesce import Coalescer
from relay.config import Plan
from relay.errors import ByteQuotaExceeded, StoreUnavailable
from relay.store import Store, usage_subject

log = logging.getLogger("mailslot.relay.usage")

#: ``bytes * SHIFT + interrupts``: room for ±2^39 interrupts beside the bytes.
SHIFT = 2**40
#: Acks collected into one subtraction per counter (a refusal is forgotten at the ack
#: itself, not when it is subtracted).
SETTLE_SECONDS = 0.05
#: Seconds between two recounts of one counter.
RECOUNT_SECONDS = 3.0
#: Seconds a refusal is repeated without asking NATS (unless an ack is seen meanwhile).
FULL_SECONDS = 1.0
#: A counter nobody wrote for this long counts nothing in flight: every publish it was
#: added for has been answered by JetStream (within its 5 s timeout) or taken back.
QUIET_SECONDS = 10.0
#: Counters whose recount time or refusal one process remembers (then it forgets all).
_MEMORY_MAX = 10_000

Identities = Callable[[], Awaitable[list[str]]]


def pack(size: int, count: int) -> int:
    return size * SHIFT + count


def unpack(value: int) -> tuple[int, int]:
    """``(bytes, interrupts)`` of a counter (either may be negative for a while)."""
    count = (value + SHIFT // 2) % SHIFT - SHIFT // 2
    return (value - count) // SHIFT, count


def byte_caps(plan: Plan) -> bool:
    """Whether ``plan`` has a byte cap, i.e. its accounts are kept in the ledger."""
    return plan.max_pending_bytes is not None or plan.max_pending_bytes_per_identity is not None


@dataclass
class Reservation:
    """One interrupt added to the ledger before it was published: ``done`` when known."""

    ledger: UsageLedger
    subjects: tuple[str, str]
    delta: int

    async def done(self, stored: bool) -> None:
        """Keep it if JetStream stored it; else (a failure, a duplicate) take it back."""
        if not stored:
            with contextlib.suppress(StoreUnavailable):  # the ledger stays high: recounted
                await self.ledger.add(self.subjects, -self.delta)


class UsageLedger:
    """The byte ledger of one relay process (its state is in NATS; here only when to
    recount, what was refused lately, and acks not yet subtracted)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._recount_after: dict[str, float] = {}
        #: subject → (until when a refusal is repeated, the cap it was refused at)
        self._full_until: dict[str, tuple[float, int]] = {}
        #: (account, identity) → packed amount acked and not yet subtracted.
        self._debts: dict[tuple[str, str], int] = {}
        self._flusher: asyncio.Task[None] | None = None
        #: Concurrent reads of one counter share a request (``relay.coalesce``).
        self._reads: Coalescer[tuple[int, datetime | None]] = Coalescer()

    async def add(self, subjects: tuple[str, ...], delta: int) -> list[int]:
        """Add ``delta`` to each counter at once; their new values."""
        return list(await asyncio.gather(*(self.store.side_add(s, delta) for s in subjects)))

    async def reserve(
        self, plan: Plan, account: str, identity: str, size: int, identities: Identities
    ) -> Reservation | None:
        """Add one interrupt of ``size`` bytes for ``identity`` (of ``account``) if the
        plan's byte caps leave room; else raise ``ByteQuotaExceeded``. None: the plan
        has no byte cap (nothing kept)."""
        if not byte_caps(plan):
            return None
        subjects = (usage_subject(account, identity), usage_subject(account))
        caps = (plan.max_pending_bytes_per_identity, plan.max_pending_bytes)
        capped = [(s, cap) for s, cap in zip(subjects, caps, strict=True) if cap is not None]
        now = self.clock()
        lately = [(s, cap) for s, cap in capped if self._full_until.get(s, (0.0, 0))[1] == cap]
        for subject, cap in lately:
            if self._full_until[subject][0] > now:
                raise self._refusal(subject, cap, account, identity)  # nothing asked
        if lately:
            # Refused a moment ago: read (write nothing) before trying again, so that a
            # full account that keeps sending leaves its counters quiet for a recount.
            values = [await self._value(s) for s, _ in capped]
            over = [(s, cap) for (s, cap), v in zip(capped, values, strict=True)
                    if unpack(v)[0] + size > cap]
            if over and not await self._freed(over, account, identity, size, identities):
                raise self._full(over[0], account, identity)
        delta = pack(size, 1)
        for attempt in range(2):
            values = await self.add(subjects, delta)
            over = [(s, cap) for s, cap, v in zip(subjects, caps, values, strict=True)
                    if cap is not None and unpack(v)[0] > cap]
            if not over:
                for subject, _ in capped:
                    self._full_until.pop(subject, None)
                return Reservation(self, subjects, delta)
            await self.add(subjects, -delta)
            if attempt == 1 or not await self._freed(over, account, identity, size, identities):
                raise self._full(over[0], account, identity)
        raise AssertionError("unreachable")  # pragma: no cover

    def _full(self, over: tuple[str, int], account: str, identity: str) -> ByteQuotaExceeded:
        subject, cap = over
        if len(self._full_until) >= _MEMORY_MAX:
            self._full_until.clear()
        self._full_until[subject] = (self.clock() + FULL_SECONDS, cap)
        return self._refusal(subject, cap, account, identity)

    @staticmethod
    def _refusal(subject: str, cap: int, account: str, identity: str) -> ByteQuotaExceeded:
        whose = f"identity {identity}" if subject.startswith("ms.usage.i.") else "account"
        return ByteQuotaExceeded(
            f"{whose} of account {account} has its plan's {cap} bytes pending; new "
            "interrupts are refused until its edges take some")

    async def _read(self, subject: str) -> tuple[int, datetime | None]:
        return await self._reads.run(subject, lambda: self.store.usage_get(subject))

    async def _value(self, subject: str) -> int:
        return (await self._read(subject))[0]

    async def _freed(self, over: list[tuple[str, int]], account: str, identity: str,
                     size: int, identities: Identities) -> bool:
        """Recount what is over its cap; whether that made room for ``size`` bytes."""
        freed = True
        for subject, cap in over:
            if subject == usage_subject(account, identity):
                corrected = await self._recount_identity(account, identity)
            else:
                corrected = await self._recount_account(account, identities)
            freed = freed and corrected is not None and corrected + size <= cap
        return freed

    def _may_recount(self, subject: str) -> bool:
        now = self.clock()
        if self._recount_after.get(subject, 0.0) > now:
            return False
        if len(self._recount_after) >= _MEMORY_MAX:
            self._recount_after.clear()
        self._recount_after[subject] = now + RECOUNT_SECONDS
        return True

    async def _quiet(self, subject: str) -> tuple[int, bool]:
        """A counter's value, and whether nobody wrote it for ``QUIET_SECONDS``: then
        every interrupt it counts has reached JetStream or was taken back."""
        value, written = await self._read(subject)
        quiet = written is None or (datetime.now(UTC) - written).total_seconds() > QUIET_SECONDS
        return value, quiet

    async def _recount_identity(self, account: str, identity: str, force: bool = False
                                ) -> int | None:
        """Correct ``identity``'s counter by its exact JetStream count (see the module
        docstring); its bytes after, or None if it could not be recounted now (too soon
        after the last recount, or publishes may be in flight)."""
        subject = usage_subject(account, identity)
        if not force and not self._may_recount(subject):
            return None
        value, quiet = await self._quiet(subject)
        size, count = unpack(value)
        if not quiet:
            return size if force else None
        # Read after the counter: a publish that lands in between is in JetStream's count
        # and not in ours, which can only make the correction smaller.
        queued = sum((await self.store.pending(identity)).values())
        if queued == 0:
            target = (0, 0)
        elif count > queued:
            target = (max(0, size) * queued // count, queued)
        else:
            return size
        delta = pack(*target) - value
        if delta:
            log.info("ledger of %s corrected from %d bytes in %d interrupts to %d in %d",
                     identity, size, count, *target)
            await self.add((subject, usage_subject(account)), delta)
        return target[0]

    async def _recount_account(self, account: str, identities: Identities) -> int | None:
        """Recount every identity of ``account``; then, if the account's counter is
        quiet, set it to their sum (it drifts only when a relay died between the two
        writes of one change). Its bytes after, or None if recounted too recently."""
        subject = usage_subject(account)
        if not self._may_recount(subject):
            return None
        total = 0
        for identity in await identities():
            await self._recount_identity(account, identity, force=True)
            total += await self._value(usage_subject(account, identity))
        value, quiet = await self._quiet(subject)
        if quiet and total != value:
            await self.store.side_add(subject, total - value)
            value = total
        return unpack(value)[0]

    async def recount(self, account: str, identities: list[str]) -> dict[str, int]:
        """Recount ``account`` now (``account show``) and return its bytes (key ``""``)
        and each identity's."""
        self._recount_after.pop(usage_subject(account), None)

        async def ids() -> list[str]:
            return identities

        out = {"": max(0, await self._recount_account(account, ids) or 0)}
        for identity in identities:
            out[identity] = max(0, unpack(await self._value(usage_subject(account, identity)))[0])
        return out

    # -- acks -------------------------------------------------------------------------------

    def settle(self, account: str, identity: str, size: int) -> None:
        """An edge acked (or rejected) ``size`` bytes of ``identity``'s: subtract them,
        in the background (the caller does not wait for NATS)."""
        key = (account, identity)
        self._debts[key] = self._debts.get(key, 0) + pack(size, 1)
        self._full_until.pop(usage_subject(account, identity), None)
        self._full_until.pop(usage_subject(account), None)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="usage-settle")

    async def _flush(self) -> None:
        while self._debts:
            # A batching delay, not a wait for an event: the acks of the next few
            # milliseconds go out in the same write (each counter is one subject that
            # every reservation of the account writes too: fewer writes, shorter queue).
            await asyncio.sleep(SETTLE_SECONDS)
            debts, self._debts = self._debts, {}
            totals: dict[str, int] = {}
            for (account, identity), amount in debts.items():
                totals[usage_subject(account, identity)] = amount
                account_subject = usage_subject(account)
                totals[account_subject] = totals.get(account_subject, 0) + amount
            done = await asyncio.gather(
                *(self.store.side_add(s, -amount) for s, amount in totals.items()),
                return_exceptions=True)
            for failure in (d for d in done if isinstance(d, BaseException)):
                log.info("ledger: an ack was not subtracted (%s); recounted later", failure)

    async def close(self) -> None:
        """Wait for the acks already seen to be subtracted (best effort)."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._flusher), 5)
