"""Tenant isolation under flood (``scripts/bench --only isolation``, or run this file):
the measurement of ``tests/system/test_tenant_isolation.py``, longer and at several flood
strengths, printed rather than asserted.

Per run: a real nats-server (JetStream in a temp folder, its default sync), two relay
processes on it with the same ``--config`` plans (``flood``: 20/s, burst 20, 40 pending,
60 KB per identity; ``calm``: roomy), two real ``mailslot edge run`` processes draining
``calm`` (one linked to each relay). Calm posts a steady ``--calm-rate`` over 8
keep-alive connections to both relays throughout; the flood (8 keep-alive connections
over both relays, in its own process at nice 19) comes and goes in alternate
``--window`` second windows, ``--cycles`` times, at each strength in ``--flood``
(``none``: no flood at all, the measurement's own noise; a number: that many requests
per second, paced; ``max``: closed loop, as fast as the relays answer). With
``--other-relay``, each strength is run again flooding a third relay process on the same
NATS instead of calm's two: the same CPU spent on the same machine, but in a process
that calm does not use, which tells what calm pays through the relay processes it
shares from what it pays through the machine.

Printed per strength: calm's POST latency (from its scheduled time) and POST → edge
inbox latency, p50 and p99, in the windows without and with the flood and their ratio;
calm's refusals; the flood's requests per second and its answers; the relay CPU per
flood request (calm's relays' CPU over the run less that of the ``none`` run of the same
length, or the third relay's). Medians of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The test's own harness (one measurement, not two). The repository first: tests/edge/
# must not stand in for the edge package.
sys.path[:0] = [str(ROOT)]
sys.path.append(str(ROOT / "tests"))

from isolation_support import (  # noqa: E402
    FLOOD_PENDING,
    LoggedRelay,
    Tenants,
    edges,
    interleaved,
    received_at,
    split_phases,
    tenants,
)
from loadgen_support import percentile  # noqa: E402
from tests_support import NatsServer, wait_until  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_of(relay: LoggedRelay | None) -> float:
    if relay is None or relay.process is None:
        return 0.0
    return _cpu_seconds(relay.process.pid)


def _relays_cpu(t: Tenants) -> float:
    return sum(_cpu_of(r) for r in t.relays)


def _flood_cpu_us(level: str, r: Level, base: Level, cycles: int, window: float) -> float:
    """Relay CPU per flood request: calm's relays beyond the no-flood run's, or the
    other relay's (which serves only the flood)."""
    n = r.flood_rate * cycles * window
    if not n:
        return 0.0
    spent = r.other_cpu if level.endswith(" other") else r.relay_cpu - base.relay_cpu
    return spent / n * 1e6


@dataclass
class Level:
    """One flood strength in one run."""

    post: tuple[float, float, float, float]  # p50, p99 unloaded; p50, p99 flooded (ms)
    inbox: tuple[float, float, float, float]
    calm_refused: int
    flood_rate: float  # requests answered per second of flood window
    flood_codes: Counter[str]
    relay_cpu: float  # seconds, calm's two relays, over the run
    other_cpu: float  # seconds, the other relay (``--other-relay``), over the run


def _figures(unloaded: list[float], flooded: list[float]) -> tuple[float, float, float, float]:
    return (percentile(unloaded, 50), percentile(unloaded, 99),
            percentile(flooded, 50), percentile(flooded, 99))


async def one_run(root: Path, levels: list[float | str | None], cycles: int, window: float,
                  calm_rate: float, other_relay: bool) -> dict[str, Level]:
    """Each level (and with ``other_relay`` each level again, flooding a third relay
    process on the same NATS instead of calm's two: key ``LEVEL other``)."""
    nats = NatsServer(root / "jetstream")
    nats.start()
    out: dict[str, Level] = {}
    other: LoggedRelay | None = None
    try:
        async with tenants(nats, root) as t, edges(t.calm):
            if other_relay:
                other = LoggedRelay(nats.url, root / "relay-other", "--config",
                                    str(root / "plans.toml"))
                await other.start()
            plan = [(str(level), level, None) for level in levels]
            if other is not None:
                plan += [(f"{level} other", level, [other.url]) for level in levels if level]
            for key, level, urls in plan:
                cpu, other_cpu = _relays_cpu(t), _cpu_of(other)
                rate = None if level == "max" else float(level or 0)  # 0: no flood
                run = await interleaved(t, cycles=cycles, window=window, calm_rate=calm_rate,
                                        flood_rate=rate, flood_urls=urls)
                cpu, other_cpu = _relays_cpu(t) - cpu, _cpu_of(other) - other_cpu
                ok = {s.id for s in run.sent if s.status == 202}

                def arrived(ok: set[str] = ok) -> dict[str, Any]:
                    found: dict[str, Any] = {}
                    for member in t.calm:
                        found.update(received_at(member))
                    return found if ok <= found.keys() else {}

                phases = split_phases(run, await wait_until(arrived, 60, "calm drained"))
                codes = Counter({f"{s} {c}": n for (s, c), n in run.flood.codes.items()})
                codes["202"] = len(run.flood.accepted)
                out[key] = Level(
                    _figures(phases.post_unloaded, phases.post_flooded),
                    _figures(phases.inbox_unloaded, phases.inbox_flooded),
                    sum(1 for s in run.sent if s.status != 202),
                    run.flood.requests / (cycles * window), codes, cpu, other_cpu)
    finally:
        if other is not None:
            await other.close()
        nats.kill()
    return out


def _ratio(figures: tuple[float, float, float, float], which: int) -> float:
    base = figures[which]
    return figures[which + 2] / base if base else float("inf")


def _line(name: str, f: tuple[float, float, float, float]) -> str:
    return (f"{name} p50 {f[0]:.1f} -> {f[2]:.1f} ms ({_ratio(f, 0):.2f}x), "
            f"p99 {f[1]:.1f} -> {f[3]:.1f} ms ({_ratio(f, 1):.2f}x)")


def _parse_levels(text: str) -> list[float | str | None]:
    levels: list[float | str | None] = []
    for part in text.split(","):
        part = part.strip()
        levels.append(None if part == "none" else "max" if part == "max" else float(part))
    if None not in levels:
        levels.insert(0, None)  # the noise floor, and the CPU baseline
    return levels


async def isolation_part(root: Path, runs: int, cycles: int, window: float, calm_rate: float,
                         flood: str, other_relay: bool = False) -> None:
    """Run ``runs`` times; print each run and the medians."""
    levels = _parse_levels(flood)
    results = []
    for n in range(runs):
        result = await one_run(root / f"isolation{n}", levels, cycles, window, calm_rate,
                               other_relay)
        results.append(result)
        for level, r in result.items():
            cpu_us = _flood_cpu_us(level, r, result["None"], cycles, window)
            print(f"run {n + 1}, flood {level}: calm {_line('POST', r.post)}; "
                  f"{_line('POST->inbox', r.inbox)}; calm refused {r.calm_refused}; flood "
                  f"{r.flood_rate:,.0f}/s answered {dict(r.flood_codes)}; relay CPU "
                  f"{cpu_us:.0f} us per flood request", flush=True)

    print(f"\nisolation, calm {calm_rate:.0f}/s, flood in {cycles} windows of {window:g} s "
          f"(plan: 20/s, burst 20, {FLOOD_PENDING} pending), median of {runs}:")
    for level in results[0]:
        def med(key: str, i: int, level: str = level) -> float:
            return statistics.median(getattr(r[level], key)[i] for r in results)

        def med_ratio(key: str, i: int, level: str = level) -> float:
            return statistics.median(_ratio(getattr(r[level], key), i) for r in results)

        flood_rate = statistics.median(r[level].flood_rate for r in results)
        refused = sum(r[level].calm_refused for r in results)
        cpu = statistics.median(_flood_cpu_us(level, r[level], r["None"], cycles, window)
                                for r in results)
        print(f"  flood {level} ({flood_rate:,.0f}/s answered): calm POST p50 "
              f"{med('post', 0):.1f} -> {med('post', 2):.1f} ms ({med_ratio('post', 0):.2f}x), "
              f"p99 {med('post', 1):.1f} -> {med('post', 3):.1f} ms "
              f"({med_ratio('post', 1):.2f}x); POST->inbox p50 {med_ratio('inbox', 0):.2f}x, "
              f"p99 {med('inbox', 1):.1f} -> {med('inbox', 3):.1f} ms "
              f"({med_ratio('inbox', 1):.2f}x); calm refused {refused}; relay CPU {cpu:.0f} "
              "us per flood request", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--calm-rate", type=float, default=100.0)
    parser.add_argument("--flood", default="none,400,2000,max",
                        help="flood strengths: none, requests/s, max (closed loop)")
    parser.add_argument("--other-relay", action="store_true",
                        help="also flood a third relay process instead of calm's two")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailslot-isolation-"))
    try:
        asyncio.run(isolation_part(root, args.runs, args.cycles, args.window, args.calm_rate,
                                   args.flood, args.other_relay))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
