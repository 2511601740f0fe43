"""The idle-edges part of ``scripts/bench`` (``--only edges``): what N connected, idle,
authenticated edges cost one relay process, and how fast they all come back after the
relay restarts.

A ``mailslot relay serve`` process (embedded nats-server, fsync always) with N
identities enrolled through ``Registry`` on its NATS; N real links from this process (a
lightweight client that speaks the real link protocol: WebSocket, ``challenge`` →
``auth`` signed by the identity's key → ``welcome`` → ``credit``), never N daemons.
Measured, from ``/proc``:

- relay RSS per edge: (RSS with N links - RSS before the first) / N, after a settle;
- nats-server RSS per edge, the same way;
- JetStream consumers on the interrupt stream while they are idle (target 0);
- relay CPU while idle (utime + stime over ``--idle-seconds``, % of one core), each
  client pinging on the real edge's schedule (``edge.link.keepalive``: a ping after
  three quarters of ``--edge-keepalive`` without a frame from the relay, the edge's
  ``keepalive``, 20 s by default: one every 15 s), with the same code as the edge;
- restart: the relay is stopped (SIGTERM) and started again on the same port and data
  folder; every client reconnects with the edge's own full-jitter backoff (base 0.5 s,
  cap 30 s, as ``edge.json``'s defaults) and the time until all N have their ``welcome``
  again is reported (target 60 s), with the failed attempts by kind: a refused TCP
  connection while it is down, ``InvalidStatus 503`` (the relay's handshake cap shedding
  a storm: the client waits the ``Retry-After`` as an edge does), and anything else
  (``4408`` auth timeouts: target 0).

The open-file limit is raised here (``resource.setrlimit``) for this process and the
relay it starts (children inherit it). With ``MAILSLOT_BENCH_PYSPY=PATH`` the relay is
profiled while idle (``py-spy record --nonblocking``, raw stacks to ``PATH``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from edge.config import EdgeConfig
from edge.link.client import retry_hint
from edge.link.keepalive import Liveness, PingSchedule
from relay.config import StreamSettings
from relay.registry import Registry
from relay.store import Store
from shared.auth import auth_message, sign_b64
from shared.frames import RELAY_FRAME_MAX_BYTES, SUBPROTOCOL, Auth, Challenge, Credit, Welcome
from shared.identity import Identity
from shared.link import Link, Role

RECONNECT_BASE, RECONNECT_CAP = 0.5, 30.0
SETTLE_SECONDS = 5.0


def raise_open_files(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class RelayProcess:
    home: Path
    port: int
    process: subprocess.Popen[str] | None = None
    nats_url: str = ""
    nats_pid: int = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/connect"

    def start(self) -> None:
        env = {**os.environ, "MAILSLOT_HOME": str(self.home), "MAILSLOT_LOG": "WARNING"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge", "relay", "serve", "--json", "--listen",
             f"127.0.0.1:{self.port}"], env=env, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        assert self.process.stdout is not None
        json.loads(self.process.stdout.readline())
        runtime = json.loads((self.home / "relay" / "relay.json").read_text())
        self.nats_url = runtime["nats"]
        self.nats_pid = int(runtime.get("nats_pid") or 0)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


async def enroll(relay: RelayProcess, n: int) -> list[Identity]:
    store = await Store.connect([relay.nats_url], StreamSettings())
    try:
        await store.ensure()
        registry = Registry(store)
        await registry.create_account("edges")
        identities = [Identity.generate() for _ in range(n)]
        slots = asyncio.Semaphore(64)

        async def one(identity: Identity) -> None:
            async with slots:
                token = await registry.enrollment_token("edges")
                await registry.enroll(token, identity.public)

        await asyncio.gather(*(one(identity) for identity in identities))
        return identities
    finally:
        await store.close()


class Refused(Exception):  # a refusal the bench counts by its code, not a bug
    pass


@dataclass
class Edge:
    """One link that reconnects like an edge does (full jitter), counting welcomes."""

    identity: Identity
    url: str
    fleet: Fleet
    ws: ClientConnection | None = None
    welcomes: int = 0

    async def run(self) -> None:
        attempt = 0
        while not self.fleet.stopping:
            welcomed = self.welcomes
            hint = 0.0
            try:
                await self._session()
            except Exception as exc:  # counted by kind and phase; the edge retries
                kind = f"{self.fleet.phase}: {type(exc).__name__}"
                if isinstance(exc, Refused | websockets.ConnectionClosed):
                    kind += f" {exc}"[:60]
                if isinstance(exc, InvalidStatus):  # a busy or full relay: as the edge does
                    kind += f" {exc.response.status_code}"
                    hint = retry_hint(exc)
                self.fleet.failures[kind] = self.fleet.failures.get(kind, 0) + 1
            if self.welcomes > welcomed:
                attempt = 0
            if self.fleet.stopping:
                return
            await asyncio.sleep(max(hint, random.uniform(0, min(RECONNECT_CAP,
                                                                RECONNECT_BASE * 2**attempt))))
            attempt += 1

    async def _session(self) -> None:
        link = Link(Role.EDGE)
        async with websockets.connect(
            self.url, subprotocols=[websockets.Subprotocol(SUBPROTOCOL)],
            max_size=RELAY_FRAME_MAX_BYTES, open_timeout=60,
            ping_interval=None,  # the edge's own keepalive, below
            compression=None, close_timeout=1,
        ) as ws:
            self.ws = ws
            challenge = link.receive(await asyncio.wait_for(ws.recv(), 60))
            assert isinstance(challenge, Challenge)
            message = auth_message(challenge.nonce, challenge.time, self.identity.id,
                                   challenge.relay)
            await ws.send(link.send(Auth(identity=self.identity.id,
                                         sig=sign_b64(self.identity, message))))
            welcome = link.receive(await asyncio.wait_for(ws.recv(), 60))
            if not isinstance(welcome, Welcome):  # refused: counted by its code
                raise Refused(getattr(welcome, "code", type(welcome).__name__))
            await ws.send(link.send(Credit(n=64)))
            self.welcomes += 1
            self.fleet.connected += 1
            self.fleet.welcomed_at.append(time.monotonic())
            keepalive = None
            if self.fleet.keepalive:  # pings as an edge does (it reads no frame here)
                liveness = Liveness(PingSchedule.of(self.fleet.keepalive))
                keepalive = asyncio.create_task(liveness.watch(ws))
            try:
                await ws.wait_closed()
            finally:
                how = f"{self.fleet.phase}: closed {ws.close_code}"
                if keepalive is not None:
                    if keepalive.done() and keepalive.exception() is not None:
                        how = f"{self.fleet.phase}: no pong"  # the keepalive gave it up
                    keepalive.cancel()
                    await asyncio.gather(keepalive, return_exceptions=True)
                if not self.fleet.stopping:
                    self.fleet.drops[how] = self.fleet.drops.get(how, 0) + 1
                self.fleet.connected -= 1
                self.ws = None


@dataclass
class Fleet:
    connected: int = 0
    stopping: bool = False
    #: What is going on: ``connect``, ``idle``, ``restart`` (failures are counted by it).
    phase: str = "connect"
    #: Each client's ``keepalive``, as an edge's (0: no pings).
    keepalive: float = EdgeConfig.model_fields["keepalive"].default
    failures: dict[str, int] = field(default_factory=dict)
    #: Links that ended after their welcome, by phase and how (the relay stopping
    #: closes every one with 1012).
    drops: dict[str, int] = field(default_factory=dict)
    #: When each welcome came (monotonic), for the reconnect curve.
    welcomed_at: list[float] = field(default_factory=list)


def _profile(pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` of the relay while it is idle, if ``MAILSLOT_BENCH_PYSPY`` names
    where to write it (raw stacks: one line per stack and its count)."""
    out = os.environ.get("MAILSLOT_BENCH_PYSPY")
    if not out:
        return None
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--duration", str(int(seconds)),
         "--rate", "100", "--nonblocking", "--format", "raw", "--output", out],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_connected(fleet: Fleet, n: int, timeout: float, down: bool = False) -> float:
    began = time.monotonic()
    while fleet.connected > n if down else fleet.connected < n:
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{fleet.connected} of {n} connected after {timeout:.0f} s; "
                               f"failed attempts {fleet.failures}")
        await asyncio.sleep(0.05)
    return time.monotonic() - began


async def consumers(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info("MAILSLOT")
        return int(info.state.consumer_count or 0)
    finally:
        await nc.close()


async def edges_run(workdir: Path, port: int, n: int, idle_seconds: float,
                    keepalive: float) -> dict[str, Any]:
    relay = RelayProcess(workdir / "relay-home", port)
    relay.start()
    fleet = Fleet(keepalive=keepalive)
    tasks: list[asyncio.Task[None]] = []
    try:
        identities = await enroll(relay, n)
        await asyncio.sleep(SETTLE_SECONDS)
        relay_before, nats_before = rss_kib(relay.pid), rss_kib(relay.nats_pid)
        edges = [Edge(identity, relay.url, fleet) for identity in identities]
        began, relay_cpu, own_cpu = time.monotonic(), cpu_seconds(relay.pid), time.process_time()
        tasks = [asyncio.create_task(edge.run()) for edge in edges]
        await wait_connected(fleet, n, 600)
        connect_s = time.monotonic() - began
        connect_cpu = ((cpu_seconds(relay.pid) - relay_cpu) / n * 1e3,
                       (time.process_time() - own_cpu) / n * 1e3)
        fleet.phase = "idle"
        await asyncio.sleep(SETTLE_SECONDS)
        relay_rss, nats_rss = rss_kib(relay.pid), rss_kib(relay.nats_pid)
        idle_consumers = await consumers(relay.nats_url)
        spy = _profile(relay.pid, idle_seconds)
        cpu0 = cpu_seconds(relay.pid)
        await asyncio.sleep(idle_seconds)
        idle_cpu = (cpu_seconds(relay.pid) - cpu0) / idle_seconds * 100
        if spy is not None:
            await asyncio.to_thread(spy.wait)
        fleet.phase = "restart"
        await asyncio.to_thread(relay.stop)  # the clients go on meanwhile, as edges do
        await wait_connected(fleet, 0, 60, down=True)  # every client saw its link end
        began = time.monotonic()
        fleet.welcomed_at.clear()
        await asyncio.to_thread(relay.start)
        up_s = time.monotonic() - began
        await wait_connected(fleet, n, 600)
        back_s = time.monotonic() - began
        # How many were back after each 10 s since the restart began.
        curve = [sum(1 for t in fleet.welcomed_at if t - began <= s)
                 for s in range(10, int(back_s) + 10, 10)]
        return {
            "n": n, "connect_s": connect_s, "connect_cpu": connect_cpu,
            "relay_kib": (relay_rss - relay_before) / n, "nats_kib": (nats_rss - nats_before) / n,
            "relay_mib": relay_rss / 1024, "consumers": idle_consumers, "idle_cpu": idle_cpu,
            "reconnect_s": back_s, "failures": dict(fleet.failures), "curve": curve,
            "up_s": up_s, "drops": dict(fleet.drops),
        }
    finally:
        fleet.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        relay.stop()


async def edges_part(root: Path, runs: int, n: int, idle_seconds: float,
                     free_port: Any,
                     keepalive: float = EdgeConfig.model_fields["keepalive"].default) -> None:
    limit = raise_open_files(n + 4096)
    if limit < n + 256:
        print(f"edges: the open-file limit is {limit}, too low for {n} links; "
              f"use -N {max(0, limit - 256)}", flush=True)
        n = max(1, limit - 256)
    results = []
    for run in range(runs):
        r = await edges_run(root / f"edges{run}", free_port(), n, idle_seconds, keepalive)
        results.append(r)
        print(f"run {run + 1}: {r['n']:,} idle edges connected in {r['connect_s']:.1f} s "
              f"(CPU ms per connect: relay {r['connect_cpu'][0]:.2f}, client "
              f"{r['connect_cpu'][1]:.2f}); "
              f"relay {r['relay_kib']:.1f} KiB RSS per edge ({r['relay_mib']:.0f} MiB in "
              f"all), nats-server {r['nats_kib']:.1f} KiB per edge; {r['consumers']} "
              f"JetStream consumers while idle; relay CPU idle {r['idle_cpu']:.2f} % of a "
              f"core; all reconnected {r['reconnect_s']:.1f} s after a relay restart "
              f"(listening after {r['up_s']:.1f} s; welcomes after 10, 20 … s: "
              f"{', '.join(f'{c:,}' for c in r['curve'])}); links ended {r['drops']}; "
              f"failed attempts {r['failures'] or 'none'}", flush=True)

    def med(key: str) -> float:
        return sorted(r[key] for r in results)[len(results) // 2]

    pings = (f"pinging as edges with keepalive {keepalive:g} s do (one every "
             f"{PingSchedule.of(keepalive).interval:g} s)") if keepalive else "not pinging"
    print(f"\nidle edges, {n:,} on one relay process, {pings} "
          f"(median of {runs}): relay "
          f"{med('relay_kib'):.1f} KiB RSS per edge (target <= 30), nats-server "
          f"{med('nats_kib'):.1f} KiB per edge, {med('consumers'):.0f} JetStream consumers "
          f"(target 0), relay CPU idle {med('idle_cpu'):.2f} % (target <= 2), all "
          f"reconnected in {med('reconnect_s'):.1f} s after a restart (target <= 60)",
          flush=True)
