"""The plan's ``max_connected_edges``, and what a link reports for the byte ledger.

Live links are counted in NATS, so that the cap holds across every relay process on it:
each link of an account whose plan has the cap beats the subject
``ms.link.<account>.<identity>.<session>`` (stream ``MAILSLOT_LINKS``, in memory, one
message per subject, each gone ``LINK_TTL_SECONDS`` after it was written) every
``BEAT_SECONDS``. A link that ends drops its subject at once; the links of a relay
process that died stop counting within ``LINK_TTL_SECONDS``. An account's connected
edges are the distinct identities among its subjects: an edge that takes over its own
older link counts once.

Admission, at the link's auth (after the signature and the disabled check): beat first,
then count; with more identities than the cap, drop the beat and refuse: an ``error``
frame ``edges_exceeded`` saying when to retry, then close 4429. Beat-then-count means two
links racing for the last slot cannot both get it (both may be refused; they retry).
The handshakes of one account share their counts (``relay.coalesce``: one in flight, a
count always read after the beat of each that shares it), so a reconnect storm of a
big account makes two requests at a time, not one per edge.
The cap is the plan's at admission: links of an account whose plan had no cap write
nothing, and count from their next connection after the plan gets one.

Acks: ``settled`` hands an acked (or rejected) delivery's size to the byte ledger
(``relay.usage``) when the account's plan keeps one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from relay.coalesce import Coalescer
from relay.config import Plan
from relay.errors import RelayError, StoreUnavailable, TooManyEdges
from relay.registry import Registry
from relay.store import LINK_TTL_SECONDS, LINKS_STREAM, Store, link_subject
from relay.usage import UsageLedger, byte_caps

log = logging.getLogger("mailslot.relay.connections")

#: Seconds between two beats of a live link (well under ``LINK_TTL_SECONDS``).
BEAT_SECONDS = LINK_TTL_SECONDS / 3
#: What a refused edge is told to wait before trying again.
RETRY_SECONDS = 30


@dataclass
class _Link:
    identity: str
    account: str
    #: The subject it beats (None: its plan had no cap when it was admitted).
    subject: str | None


class LinkQuotas:
    """The links of one relay process, as the plans see them. ``admit`` at auth,
    ``settled`` per acked delivery, ``leave`` when the link ends."""

    def __init__(self, store: Store, registry: Registry,
                 ledger: UsageLedger | None = None) -> None:
        self.store = store
        self.registry = registry
        self.ledger = ledger
        self._links: dict[str, _Link] = {}
        self._beater: asyncio.Task[None] | None = None
        #: Set when a link leaves: the beater stops as soon as none is left to beat.
        self._left = asyncio.Event()
        #: One count of an account's links in flight at a time, shared by the handshakes
        #: that wait for it (each still sees a count read after its own beat).
        self._counts: Coalescer[set[str]] = Coalescer()

    async def plan(self, account: str) -> Plan | None:
        """The plan ``account`` runs under now (None: the relay has no plans)."""
        config = self.registry.config
        if config is None:
            return None
        return config.plan_of((await self.registry.account(account)).get("plan"))[1]

    async def admit(self, session: str, identity: str, account: str) -> None:
        """Let ``session`` (``identity``'s link) count as a connected edge of ``account``,
        or raise ``TooManyEdges`` if the account has its plan's ``max_connected_edges``."""
        plan = await self.plan(account)
        cap = plan.max_connected_edges if plan is not None else None
        subject = None
        if cap is not None:
            subject = link_subject(account, identity, session)
            await self.store.side_add(subject)
            live = await self._counts.run(account, lambda: self.store.link_identities(account))
            if len(live) > cap:
                await self.store.side_purge(LINKS_STREAM, subject)
                raise TooManyEdges(
                    f"account {account} has its plan's {cap} connected edges; retry in "
                    f"{RETRY_SECONDS} s")
        self._links[session] = _Link(identity, account, subject)
        if subject is not None and (self._beater is None or self._beater.done()):
            self._beater = asyncio.create_task(self._beat(), name="link-beats")

    async def leave(self, session: str) -> None:
        """The link ended: it no longer counts (at once, in every process)."""
        link = self._links.pop(session, None)
        self._left.set()
        if link is not None and link.subject is not None:
            with contextlib.suppress(StoreUnavailable):  # it expires by itself then
                await self.store.side_purge(LINKS_STREAM, link.subject)

    async def settled(self, session: str, size: int) -> None:
        """The edge of ``session`` acked (or rejected) a delivery of ``size`` bytes."""
        link = self._links.get(session)
        if link is None or self.ledger is None:
            return
        try:
            plan = await self.plan(link.account)
        except RelayError:  # the account is gone, or NATS is: the ack itself went through
            return
        if plan is not None and byte_caps(plan):
            self.ledger.settle(link.account, link.identity, size)

    async def _beat(self) -> None:
        """Beat every capped live link of this process until there is none."""
        due = 0.0
        while True:
            subjects = [link.subject for link in self._links.values() if link.subject]
            if not subjects:
                return
            if time.monotonic() < due:  # until the next beat is due, or a link leaves
                self._left.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._left.wait(), due - time.monotonic())
                continue
            due = time.monotonic() + BEAT_SECONDS
            results = await asyncio.gather(*(self.store.side_add(s) for s in subjects),
                                           return_exceptions=True)
            if any(isinstance(r, BaseException) for r in results):
                log.info("link beats failed (NATS away?); retried in %g s", BEAT_SECONDS)
            live = {link.subject for link in self._links.values()}
            for gone in (s for s in subjects if s not in live):  # left while it was beaten
                with contextlib.suppress(StoreUnavailable):
                    await self.store.side_purge(LINKS_STREAM, gone)

    async def close(self) -> None:
        if self._beater is not None:
            self._beater.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._beater
