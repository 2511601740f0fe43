"""The webhook part of ``scripts/bench`` (``--only hooks``): signed GitHub-style
deliveries accepted per second by ``POST /v1/hooks/{hook_id}`` from 20 concurrent
senders (one keep-alive connection each, a fresh ``X-GitHub-Delivery`` and
``X-Hub-Signature-256`` per delivery, a pull-request body of about 1 KiB projected to
the default kept fields), next to the plain interrupt ingest rate (``POST
/v1/interrupts``, 20 producers) of the same relay in the same run, the two alternating
three times, each first in turn (a busy moment of the machine hits both alike). Target
>= 0.8x.

Like with like: the same relay, client, connection count and closed loop; both bodies
are small (the delivery ~1.1 KiB, a real pull-request event is 10-30 KiB; the draft
~0.3 KiB with a 200-byte payload); each stored interrupt is ~0.6-0.7 KiB. What the hook
path does beyond a draft's is its own work (the signature over the body, parsing and
projecting it, the per-address gate of unauthenticated endpoints, the delivery id's
claim in ``mailslot_hooks``), not the bench's.

Reuses ``bench_ingest``'s relay (``relay serve``, embedded nats-server, fsync always)
and its hand-written HTTP/1.1 client.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import statistics
from pathlib import Path
from typing import Any, cast

import httpx
from bench_ingest import (
    PRODUCERS,
    Figures,
    Http,
    Relay,
    _closed_loop,
    _cpu_seconds,
    _line,
    relay_single,
)

SECRET = "bench-hook-secret-0123456789"
PR = {"action": "opened", "number": 7,
      "pull_request": {"number": 7, "title": "Fix the door", "html_url": "https://gh/pr/7",
                       "body": "x" * 600, "user": {"login": "octo"}},
      "repository": {"full_name": "acme/door", "private": False},
      "sender": {"login": "octo", "id": 1}}


#: Delivery ids, unique within the process (every delivery is a new one).
_DELIVERIES = itertools.count()


class HookHttp(Http):
    """``Http`` whose posts carry a GitHub delivery's headers."""

    async def deliver(self, path: str, body: bytes, delivery: str) -> tuple[int, bytes]:
        sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        extra = (f"X-Hub-Signature-256: sha256={sig}\r\nX-GitHub-Event: pull_request\r\n"
                 f"X-GitHub-Delivery: {delivery}\r\n").encode()
        self.writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\n" + self.head + extra
                          + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return int(head[9:12]), await self.reader.readexactly(length)


async def make_hook(relay: Relay) -> str:
    key = (relay.home / "relay" / "admin.key").read_text().strip()
    async with httpx.AsyncClient(base_url=f"http://{relay.host}:{relay.port}") as client:
        made = await client.post("/v1/admin/hooks", headers={"Authorization": f"Bearer {key}"},
                                 json={"name": "bench", "to": relay.to, "secret": SECRET,
                                       "source": {"kind": "github"}})
    if made.status_code != 201:
        raise AssertionError(f"hook create answered {made.status_code}: {made.text}")
    return str(made.json()["path"])


async def hook_rate(relay: Relay, path: str, n: int, senders: int) -> tuple[Figures, float]:
    """(figures, relay CPU µs per accepted delivery)."""
    conns = [cast(HookHttp, await HookHttp.open(relay.host, relay.port, "none"))
             for _ in range(senders)]
    body = json.dumps(PR).encode()

    async def one(w: int) -> None:
        status, answer = await conns[w].deliver(path, body, f"d-{next(_DELIVERIES)}")
        if status != 202:
            raise AssertionError(f"delivery answered {status}: {answer[:200]!r}")

    try:
        await _closed_loop(min(n, 200), senders, one)  # warm up
        assert relay.process is not None
        cpu = _cpu_seconds(relay.process.pid)
        figures = await _closed_loop(n, senders, one)
        return figures, (_cpu_seconds(relay.process.pid) - cpu) / n * 1e6
    finally:
        for conn in conns:
            conn.close()


#: Plain and webhook measurements alternate this many times within a run.
ROUNDS = 3


def _merged(parts: list[Figures]) -> Figures:
    """One figure for equal-sized parts: the rate over their total time, median latencies."""
    return Figures(len(parts) / sum(1 / f.rate for f in parts),
                   statistics.median(f.p50 for f in parts),
                   statistics.median(f.p99 for f in parts))


async def hooks_run(workdir: Path, port: int, n: int) -> dict[str, Any]:
    relay = Relay(workdir / "relay-home")
    await relay.start(port)
    try:
        path = await make_hook(relay)
        plain: list[tuple[Figures, float]] = []
        hooks: list[tuple[Figures, float]] = []
        for round_ in range(ROUNDS):  # interleaved, so that a busy moment hits both alike,
            # first one then the other first (a machine growing busier or quieter over
            # the run favours neither)
            if round_ % 2:
                hooks.append(await hook_rate(relay, path, n // ROUNDS, PRODUCERS))
            plain.append(await relay_single(relay, n // ROUNDS, PRODUCERS))
            if not round_ % 2:
                hooks.append(await hook_rate(relay, path, n // ROUNDS, PRODUCERS))
        return {"plain": _merged([f for f, _ in plain]), "hooks": _merged([f for f, _ in hooks]),
                "plain_cpu": statistics.median(c for _, c in plain),
                "hooks_cpu": statistics.median(c for _, c in hooks)}
    finally:
        relay.stop()


async def hooks_part(root: Path, runs: int, n: int, free_port: Any) -> None:
    results = []
    for run in range(runs):
        r = await hooks_run(root / f"hooks{run}", free_port(), n)
        results.append(r)
        print(f"run {run + 1}: {_line('signed GitHub deliveries, 20 senders', r['hooks'])} vs "
              f"{_line('plain ingest, 20 producers', r['plain'])}; ratio "
              f"{r['hooks'].rate / r['plain'].rate:.2f}x; relay CPU {r['hooks_cpu']:.0f} µs per "
              f"delivery, {r['plain_cpu']:.0f} µs per plain interrupt", flush=True)
    ratio = statistics.median(r["hooks"].rate / r["plain"].rate for r in results)
    print(f"\nwebhooks, fsync always, median of {runs}: "
          f"{statistics.median(r['hooks'].rate for r in results):,.0f} deliveries/s vs "
          f"{statistics.median(r['plain'].rate for r in results):,.0f} interrupts/s plain; "
          f"ratio {ratio:.2f}x (target >= 0.80x); relay CPU "
          f"{statistics.median(r['hooks_cpu'] for r in results):.0f} µs per delivery, "
          f"{statistics.median(r['plain_cpu'] for r in results):.0f} µs per plain interrupt",
          flush=True)
