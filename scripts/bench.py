"""mailslot benchmarks (run with ``scripts/bench``; not part of the test suite).

Every figure is printed next to a baseline measured in the same run on this machine:

- drain: N interrupts pending at the relay, drained into the edge's SQLite inbox and
  acked, against min(raw nats-py JetStream fetch+ack rate, single-core Ed25519 verify
  rate). Target >= 0.8x. Also the CPU each process spent per drained interrupt (from
  ``/proc/<pid>/stat``, utime + stime, sampled as the drain starts and ends): the edge,
  the relay and its nats-server, next to the CPU cost of one Ed25519 verify of the same
  run (thread CPU time, which a busy machine does not skew as it skews a wall clock).
  Target: edge <= 1.5x one verify (it must verify every signature, and do little else).
- latency: producer POST to edge inbox commit at a steady rate (default 200/s); p50 and
  p99. Target p99 <= 10 ms on loopback. A fixed set of senders, one pooled keep-alive
  connection each, follows the schedule: a slow machine falls behind (reported), it does
  not pile up requests waiting for a connection.
- engine: decisions/s through the decision engine with 100 intents (real engine state,
  real activity log, fsync per batch), against the drain rate of the same run. Target
  >= 1x: the engine must never be the bottleneck.
- ingest: how fast the relay takes interrupts over HTTP (single, 20 producers, paced,
  batch), against raw nats-py JetStream publish on the same server: see
  ``scripts/bench_ingest.py``.
- hooks: signed GitHub-style webhook deliveries per second from 20 senders, next to the
  plain ingest rate of the same relay in the same run (target >= 0.8x):
  ``scripts/bench_hooks.py``.
- isolation (only with ``--only isolation``): a calm account's latency while another
  account floods past its plan's limits: see ``scripts/bench_isolation.py``.
- cluster (only with ``--only cluster``): relay ingest and drain on a 3-node JetStream
  cluster (R3), as ratios against raw nats-py publish and pull-consume on the same
  cluster, and relay CPU per interrupt: see ``scripts/bench_cluster.py``.
- watches: file change to interrupt in the inbox (p50, target <= 150 ms), and an idle
  edge with 20 file watches, a timer and a live link: wakeups/s (target <= 2), threads,
  RSS (target <= 40 MB) and CPU over 60 s (target <= 0.1 %), read from /proc; and the
  relay's wakeups/s: ``scripts/bench_watches.py``.

The relay and the edge run as separate processes (``mailslot relay serve`` with its
embedded nats-server, fsync "always"; ``mailslot edge run``), set up through the CLI as a
user would. Each figure is the median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import ulid
from bench_cluster import cluster_part
from bench_edges import edges_part
from bench_hooks import hooks_part
from bench_ingest import ingest_part
from bench_isolation import isolation_part
from bench_watches import wait_for, watches_part  # wait_for: also disk_use's
from nats.js import api

from relay.natsserver import EmbeddedNats
from shared.envelope import Envelope
from shared.identity import Identity
from shared.signing import check_signature, sign_envelope


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- baselines ------------------------------------------------------------------------


async def raw_jetstream_rate(n: int, workdir: Path) -> float:
    """Messages/s a plain nats-py pull consumer fetches and acks from a workqueue stream
    on the same embedded server configuration the relay uses (fsync always)."""
    server = EmbeddedNats(workdir / "raw" / "jetstream")
    url = await server.start()
    try:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(
            api.StreamConfig(name="RAW", subjects=["raw.>"], retention=api.RetentionPolicy.WORK_QUEUE)
        )
        body = b"x" * 400
        for start in range(0, n, 500):
            await asyncio.gather(*(js.publish("raw.a", body) for _ in range(min(500, n - start))))
        sub = await js.pull_subscribe("raw.a", durable="raw")
        began = time.perf_counter()
        done = 0
        while done < n:
            msgs = await sub.fetch(batch=min(256, n - done), timeout=5)
            for msg in msgs:
                await msg.ack()
            done += len(msgs)
        await nc.flush()
        elapsed = time.perf_counter() - began
        await nc.close()
        return n / elapsed
    finally:
        await server.stop()


def ed25519_verify_rate(seconds: float = 1.5, clock: Any = time.perf_counter) -> float:
    """Single-core verifications/s of a typical signed envelope (the edge's hot path).
    With ``clock=time.thread_time``: per second of this thread's CPU, which a busy
    machine does not skew (the cost of one verify, next to CPU read from /proc)."""
    identity = Identity.generate()
    envelope = Envelope.model_validate(
        {
            "id": "01J0000000000000000000000A",
            "to": identity.id,
            "type": "bench.verify",
            "priority": "next",
            "payload": {"text": "x" * 200},
            "source": {"kind": "producer", "name": "bench"},
            "created_at": datetime.now().astimezone(),
            "signer": identity.id,
        }
    )
    signed = sign_envelope(envelope, identity)
    verifier = identity.public.verifier()
    count = 0
    began = clock()
    while clock() - began < seconds:
        for _ in range(200):
            check_signature(signed, verifier)
        count += 200
    return count / (clock() - began)


# -- the system under test ------------------------------------------------------------


class Setup:
    """A relay process and an enrolled edge home, made through the CLI."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.relay_home = workdir / "relay-home"
        self.edge_home = workdir / "edge-home"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.relay: subprocess.Popen[str] | None = None
        self.edge: subprocess.Popen[str] | None = None
        self.identity = ""
        self.token = ""

    def cli(self, home: Path, *args: str) -> Any:
        env = {**os.environ, "MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"}
        out = subprocess.run(
            [sys.executable, "-m", "edge", *args, "--json"], env=env, check=True,
            capture_output=True, text=True,
        )
        return json.loads(out.stdout)

    def spawn(self, home: Path, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"}
        return subprocess.Popen(
            [sys.executable, "-m", "edge", *args], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        self.relay = self.spawn(
            self.relay_home, "relay", "serve", "--json", "--listen", f"127.0.0.1:{self.port}"
        )
        assert self.relay.stdout is not None
        json.loads(self.relay.stdout.readline())
        enrollment = self.cli(self.relay_home, "relay", "account", "create", "bench")
        self.identity = self.cli(
            self.edge_home, "edge", "init", "--relay", self.url,
            "--token", enrollment["enrollment_token"],
        )["identity"]
        self.token = self.cli(
            self.relay_home, "relay", "token", "create", "--account", "bench",
            "--to", self.identity,
        )["token"]

    def start_edge(self) -> None:
        self.edge = self.spawn(self.edge_home, "edge", "run")

    def stop(self) -> None:
        for proc in (self.edge, self.relay):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc is not None and proc.stdout is not None:
                proc.stdout.close()

    def inbox(self) -> sqlite3.Connection:
        path = self.edge_home / "data" / "inbox.sqlite3"
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def client(self, connections: int) -> httpx.AsyncClient:
        """A keep-alive client with exactly ``connections`` pooled connections; callers
        run at most that many requests at once, so none waits for the pool."""
        limits = httpx.Limits(max_connections=connections,
                              max_keepalive_connections=connections)
        return httpx.AsyncClient(base_url=self.url, limits=limits,
                                 timeout=httpx.Timeout(30, pool=None))

    async def post(self, client: httpx.AsyncClient, draft: dict[str, Any]) -> str:
        """POST one interrupt as a careful producer does: with its own id, retried with
        that id (stored once) when the connection drops or the store answers 503."""
        draft = {"id": str(ulid.ULID()), "to": self.identity, **draft}
        for attempt in range(6):
            try:
                r = await client.post("/v1/interrupts", json=draft,
                                      headers={"Authorization": f"Bearer {self.token}"})
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                if r.status_code == 202:
                    return str(r.json()["id"])
                if r.status_code != 503:
                    raise AssertionError(f"POST answered {r.status_code}: {r.text}")
                failure = f"503 {r.text}"
            alive = self.relay is not None and self.relay.poll() is None
            if not alive:
                raise RuntimeError(f"the relay exited ({failure})")
            await asyncio.sleep(0.1 * 2**attempt)
        raise RuntimeError(f"POST kept failing: {failure}")

    async def post_all(self, n: int, concurrency: int = 64) -> None:
        async with self.client(concurrency) as client:
            numbers = iter(range(n))

            async def sender() -> None:
                for i in numbers:  # shared: each sender takes the next number
                    await self.post(client, {
                        "type": "bench.drain", "priority": ("now", "next", "later")[i % 3],
                        "payload": {"n": i, "text": "x" * 200}})

            await asyncio.gather(*(sender() for _ in range(concurrency)))

    async def relay_pending(self) -> int:
        """Pending at the relay, as the relay itself reports it on connect (via the
        registry's store): read through ``mailslot status``'s relay view is not enough
        once the edge is connected, so ask NATS directly."""
        runtime = json.loads((self.relay_home / "relay" / "relay.json").read_text())
        nc = await nats.connect(runtime["nats"])
        try:
            info = await nc.jetstream().stream_info("MAILSLOT")
            return int(info.state.messages)
        finally:
            await nc.close()


@dataclass(frozen=True)
class Drain:
    """One drain: interrupts/s, and CPU µs per drained interrupt of each process."""

    rate: float
    cpu_us: dict[str, float]


def _processes(setup: Setup) -> dict[str, list[int]]:
    """The pids whose CPU a drain costs: the edge, the relay, and the relay's
    nats-server (a descendant, however many wrappers sit between them)."""
    assert setup.edge is not None and setup.relay is not None
    below = _descendants(setup.relay.pid)
    nats_pids = [pid for pid in below if _proc_name(pid) == "nats-server"]
    others = [pid for pid in below if pid not in nats_pids]
    return {"edge": [setup.edge.pid], "relay": [setup.relay.pid, *others],
            "nats-server": nats_pids}


def _cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(_proc_cpu_seconds(pid) for pid in group) for name, group in pids.items()}


async def _settled_cpu(pids: dict[str, list[int]], timeout: float = 60) -> dict[str, float]:
    """CPU of ``pids`` once the edge spent under 1 % of a core over 0.5 s (it has
    decided and acked everything): what the drain cost, start to end."""
    deadline = time.monotonic() + timeout
    before = _cpu_of(pids)
    while True:
        await asyncio.sleep(0.5)
        now = _cpu_of(pids)
        if now["edge"] - before["edge"] < 0.005 or time.monotonic() > deadline:
            return before
        before = now


async def drain_rate(n: int, workdir: Path) -> Drain:
    setup = Setup(workdir)
    setup.start()
    try:
        await setup.post_all(n)
        setup.start_edge()
        db_ready = lambda: (setup.edge_home / "data" / "inbox.sqlite3").exists()  # noqa: E731
        await wait_for(db_ready, 30, "inbox")
        with setup.inbox() as db:
            count = lambda: db.execute("SELECT count(*) FROM interrupts").fetchone()[0]  # noqa: E731
            # CPU is sampled when the first rows are in (the edge's start-up is not drain
            # work) and once every process is idle again after the last (the engine's
            # decisions and the last acks are drain work); per interrupt = CPU delta /
            # rows delta.
            await wait_for(lambda: count() > 0, 60, "first delivery", interval=0.005)
            pids = _processes(setup)
            cpu0, count0 = _cpu_of(pids), count()
            await wait_for(lambda: count() >= n, 600, "drain", interval=0.05)
            first, last = db.execute(
                "SELECT min(received_at), max(received_at) FROM interrupts"
            ).fetchone()
        deadline = time.monotonic() + 60
        while await setup.relay_pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await setup.relay_pending() == 0, "not every delivery was acked"
        cpu1 = await _settled_cpu(pids)
        count1 = n
        span = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
        drained = max(1, count1 - count0)
        cpu_us = {name: (cpu1[name] - cpu0[name]) / drained * 1e6 for name in cpu0}
        return Drain(n / span, cpu_us)
    finally:
        setup.stop()


#: Senders (and pooled connections) of the latency run: at 200/s and a few ms per
#: request, a handful are busy at once; the rest absorb a slow moment.
LATENCY_SENDERS = 16


async def online_latency(rate: float, seconds: float, workdir: Path) -> tuple[float, float]:
    """p50/p99 ms from just before the POST to the edge's inbox commit timestamp."""
    setup = Setup(workdir)
    setup.start()
    try:
        setup.start_edge()
        sent: dict[str, float] = {}
        behind = 0.0
        async with setup.client(LATENCY_SENDERS) as client:
            await setup.post(client, {"type": "bench.warm"})
            await wait_for(lambda: setup.inbox().execute(
                "SELECT count(*) FROM interrupts").fetchone()[0] == 1, 30, "warm-up")
            total = int(rate * seconds)
            numbers = iter(range(total))
            began = time.perf_counter()

            async def sender() -> None:
                nonlocal behind
                for i in numbers:  # shared: each sender takes the next scheduled send
                    late = time.perf_counter() - (began + i / rate)
                    if late < 0:
                        await asyncio.sleep(-late)
                    behind = max(behind, late)
                    t0 = time.time()
                    sent[await setup.post(client, {"type": "bench.latency", "priority": "now",
                                                   "payload": {"n": i}})] = t0

            await asyncio.gather(*(sender() for _ in range(LATENCY_SENDERS)))
            if behind > 0.1:
                print(f"  (this machine fell behind the {rate:.0f}/s schedule by up to "
                      f"{behind * 1000:.0f} ms: the relay answered slower than the rate)",
                      flush=True)
        with setup.inbox() as db:
            await wait_for(lambda: db.execute(
                "SELECT count(*) FROM interrupts").fetchone()[0] >= total + 1, 60, "latency")
            rows = db.execute(
                "SELECT id, received_at FROM interrupts WHERE type = 'bench.latency'"
            ).fetchall()
        latencies = sorted(
            (datetime.fromisoformat(at).timestamp() - sent[i]) * 1000 for i, at in rows
        )
        return _percentile(latencies, 50), _percentile(latencies, 99)
    finally:
        setup.stop()


def _cpu_line(cpu_us: dict[str, float], verify_us: float) -> str:
    parts = ", ".join(f"{name} {us:.0f} µs" for name, us in cpu_us.items())
    return (f"CPU per interrupt: {parts}; one verify {verify_us:.0f} µs; edge "
            f"{cpu_us['edge'] / verify_us:.2f}x a verify")


def _percentile(sorted_values: list[float], pct: float) -> float:
    k = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# -- decision engine ----------------------------------------------------------------


def bench_intents() -> Any:
    """100 intents of the kinds people write: exact types with payload predicates, a few
    globs, cooldowns, coalescing, dedupe, conditions, active hours."""
    from edge.intents.model import IntentSet

    intents: list[dict[str, Any]] = []
    for i in range(90):
        policy: dict[str, Any] = [
            {"cooldown": "10m"}, {"coalesce": "5m"}, {"dedupe": "1h"},
            {"condition": [{"field": "payload.severity", "op": "ge", "value": 2}]},
            {"max_reminders": 3, "suppress_when_active": True},
            {"active_hours": {"start": "08:00", "end": "20:00", "timezone": "Europe/Berlin"}},
        ][i % 6]
        intents.append({
            "id": f"svc-{i}", "match": {
                "type": f"svc{i}.event",
                "all": [{"field": "payload.env", "op": "eq", "value": "prod"}],
                "any": [{"field": "payload.severity", "op": "gt", "value": 0},
                        {"field": "payload.tag", "op": "regex", "value": "^urgent"}],
            }, "policy": policy,
        })
    for i in range(10):
        intents.append({"id": f"glob-{i}", "match": {
            "type": f"team{i}.*", "source_name": "bench*",
            "all": [{"field": "payload.n", "op": "present"}]}, "policy": {"cooldown": "1m"}})
    return IntentSet.model_validate({"settings": {"wakes_per_day": 0}, "intents": intents})


async def engine_rate(n: int, workdir: Path) -> float:
    import random

    import ulid

    from edge.engine.decide import Engine
    from edge.store.activity import ActivityLog
    from edge.store.enginestate import EngineState
    from edge.store.inbox import Accepted, Inbox
    from shared.envelope import Source

    workdir.mkdir(parents=True)
    producer, me = Identity.generate(), Identity.generate()
    rng = random.Random(7)
    start = datetime.now().astimezone()
    with Inbox.open(workdir / "inbox.sqlite3") as inbox:
        batch = []
        for i in range(n):
            kind = rng.randrange(110)
            type_ = f"svc{kind}.event" if kind < 100 else f"team{kind - 100}.thing"
            envelope = Envelope.model_validate({
                "id": str(ulid.ULID()), "to": me.id, "type": type_,
                "priority": ("now", "next", "later")[i % 3],
                "session": f"s{i % 5}",
                "payload": {"n": i, "env": rng.choice(("prod", "prod", "dev")),
                            "severity": rng.randrange(4), "tag": "urgent-x"},
                "source": Source(kind="producer", name="bench"),
                "created_at": start, "signer": producer.id,
                "dedupe_key": f"d{i % 50}",
            })
            received = start + timedelta(milliseconds=i)
            batch.append(Accepted(envelope, sign_envelope(envelope, producer), None, received))
            if len(batch) == 1000:
                inbox.commit_batch(batch)
                batch = []
        inbox.commit_batch(batch)
        state = EngineState.open(workdir / "engine.sqlite3")
        log = ActivityLog.open(workdir / "activity.log", workdir / "keys" / "activity.key")
        engine = Engine(bench_intents(), state, log.append, inbox=inbox)
        began = time.perf_counter()
        done = await engine.catch_up()
        elapsed = time.perf_counter() - began
        assert done == n
        log.close()
        state.close()
    return n / elapsed


# -- watches ------------------------------------------------------------------------


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (children, their children...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


# -- main -----------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-n", type=int, default=20_000, help="drain size")
    parser.add_argument("--rate", type=float, default=200.0, help="latency test rate /s")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency test length")
    parser.add_argument("--only", choices=("drain", "latency", "engine", "watches", "ingest",
                                           "edges", "isolation", "hooks", "cluster"))
    parser.add_argument("--ingest-n", type=int, default=5000,
                        help="interrupts per ingest measurement")
    parser.add_argument("--batch", type=int, default=100, help="items per ingest batch")
    parser.add_argument("--trace-slow", action="store_true",
                        help="ingest: list the paced runs' bursts of requests over 20 ms")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--edges", type=int, default=10_000,
                        help="idle edges on one relay process (--only edges)")
    parser.add_argument("--cluster-n", type=int, default=5000,
                        help="interrupts per measurement on the 3-node cluster (--only cluster)")
    parser.add_argument("--edge-keepalive", type=float, default=20.0,
                        help="each idle edge's keepalive, as edge.json's (0: no pings)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mailslot-bench-"))
    try:
        drain_median = None
        if args.only in (None, "drain", "engine"):
            raw, verify, drain = [], [], []
            cpu: dict[str, list[float]] = {}
            for run in range(args.runs):
                raw.append(await raw_jetstream_rate(args.n, root / f"raw{run}"))
                verify.append(ed25519_verify_rate())
                result = await drain_rate(args.n, root / f"drain{run}")
                drain.append(result.rate)
                for name, us in result.cpu_us.items():
                    cpu.setdefault(name, []).append(us)
                verify_us = 1e6 / ed25519_verify_rate(clock=time.thread_time)
                cpu.setdefault("verify", []).append(verify_us)
                print(f"run {run + 1}: raw JetStream {raw[-1]:,.0f}/s  Ed25519 verify "
                      f"{verify[-1]:,.0f}/s  mailslot drain {drain[-1]:,.0f}/s; "
                      f"{_cpu_line(result.cpu_us, verify_us)}", flush=True)
            baseline = min(statistics.median(raw), statistics.median(verify))
            d = drain_median = statistics.median(drain)
            print(f"\ndrain {args.n:,} (median of {args.runs}): {d:,.0f}/s; baseline "
                  f"min(raw JetStream {statistics.median(raw):,.0f}/s, Ed25519 verify "
                  f"{statistics.median(verify):,.0f}/s) = {baseline:,.0f}/s; "
                  f"ratio {d / baseline:.2f}x (target >= 0.80x)", flush=True)
            medians = {name: statistics.median(values) for name, values in cpu.items()}
            print(f"median of {args.runs}: {_cpu_line(medians, medians.pop('verify'))} "
                  "(target edge <= 1.50x)",
                  flush=True)
        if args.only in (None, "engine"):
            rates = []
            for run in range(args.runs):
                rates.append(await engine_rate(args.n, root / f"engine{run}"))
                print(f"run {run + 1}: engine {rates[-1]:,.0f} decisions/s", flush=True)
            e = statistics.median(rates)
            assert drain_median is not None
            print(f"\nengine, 100 intents, {args.n:,} interrupts (median of {args.runs}): "
                  f"{e:,.0f} decisions/s; mailbox drain {drain_median:,.0f}/s; ratio "
                  f"{e / drain_median:.2f}x (target >= 1x)", flush=True)
        if args.only in (None, "watches"):  # idle wakeups and file latency (bench_watches.py)
            await watches_part(root, args.runs, args.idle_seconds, Setup)
        if args.only in (None, "ingest"):
            await ingest_part(root, args.runs, args.ingest_n, args.seconds, args.batch,
                              free_port, args.trace_slow)
        if args.only in (None, "hooks"):  # signed webhook deliveries vs plain ingest
            await hooks_part(root, args.runs, args.ingest_n, free_port)
        if args.only == "edges":  # minutes of set-up: only when asked for
            await edges_part(root, args.runs, args.edges, args.idle_seconds, free_port,
                             args.edge_keepalive)
        if args.only == "cluster":  # a 3-node cluster per run: only when asked for
            await cluster_part(root, args.runs, args.cluster_n)
        if args.only == "isolation":  # minutes: only when asked for (bench_isolation.py)
            await isolation_part(root, args.runs, cycles=10, window=1.0, calm_rate=100.0,
                                 flood="none,400,2000,max", other_relay=True)
        if args.only in (None, "latency"):
            p50s, p99s = [], []
            for run in range(args.runs):
                p50, p99 = await online_latency(args.rate, args.seconds, root / f"lat{run}")
                p50s.append(p50)
                p99s.append(p99)
                print(f"run {run + 1}: p50 {p50:.2f} ms  p99 {p99:.2f} ms", flush=True)
            print(f"\nlatency at {args.rate:.0f}/s for {args.seconds:.0f}s (median of {args.runs}): "
                  f"p50 {statistics.median(p50s):.2f} ms, p99 {statistics.median(p99s):.2f} ms "
                  f"(target p99 <= 10 ms)", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
