"""Chaos on a real 3-node JetStream cluster (run with ``scripts/chaos``; not in the suite).

The set-up of ``tests/system/test_cluster.py``, for longer: three nats-server nodes on
loopback, two relay processes (``relay serve --nats URL1,URL2,URL3 --replicas 3``), real
edge daemons behind failover balancers (half prefer relay A, half relay B) and producers
posting to both relays without pause (a failed publish is retried with the same id on
the other relay). Each round injects one fault in the middle of publishing and
draining, chosen at random:

* ``leader``: kill -9 of the node leading the interrupt stream, restarted after;
* ``node``: kill -9 of a random node, restarted after;
* ``stepdown``: ``$JS.API.STREAM.LEADER.STEPDOWN`` of the interrupt stream;
* ``relay``: kill -9 of one relay process (its edges go to the other), restarted after;
* ``edge``: kill -9 of one edge daemon, restarted after.

After each round it waits until every interrupt answered 2xx is in its edge's inbox and
JetStream holds none, and counts: every 2xx exactly once, nothing that was never sent.
A round that loses or duplicates anything, or does not recover within ``--recover``
seconds, stops the run with exit 1 (the work folder is kept for its logs).

    scripts/chaos [--rounds 20] [--minutes M] [--edges 4] [--backlog 300] [--seed S]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from cluster_support import (  # noqa: E402
    Balancer,
    ClusterRelay,
    Edge,
    NatsCluster,
    Producers,
    connect,
    step_down,
    stream_leader,
)
from tests_support import EdgeProcess, enroll, wait_until  # noqa: E402

FAULTS = ("leader", "node", "stepdown", "relay", "edge")


async def drained(relay: ClusterRelay, edge: Edge) -> bool:
    assert relay.store is not None
    try:
        return sum((await relay.store.pending(edge.member.id)).values()) == 0
    except Exception:  # the script's own connection is failing over too
        return False


async def verify(relays: list[ClusterRelay], producers: Producers, edges: list[Edge],
                 timeout: float) -> None:
    """Every 2xx in its inbox, once; nothing that was not attempted; JetStream empty."""
    for edge in edges:
        wanted = producers.acknowledged.get(edge.member.id, set())
        await wait_until(lambda e=edge, w=wanted: set(e.ids()) >= w, timeout,
                         f"every 2xx in the inbox of {edge.member.id}")
        await wait_until(lambda e=edge: drained(relays[0], e), timeout, "JetStream empty")
        ids = edge.ids()
        if len(ids) != len(set(ids)):
            raise AssertionError(f"{edge.member.id}: an interrupt twice in the inbox")
        if not set(ids) <= producers.attempted.get(edge.member.id, set()):
            raise AssertionError(f"{edge.member.id}: an interrupt that was never sent")


async def run(args: argparse.Namespace, work: Path) -> int:
    rng = random.Random(args.seed)
    cluster = NatsCluster(work / "nats")
    cluster.start()
    relays = [ClusterRelay(cluster, work / name) for name in ("relay_a", "relay_b")]
    balancers = [Balancer([relays[0].port, relays[1].port]),
                 Balancer([relays[1].port, relays[0].port])]
    edges: list[Edge] = []
    producers: Producers | None = None
    nc = None
    try:
        await cluster.wait_healthy()
        for relay in relays:
            await relay.start()
        for balancer in balancers:
            await balancer.start()
        nc = await connect(cluster)
        for i in range(args.edges):
            balancer = balancers[i % 2]
            via = SimpleNamespace(url=balancer.url, store=relays[0].store,
                                  identity=relays[0].identity)
            member = await enroll(via, "chaos", work / f"edge{i}")
            edges.append(Edge(member, EdgeProcess(member.home)))
        producers = Producers(relays)
        members = [edge.member for edge in edges]
        for edge in edges:
            edge.process.start()
        producers.trickle(members)
        deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
        round_no = 0
        while round_no < args.rounds and (deadline is None or time.monotonic() < deadline):
            round_no += 1
            fault = rng.choice(args.faults)
            started = time.monotonic()
            before = producers.acked()
            inboxes = sum(edge.total() for edge in edges)
            await producers.backlog(members, args.backlog)
            # somewhere in the middle of the drain
            part = int(rng.uniform(0.1, 0.6) * args.backlog * len(edges))
            await wait_until(lambda n=inboxes + part: sum(e.total() for e in edges) >= n,
                             args.recover, "the round's drain under way")
            detail = await inject(fault, rng, cluster, relays, edges, nc)
            faulted = producers.acked()
            await wait_until(lambda n=faulted + 20: producers.acked() >= n,
                             args.recover, "2xx again after the fault")
            await undo(fault, detail, cluster, relays, edges)
            await verify(relays, producers, edges, args.recover)
            print(f"round {round_no}: {fault:<8} {detail:<14} "
                  f"{producers.acked() - before:>6} acknowledged, "
                  f"{producers.failures:>5} retries so far, "
                  f"{time.monotonic() - started:5.1f}s", flush=True)
        await producers.stop()
        await verify(relays, producers, edges, args.recover)
        total = sum(len(edge.ids()) for edge in edges)
        print(f"{round_no} rounds: {producers.acked()} interrupts answered 2xx, {total} in "
              f"the inboxes, each exactly once; {producers.failures} publishes retried")
        return 0
    except AssertionError as exc:
        print(f"FAILED: {exc} (logs in {work})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if producers is not None:
            await producers.close()
        for edge in edges:
            edge.process.kill9()
        for balancer in balancers:
            await balancer.stop()
        for relay in relays:
            await relay.close()
        if nc is not None:
            await nc.close()
        cluster.stop()


async def inject(fault: str, rng: random.Random, cluster: NatsCluster,
                 relays: list[ClusterRelay], edges: list[Edge], nc: object) -> str:
    if fault == "leader":
        node = cluster.node(await stream_leader(nc))
        node.kill()
        return node.name
    if fault == "node":
        node = rng.choice(cluster.nodes)
        node.kill()
        return node.name
    if fault == "stepdown":
        return "-> " + await step_down(nc)
    if fault == "relay":
        relay = rng.choice(relays)
        relay.kill9()
        return f"relay :{relay.port}"
    edge = rng.choice(edges)
    edge.process.kill9()
    return f"edge {edges.index(edge)}"


async def undo(fault: str, detail: str, cluster: NatsCluster, relays: list[ClusterRelay],
               edges: list[Edge]) -> None:
    if fault in ("leader", "node"):
        await cluster.restart(cluster.node(detail))
    elif fault == "relay":
        relay = next(r for r in relays if detail.endswith(f":{r.port}"))
        await relay.start()  # a new process; our store connection to it stays open
    elif fault == "edge":
        edges[int(detail.split()[1])].process.start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=0,
                        help="stop after this long instead (0: only --rounds)")
    parser.add_argument("--edges", type=int, default=4)
    parser.add_argument("--backlog", type=int, default=300,
                        help="interrupts posted per edge at the start of each round")
    parser.add_argument("--recover", type=float, default=90,
                        help="seconds a round may take to recover")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    print(f"seed {args.seed}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="mailslot-chaos-"))
    try:
        return asyncio.run(run(args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
