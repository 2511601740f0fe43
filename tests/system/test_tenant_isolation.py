"""Tenant isolation under flood, on real parts: one nats-server, two relay processes
started with the same ``--config`` plans, real ``mailslot edge run`` processes, real HTTP
(keep-alive connections; see ``tests/loadgen_support.py`` for the load and why its client
is hand-written, ``tests/isolation_support.py`` for the set-up).

Account ``flood`` (plan: 20/s, burst 20, at most 40 pending, 60 KB pending per identity)
is flooded at 400/s — twenty times its rate, four times calm's traffic — from 8 keep-alive
connections over both relays (six posting small drafts to one of its identities, two
posting 15 KB drafts to the other), while account ``calm`` (a roomy plan with the same
kinds of limits) posts a steady 100/s to both relays and its two edges, one linked to
each relay, drain it. The flood comes and goes: five cycles of half a second without it
and half a second with it, so that the unloaded and the flooded figure are taken under the
same background load (this machine has two cores shared with other work: a figure taken
first and another taken later would compare two machines).

Asserted: calm gets no refusal and its edges keep their one link; the relays log no error;
the flood is refused ``429 rate_limited`` (with Retry-After), ``429 quota_exceeded`` and
``507 quota_bytes_exceeded`` by both processes, and what both accepted together stays
within the shared bucket (burst + rate x time: exact across processes), within
``max_pending`` plus the documented cross-process slack (what the other process accepted
within one count's lifetime, ``relay/quota.py``) and, for the big drafts' identity,
within the byte cap (exact: ``relay/usage.py``); every 2xx, calm's and the flood's, is
drained by a real edge exactly once, and nothing else arrives.

Latency: calm's p99 of POST (from its scheduled time) with the flood must be at most
``max(2 x unloaded p99, unloaded p99 + 15 ms)``, and its p99 of POST → edge inbox (from
the wall clock the POST went out at to the edge's ``received_at``) at most
``max(2 x unloaded p99, unloaded p99 + 30 ms)``. Calm's client is this process: its
garbage collector is off while it measures (``isolation_support._no_collector``), since
one full collection of a test process's heap (hundreds of ms on a loaded machine) would
count as the relays' latency in whichever window it fell. The floors exist because each
p99 is the fifth-worst of ~450-500 samples on a shared 2-core machine: one scheduling
hiccup turns 4 ms into 9 ms without any fault of the relay, so 2x of a few milliseconds
is within that noise. The inbox's is larger because its path is longer and most of its
tail is the edge's own (one process per edge: verify, an fsync'd SQLite commit per
delivered frame, then its status and the decision engine's writes, each frame in turn):
with no flood at all its two halves' p99 differed by up to 26 ms (three runs at load
4-6: 198 → 183, 202 → 228, 668 → 691 ms), and on a quiet machine the flood added 9 to
28 ms to baselines of 7 to 13 ms (README, "Tenant isolation under flood"; at load 3-5
it added up to 70 ms, over the bound in 3 runs of 17: the flood's CPU, which the edges
wait for longest). A relay that
let the flood through (queueing calm behind it, or spending its CPU on it) shows up as
tens to hundreds of milliseconds, over the floors: calm's pulls delayed 100 ms while the
flood ran (a fault injected to check this) failed the inbox bound, 106.7 → 217.5 ms,
with POST's within its own.
"""
from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest
from isolation_support import (
    FLOOD_BYTES,
    FLOOD_PENDING,
    PENDING_SLACK,
    drained,
    edges,
    inbox_ids,
    interleaved,
    link_status,
    rate_bound,
    received_at,
    split_phases,
    tenants,
)
from loadgen_support import percentile
from tests_support import wait_until

#: The flood's offered rate (all connections together), 20x its plan's.
FLOOD_OFFERED = 400.0
CALM_RATE = 100.0
#: Flood windows (and as many without it, alternating), seconds each.
CYCLES, WINDOW = 10, 0.5
FLOOR_MS = 15.0
INBOX_FLOOR_MS = 30.0

# The p99 bound compares two latencies on a 2-core machine: with another test beside it
# (pytest-xdist) the unloaded figure itself is noise. scripts/test runs it alone.
pytestmark = pytest.mark.solo


def within_budget(flooded: float, unloaded: float, floor: float = FLOOR_MS) -> bool:
    return flooded <= max(2 * unloaded, unloaded + floor)


def links(members):
    """Each edge's link: connected, and the relay session it is on."""
    return [(link_status(m).get("connected"), link_status(m).get("session")) for m in members]


async def test_a_flooded_account_is_refused_while_another_sees_no_refusal_nor_delay(
    nats_server, tmp_path
):
    async with tenants(nats_server, tmp_path) as t:
        pending = t.relays[0].store.pending
        async with edges(t.calm):
            before = links(t.calm)
            run = await interleaved(t, cycles=CYCLES, window=WINDOW, calm_rate=CALM_RATE,
                                    flood_rate=FLOOD_OFFERED)
            calm_ok = [s.id for s in run.sent if s.status == 202]
            await drained(t.calm, len(calm_ok), 20)
            assert links(t.calm) == before  # never dropped nor replaced
        flood = run.flood

        # calm: no refusal at all, every id once, only its own
        assert Counter(s.status for s in run.sent) == {202: len(run.sent)}, [
            (s.status, s.id) for s in run.sent if s.status != 202][:5]
        arrived = {}
        for m in t.calm:
            ids = inbox_ids(m)
            assert len(ids) == len(set(ids)), "an interrupt arrived twice"
            with m.inbox() as inbox:
                assert inbox.rejections() == []
            arrived.update(received_at(m))
        assert sorted(arrived) == sorted(calm_ok)

        # the relays logged nothing: no 5xx but the byte cap's 507, no error
        assert [r.logged() for r in t.relays] == [[], []]

        # flood: refused by both processes with the three codes, nothing else
        assert set(flood.codes) == {(429, "rate_limited"), (429, "quota_exceeded"),
                                    (507, "quota_bytes_exceeded")}, flood.codes
        assert flood.bad_retry_after == []
        assert set(flood.refused_by_relay) == {0, 1}
        by_relay = Counter(run.flood_targets[p].relay for p in flood.accepted.values())
        assert set(by_relay) == {0, 1}, by_relay  # both processes accepted some
        accepted = len(flood.accepted)
        assert accepted <= rate_bound(flood.span), (accepted, flood.span)
        assert FLOOD_PENDING <= accepted <= FLOOD_PENDING + PENDING_SLACK, accepted
        assert sum(flood.codes.values()) >= 10 * accepted, flood.codes  # far past its limits
        queued = [sum((await pending(m.id)).values()) for m in t.flood]
        assert sum(queued) == accepted  # all stored

        # flood's edges, connected only now, drain exactly what was accepted
        async with edges(t.flood):
            await drained(t.flood, accepted, 20)
            await wait_until(
                lambda: _nothing_pending(pending, [*t.flood, *t.calm]), 20, "all acked")
        ids = [i for m in t.flood for i in inbox_ids(m)]
        assert len(ids) == len(set(ids)) and sorted(ids) == sorted(flood.accepted)
        big = t.flood[1]
        with big.inbox() as inbox:  # the bytes the relay counted: the stored wire form
            sizes = [len(row.signed().to_wire()) for row in inbox.list(state=None, limit=1000)]
        assert sizes and sum(sizes) <= FLOOD_BYTES, sizes

    phases = split_phases(run, arrived)
    figures = {
        name: (percentile(unloaded, 99), percentile(flooded, 99), len(unloaded), len(flooded))
        for name, unloaded, flooded in (
            ("POST", phases.post_unloaded, phases.post_flooded),
            ("POST -> inbox", phases.inbox_unloaded, phases.inbox_flooded),
        )
    }
    report = "; ".join(f"{name} p99 {u:.1f} ms unloaded ({nu}), {f:.1f} ms flooded ({nf})"
                       for name, (u, f, nu, nf) in figures.items())
    report += (f"; flood {flood.requests / (CYCLES * WINDOW):.0f}/s answered; load average "
               f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(report)
    for _name, (_unloaded, _flooded, n_unloaded, n_flooded) in figures.items():
        assert n_unloaded >= 400 and n_flooded >= 400, report  # ~440 and 500
    unloaded, flooded, _, _ = figures["POST"]
    assert within_budget(flooded, unloaded), report
    unloaded, flooded, _, _ = figures["POST -> inbox"]
    assert within_budget(flooded, unloaded, INBOX_FLOOR_MS), report


async def _nothing_pending(pending, members) -> bool:
    counts = await asyncio.gather(*(pending(m.id) for m in members))
    return all(sum(c.values()) == 0 for c in counts)
