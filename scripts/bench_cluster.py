"""The cluster part of ``scripts/bench`` (``--only cluster``): ingest and drain through a
relay on a real 3-node JetStream cluster on loopback, as ratios against raw nats-py on
the *same* cluster in the *same* run.

Each run starts three ``nats-server`` nodes (``tests/cluster_support.NatsCluster``: one
binary, three configs, routes, separate stores) and one ``relay serve --nats
URL1,URL2,URL3 --replicas 3``; every stream is R3, file storage. Then, interleaved so
that a shared machine's noise falls on both sides alike:

- raw publish: ``js.publish`` of messages of an interrupt's stored size with a
  ``Nats-Msg-Id``, ``PRODUCERS`` in flight, into an R3 stream of its own;
- relay ingest: ``POST /v1/interrupts`` (relay-attested drafts) from ``PRODUCERS``
  keep-alive connections, to as many recipients; relay CPU µs per accepted interrupt
  (utime + stime of the relay process, ``/proc``; the nodes not counted);
- raw pull-consume: a pull consumer (memory, the stream's replicas, like the relay's)
  fetching ``MAX_BATCH`` at a time and acking each message, of ``--cluster-n`` messages;
- relay drain: ``--cluster-n`` interrupts queued for one identity, drained by a minimal
  link client speaking the real protocol (WebSocket, challenge, signed auth, welcome,
  credit 2048 as an edge grants, an ack and as much credit back per deliver frame; it
  verifies nothing, so the figure is the relay's, not an edge's inbox); relay CPU µs
  per interrupt.

Medians of ``--runs``. The machine is shared: the ratios matter, not the absolute rates.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]  # this checkout first, as scripts/bench_isolation.py
sys.path.append(str(ROOT / "tests"))

import nats  # noqa: E402
import ulid  # noqa: E402
from bench_edges import cpu_seconds  # noqa: E402
from bench_ingest import Http  # noqa: E402
from cluster_support import ClusterRelay, NatsCluster  # noqa: E402
from link_support import connect_url, linked  # noqa: E402
from nats.js import api  # noqa: E402

from relay.registry import Registry  # noqa: E402
from relay.store import STREAM  # noqa: E402
from shared.frames import Ack, Credit, Deliver  # noqa: E402
from shared.identity import Identity  # noqa: E402
from shared.limits import MAX_BATCH  # noqa: E402

PRODUCERS = 20
CREDIT = 2048
RAW_STREAM = "RAWBENCH"
PAYLOAD = {"text": "x" * 200, "n": 0}


class Bench:
    """One cluster, one relay on it, an account with ``PRODUCERS`` recipients (their
    producer tokens) and a drain identity."""

    def __init__(self, workdir: Path) -> None:
        self.cluster = NatsCluster(workdir / "nats")
        self.relay = ClusterRelay(self.cluster, workdir / "relay")
        self.recipients: list[tuple[str, str]] = []  # (identity, producer token)
        self.drainer = Identity.generate()
        self.drainer_token = ""
        self.nc: Any = None
        self.size = 0

    async def start(self) -> None:
        self.cluster.start()
        await self.cluster.wait_healthy(60)
        await self.relay.start()
        registry = Registry(self.relay.store)
        await registry.create_account("bench")
        for _ in range(PRODUCERS):
            identity = Identity.generate()
            await registry.enroll(await registry.enrollment_token("bench"), identity.public)
            token = await registry.create_producer_token("bench", identity.id)
            self.recipients.append((identity.id, token))
        await registry.enroll(await registry.enrollment_token("bench"), self.drainer.public)
        self.drainer_token = await registry.create_producer_token("bench", self.drainer.id)
        self.nc = await nats.connect(servers=self.cluster.urls, name="bench-raw")
        await self.nc.jetstream().add_stream(api.StreamConfig(
            name=RAW_STREAM, subjects=["raw.>"], storage=api.StorageType.FILE,
            num_replicas=3, retention=api.RetentionPolicy.WORK_QUEUE))

    async def stop(self) -> None:
        if self.nc is not None:
            await self.nc.close()
        await self.relay.close()
        self.cluster.stop()

    @property
    def pid(self) -> int:
        assert self.relay.process is not None
        return self.relay.process.pid

    def draft(self, to: str) -> bytes:
        return json.dumps({"id": str(ulid.ULID()), "to": to, "type": "bench.cluster",
                           "payload": PAYLOAD}).encode()

    async def ingest(self, n: int, to: list[tuple[str, str]] | None = None
                     ) -> tuple[float, float]:
        """(interrupts/s accepted, relay CPU µs each): ``n`` drafts over ``PRODUCERS``
        connections, producer i posting to recipient i (or all to ``to``'s one)."""
        targets = to or self.recipients
        host, _, port = self.relay.url.removeprefix("http://").rpartition(":")
        conns = [await Http.open(host, int(port), targets[w % len(targets)][1])
                 for w in range(PRODUCERS)]
        left = iter(range(n))

        async def worker(w: int) -> None:
            recipient = targets[w % len(targets)][0]
            for _ in left:
                status, body = await conns[w].post("/v1/interrupts", self.draft(recipient))
                if status != 202:
                    raise AssertionError(f"POST answered {status}: {body[:200]!r}")

        try:
            cpu, began = cpu_seconds(self.pid), time.perf_counter()
            await asyncio.gather(*(worker(w) for w in range(PRODUCERS)))
            elapsed = time.perf_counter() - began
            return n / elapsed, (cpu_seconds(self.pid) - cpu) / n * 1e6
        finally:
            for conn in conns:
                conn.close()

    async def stored_size(self) -> int:
        """The size of one stored interrupt (what raw messages are made as big as)."""
        js = self.nc.jetstream()
        msg = await js.get_last_msg(STREAM, f"ms.in.{self.recipients[0][0]}.next")
        return len(msg.data or b"")

    async def raw_publish(self, n: int) -> float:
        js = self.nc.jetstream()
        data = os.urandom(self.size // 2).hex().encode()[: self.size]
        left = iter(range(n))

        async def worker(w: int) -> None:
            for i in left:
                await js.publish(f"raw.{w}", data, headers={"Nats-Msg-Id": f"{w}.{i}.{ulid.ULID()}"})

        began = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(PRODUCERS)))
        return n / (time.perf_counter() - began)

    async def raw_consume(self, n: int) -> float:
        """Pull ``n`` of the raw messages (memory consumer, the stream's replicas), ack
        each; messages/s."""
        js = self.nc.jetstream()
        sub = await js.pull_subscribe(
            "raw.>", durable=f"raw{ulid.ULID()}", stream=RAW_STREAM,
            config=api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, mem_storage=True,
                                      max_ack_pending=-1))
        got = 0
        began = time.perf_counter()
        while got < n:
            for msg in await sub.fetch(min(MAX_BATCH, n - got), timeout=10):
                await msg.ack()
                got += 1
        rate = n / (time.perf_counter() - began)
        await sub.unsubscribe()
        return rate

    async def drain(self, n: int) -> tuple[float, float]:
        """(interrupts/s, relay CPU µs each): ``n`` queued for the drainer, drained by a
        link client from ``welcome`` to the last ack."""
        async with linked(connect_url(self.relay.url), self.drainer, 30) as done:
            ws, link, welcome = done.ws, done.link, done.welcome
            assert sum(welcome.pending.model_dump().values()) >= n, welcome
            cpu, began = cpu_seconds(self.pid), time.perf_counter()
            await ws.send(link.send(Credit(n=CREDIT)))
            got = 0
            while got < n:
                frame = link.receive(await asyncio.wait_for(ws.recv(), 30))
                assert isinstance(frame, Deliver), frame
                ids = [json.loads(item.envelope)["id"] for item in frame.items]
                await ws.send(link.send(Ack(ids=ids)))
                await ws.send(link.send(Credit(n=len(ids))))
                got += len(ids)
            elapsed = time.perf_counter() - began
            return n / elapsed, (cpu_seconds(self.pid) - cpu) / n * 1e6


async def cluster_run(workdir: Path, n: int) -> dict[str, float]:
    bench = Bench(workdir)
    try:
        await bench.start()
        await bench.ingest(200)  # warm up (and an interrupt to size the raw messages)
        bench.size = await bench.stored_size()
        raw_pub = await bench.raw_publish(n)
        ingest, ingest_us = await bench.ingest(n)
        raw_pull = await bench.raw_consume(n)
        await bench.ingest(n, to=[(bench.drainer.id, bench.drainer_token)])  # the backlog
        drain, drain_us = await bench.drain(n)
        return {"raw_pub": raw_pub, "ingest": ingest, "ingest_us": ingest_us,
                "raw_pull": raw_pull, "drain": drain, "drain_us": drain_us,
                "size": float(bench.size)}
    finally:
        await bench.stop()


async def cluster_part(root: Path, runs: int, n: int) -> None:
    results = []
    for run in range(runs):
        r = await cluster_run(root / f"cluster{run}", n)
        results.append(r)
        print(f"run {run + 1}: 3-node cluster, R3, {n:,} of {r['size']:.0f} B: raw publish "
              f"{r['raw_pub']:,.0f}/s, relay ingest {r['ingest']:,.0f}/s "
              f"({r['ingest'] / r['raw_pub']:.2f}x, relay {r['ingest_us']:.0f} µs CPU each); "
              f"raw pull-consume {r['raw_pull']:,.0f}/s, relay drain {r['drain']:,.0f}/s "
              f"({r['drain'] / r['raw_pull']:.2f}x, relay {r['drain_us']:.0f} µs CPU each)",
              flush=True)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in results)

    ingest_x = statistics.median(r["ingest"] / r["raw_pub"] for r in results)
    drain_x = statistics.median(r["drain"] / r["raw_pull"] for r in results)
    print(f"\ncluster (3 nodes on loopback, R3, {PRODUCERS} producers, median of {runs}): "
          f"relay ingest {med('ingest'):,.0f}/s = {ingest_x:.2f}x raw nats-py publish "
          f"({med('raw_pub'):,.0f}/s), relay CPU {med('ingest_us'):.0f} µs per interrupt; "
          f"relay drain {med('drain'):,.0f}/s = {drain_x:.2f}x raw pull-consume "
          f"({med('raw_pull'):,.0f}/s), relay CPU {med('drain_us'):.0f} µs per interrupt "
          "(a shared machine: the ratios, not the rates)", flush=True)
