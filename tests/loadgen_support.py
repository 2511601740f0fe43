"""HTTP load for the relay that costs little enough not to measure itself: a keep-alive
HTTP/1.1 client written by hand over asyncio streams (one socket per producer; httpx
costs more per request than the relay does at these rates), an open-loop paced load with
latency counted from each request's scheduled time, and a flood (paced or closed loop)
that can run in a process of its own at the lowest CPU priority.

Standard library and ``ulid`` only, so that ``python -m loadgen_support`` (the flood's own
process) starts fast. Used by ``tests/isolation_support.py`` (the tenant isolation test and
``scripts/bench_isolation.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ulid import ULID

#: Characters of ``payload.text`` in a draft, unless a target says otherwise.
TEXT = 200


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile (nearest rank); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * pct / 100) - 1))]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body.startswith(b"{") else {}


class KeepAlive:
    """One keep-alive HTTP/1.1 connection to a relay, posting with one bearer token."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str, token: str) -> None:
        self.reader, self.writer = reader, writer
        self.head = (f"Host: {host}\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\n").encode()

    @classmethod
    async def open(cls, url: str, token: str) -> KeepAlive:
        host, _, port = url.removeprefix("http://").rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, f"{host}:{port}", token)

    async def post(self, path: str, body: bytes) -> Reply:
        self.writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\n" + self.head
                          + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name:
                headers[name.decode().strip().lower()] = value.decode().strip()
        body_len = int(headers.get("content-length", "0"))
        return Reply(int(head[9:12]), headers, await self.reader.readexactly(body_len))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass(frozen=True)
class Target:
    """Where one producer posts: a relay URL (``relay``: its index, for the tally), a
    producer token, a recipient, and how many characters its drafts' text has."""

    url: str
    token: str
    to: str
    relay: int = 0
    text: int = TEXT


def draft(target: Target, kind: str) -> bytes:
    return json.dumps({"id": str(ULID()), "to": target.to, "type": f"load.{kind}",
                       "payload": {"text": "x" * target.text}}).encode()


async def _at(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)  # a schedule to keep, not a wait for an event


# -- a steady load -----------------------------------------------------------------------


@dataclass
class Sent:
    """One paced request: when it was due (seconds from the schedule's start), the wall
    clock when it went out (to compare with an inbox's ``received_at``), its latency from
    the due time (seconds), the status, and the id (or the refusal's body)."""

    due: float
    wall: float
    latency: float
    status: int
    id: str


async def paced_load(
    targets: Sequence[Target], t0: float, seconds: float, rate: float, kind: str = "calm"
) -> list[Sent]:
    """Open loop at ``rate``/s from ``t0`` (``time.perf_counter``) for ``seconds``:
    request i is due at t0 + i/rate and is sent by producer i % len(targets), each a
    keep-alive connection to its target. Latency counts from the due time, so a producer
    that fell behind is not hidden."""
    conns = [await KeepAlive.open(t.url, t.token) for t in targets]
    sent: list[Sent] = []

    async def producer(p: int) -> None:
        for i in range(p, int(rate * seconds), len(targets)):
            due = t0 + i / rate
            await _at(due)
            wall = time.time()
            reply = await conns[p].post("/v1/interrupts", draft(targets[p], kind))
            latency = time.perf_counter() - due
            answer = (reply.json()["id"] if reply.status == 202
                      else reply.body.decode(errors="replace")[:200])
            sent.append(Sent(due - t0, wall, latency, reply.status, answer))

    try:
        await asyncio.gather(*(producer(p) for p in range(len(targets))))
    finally:
        for conn in conns:
            await conn.close()
    return sent


# -- a flood ------------------------------------------------------------------------------


@dataclass
class FloodTally:
    """How a flood was answered: ids accepted (→ the index of the producer it came from),
    refusals by (status, code) and by relay, Retry-After values that were not as
    documented, when the first request went out and the last answer came back
    (``time.perf_counter``, the same clock in every process of the machine), and each
    request's latency (seconds)."""

    accepted: dict[str, int] = field(default_factory=dict)
    codes: Counter[tuple[int, str]] = field(default_factory=Counter)
    refused_by_relay: Counter[int] = field(default_factory=Counter)
    bad_retry_after: list[str] = field(default_factory=list)
    first: float = math.inf
    last: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.accepted) + sum(self.codes.values())

    @property
    def span(self) -> float:
        """Seconds from the first request sent to the last answer."""
        return max(0.0, self.last - self.first)

    def record(self, producer: int, target: Target, reply: Reply) -> None:
        if reply.status == 202:
            self.accepted[reply.json()["id"]] = producer
            return
        body = reply.json()
        code = str(body.get("error", ""))
        self.codes[(reply.status, code)] += 1
        self.refused_by_relay[target.relay] += 1
        if code == "rate_limited":
            after = reply.headers.get("retry-after", "")
            if not (after.isdigit() and int(after) >= 1 and body.get("retry_after") == int(after)):
                self.bad_retry_after.append(after)

    def to_doc(self) -> dict[str, Any]:
        return {"accepted": self.accepted,
                "codes": [[s, c, n] for (s, c), n in self.codes.items()],
                "refused_by_relay": dict(self.refused_by_relay), "bad": self.bad_retry_after,
                "first": self.first if self.requests else None, "last": self.last,
                "latencies": self.latencies}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> FloodTally:
        return cls(doc["accepted"], Counter({(s, c): n for s, c, n in doc["codes"]}),
                   Counter({int(k): v for k, v in doc["refused_by_relay"].items()}),
                   doc["bad"], math.inf if doc["first"] is None else doc["first"],
                   doc["last"], doc["latencies"])


async def flood_load(
    targets: Sequence[Target], t0: float, windows: Sequence[tuple[float, float]],
    rate: float | None,
) -> FloodTally:
    """The flood, in each window (seconds from ``t0``): one keep-alive connection per
    target, either paced at ``rate``/s together (open loop; a request still unsent when
    its window ends is dropped, so that the flood stays in its windows) or, with ``rate``
    None, each posting the next draft as soon as the last is answered (closed loop: as
    fast as the relays answer)."""
    conns = [await KeepAlive.open(t.url, t.token) for t in targets]
    return await _flood(conns, targets, t0, windows, rate)


async def _flood(
    conns: Sequence[KeepAlive], targets: Sequence[Target], t0: float,
    windows: Sequence[tuple[float, float]], rate: float | None,
) -> FloodTally:
    tally = FloodTally()

    async def one(p: int) -> None:
        began = time.perf_counter()
        tally.first = min(tally.first, began)
        reply = await conns[p].post("/v1/interrupts", draft(targets[p], "flood"))
        tally.last = time.perf_counter()
        tally.latencies.append(tally.last - began)
        tally.record(p, targets[p], reply)

    async def producer(p: int) -> None:
        for start, end in windows:
            if rate is None:
                await _at(t0 + start)
                while time.perf_counter() < t0 + end:
                    await one(p)
                continue
            for i in range(p, int(rate * (end - start)), len(conns)):
                await _at(t0 + start + i / rate)
                if time.perf_counter() >= t0 + end:
                    break  # behind schedule: what is left of this window is dropped
                await one(p)

    try:
        await asyncio.gather(*(producer(p) for p in range(len(conns))))
    finally:
        for conn in conns:
            await conn.close()
    return tally


class FloodProcess:
    """``flood_load`` in a process of its own at the lowest CPU priority (nice 19): on a
    machine that runs the relays too, the flood's own client work would otherwise take
    the CPU that a real flood, from other machines, does not. ``start`` returns once its
    connections are open; ``run(t0, windows)`` floods and returns the tally."""

    def __init__(self, targets: Sequence[Target], rate: float | None) -> None:
        self.args = {"targets": [asdict(t) for t in targets], "rate": rate}
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        here = Path(__file__).resolve().parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(here.parent), str(here), os.environ.get("PYTHONPATH", "")])}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadgen_support", env=env, cwd=here.parent,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 26)  # the tally is one (long) line of JSON
        assert self.process.stdin is not None and self.process.stdout is not None
        # On stdin, not in argv: the tokens are not for every local user's ``ps``.
        self.process.stdin.write(json.dumps(self.args).encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"flood process did not start: {line!r}")

    async def run(self, t0: float, windows: Sequence[tuple[float, float]]) -> FloodTally:
        assert self.process is not None and self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps({"t0": t0, "windows": windows}).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        code = await self.process.wait()
        if not line:
            raise RuntimeError(f"flood process exited {code} without its tally")
        return FloodTally.from_doc(json.loads(line))

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def _flood_main() -> None:
    os.nice(19)
    args = json.loads(await asyncio.to_thread(sys.stdin.readline))
    targets = [Target(**t) for t in args["targets"]]
    conns = [await KeepAlive.open(t.url, t.token) for t in targets]
    gc.freeze()  # what start-up made is never walked again: no long pause mid-flood
    print("ready", flush=True)
    plan = json.loads(await asyncio.to_thread(sys.stdin.readline))
    tally = await _flood(conns, targets, plan["t0"], [tuple(w) for w in plan["windows"]],
                         args["rate"])
    print(json.dumps(tally.to_doc()), flush=True)


if __name__ == "__main__":
    asyncio.run(_flood_main())
