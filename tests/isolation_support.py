"""Tenant isolation under flood, measured: shared by ``tests/system/test_tenant_isolation.py``
(short, asserted) and ``scripts/bench_isolation.py`` (longer, printed).

Two accounts on two relay processes on one nats-server: ``flood``, whose plan has a low
publish rate and pending cap, and ``calm``, on a roomy plan. Calm producers follow a fixed
schedule (open loop, ``loadgen_support.paced_load``) to both relays throughout; the flood
(``loadgen_support.FloodProcess``: several keep-alive connections split over both relays,
in a process of its own) comes and goes in alternate windows, so that calm's latency with
and without it is measured under the same background load. Real ``mailslot edge run``
processes drain ``calm`` throughout; ``flood``'s edge connects only after the flood, so
that its queue fills to its cap meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from loadgen_support import TEXT, FloodProcess, FloodTally, Sent, Target, paced_load
from tests_support import (
    EdgeProcess,
    Member,
    NatsServer,
    RelayProcess,
    enroll,
    wait_until,
)

from relay.config import RelayConfig, parse_plans
from relay.quota import COUNT_TTL
from relay.registry import Registry

#: ``flood``'s plan: a rate it can only exceed, a pending cap (above the burst) that it
#: reaches within the flood (its edges are offline then), and a byte cap per identity
#: that its identity receiving big drafts reaches first (``BIG_TEXT``: about 15 KB stored
#: each, so 3 fit; the other identity's small ones, ~0.7 KB, never reach it). ``calm``'s
#: plan has the same kinds of limits, far above what it sends, so that its requests take
#: the same path through the rate buckets, the pending count and the byte ledger.
FLOOD_RATE = 20.0
FLOOD_BURST = 20
FLOOD_PENDING = 40
FLOOD_BYTES = 60_000
BIG_TEXT = 15_000
PLANS = f"""
default_plan = "roomy"

[plans.roomy]
account_rate = 5000.0
account_burst = 5000
max_pending = 1000000
max_pending_bytes = 1000000000

[plans.tight]
account_rate = {FLOOD_RATE}
account_burst = {FLOOD_BURST}
max_pending = {FLOOD_PENDING}
max_pending_bytes_per_identity = {FLOOD_BYTES}
"""

#: The slack ``max_pending`` allows across relay processes (``relay/quota.py``): what the
#: other process accepted within one ``COUNT_TTL``, which the account's rate bounds.
PENDING_SLACK = math.ceil(FLOOD_RATE * COUNT_TTL) + 1


def rate_bound(seconds: float) -> int:
    """The most ``flood`` can have had accepted in ``seconds``: its burst plus the refill
    (exact across processes: one bucket in NATS, compare-and-set)."""
    return math.floor(FLOOD_BURST + FLOOD_RATE * seconds)


def plans_config(data_dir: Path, nats_url: str) -> RelayConfig:
    found = parse_plans(PLANS, "plans.toml")
    return RelayConfig(listen="127.0.0.1:0", nats=(nats_url,), data_dir=data_dir,
                       plans=found.plans, default_plan=found.default_plan)


# -- the two tenants -------------------------------------------------------------------


@dataclass
class Tenants:
    """Two relay processes (both with ``PLANS``), two ``calm`` identities with edge homes
    (``calm[n]``'s edge links to ``relays[n]``) and two ``flood`` identities with theirs:
    ``flood[0]`` is sent small drafts, ``flood[1]`` big ones."""

    relays: list[LoggedRelay]
    calm: list[Member]
    flood: list[Member]


class LoggedRelay(RelayProcess):
    """``RelayProcess`` with its log (WARNING and up) in ``DATA_DIR.log``, so that a test
    can check that it logged nothing and a failing one can say what it did log."""

    @property
    def log(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".log")

    def logged(self) -> list[str]:
        """What it logged (at WARNING and up: a 5xx other than a tenant's byte cap, an
        error, a traceback)."""
        return self.log.read_text().splitlines() if self.log.exists() else []


@contextlib.asynccontextmanager
async def tenants(nats_server: NatsServer, root: Path) -> AsyncIterator[Tenants]:
    plans_file = root / "plans.toml"
    plans_file.write_text(PLANS)
    relays = [LoggedRelay(nats_server.url, root / f"relay{n}", "--config", str(plans_file))
              for n in range(2)]
    try:
        await asyncio.gather(*(r.start() for r in relays))  # two cores: start both at once
        registry = Registry(relays[0].store, plans_config(root / "unused", nats_server.url))
        await registry.create_account("calm", "roomy")
        await registry.create_account("flood", "tight")
        calm = [await enroll(relays[n], "calm", root / f"calm{n}") for n in range(2)]
        flood = [await enroll(relays[1], "flood", root / f"flood{n}") for n in range(2)]
        yield Tenants(relays, calm, flood)
    finally:
        for relay in relays:
            await relay.close()


class LoggedEdge(EdgeProcess):
    """``EdgeProcess`` with its log (INFO) in ``HOME/edge.log``, to read when a test fails."""

    def start(self) -> None:
        assert self.home is not None
        env = {**os.environ, "MAILSLOT_HOME": str(self.home), "MAILSLOT_LOG": "INFO"}
        with (self.home / "edge.log").open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge", "edge", "run"], env=env,
                stdout=subprocess.DEVNULL, stderr=log, text=True,
            )


def link_status(member: Member) -> dict[str, Any]:
    """What ``member``'s edge last published about its link (``connected``, ``session``…)."""
    with member.inbox() as inbox:
        return inbox.status()


@contextlib.asynccontextmanager
async def edges(members: Sequence[Member]) -> AsyncIterator[list[LoggedEdge]]:
    """A real ``mailslot edge run`` per member, each connected (its status says so)
    before the block starts; stopped (SIGTERM) when it ends."""
    started = [LoggedEdge(m.home) for m in members if m.home is not None]
    try:
        for edge in started:
            edge.start()
        for member in members:
            try:
                await wait_until(lambda m=member: link_status(m).get("connected") is True,
                                 30, f"edge of {member.id} connected")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; {edge_report(member)}") from None
        yield started
    finally:
        for edge in started:
            if edge.process is not None:
                edge.stop()


# -- the measurement -------------------------------------------------------------------


@dataclass
class Run:
    """One interleaved measurement: calm's requests, the flood's producers and tally, and
    the windows (seconds from the calm schedule's start) without and with the flood."""

    sent: list[Sent]
    flood: FloodTally
    flood_targets: list[Target]
    unloaded: list[tuple[float, float]]
    flooded: list[tuple[float, float]]


async def interleaved(
    t: Tenants, *, cycles: int, window: float, calm_rate: float, flood_rate: float | None,
    calm_producers: int = 8, flood_producers: int = 8, lead: float = 0.3,
    flood_urls: Sequence[str] | None = None,
) -> Run:
    """Calm at a steady ``calm_rate`` throughout (producer p to relay p % 2 for calm
    identity (p // 2) % 2); ``cycles`` times a ``window`` without the flood then a
    ``window`` with it (``flood_rate`` per second paced, or None: closed loop), so that
    whatever else the machine does at the time weighs on both figures alike. The flood's
    producer p posts to relay p % 2 (or to ``flood_urls[p % len(flood_urls)]``: another
    relay process on the same NATS, to tell what the flood costs calm through the relay
    processes it shares from what it costs through the machine), big drafts to
    ``flood[1]`` for the last quarter of the producers, small ones to ``flood[0]`` for the
    rest. ``lead`` seconds of calm alone come first (fresh connections, first look-ups)
    and count in neither."""
    unloaded = [(lead + 2 * c * window, lead + (2 * c + 1) * window) for c in range(cycles)]
    flooded = [(a + window, b + window) for a, b in unloaded]
    urls = [r.url for r in t.relays]
    targets = [Target(urls[p % 2], t.calm[(p // 2) % 2].token, t.calm[(p // 2) % 2].id,
                      relay=p % 2) for p in range(calm_producers)]
    big = flood_producers - flood_producers // 4
    to = list(flood_urls or urls)
    flood_targets = [Target(to[p % len(to)], t.flood[p >= big].token, t.flood[p >= big].id,
                            relay=p % len(to), text=BIG_TEXT if p >= big else TEXT)
                     for p in range(flood_producers)]
    flood = FloodProcess(flood_targets, flood_rate)
    try:
        await flood.start()
        with _no_collector():
            t0 = time.perf_counter() + 0.1
            sent, tally = await asyncio.gather(
                paced_load(targets, t0, flooded[-1][1], calm_rate),
                flood.run(t0, flooded),
            )
    finally:
        await flood.close()
    return Run(sent, tally, flood_targets, unloaded, flooded)


@contextlib.contextmanager
def _no_collector() -> Iterator[None]:
    """The measurement without this process's cyclic garbage collector: calm's client
    is this (test) process, whose heap holds every test module collected, and one full
    collection of it took 320 ms on a loaded 2-core machine — counted as the relays'
    latency in whichever window it fell. Collected once before, frozen, off for the few
    seconds of the run (its garbage waits), on again after."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def inbox_ids(member: Member) -> list[str]:
    """Every id in ``member``'s inbox, once per row (a row twice would show here twice)."""
    with member.inbox() as inbox:
        return [row.id for row in inbox.list(state=None, limit=1_000_000)]


def received_at(member: Member) -> dict[str, datetime]:
    with member.inbox() as inbox:
        return {row.id: row.received_at for row in inbox.list(state=None, limit=1_000_000)}


@dataclass
class Phases:
    """Calm's POST latency (ms, from the due time) and POST → inbox latency (ms) in the
    unloaded and the flooded windows."""

    post_unloaded: list[float]
    post_flooded: list[float]
    inbox_unloaded: list[float]
    inbox_flooded: list[float]


def split_phases(run: Run, arrived: dict[str, datetime], settle: float = 0.05) -> Phases:
    """Calm's samples by the window their due time falls in; the first ``settle``
    seconds of an unloaded window (the flood's last requests still in flight) count in
    neither."""
    phases = Phases([], [], [], [])
    for s in run.sent:
        if any(a + settle <= s.due < b for a, b in run.unloaded):
            post, inbox = phases.post_unloaded, phases.inbox_unloaded
        elif any(a <= s.due < b for a, b in run.flooded):
            post, inbox = phases.post_flooded, phases.inbox_flooded
        else:
            continue
        post.append(s.latency * 1e3)
        if s.id in arrived:
            inbox.append((arrived[s.id].timestamp() - s.wall) * 1e3)
    return phases


async def drained(members: Sequence[Member], expected: int, timeout: float) -> None:
    """Wait until ``members``' inboxes hold ``expected`` interrupts together; on a timeout
    fail with what each holds, its link status and the end of its edge's log."""

    def total() -> int:
        return sum(len(inbox_ids(m)) for m in members)

    try:
        await wait_until(lambda: total() >= expected, timeout, f"{expected} in the inboxes")
    except AssertionError as exc:
        details = "; ".join(f"{m.id}: {len(inbox_ids(m))} in the inbox, {edge_report(m)}"
                            for m in members)
        raise AssertionError(f"{exc}; {details}") from None


def edge_report(member: Member) -> str:
    """``member``'s link status and the end of its edge's log, for a failure message."""
    assert member.home is not None
    log = member.home / "edge.log"
    tail = log.read_text().splitlines()[-5:] if log.exists() else []
    return f"link {link_status(member)}, edge log: {tail}"
