"""The relay's lifecycle: ``start`` (the data folder's lock, the HTTP socket, embedded
nats-server if no --nats, JetStream set-up, relay key, HTTP server) → serve → ``stop``
(close links, drain NATS, stop nats-server, give the lock back).

The order of ``start`` is chosen so that a refusal changes nothing: the lock first (a
second relay on the folder fails with ``already_running`` before it touches the store),
then the listening socket (a port in use fails with ``port_in_use`` before any
nats-server exists). Any later failure stops what was started. While it runs, the
embedded server is supervised: restarted if it exits (``/readyz`` is 503 meanwhile), and
if it cannot come back ``wait`` raises ``StoreLost`` (``/healthz`` is 503 by then).

With ``--metrics-listen`` a second, tiny HTTP server serves ``GET /metrics`` on that
address (bound right after the main socket, stopped first); the relay's metrics live in
``self.metrics``, a registry of its own (``relay.metrics``).

``RelayServer`` never installs signal handlers itself, so that ``mailslot up`` can run a
relay and an edge in one process under one handler (``shared.host.signals``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import resource
import socket
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from relay.app import REQUEST_ID_HEADER, LinksFirst, Services, build_app, new_request_id
from relay.clientaddr import Networks
from relay.config import RUNTIME_FILE, RelayConfig
from relay.drain import LinkHub
from relay.errors import StartupFailed, StoreUnavailable
from relay.ingest import Ingest
from relay.metrics import MeteredStore, RelayMetrics, metrics_app
from relay.natsserver import EmbeddedNats
from relay.quota import PendingQuota
from relay.ratelimit import AddressLimiter, RateLimiter
from relay.registry import Registry
from relay.store import Store
from shared.frames import EDGE_FRAME_MAX_BYTES
from shared.host.lockfile import FolderLock, relay_lock
from shared.identity import Identity

log = logging.getLogger("mailslot.relay")
T = TypeVar("T")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: our caller owns signals."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


class _HttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 on httptools (its C parser: about a fifth less relay CPU per
    request than h11, see the ingest bench), answering a request it cannot parse (a
    control byte in a header, a broken request line) like every other refusal: JSON with
    a machine-readable code and a request id, where uvicorn's own answer is plain text."""

    def send_400_response(self, msg: str) -> None:
        rid = new_request_id()
        body = json.dumps({"error": "malformed_http", "message": msg,
                           "request_id": rid}).encode()
        self.transport.write(b"".join((
            STATUS_LINE[400],
            b"content-type: application/json\r\n",
            REQUEST_ID_HEADER.encode(), b": ", rid.encode(), b"\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\n",
            b"connection: close\r\n\r\n", body,
        )))
        self.transport.close()


class _LinkProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol (no read or write buffers of its own beyond
    the socket's; ``ws_max_size`` caps one frame), keeping less per idle connection: the
    parsed upgrade request and the handshake response (about 3 KiB of header objects)
    are dropped once the handshake is done; uvicorn never reads them again.

    The relay's keepalive is an idle timeout: it pings a link only once it has heard
    nothing from it (no frame at all, the edge's pings included) for ``ws_ping_interval``,
    and closes it if that ping gets no pong within ``ws_ping_timeout``. An edge pings
    every 15 s itself, so the relay never pings a live one (uvicorn's own keepalive
    pings every link on a fixed period, and each ping and its pong cost CPU per link),
    and a link whose edge vanished without a close is still closed within
    ``ws_ping_interval + ws_ping_timeout`` of its last frame."""

    #: When (the loop's clock) the last bytes of the link arrived.
    heard = 0.0

    def data_received(self, data: bytes) -> None:
        self.heard = self.loop.time()
        super().data_received(data)

    def send_keepalive_ping(self) -> None:
        assert self.ping_interval is not None
        silent = self.loop.time() - self.heard
        if silent < self.ping_interval:  # heard from lately: look again when it is due
            self.ping_timer = self.loop.call_later(self.ping_interval - silent,
                                                   self.send_keepalive_ping)
            return
        super().send_keepalive_ping()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        self.__dict__.pop("request", None)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete:
            self.__dict__.pop("response", None)
        elif message["type"] == "websocket.http.response.body" and not message.get(
                "more_body"):
            # A refused handshake (429, 503 relay_full) is complete too: without this
            # uvicorn logs an error for each one, thousands in a reconnect storm.
            self.handshake_complete = True


#: File descriptors kept for everything but links: HTTP requests, NATS, logs, files.
_RESERVED_FDS = 1024
#: Seconds a link may send nothing before the relay pings it (``_LinkProtocol``), and
#: for its pong; then it is closed.
LINK_IDLE_PING, LINK_PONG_TIMEOUT = 120.0, 20.0


def default_max_links() -> int:
    """Links one process can hold without running out of file descriptors: its open-file
    limit, raised first from the soft to the hard limit (the soft default, often 1,024,
    is meant for programs that do not hold thousands of sockets), less what the rest of
    the relay needs; at least 64. Past it a handshake is refused with ``relay_full``,
    where accept() failing with EMFILE would refuse every HTTP request too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(64, soft - _RESERVED_FDS)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run the relay's top coroutine on uvloop (libuv's event loop: less CPU per
    request and per socket than asyncio's own, the loop uvicorn itself prefers)."""
    return uvloop.run(main)


class RelayServer:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.embedded: EmbeddedNats | None = None
        self.store: Store | None = None
        self.hub: LinkHub | None = None
        self.identity: Identity | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._lock: FolderLock | None = None
        self._wrote_runtime = False
        self.url = ""
        self.nats_url = ""
        #: This relay's metrics (its own registry): ``GET /metrics``.
        self.metrics = RelayMetrics()
        self._metrics_server: _Server | None = None
        #: The ASGI app serving the main port (for ``relay.openapi`` and its tests).
        self.app: Any = None
        self._metrics_task: asyncio.Task[None] | None = None
        #: ``http://HOST:PORT`` of ``--metrics-listen`` once started, else "".
        self.metrics_url = ""

    @property
    def healthy(self) -> bool:
        """False once the embedded nats-server could not be brought back (``/healthz``)."""
        return self.embedded is None or not self.embedded.failed

    async def start(self) -> None:
        """Start everything; return once the HTTP port is listening. On failure, stop
        what was started and raise (``AlreadyRunning``, ``StartupFailed``)."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        config = self.config
        self._lock = relay_lock(config.data_dir).acquire()
        sock = _bind(config.host, config.port)
        metrics_sock: socket.socket | None = None
        try:
            if config.metrics_listen is not None:
                host, _, port = config.metrics_listen.rpartition(":")
                metrics_sock = _bind(host.strip("[]"), int(port))
            servers = list(config.nats)
            if not servers:
                self.embedded = EmbeddedNats(
                    config.data_dir / "jetstream",
                    sync=config.embedded_sync,
                    restart_timeout=config.embedded_restart_timeout,
                )
                try:
                    servers = [await self.embedded.start()]
                except StoreUnavailable as exc:
                    raise StartupFailed(exc.message, code="store_unavailable") from exc
            self.nats_url = servers[0]
            try:
                store = await MeteredStore.connect(servers, config.stream)
                assert isinstance(store, MeteredStore)
                store.attach(self.metrics)
                self.metrics.on_main_port = config.metrics_listen is None
                self.store = store
                await self.store.ensure()
                await self.store.watch_registry()  # registry reads from memory (regcache)
            except StoreUnavailable as exc:
                raise StartupFailed(exc.message, code="store_unavailable") from exc
            self.hub = LinkHub(self.store)  # the links' subscriptions, one each
            await self.hub.start()
            registry = Registry(self.store, config)
            self.identity = await registry.relay_identity()
            limiter = RateLimiter(self.store)  # every bucket: plans', addresses'
            services = Services(
                store=self.store,
                registry=registry,
                relay=self.identity,
                ingest=Ingest(self.store, registry, self.identity,
                              limiter=limiter, quota=PendingQuota(self.store)),
                max_body_bytes=config.max_body_bytes,
                hub=self.hub,
                auth_timeout=config.auth_timeout,
                healthy=lambda: self.healthy,
                gate=AddressLimiter(limiter, config.unauthenticated,
                                    Networks.parse(config.trusted_proxies)),
                max_links=config.max_links or default_max_links(),
            )
            self.app = build_app(services)
            uv_config = uvicorn.Config(
                LinksFirst(self.app),
                host=config.host,
                port=config.port,
                http=_HttpProtocol,
                ws=_LinkProtocol,
                ws_max_size=EDGE_FRAME_MAX_BYTES,
                # An idle timeout (``_LinkProtocol``): a ping only after two minutes in
                # which the link sent nothing; each edge pings every 15 s itself.
                ws_ping_interval=LINK_IDLE_PING,
                ws_ping_timeout=LINK_PONG_TIMEOUT,
                ws_per_message_deflate=False,
                lifespan="off",
                access_log=False,
                log_config=None,
                timeout_graceful_shutdown=5,
                # X-Forwarded-For is read by relay.clientaddr alone, and only from the
                # configured trusted proxies (uvicorn's own default trusts 127.0.0.1).
                proxy_headers=False,
            )
            self._server = _Server(uv_config)
            self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
            if metrics_sock is not None:
                self._metrics_server = _Server(uvicorn.Config(
                    metrics_app(self.metrics), http=_HttpProtocol, lifespan="off",
                    access_log=False,
                    log_config=None, timeout_graceful_shutdown=1,
                ))
                self._metrics_task = asyncio.create_task(
                    self._metrics_server.serve(sockets=[metrics_sock]))
        except BaseException:
            sock.close()
            if metrics_sock is not None:
                metrics_sock.close()
            raise
        await _started(self._server, self._task, config.listen)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{_url_host(config.host)}:{port}"
        if self._metrics_server is not None and self._metrics_task is not None:
            await _started(self._metrics_server, self._metrics_task, str(config.metrics_listen))
            host = str(config.metrics_listen).rpartition(":")[0].strip("[]")
            port = self._metrics_server.servers[0].sockets[0].getsockname()[1]
            self.metrics_url = f"http://{_url_host(host)}:{port}"
        if self.embedded is not None:
            self._supervisor = asyncio.create_task(self._supervise(), name="nats-supervisor")
        self._write_runtime_file()
        # What start-up made (modules, pydantic schemas, the registry's cache) lives as
        # long as the process: collected once now and frozen, the cyclic collector never
        # walks it again (a full collection of it stalled every request for 60-200 ms
        # at a moment of its choosing, on this machine); new objects are collected as before.
        gc.collect()
        gc.freeze()
        log.info("relay %s listening on %s", self.identity.id, self.url)

    async def _supervise(self) -> None:
        assert self.embedded is not None
        await self.embedded.supervise(on_restarted=self._write_runtime_file)

    async def wait(self) -> None:
        """Return when the HTTP server stops by itself (it normally does not); raise
        ``StoreLost`` if the embedded nats-server died for good."""
        waiting: list[asyncio.Task[None]] = [
            t for t in (self._task, self._supervisor) if t is not None
        ]
        if not waiting:
            return
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if self._task is not None and not self._task.done():
            await self._task

    async def stop(self) -> None:
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        if self._metrics_server is not None and self._metrics_task is not None:
            self._metrics_server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._metrics_task, 5)
            self._metrics_server = self._metrics_task = None
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 15)
        if self.hub is not None:
            await self.hub.stop()
            self.hub = None
        if self.store is not None:
            await self.store.close()
        if self.embedded is not None:
            await self.embedded.stop()
        if self._wrote_runtime:
            with contextlib.suppress(FileNotFoundError):
                (self.config.data_dir / RUNTIME_FILE).unlink()
            self._wrote_runtime = False
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _write_runtime_file(self) -> None:
        """Where the running relay's NATS is, for admin commands (``relay account`` …).
        Holds the embedded server's token, hence 0600."""
        path = self.config.data_dir / RUNTIME_FILE
        tmp = path.with_suffix(".tmp")
        doc = {"pid": os.getpid(), "url": self.url, "nats": self.nats_url}
        if self.embedded is not None and self.embedded.server_pid is not None:
            doc["nats_pid"] = self.embedded.server_pid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)
        self._wrote_runtime = True


async def _started(server: _Server, task: asyncio.Task[None], listen: str) -> None:
    while not server.started:
        if task.done():
            task.result()
            raise StartupFailed(f"relay could not listen on {listen}")
        await asyncio.sleep(0.01)  # start-up only: uvicorn exposes no started event


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts, so that a port in use
    is refused with ``port_in_use`` while nothing is running yet."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupFailed(f"cannot listen on {host}:{port}: {exc}", code="bad_listen") from exc
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48):  # EADDRINUSE on Linux, macOS
            raise StartupFailed(
                f"{host}:{port} is already in use (another relay? choose --listen)",
                code="port_in_use",
            ) from exc
        raise StartupFailed(f"cannot listen on {host}:{port}: {exc.strerror}",
                            code="bad_listen") from exc
    sock.set_inheritable(False)
    return sock


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
