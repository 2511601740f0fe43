"""The watches part of ``scripts/bench`` (``--only watches``): what an idle edge costs a
laptop's battery, and how fast a file change reaches the inbox.

- idle: ``mailslot edge run`` with 20 file watches (one folder each), a timer and a live
  link to a ``relay serve`` process, left alone for ``--idle-seconds`` after a settling
  pause. Wakeups/s are context switches, voluntary and not, summed over every thread
  (``/proc/<pid>/task/*/status``): each is the process leaving the CPU, i.e. having been
  woken. Target <= 2/s. Also its threads (and which of them woke), RSS and CPU, and the
  relay's wakeups/s (with its nats-server) for the same idle link.
- file change -> inbox: ms from just before a write in one of the 20 watched folders to
  the inbox commit of its interrupt (the default 20 ms debounce); p50 and p99 of 50.
  Target p50 <= 150 ms.

Each figure is the median of ``--runs`` runs. ``setup_type`` is ``bench.Setup`` (a relay
process and an edge home made through the CLI), handed in by bench.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench_edges import cpu_seconds

WATCHES = 20


def watch_intents(folders: list[Path]) -> str:
    parts = ['[[intent]]\nid = "local"\n[intent.match]\nsource_kind = ["file"]\n']
    for i, folder in enumerate(folders):
        parts.append(f'[[watch]]\nid = "f{i}"\nkind = "file"\npaths = ["{folder}"]\n')
    parts.append('[[watch]]\nid = "t0"\nkind = "timer"\n[watch.schedule]\nevery = "1h"\n')
    return "\n".join(parts)


def switches(pid: int) -> Counter[str]:
    """Context switches so far per thread name (voluntary + not), over every thread."""
    found: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            lines = (task / "status").read_text().splitlines()
        except OSError:  # a thread that just ended
            continue
        for line in lines:
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                found[name] += int(line.split()[1])
    return found


def threads(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/task").iterdir())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


async def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(interval)


def percentile(sorted_values: list[float], pct: float) -> float:
    k = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


@dataclass(frozen=True)
class Idle:
    wakeups: float  # per second, the edge (every thread)
    threads: int
    rss_mb: float
    cpu_pct: float
    relay_wakeups: float  # per second, the relay and its nats-server
    by_thread: dict[str, float]


def _started(setup_type: Any, workdir: Path) -> tuple[Any, list[Path]]:
    setup = setup_type(workdir)
    setup.start()
    folders = [workdir / f"watched{i}" for i in range(WATCHES)]
    for folder in folders:
        folder.mkdir(parents=True)
    (setup.edge_home / "config" / "intents.toml").write_text(watch_intents(folders))
    setup.start_edge()
    return setup, folders


async def idle_edge(setup_type: Any, seconds: float, workdir: Path) -> Idle:
    setup, _folders = _started(setup_type, workdir)
    try:
        edge, relay = setup.edge.pid, setup.relay.pid

        def status() -> Any:
            return json.loads(subprocess.run(
                [sys.executable, "-m", "edge", "status", "--json"], capture_output=True,
                text=True, env={**os.environ, "MAILSLOT_HOME": str(setup.edge_home)}).stdout)

        await wait_for(lambda: status()["connected"], 30, "link up", interval=0.5)
        await asyncio.sleep(5)  # settle: start-up work is not idle work
        relays = [relay, *children(relay)]
        e0, r0 = switches(edge), sum(sum(switches(p).values()) for p in relays)
        cpu0, t0 = cpu_seconds(edge), time.monotonic()
        await asyncio.sleep(seconds)
        e1, r1 = switches(edge), sum(sum(switches(p).values()) for p in relays)
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(edge) - cpu0
        by_thread = {name: (e1[name] - e0.get(name, 0)) / elapsed for name in e1
                     if e1[name] - e0.get(name, 0)}
        return Idle(sum(by_thread.values()), threads(edge), rss_mb(edge),
                    cpu / elapsed * 100, (r1 - r0) / elapsed, by_thread)
    finally:
        setup.stop()


def _file_rows(setup: Any) -> int:
    with setup.inbox() as db:
        return int(db.execute(
            "SELECT count(*) FROM interrupts WHERE source_kind = 'file'").fetchone()[0])


async def file_latency(setup_type: Any, samples: int, workdir: Path) -> tuple[float, float]:
    """ms from just before a write to the edge's inbox commit of its interrupt."""
    setup, folders = _started(setup_type, workdir)
    try:
        await wait_for(lambda: (setup.edge_home / "data" / "inbox.sqlite3").exists(), 30, "db")
        n = 0
        deadline = time.monotonic() + 30
        while _file_rows(setup) == 0:  # until the watches are subscribed
            (folders[0] / "probe").write_text(str(n))
            n += 1
            await asyncio.sleep(0.2)
            assert time.monotonic() < deadline, "file watch never fired"
        await asyncio.sleep(0.5)
        latencies = []
        for i in range(samples):
            before = _file_rows(setup)
            t0 = time.time()
            (folders[i % WATCHES] / f"sample{i}.txt").write_text("x")
            await wait_for(lambda b=before: _file_rows(setup) > b, 10, "file event",
                           interval=0.002)
            with setup.inbox() as db:
                (at,) = db.execute("SELECT max(received_at) FROM interrupts").fetchone()
            latencies.append((datetime.fromisoformat(at).timestamp() - t0) * 1000)
            await asyncio.sleep(0.05)
        latencies.sort()
        return percentile(latencies, 50), percentile(latencies, 99)
    finally:
        setup.stop()


async def watches_part(root: Path, runs: int, idle_seconds: float, setup_type: Any) -> None:
    p50s, p99s, idles = [], [], []
    for run in range(runs):
        p50, p99 = await file_latency(setup_type, 50, root / f"files{run}")
        idle = await idle_edge(setup_type, idle_seconds, root / f"idle{run}")
        p50s.append(p50)
        p99s.append(p99)
        idles.append(idle)
        busiest = ", ".join(f"{name} {rate:.2f}" for name, rate in
                            sorted(idle.by_thread.items(), key=lambda kv: -kv[1])[:4])
        print(f"run {run + 1}: file->inbox p50 {p50:.1f} ms p99 {p99:.1f} ms; idle edge "
              f"{idle.wakeups:.2f} wakeups/s ({busiest}), {idle.threads} threads, "
              f"{idle.rss_mb:.1f} MB RSS, {idle.cpu_pct:.3f} % CPU; relay "
              f"{idle.relay_wakeups:.2f} wakeups/s", flush=True)

    def median(values: list[float]) -> float:
        return statistics.median(values)

    print(f"\nfile change -> inbox, {WATCHES} watches (median of {runs}): p50 "
          f"{median(p50s):.1f} ms, p99 {median(p99s):.1f} ms (target p50 <= 150 ms); "
          f"idle edge, {WATCHES} file watches, a timer, live link, {idle_seconds:.0f}s: "
          f"{median([i.wakeups for i in idles]):.2f} wakeups/s (target <= 2), "
          f"{median([i.threads for i in idles]):.0f} threads, "
          f"{median([i.rss_mb for i in idles]):.1f} MB RSS (target <= 40), "
          f"{median([i.cpu_pct for i in idles]):.3f} % CPU (target <= 0.1); relay "
          f"{median([i.relay_wakeups for i in idles]):.2f} wakeups/s", flush=True)
