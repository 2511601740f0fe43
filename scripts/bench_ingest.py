"""The ingest part of ``scripts/bench`` (``--only ingest``): how fast the relay takes
interrupts over HTTP, against raw nats-py JetStream publish on the *same* nats-server
(the relay's embedded one, fsync always), same concurrency, same run.

- single: relay-attested drafts, ``POST /v1/interrupts``, 1 producer and 20 concurrent
  producers (one keep-alive connection each), against raw ``js.publish`` of a message of
  the same size with a ``Nats-Msg-Id`` (as the relay publishes), 1 and 20 in flight.
  Target: 20 producers >= 0.5x raw at 20. p50/p99 of each.
- paced: 20 producers following a fixed schedule at half the 20-producer rate just
  measured, then raw publish (20 in flight on one connection) on the *same* schedule, as
  its baseline. Request i is due at start + i/rate (an absolute schedule, not a sleep
  after each answer), and its latency counts from that due time: a stall delays every
  request queued behind it, and each of them counts (from the actual send time, a
  producer held up by its last answer would hide the wait; that figure is printed too,
  "answered in"). Target: the relay's p99 <= 20 ms. What makes it miss is printed beside
  it: raw publish's own p99 at the same rate, and the time the machine's tasks were
  stalled on I/O and on CPU during each (Linux PSI, ``/proc/pressure``). On this VM an
  fsync now and then takes 50-170 ms (nats-server, fsync always, answers nothing
  meanwhile): then raw publish misses 20 ms as well, and it is the disk, not the relay.
  ``--trace-slow`` lists each burst of requests over 20 ms (when, how many, the worst).
  The relay's paced run also says, from its own ``/metrics`` (its latency histograms,
  bucket 25 ms), how many requests its handler took over 25 ms for and how many of its
  JetStream acks took over 25 ms, beside how many the client saw answered after over
  25 ms: equal counts mean the slow answers were waits for JetStream; many more answered
  late than handled late mean requests waited unread while the relay's process was not
  running (a machine short of CPU).
- batch: ``POST /v1/interrupts/batch`` of ``--batch`` drafts at a time from one producer,
  against raw publish of the same number of messages with the same number in flight
  (``--batch`` publishes gathered, then the next). Target >= 0.8x.
- relay CPU per accepted interrupt (µs, utime + stime of the relay process from
  ``/proc``, over the 20-producer run and over the batch run; nats-server not counted).

The client is HTTP/1.1 written by hand over asyncio streams (one socket per producer):
cheap enough not to be the bottleneck, which httpx is at these rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import ulid
from nats.js import api
from prometheus_client.parser import text_string_to_metric_families

from relay.config import StreamSettings
from relay.registry import Registry
from relay.store import Store
from shared.identity import Identity

PRODUCERS = 20
PAYLOAD = {"text": "x" * 200, "n": 0}
#: A paced request slower than this (ms, from its due time) counts in ``--trace-slow``.
SLOW_MS = 20.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


class Http:
    """One keep-alive HTTP/1.1 connection; ``post`` returns (status, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str, token: str) -> None:
        self.reader, self.writer = reader, writer
        self.head = (f"Host: {host}\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\n").encode()

    @classmethod
    async def open(cls, host: str, port: int, token: str) -> Http:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}", token)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\n" + self.head
                          + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        return await self._answer()

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.head + b"\r\n")
        return await self._answer()

    async def _answer(self) -> tuple[int, bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


@dataclass
class Relay:
    """``mailslot relay serve`` (embedded nats-server, fsync always) with one account,
    one recipient and its producer token, made through ``Registry`` on the relay's NATS."""

    home: Path
    process: subprocess.Popen[str] | None = None
    host: str = "127.0.0.1"
    port: int = 0
    nats_url: str = ""
    token: str = ""
    to: str = ""

    async def start(self, port: int) -> None:
        self.port = port
        env = {**os.environ, "MAILSLOT_HOME": str(self.home), "MAILSLOT_LOG": "WARNING"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge", "relay", "serve", "--json", "--listen",
             f"{self.host}:{port}"], env=env, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        assert self.process.stdout is not None
        json.loads(self.process.stdout.readline())
        runtime = json.loads((self.home / "relay" / "relay.json").read_text())
        self.nats_url = runtime["nats"]
        store = await Store.connect([self.nats_url], StreamSettings())
        try:
            await store.open_existing()
            registry = Registry(store)
            enrollment = await registry.create_account("bench")
            recipient = Identity.generate()
            await registry.enroll(enrollment, recipient.public)
            self.to = recipient.id
            self.token = await registry.create_producer_token("bench", recipient.id)
        finally:
            await store.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def draft(self) -> bytes:
        return json.dumps({"id": str(ulid.ULID()), "to": self.to, "type": "bench.ingest",
                           "payload": PAYLOAD}).encode()


@dataclass
class Figures:
    rate: float
    p50: float
    p99: float


async def _closed_loop(n: int, workers: int, one: Any) -> Figures:
    """``n`` operations by ``workers`` concurrent loops; ``one(worker)`` does one."""
    latencies: list[float] = []
    left = iter(range(n))

    async def worker(w: int) -> None:
        for _ in left:
            began = time.perf_counter()
            await one(w)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    elapsed = time.perf_counter() - began
    return Figures(n / elapsed, _pct(latencies, 50) * 1e3, _pct(latencies, 99) * 1e3)


async def relay_single(relay: Relay, n: int, producers: int) -> tuple[Figures, float]:
    """(figures, relay CPU µs per accepted interrupt)."""
    conns = [await Http.open(relay.host, relay.port, relay.token) for _ in range(producers)]

    async def one(w: int) -> None:
        status, body = await conns[w].post("/v1/interrupts", relay.draft())
        if status != 202:
            raise AssertionError(f"POST answered {status}: {body[:200]!r}")

    try:
        await _closed_loop(min(n, 200), producers, one)  # warm up
        assert relay.process is not None
        cpu = _cpu_seconds(relay.process.pid)
        figures = await _closed_loop(n, producers, one)
        cpu_us = (_cpu_seconds(relay.process.pid) - cpu) / n * 1e6
        return figures, cpu_us
    finally:
        for conn in conns:
            conn.close()


def _stall_us() -> tuple[int, int] | None:
    """Microseconds that some task of this machine was stalled on I/O and on CPU since
    boot (Linux PSI, ``some``), or None where ``/proc/pressure`` is missing."""
    try:
        io, cpu = (int(Path(f"/proc/pressure/{what}").read_text().split("total=")[1].split()[0])
                   for what in ("io", "cpu"))
    except (OSError, IndexError, ValueError):
        return None
    return io, cpu


#: The relay's latency histograms share these buckets (``relay.metrics``): 25 ms is the
#: one nearest the 20 ms target.
METRICS_SLOW_S = 0.025


async def _relay_slow(relay: Relay) -> tuple[float, float, float, float]:
    """From the relay's own ``/metrics`` (cumulative since it started): POSTs to
    ``/v1/interrupts`` answered and those the relay took over ``METRICS_SLOW_S`` for
    (from its handler's start: not the time a request waited unread in the socket), and
    JetStream publishes and those acknowledged after over ``METRICS_SLOW_S``."""
    conn = await Http.open(relay.host, relay.port, relay.token)
    try:
        status, body = await conn.get("/metrics")
    finally:
        conn.close()
    if status != 200:
        raise AssertionError(f"GET /metrics answered {status}")
    counts = {"request": [0.0, 0.0], "publish": [0.0, 0.0]}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "mailslot_relay_http_request_seconds_bucket" and (
                    sample.labels.get("route") != "/v1/interrupts"):
                continue
            which = {"mailslot_relay_http_request_seconds_bucket": "request",
                     "mailslot_relay_publish_seconds_bucket": "publish"}.get(sample.name)
            if which is None:
                continue
            if sample.labels["le"] == "+Inf":
                counts[which][0] += sample.value
            elif float(sample.labels["le"]) == METRICS_SLOW_S:
                counts[which][1] += sample.value
    (requests, fast_requests), (publishes, fast_publishes) = counts.values()
    return requests, requests - fast_requests, publishes, publishes - fast_publishes


@dataclass
class Paced:
    """A paced run: latency from each request's due time (``figures``), p99 from its
    actual send time (``answered_p99``, ms), the bursts of requests over ``SLOW_MS``
    (ms from the start, how many, the worst in ms), and the machine's I/O and CPU stall
    (ms, PSI) during it."""

    figures: Figures
    answered_p99: float
    slow: list[tuple[float, int, float]] = field(default_factory=list)
    stall_ms: tuple[float, float] | None = None
    #: Requests answered over ``METRICS_SLOW_S`` from their send, as the client saw it.
    answered_slow: int = 0
    #: Of the same run, from the relay's ``/metrics`` (``_relay_slow``): requests its
    #: handler took over ``METRICS_SLOW_S`` for, JetStream acks that took over it.
    relay_slow: tuple[int, int] | None = None

    def line(self) -> str:
        stall = (f"; machine stalled {self.stall_ms[0]:.0f} ms on I/O, {self.stall_ms[1]:.0f} "
                 "ms on CPU" if self.stall_ms is not None else "")
        inside = ("" if self.relay_slow is None else
                  f"; over 25 ms: {self.answered_slow} answered, {self.relay_slow[0]} in the "
                  f"relay's handler, {self.relay_slow[1]} JetStream acks")
        return (f"{_line('', self.figures)} (answered in p99 {self.answered_p99:.2f} ms; "
                f"{len(self.slow)} bursts over {SLOW_MS:.0f} ms{stall}{inside})")


async def _paced(rate: float, seconds: float, producers: int,
                 send: Callable[[int], Awaitable[None]]) -> Paced:
    """Open loop at ``rate``/s: request i is due at start + i/rate and is sent by
    producer i % producers (``send(producer)``), as soon as it is due and that producer's
    last request was answered; latency counts from the due time."""
    total = int(rate * seconds)
    done: list[tuple[float, float, float]] = []  # (due, sent, answered)
    gc.collect()
    gc.freeze()  # the client's own collector does not walk what came before the run
    before = _stall_us()
    start = time.perf_counter() + 0.05

    async def producer(w: int) -> None:
        for i in range(w, total, producers):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule itself, not a wait for an event
            sent = time.perf_counter()
            await send(w)
            done.append((due, sent, time.perf_counter()))

    await asyncio.gather(*(producer(w) for w in range(producers)))
    elapsed = time.perf_counter() - start
    after = _stall_us()
    gc.unfreeze()
    latencies = [end - due for due, _, end in done]
    slow: list[tuple[float, int, float]] = []
    last = -1.0
    for due, _, end in sorted(done):
        if end - due <= SLOW_MS / 1e3:
            continue
        if slow and due - last < 0.05:  # within 50 ms of the last slow one: the same burst
            at, n, worst = slow[-1]
            slow[-1] = (at, n + 1, max(worst, (end - due) * 1e3))
        else:
            slow.append(((due - start) * 1e3, 1, (end - due) * 1e3))
        last = due
    stall = None
    if before is not None and after is not None:
        stall = ((after[0] - before[0]) / 1e3, (after[1] - before[1]) / 1e3)
    answered = [end - sent for _, sent, end in done]
    return Paced(Figures(total / elapsed, _pct(latencies, 50) * 1e3, _pct(latencies, 99) * 1e3),
                 _pct(answered, 99) * 1e3, slow, stall,
                 sum(1 for a in answered if a > METRICS_SLOW_S))


async def relay_paced(relay: Relay, rate: float, seconds: float, producers: int) -> Paced:
    """``_paced`` of relay-attested drafts, one keep-alive connection per producer."""
    conns = [await Http.open(relay.host, relay.port, relay.token) for _ in range(producers)]

    async def send(w: int) -> None:
        status, body = await conns[w].post("/v1/interrupts", relay.draft())
        if status != 202:
            raise AssertionError(f"POST answered {status}: {body[:200]!r}")

    try:
        before = await _relay_slow(relay)
        paced = await _paced(rate, seconds, producers, send)
        after = await _relay_slow(relay)
    finally:
        for conn in conns:
            conn.close()
    requests, slow_requests, _publishes, slow_publishes = (
        b - a for a, b in zip(before, after, strict=True))
    if requests < int(rate * seconds) - producers:  # the last few may be counted a bit later
        raise AssertionError(f"/metrics counted {requests:.0f} requests of {int(rate * seconds)}")
    paced.relay_slow = (int(slow_requests), int(slow_publishes))
    return paced


async def relay_batch(relay: Relay, n: int, batch: int) -> tuple[Figures, float]:
    conn = await Http.open(relay.host, relay.port, relay.token)
    drafts = [json.loads(relay.draft()) for _ in range(batch)]

    async def one(_w: int) -> None:
        for d in drafts:
            d["id"] = str(ulid.ULID())
        status, body = await conn.post("/v1/interrupts/batch",
                                       json.dumps({"items": drafts}).encode())
        results = json.loads(body)["results"] if status == 200 else []
        if status != 200 or any(r["status"] != 202 for r in results):
            raise AssertionError(f"batch answered {status}: {body[:300]!r}")

    try:
        await _closed_loop(2, 1, one)
        assert relay.process is not None
        cpu = _cpu_seconds(relay.process.pid)
        figures = await _closed_loop(max(1, n // batch), 1, one)
        cpu_us = (_cpu_seconds(relay.process.pid) - cpu) / (n // batch * batch) * 1e6
        return Figures(figures.rate * batch, figures.p50, figures.p99), cpu_us
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def _raw_stream(relay: Relay, size: int) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
    """A stream of its own on the relay's nats-server (file storage, work queue, as the
    relay's), and a raw nats-py JetStream publish of ``size`` bytes with a
    ``Nats-Msg-Id`` to it, on one connection (as the relay has one)."""
    nc = await nats.connect(relay.nats_url)
    try:
        js = nc.jetstream(timeout=10)
        stream = f"RAW{os.getpid()}{int(time.time() * 1000) % 100000}"
        await js.add_stream(api.StreamConfig(
            name=stream, subjects=[f"{stream.lower()}.>"], storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.WORK_QUEUE, duplicate_window=120))
        data = b"x" * size
        subject = f"{stream.lower()}.bench.next"

        async def publish() -> Any:
            return await js.publish(subject, data, headers={"Nats-Msg-Id": str(ulid.ULID())})

        try:
            yield publish
        finally:
            await js.delete_stream(stream)
    finally:
        await nc.close()


async def raw_publish(relay: Relay, n: int, in_flight: int, size: int,
                      gathered: bool = False) -> Figures:
    """Raw publish (``_raw_stream``): ``in_flight`` concurrent publishers, or with
    ``gathered`` that many publishes gathered at a time by one producer (what a batch
    does)."""
    async with _raw_stream(relay, size) as publish:
        if gathered:
            async def one(_w: int) -> None:
                await asyncio.gather(*(publish() for _ in range(in_flight)))

            figures = await _closed_loop(max(1, n // in_flight), 1, one)
            return Figures(figures.rate * in_flight, figures.p50, figures.p99)

        async def single(_w: int) -> None:
            await publish()

        return await _closed_loop(n, in_flight, single)


async def raw_paced(relay: Relay, rate: float, seconds: float, producers: int,
                    size: int) -> Paced:
    """``_paced`` of raw publishes: the paced run's baseline, on the same schedule."""
    async with _raw_stream(relay, size) as publish:
        async def send(_w: int) -> None:
            await publish()

        return await _paced(rate, seconds, producers, send)


async def wire_size(relay: Relay) -> int:
    """Bytes the relay stores for one bench draft (read back from JetStream)."""
    nc = await nats.connect(relay.nats_url)
    try:
        msg = await nc.jetstream().get_last_msg("MAILSLOT", f"ms.in.{relay.to}.next")
        return len(msg.data or b"")
    finally:
        await nc.close()


async def ingest_run(workdir: Path, port: int, n: int, seconds: float, batch: int) -> dict[str, Any]:
    relay = Relay(workdir / "relay-home")
    await relay.start(port)
    try:
        one, _ = await relay_single(relay, n // 4, 1)
        twenty, cpu20 = await relay_single(relay, n, PRODUCERS)
        size = await wire_size(relay)
        raw1 = await raw_publish(relay, n // 4, 1, size)
        raw20 = await raw_publish(relay, n, PRODUCERS, size)
        paced = await relay_paced(relay, twenty.rate / 2, seconds, PRODUCERS)
        raw_p = await raw_paced(relay, twenty.rate / 2, seconds, PRODUCERS, size)
        batched, cpu_b = await relay_batch(relay, n, batch)
        raw_b = await raw_publish(relay, n, batch, size, gathered=True)
        return {"one": one, "twenty": twenty, "raw1": raw1, "raw20": raw20, "paced": paced,
                "raw_paced": raw_p, "batch": batched, "raw_batch": raw_b, "cpu20": cpu20,
                "cpu_batch": cpu_b, "size": size}
    finally:
        relay.stop()


def _line(label: str, f: Figures) -> str:
    return f"{label} {f.rate:,.0f}/s (p50 {f.p50:.2f} ms, p99 {f.p99:.2f} ms)"


def _bursts(label: str, paced: Paced) -> str:
    return f"    {label}: " + (", ".join(
        f"+{at:.0f} ms: {count} requests, worst {worst:.0f} ms"
        for at, count, worst in paced.slow) or "none")


async def ingest_part(root: Path, runs: int, n: int, seconds: float, batch: int,
                      free_port: Any, trace_slow: bool = False) -> None:
    """Run ``runs`` times, print each run and the medians with their ratios and targets;
    with ``trace_slow``, each paced run's bursts of slow requests, relay and raw."""
    results = []
    for run in range(runs):
        r = await ingest_run(root / f"ingest{run}", free_port(), n, seconds, batch)
        results.append(r)
        print(f"run {run + 1}: {_line('1 producer', r['one'])} vs raw {_line('', r['raw1'])}; "
              f"{_line('20 producers', r['twenty'])} vs raw {_line('', r['raw20'])}; "
              f"paced{r['paced'].line()} vs raw{r['raw_paced'].line()}; "
              f"{_line(f'batch {batch}', r['batch'])} vs raw "
              f"{_line('', r['raw_batch'])}; relay CPU {r['cpu20']:.0f} µs/interrupt single, "
              f"{r['cpu_batch']:.0f} µs batched; {r['size']} B stored each", flush=True)
        if trace_slow:
            print(f"  requests over {SLOW_MS:.0f} ms from their due time, in bursts "
                  "(ms from the start of the paced run):")
            print(_bursts("relay", r["paced"]))
            print(_bursts("raw publish", r["raw_paced"]), flush=True)

    def med(key: str, attr: str) -> float:
        return float(statistics.median(getattr(r[key], attr) for r in results))

    def ratio(key: str, raw: str) -> float:
        return float(statistics.median(r[key].rate / r[raw].rate for r in results))

    def paced_med(key: str, attr: str) -> float:
        return float(statistics.median(getattr(r[key].figures, attr) for r in results))

    print(f"\ningest, fsync always, median of {runs}:", flush=True)
    print(f"  1 producer:   {med('one', 'rate'):,.0f}/s p50 {med('one', 'p50'):.2f} ms p99 "
          f"{med('one', 'p99'):.2f} ms; raw publish {med('raw1', 'rate'):,.0f}/s; ratio "
          f"{ratio('one', 'raw1'):.2f}x")
    print(f"  20 producers: {med('twenty', 'rate'):,.0f}/s p50 {med('twenty', 'p50'):.2f} ms "
          f"p99 {med('twenty', 'p99'):.2f} ms; raw publish {med('raw20', 'rate'):,.0f}/s; "
          f"ratio {ratio('twenty', 'raw20'):.2f}x (target >= 0.50x)")
    print(f"  paced at half that, 20 producers: p50 {paced_med('paced', 'p50'):.2f} ms p99 "
          f"{paced_med('paced', 'p99'):.2f} ms (target p99 <= 20 ms); raw publish on the "
          f"same schedule: p50 {paced_med('raw_paced', 'p50'):.2f} ms p99 "
          f"{paced_med('raw_paced', 'p99'):.2f} ms (raw over 20 ms: the machine stalled)")
    print(f"  batch of {batch}, 1 producer: {med('batch', 'rate'):,.0f}/s; raw publish "
          f"{batch} in flight {med('raw_batch', 'rate'):,.0f}/s; ratio "
          f"{ratio('batch', 'raw_batch'):.2f}x (target >= 0.80x)")
    print(f"  relay CPU per accepted interrupt: "
          f"{statistics.median(r['cpu20'] for r in results):.0f} µs single (20 producers), "
          f"{statistics.median(r['cpu_batch'] for r in results):.0f} µs batched", flush=True)
