"""A real relay process to fuzz, and what every answer of it must satisfy.

The fuzz tests are synchronous (hypothesis drives plain functions): they talk to the
relay with a sync ``httpx.Client`` (one keep-alive connection, so a handler that drops it
is caught) and sync WebSockets, while the few asynchronous parts (NATS counts,
enrollment) run on an event loop of their own in a thread (``Background``).

The relay runs as ``mailslot relay serve --nats URL`` against a real nats-server, its
log in a file that the harness reads at the end: an unexpected exception is logged
there once, so an empty error log is part of "never a 5xx".
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from tests_support import EdgeProcess, Member, NatsServer, enroll, free_port

from relay.config import StreamSettings
from relay.registry import Registry
from relay.store import STREAM, Store
from shared.auth import request_header
from shared.identity import Identity

T = TypeVar("T")

CODE_RE = re.compile(r"[a-z][a-z0-9_]*[a-z0-9]")
#: What a prompt answer from the relay takes, at most.
SOON = 10.0


class Background:
    """An event loop in a thread, for the asynchronous parts of a synchronous test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class FuzzRelay:
    """``mailslot relay serve`` in its own process, logging to ``log_file``."""

    nats_url: str
    data_dir: Path
    log_file: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    store: Store | None = None
    identity: Identity | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/connect"

    def start(self, bg: Background) -> None:
        env = {**os.environ, "MAILSLOT_LOG": "WARNING"}
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge", "relay", "serve", "--listen",
                 f"127.0.0.1:{self.port}", "--nats", self.nats_url,
                 "--data-dir", str(self.data_dir)],
                env=env, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"relay did not start:\n{self.log_file.read_text()}")
                time.sleep(0.05)  # polling another process's readiness: no event to await

        async def connect() -> tuple[Store, Identity]:
            store = await Store.connect([self.nats_url], StreamSettings())
            await store.open_existing()
            return store, await Registry(store).relay_identity()

        self.store, self.identity = bg.run(connect())

    def stop(self, bg: Background) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None
        if self.store is not None:
            bg.run(self.store.close())
            self.store = None

    def errors_logged(self) -> list[str]:
        """Lines of the relay's log that tell of an unexpected failure."""
        text = self.log_file.read_text(errors="replace")
        return [line for line in text.splitlines()
                if "Traceback" in line or " failed" in line or "Exception in ASGI" in line]


class Harness:
    """One relay, its NATS, and the members the fuzz tests use:

    - ``alice``: a recipient with a producer token and an edge home (for the inbox check);
    - ``producer``: an enrolled key ``alice`` granted (for signed envelopes);
    - ``carol``: a recipient whose link the WebSocket tests open again and again.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bg = Background()
        self.nats = NatsServer(root / "jetstream")
        self.relay = FuzzRelay("", root / "relay", root / "relay.log")
        self.alice: Member
        self.carol: Member
        self.producer: Member
        #: Ids the relay answered 202 for, addressed to alice: all must reach her inbox.
        self.accepted: set[str] = set()
        #: Accepted with a ``sealed`` the fuzzer made up: the relay cannot read it, so the
        #: edge may refuse it, but only as ``seal_error``.
        self.sealed_junk: set[str] = set()

    def start(self) -> None:
        self.nats.start()
        self.relay.nats_url = self.nats.url
        self.relay.start(self.bg)
        self.alice = self.bg.run(enroll(self.relay, "acme", self.root / "alice"))
        self.carol = self.bg.run(enroll(self.relay, "acme"))
        self.producer = self.bg.run(enroll(self.relay, "producers"))
        path = f"/v1/identities/{self.alice.id}/grants/{self.producer.id}"
        header = request_header(self.alice.identity, "PUT", path, int(time.time()), b"")
        with httpx.Client(base_url=self.relay.url, timeout=SOON) as client:
            response = client.put(path, headers={"Authorization": header})
            assert response.status_code == 200, response.text
        inbox = self.alice.inbox()
        try:
            inbox.add_trusted(self.producer.identity.public)  # as `mailslot grant add` does
        finally:
            inbox.close()

    def close(self) -> None:
        try:
            self.relay.stop(self.bg)
        finally:
            self.nats.kill()
            self.bg.close()

    # -- what JetStream holds ------------------------------------------------------------

    def stored(self) -> int:
        """Messages in the interrupt stream, every recipient together."""

        async def count() -> int:
            assert self.relay.store is not None
            info = await self.relay.store.js.stream_info(STREAM)
            return int(info.state.messages)

        return self.bg.run(count())

    # -- the inbox check -------------------------------------------------------------------

    def assert_accepted_reach_the_inbox(self, timeout: float = 60.0) -> None:
        """Run alice's real edge daemon until every interrupt the relay accepted for her
        is in her inbox, and check that it refused none of them (but made-up ciphertext,
        as ``seal_error``)."""
        if not self.accepted and not self.sealed_junk:
            return
        edge = EdgeProcess(self.root / "alice")
        edge.start()
        try:
            deadline = time.monotonic() + timeout
            while True:
                inbox = self.alice.inbox()
                try:
                    missing = {i for i in self.accepted if inbox.get(i) is None}
                    rejected = inbox.rejections(10_000)
                    opened = {i for i in self.sealed_junk if inbox.get(i) is not None}
                finally:
                    inbox.close()
                wrong = [r for r in rejected
                         if r.code != "seal_error" or r.envelope_id not in self.sealed_junk]
                assert not wrong, f"the edge refused what the relay accepted: {wrong}"
                assert not opened, f"made-up ciphertext opened: {opened}"
                unsettled = self.sealed_junk - {r.envelope_id for r in rejected}
                if not missing and not unsettled:
                    break
                assert time.monotonic() < deadline, (
                    f"{len(missing)} accepted never arrived, {len(unsettled)} never settled"
                )
                time.sleep(0.1)  # polling another process's SQLite: no event to await
        finally:
            edge.stop()


def assert_answer(response: httpx.Response) -> None:
    """Never a 5xx, always a request id, and a refusal is the documented JSON body."""
    assert response.status_code < 500, response.text
    assert response.headers.get("x-request-id"), response.headers
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.text
        body = response.json()
        assert set(body) == {"error", "message"}, body
        assert isinstance(body["error"], str) and CODE_RE.fullmatch(body["error"]), body
        assert isinstance(body["message"], str) and body["message"], body


def client_address(response: httpx.Response) -> Any:
    """The local address of the connection that carried ``response``: the same address
    from one request to the next means the relay kept the keep-alive connection."""
    stream = response.extensions.get("network_stream")
    return stream.get_extra_info("client_addr") if stream is not None else None


class KeepAlive:
    """A sync client whose connection must survive every answer but the few after
    which HTTP itself requires a close (a body cut short at the size cap). After each
    request a ``GET /healthz`` on the same connection proves the relay kept it and still
    serves, so that a failure is blamed on the example that caused it."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=SOON)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, url, **kwargs)
        response.read()
        address = client_address(response)
        if response.headers.get("connection", "").lower() == "close":
            assert response.status_code == 413, response.text
            return response
        health = self.client.get("/healthz")
        assert health.status_code == 200, health.text
        assert client_address(health) == address, (
            f"the relay dropped the connection after {response.status_code} {response.text}"
        )
        return response

    def close(self) -> None:
        self.client.close()
