"""What the relay counts, served as Prometheus text at ``GET /metrics`` (or on a separate
``--metrics-listen`` address), and the request context of its log lines. The one module in
``relay/`` that imports ``prometheus_client``.

Each relay has its own ``CollectorRegistry`` (never the library's global one), so that
several relays in one process — tests, ``mailslot up`` — count apart. It reaches the
parts that count through the store: ``MeteredStore`` is the ``Store`` the server builds,
and it carries the relay's ``RelayMetrics``:

* HTTP: ``ObserveMiddleware`` counts every request by route *template* (never the raw
  path: no label per identity), method, status and refusal code (the ``error`` of the
  JSON body), and times it;
* publish: ``MeteredStore.publish`` times every JetStream write and counts what was
  accepted per account (the recipient's account, looked up once per identity);
* the link: ``relay.session`` reports connects, deliveries, redeliveries, acks, naks and
  rejects through ``metrics_of(store)``;
* NATS reconnects (a store listener) and JetStream consumers (read at scrape time).

Nothing here imports starlette: the middleware and the endpoints are plain ASGI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from relay.registry import Registry
from relay.store import STREAM, Store
from shared.envelope import Priority
from shared.host.logs import REQUEST_ID

log = logging.getLogger("mailslot.relay.metrics")
access = logging.getLogger("mailslot.relay.access")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Request latency buckets (seconds): the relay answers in milliseconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Refusal codes are ours (``[a-z_]+``); anything else in a body is counted as ``other``.
_CODE_RE = re.compile(r"[a-z][a-z0-9_]{0,47}")
#: Most accounts labelled by name; past it (a runaway), ``other``.
MAX_ACCOUNT_LABELS = 10_000
_ERROR_BODY_MAX = 4096


class RelayMetrics:
    """The relay's metrics, in a registry of their own. ``render`` gives the Prometheus
    text; ``refresh`` (awaited before each scrape) reads the gauges that come from
    JetStream."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mailslot_relay_http_requests", "HTTP requests answered, by route template, "
            "method, status and refusal code", ["route", "method", "status", "code"], registry=r)
        self.request_seconds = Histogram(
            "mailslot_relay_http_request_seconds", "HTTP request latency by route template",
            ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.accepted = Counter(
            "mailslot_relay_interrupts_accepted", "Interrupts stored (JetStream acknowledged, "
            "not a duplicate), by the recipient's account", ["account"], registry=r)
        self.duplicates = Counter(
            "mailslot_relay_interrupts_duplicate", "Interrupts answered as duplicates", registry=r)
        self.publish_seconds = Histogram(
            "mailslot_relay_publish_seconds", "JetStream publish latency (until acknowledged)",
            buckets=LATENCY_BUCKETS, registry=r)
        self.deliveries = Counter(
            "mailslot_relay_deliveries", "Interrupts sent to edges, by priority", ["priority"],
            registry=r)
        self.redeliveries = Counter(
            "mailslot_relay_redeliveries", "Deliveries of an interrupt sent before", registry=r)
        self.acks = Counter("mailslot_relay_acks", "Deliveries acked by edges", registry=r)
        self.naks = Counter("mailslot_relay_naks", "Deliveries nak'ed by edges", registry=r)
        self.rejects = Counter("mailslot_relay_rejects", "Deliveries rejected by edges", registry=r)
        self.edges = Gauge("mailslot_relay_connected_edges", "Edges with an authenticated link",
                           registry=r)
        self.consumers = Gauge(
            "mailslot_relay_jetstream_consumers", "Consumers on the interrupt stream (all relay "
            "processes: three per identity being drained, none for an idle link)", registry=r)
        self.reconnects = Counter("mailslot_relay_nats_reconnects", "Reconnections to NATS",
                                  registry=r)
        self.webhooks = Counter(
            "mailslot_relay_webhook_deliveries", "Deliveries to a hook (relay.hooks), by its "
            "account and name (never its id: the URL's secret part) and outcome: accepted, "
            "duplicate, filtered, handshake or the refusal code", ["account", "hook", "outcome"],
            registry=r)
        #: False when ``--metrics-listen`` moved /metrics off the main port.
        self.on_main_port = True
        self._refreshers: list[Callable[[], Awaitable[None]]] = []

    def add_refresher(self, refresh: Callable[[], Awaitable[None]]) -> None:
        self._refreshers.append(refresh)

    async def refresh(self) -> None:
        for refresh in self._refreshers:
            await refresh()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- the link's hooks (relay.session) -------------------------------------------------

    def edge_connected(self) -> None:
        self.edges.inc()

    def edge_disconnected(self) -> None:
        self.edges.dec()

    def delivered(self, priority: Priority, redelivery: bool) -> None:
        self.deliveries.labels(priority.value).inc()
        if redelivery:
            self.redeliveries.inc()


class MeteredStore(Store):
    """The relay's ``Store``, timing and counting what it publishes and carrying the
    relay's ``RelayMetrics`` (``metrics_of``). Build it with ``MeteredStore.connect``."""

    metrics: RelayMetrics

    def attach(self, metrics: RelayMetrics) -> None:
        """Count into ``metrics`` from now on; call once, right after ``connect``."""
        self.metrics = metrics
        self._accounts: dict[str, str] = {}
        self.on_reconnect(metrics.reconnects.inc)
        metrics.add_refresher(self._count_consumers)

    async def publish(
        self, identity: str, priority: Priority, msg_id: str, data: bytes, ttl: float | None,
        notify: bool = True,
    ) -> bool:
        start = time.perf_counter()
        duplicate = await super().publish(identity, priority, msg_id, data, ttl, notify)
        self.metrics.publish_seconds.observe(time.perf_counter() - start)
        if duplicate:
            self.metrics.duplicates.inc()
        else:
            self.metrics.accepted.labels(await self._account_of(identity)).inc()
        return duplicate

    async def _account_of(self, identity: str) -> str:
        account = self._accounts.get(identity)
        if account is None:
            found = None
            with contextlib.suppress(Exception):  # a metric label is never worth a refusal
                found = await Registry(self).identity(identity)
            account = found[1] if found is not None else "unknown"
            if len(self._accounts) >= MAX_ACCOUNT_LABELS:
                return "other"
            self._accounts[identity] = account
        return account

    async def _count_consumers(self) -> None:
        try:
            info = await self.js.stream_info(STREAM)
        except Exception as exc:  # NATS down: the gauge keeps its last value
            log.debug("cannot read the stream's consumers: %s", exc)
            return
        self.metrics.consumers.set(info.state.consumer_count or 0)


def metrics_of(store: Store) -> RelayMetrics | None:
    """The metrics ``store`` counts into (None for a plain ``Store``: nothing counted)."""
    return store.metrics if isinstance(store, MeteredStore) else None


def route_template(scope: Scope) -> str:
    """The route a request matched, as its template (``/v1/identities/{id}``), or
    ``unmatched``: a label per raw path would be a label per identity (or per probe)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class ObserveMiddleware:
    """Count and time every HTTP request into ``metrics`` (if any), and keep the request
    id in ``shared.host.logs.REQUEST_ID`` while it is handled, so that every log line
    written meanwhile carries it. Goes inside ``RequestIdMiddleware`` (which makes the id)."""

    def __init__(self, app: ASGIApp, metrics: RelayMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = REQUEST_ID.set(str(scope.get("state", {}).get("request_id") or "") or None)
        start = time.perf_counter()
        status = [500]
        body = bytearray()

        async def observed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            elif (message["type"] == "http.response.body" and status[0] >= 400
                  and len(body) < _ERROR_BODY_MAX):
                body.extend(message.get("body", b"")[:_ERROR_BODY_MAX])
            await send(message)

        failed = True
        try:
            await self.app(scope, receive, observed)
            failed = False
        finally:
            route = route_template(scope)
            code = "internal" if failed else (
                _error_code(bytes(body)) if status[0] >= 400 else "")
            elapsed = time.perf_counter() - start
            # The access line (at DEBUG: MAILSLOT_LOG=DEBUG), written inside the request
            # so that it carries the request id; the route template, never the raw path.
            access.debug("%s %s %s %s %.1f ms", scope.get("method", ""), route, status[0],
                         code or "-", elapsed * 1000)
            REQUEST_ID.reset(token)
            if self.metrics is not None:
                self.metrics.requests.labels(
                    route, scope.get("method", ""), str(status[0]), code).inc()
                self.metrics.request_seconds.labels(route).observe(elapsed)


def _error_code(body: bytes) -> str:
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return "other"
    return code if isinstance(code, str) and _CODE_RE.fullmatch(code) else "other"


class MetricsEndpoint:
    """``GET /metrics``: the Prometheus text of ``metrics``. On the main port it answers
    404 ``not_found`` when there are no metrics or ``--metrics-listen`` moved them
    (``main_port``); on the metrics address it always answers."""

    def __init__(self, metrics: RelayMetrics | None, main_port: bool = True) -> None:
        self.metrics = metrics
        self.main_port = main_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.metrics
        if metrics is None or (self.main_port and not metrics.on_main_port):
            await _send(send, 404, b'{"error":"not_found","message":"no such endpoint"}',
                        b"application/json")
            return
        if scope.get("method") not in ("GET", "HEAD"):
            await _send(send, 405, b'{"error":"method_not_allowed","message":"method not '
                        b'allowed"}', b"application/json")
            return
        await metrics.refresh()
        await _send(send, 200, metrics.render(), CONTENT_TYPE_LATEST.encode())


def metrics_app(metrics: RelayMetrics) -> ASGIApp:
    """The whole app of the ``--metrics-listen`` address: ``/metrics``, else 404."""
    endpoint = MetricsEndpoint(metrics, main_port=False)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope.get("path") == "/metrics":
            await endpoint(scope, receive, send)
        else:
            await _send(send, 404, b'{"error":"not_found","message":"no such endpoint"}',
                        b"application/json")

    return app


async def _send(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
