"""The relay's lifecycle: ``start`` (embedded nats-server if no --nats, JetStream set-up,
relay key, HTTP server) → serve → ``stop`` (close links, drain NATS, stop nats-server).

``RelayServer`` never installs signal handlers itself, so that ``mailslot up`` can run a
relay and an edge in one process under one handler (``relay.signals``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn

from relay.app import Services, build_app
from relay.config import RelayConfig
from relay.errors import StoreUnavailable
from relay.ingest import Ingest
from relay.natsserver import EmbeddedNats
from relay.registry import Registry
from relay.store import Store
from shared.frames import EDGE_FRAME_MAX_BYTES
from shared.identity import Identity

log = logging.getLogger("mailslot.relay")

RUNTIME_FILE = "relay.json"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: our caller owns signals."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


class RelayServer:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.embedded: EmbeddedNats | None = None
        self.store: Store | None = None
        self.identity: Identity | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""
        self.nats_url = ""

    async def start(self) -> None:
        """Start everything; return once the HTTP port is listening. On failure, stop
        what was started and raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        servers = list(config.nats)
        if not servers:
            self.embedded = EmbeddedNats(config.data_dir / "jetstream", sync=config.embedded_sync)
            servers = [await self.embedded.start()]
        self.nats_url = servers[0]
        self.store = await Store.connect(servers, config.stream)
        await self.store.ensure()
        registry = Registry(self.store)
        self.identity = await registry.relay_identity()
        services = Services(
            store=self.store,
            registry=registry,
            relay=self.identity,
            ingest=Ingest(self.store, registry, self.identity),
            max_body_bytes=config.max_body_bytes,
            auth_timeout=config.auth_timeout,
        )
        uv_config = uvicorn.Config(
            build_app(services),
            host=config.host,
            port=config.port,
            ws="websockets-sansio",
            ws_max_size=EDGE_FRAME_MAX_BYTES,
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            ws_per_message_deflate=False,
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=5,
        )
        self._server = _Server(uv_config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise StoreUnavailable(f"relay could not listen on {config.listen}")
            await asyncio.sleep(0.01)  # start-up only: uvicorn exposes no started event
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{_url_host(config.host)}:{port}"
        self._write_runtime_file()
        log.info("relay %s listening on %s", self.identity.id, self.url)

    async def wait(self) -> None:
        """Return when the HTTP server stops by itself (it normally does not)."""
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 15)
        if self.store is not None:
            await self.store.close()
        if self.embedded is not None:
            await self.embedded.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.config.data_dir / RUNTIME_FILE).unlink()

    def _write_runtime_file(self) -> None:
        """Where the running relay's NATS is, for admin commands (``relay account`` …).
        Holds the embedded server's token, hence 0600."""
        path = self.config.data_dir / RUNTIME_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "url": self.url, "nats": self.nats_url}, fh)
        os.replace(tmp, path)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@contextlib.asynccontextmanager
async def admin_store(config: RelayConfig) -> AsyncIterator[Store]:
    """A store for admin commands: the configured NATS, else the running relay's embedded
    server, else the embedded store started just for this command."""
    embedded: EmbeddedNats | None = None
    servers = list(config.nats)
    if not servers:
        runtime = _running_relay(config.data_dir)
        if runtime is not None:
            servers = [runtime["nats"]]
        else:
            embedded = EmbeddedNats(config.data_dir / "jetstream", sync=config.embedded_sync)
            servers = [await embedded.start()]
    try:
        store = await Store.connect(servers, config.stream)
        try:
            await store.ensure()
            yield store
        finally:
            await store.close()
    finally:
        if embedded is not None:
            await embedded.stop()


def _running_relay(data_dir: Path) -> dict[str, str] | None:
    try:
        runtime = json.loads((data_dir / RUNTIME_FILE).read_text())
        os.kill(int(runtime["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, ProcessLookupError, PermissionError):
        return None
    return dict(runtime)
