"""Real parts and helpers shared by test modules (not fixtures: those are in conftest.py,
which imports from here; tests import these by name, never from conftest).

Real parts: a real nats-server (JetStream, temp store, free port), a real relay on a real
socket, real edges with real SQLite inboxes. No mocks of any of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edge.config import EdgeConfig, EdgePaths, save_config
from edge.daemon import EdgeDaemon
from edge.link.keystore import save_identity
from edge.store.inbox import Inbox
from relay.config import StreamSettings
from relay.natsserver import nats_server_binary
from relay.natswatch import die_with_parent
from relay.registry import Registry
from shared.auth import enroll_message, sign_b64
from shared.identity import Identity

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy (tests only: for state in
    another process or a database, where there is no event to await)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


@dataclass
class NatsServer:
    """A real nats-server child process with JetStream in a temp folder."""

    store_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [nats_server_binary(), "-js", "-sd", str(self.store_dir), "-a", "127.0.0.1",
             "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.02)
        raise RuntimeError("nats-server did not start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.kill(signal.SIGTERM)
        self.start()


@dataclass
class Member:
    """An enrolled identity with its producer token and (once made) an edge home."""

    identity: Identity
    token: str
    account: str
    home: Path | None = None

    @property
    def id(self) -> str:
        return self.identity.id

    def paths(self) -> EdgePaths:
        assert self.home is not None
        return EdgePaths(self.home / "config", self.home / "data")

    def inbox(self) -> Inbox:
        return Inbox.open(self.paths().inbox_file)


async def enroll(relay: Any, account: str, home: Path | None = None) -> Member:
    """Create ``account`` (if new), enroll a fresh identity over HTTP, make its producer
    token, and (with ``home``) write an edge home for it as ``mailslot edge init`` would.
    ``relay`` is a ``RelayServer`` or a ``RelayProcess`` (anything with url, store,
    identity)."""
    assert relay.store is not None and relay.identity is not None
    registry = Registry(relay.store)
    if account in await registry.accounts():
        enrollment = await registry.enrollment_token(account)
    else:
        enrollment = await registry.create_account(account)
    identity = Identity.generate()
    async with httpx.AsyncClient(base_url=relay.url) as client:
        response = await client.post("/v1/enroll", json={
            "token": enrollment,
            "identity": identity.public.to_doc(),
            "proof": sign_b64(identity, enroll_message(enrollment, identity.id)),
        })
        assert response.status_code == 201, response.text
    token = await registry.create_producer_token(account, identity.id)
    member = Member(identity, token, account, home)
    if home is not None:
        paths = member.paths()
        paths.ensure()
        save_identity(paths.key_file, identity)
        save_config(paths, EdgeConfig(
            relay_url=relay.url, identity=identity.id,
            relay_identity=relay.identity.public.to_doc(),
            reconnect_base=0.05, reconnect_cap=0.5,
        ))
        Inbox.open(paths.inbox_file).close()
    return member


@contextlib.asynccontextmanager
async def running_edge(member: Member) -> AsyncIterator[EdgeDaemon]:
    """An in-process edge daemon for ``member`` until the block ends."""
    daemon = EdgeDaemon(member.paths())
    daemon.start()
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def post_drafts(
    relay_url: str, token: str, drafts: list[dict[str, Any]], concurrency: int = 16
) -> list[httpx.Response]:
    """POST drafts with bounded concurrency; responses in the drafts' order."""
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=relay_url, timeout=30) as client:

        async def one(draft: dict[str, Any]) -> httpx.Response:
            async with sem:
                return await client.post(
                    "/v1/interrupts", json=draft, headers={"Authorization": f"Bearer {token}"}
                )

        return list(await asyncio.gather(*(one(d) for d in drafts)))


def mailslot(home: Path, *args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the real ``mailslot`` CLI with ``MAILSLOT_HOME=home``."""
    env = {**os.environ, "MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "edge", *args], env=env, capture_output=True, text=True,
        timeout=timeout, **kwargs,
    )


def json_out(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class RelayProcess:
    """A real relay in its own process (``mailslot relay serve --nats URL``), so that
    tests can kill -9 it; it dies with the test process (``PR_SET_PDEATHSIG``).
    ``store``/``identity`` come from the test's own NATS connection, for enrollment.
    ``nats_url`` may list several servers (``URL1,URL2``), as ``--nats`` takes them.

    Subclasses set ``log`` (a file that gets the child's stderr, and its stdout too
    with ``log_stdout``; without one both are dropped), ``log_level`` (its
    ``MAILSLOT_LOG``) and ``stream`` (the settings the test's connection uses)."""

    log_level = "WARNING"
    log_stdout = False

    def __init__(self, nats_url: str, data_dir: Path, *args: str) -> None:
        self.nats_url = nats_url
        self.data_dir = data_dir
        #: More ``relay serve`` arguments (e.g. ``--config FILE``).
        self.args = args
        self.stream = StreamSettings()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[str] | None = None
        self.store: Any = None
        self.identity: Identity | None = None

    @property
    def log(self) -> Path | None:
        return None

    def spawn(self) -> None:
        """Start the child; ``start`` also waits until it is ready."""
        env = {**os.environ, "MAILSLOT_LOG": self.log_level}
        with contextlib.ExitStack() as stack:
            log: Any = subprocess.DEVNULL
            if self.log is not None:
                self.log.parent.mkdir(parents=True, exist_ok=True)
                log = stack.enter_context(self.log.open("a"))
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge", "relay", "serve",
                 "--listen", f"127.0.0.1:{self.port}", "--nats", self.nats_url,
                 "--data-dir", str(self.data_dir), *self.args],
                env=env, stdin=subprocess.DEVNULL,
                stdout=log if self.log_stdout else subprocess.DEVNULL, stderr=log, text=True,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )

    async def ready(self) -> bool:
        async with httpx.AsyncClient(timeout=2) as client:
            try:
                return (await client.get(self.url + "/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

    async def start(self) -> None:
        self.spawn()
        try:
            await wait_until(self.ready, 30, f"relay on port {self.port} ready")
        except AssertionError as exc:  # say what the relay said, if it logs anywhere
            tail = self.log.read_text()[-2000:] if self.log is not None and self.log.exists() else ""
            raise AssertionError(f"{exc}; its log ends: {tail}") from None
        await self.connect_store()

    async def connect_store(self) -> None:
        if self.store is None:
            from relay.store import Store

            self.store = await Store.connect(self.nats_url.split(","), self.stream)
            await self.store.open_existing()  # the relay set it up: change nothing
            self.identity = await Registry(self.store).relay_identity()

    def kill9(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    async def close(self) -> None:
        self.kill9()
        if self.store is not None:
            await self.store.close()
            self.store = None


@contextlib.asynccontextmanager
async def relay_processes(
    nats_url: str, tmp_path: Path, *args: str, count: int = 2
) -> AsyncIterator[list[RelayProcess]]:
    """``count`` relay processes on one nats-server (data in ``tmp_path/relay<i>``), each
    started with ``args``; all closed when the block ends."""
    started = [RelayProcess(nats_url, tmp_path / f"relay{i}", *args) for i in range(count)]
    try:
        for relay in started:
            await relay.start()
        yield started
    finally:
        for relay in started:
            await relay.close()


class EdgeProcess:
    """A real edge daemon in its own process (``mailslot edge run``)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = {**os.environ, "MAILSLOT_HOME": str(self.home), "MAILSLOT_LOG": "WARNING"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge", "edge", "run"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )

    def kill9(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(20)
        self.process = None
        return code


def ids_in_arrival_order(rows: list[Any]) -> list[str]:
    """Inbox rows sorted by arrival (``seq``), as ids."""
    return [row.id for row in sorted(rows, key=lambda r: r.seq)]
