"""The relay's HTTP surface (an ASGI app; uvicorn serves it, WebSockets via the
websockets library). Every refusal is ``{"error": code, "message": text}`` with the
status the error class carries; nothing is stored unless every check passed.

    POST   /v1/interrupts                      store an interrupt (signed, or a draft + token)
    POST   /v1/interrupts/batch                up to BATCH_MAX_ITEMS of them, a result each
    POST   /v1/send/{id}                       plain text + query/headers (relay.plaintext)
    POST   /v1/enroll                          spend an enrollment token on an identity
    GET    /v1/identities/{id}                 public keys (self-certifying)
    PUT    /v1/identities/{id}/grants/{signer} recipient grants a producer key (signed request)
    DELETE /v1/identities/{id}/grants/{signer} ... and revokes it
    GET    /healthz  /readyz
    GET    /metrics  /v1/openapi.json          Prometheus text (relay.metrics); OpenAPI (relay.openapi)
    WS     /v1/connect                         the edge link (subprotocol mailslot.v1)
    POST   /v1/hooks/{hook_id}, /v1/admin/hooks…  webhook ingress (relay.hooks.routes)

Every outside input ends in a refusal with a status below 500 or in a stored interrupt:
bodies must say ``Content-Type: application/json`` (else 415) and are parsed by
``shared.limits.loads`` — the same table of limits the edge applies on receipt, so
nothing is answered 2xx that the edge would refuse. Every response carries an
``X-Request-Id``; an unexpected exception is logged once with it and answered 500
``{"error": "internal", "message", "request_id"}`` on a connection that stays usable
(Starlette's own last-resort handler re-raises, and uvicorn then drops the connection).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from relay.admin import admin_routes
from relay.admission import HandshakeGate
from relay.connections import LinkQuotas
from relay.drain import LinkHub
from relay.errors import (
    ByteQuotaExceeded,
    RelayError,
    RelayFull,
    Unauthorized,
    answer_headers,
)
from relay.hooks.routes import hook_routes
from relay.ingest import BatchResult, Ingest, Stored
from relay.metrics import MetricsEndpoint, ObserveMiddleware, metrics_of, route_template
from relay.openapi import OpenApiEndpoint
from relay.plaintext import check_json_media as check_json_type
from relay.plaintext import check_text_media, decode_text, options, send_draft
from relay.ratelimit import AddressLimiter
from relay.readiness import ReadyCheck
from relay.registry import ProducerToken, Registry
from relay.session import LinkSession
from relay.signedrequest import check_signed_request
from relay.store import Store
from shared.auth import check_b64_signature, enroll_message
from shared.encoding import b64e
from shared.errors import MalformedInput, RemoteProtocolError, TooLarge
from shared.frames import SUBPROTOCOL
from shared.identity import Identity, PublicIdentity
from shared.limits import BATCH_BODY_MAX_BYTES, BATCH_MAX_ITEMS, MAX_DEPTH, loads
from shared.tokens import check_identity

log = logging.getLogger("mailslot.relay.http")

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Services:
    """Everything a request handler needs; built once by ``relay.server``."""

    store: Store
    registry: Registry
    relay: Identity
    ingest: Ingest
    max_body_bytes: int
    #: The process's links: one subscription for their notifications and takeovers,
    #: the JetStream API throttle (``relay.drain``).
    hub: LinkHub
    auth_timeout: float = 10.0
    #: False once the relay cannot recover by itself (its embedded nats-server is gone
    #: for good): ``/healthz`` then fails so that a supervisor restarts the process.
    healthy: Callable[[], bool] = lambda: True
    #: Requests per client address to the unauthenticated endpoints (enroll, the link's
    #: handshake): ``await gate.check(scope)`` first thing in such a handler. None: no limit.
    gate: AddressLimiter | None = None
    #: Links this process holds at most (``--max-links``); past it a handshake is refused
    #: with ``503 relay_full`` and a jittered ``Retry-After``. None: no cap.
    max_links: int | None = None
    #: Handshakes worked on at once; past it ``503 relay_full`` at once (``relay.admission``).
    handshakes: HandshakeGate = field(default_factory=HandshakeGate)


REQUEST_ID_HEADER = "x-request-id"
#: The ``Retry-After`` of a ``relay_full`` handshake: seconds, drawn uniformly, so that a
#: storm of refused edges comes back spread out (edges add their own jittered backoff).
FULL_RETRY_SECONDS = (5, 30)
#: A request id a client (or a load balancer in front) may choose; anything else is
#: replaced by a fresh one, so that no outside text reaches a log line unchecked.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ErrorResponse(JSONResponse):
    """An ``{"error", "message"}`` body, rendered as ASCII: a message quoting outside
    text can never fail to encode (a lone surrogate would, as UTF-8) and turn a refusal
    into a crash."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def error_response(exc: RemoteProtocolError | RelayError) -> JSONResponse:
    return ErrorResponse(exc.to_dict(), status_code=exc.status, headers=answer_headers(exc))


def new_request_id() -> str:
    return b64e(os.urandom(9))


def request_id(scope: Scope) -> str:
    """The id ``RequestIdMiddleware`` gave this request (made here if it did not run)."""
    state = scope.setdefault("state", {})
    if "request_id" not in state:
        state["request_id"] = new_request_id()
    return str(state["request_id"])


class RequestIdMiddleware:
    """Give every HTTP request an id (the client's ``X-Request-Id`` if it is a plain
    token, else a fresh one), send it back as ``X-Request-Id`` on every response, and
    keep it in ``scope["state"]`` for the log line of an unexpected error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = dict(scope.get("headers", ())).get(REQUEST_ID_HEADER.encode(), b"")
        text = offered.decode("latin-1")
        if _REQUEST_ID_RE.fullmatch(text):
            scope.setdefault("state", {})["request_id"] = text
        rid = request_id(scope).encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER.encode(), rid))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def internal_error(request: Request, exc: BaseException) -> Response:
    """The one log line of an unexpected exception, and the 500 that says which."""
    rid = request_id(request.scope)
    log.error("request %s: %s %s failed", rid, request.method, route_template(dict(request.scope)),
              exc_info=exc)
    return ErrorResponse(
        {"error": "internal", "message": "the relay failed to handle this request; "
         "it has been logged", "request_id": rid},
        status_code=500,
    )


def check_json_media(request: Request) -> None:
    """Refuse a body that does not say it is JSON (415; ``relay.plaintext``)."""
    check_json_type(request.headers.get("content-type"))


def guarded(handler: Handler) -> Handler:
    """Every handler's failure path: a typed error is its documented refusal; anything
    else is a bug, answered 500 with a body and logged once (see ``internal_error``)."""

    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except (RemoteProtocolError, RelayError) as exc:
            if exc.status >= 500 and not isinstance(exc, ByteQuotaExceeded):  # a tenant's cap
                log.warning("request %s: %s %s: %s", request_id(request.scope),
                            request.method, route_template(dict(request.scope)), exc.message)
            return error_response(exc)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        except Exception as exc:
            return internal_error(request, exc)

    return wrapper


def build_app(services: Services) -> Starlette:
    quota = services.ingest.quota  # the plans' caps of links (relay.connections)
    link_quotas = LinkQuotas(services.store, services.registry,
                             quota.ledger if quota is not None else None)
    ready_check = ReadyCheck(services.store)

    async def read_body(request: Request, limit: int | None = None) -> bytes:
        """The whole body, size-capped. Read before any other check refuses the request,
        so that a refusal leaves the keep-alive connection usable (a partly read request
        body would make uvicorn close it)."""
        cap = services.max_body_bytes if limit is None else limit
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                raise TooLarge(f"body is larger than {cap} bytes", code="body_too_large")
        return bytes(body)

    async def read_json(request: Request) -> tuple[bytes, Any]:
        """The body, labelled JSON and JSON within ``shared.limits`` (else a refusal)."""
        body = await read_body(request)
        check_json_media(request)
        return body, loads(body)

    def bearer(request: Request) -> str | None:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <token>'", code="invalid_token")
        return token.strip()

    async def producer_of(request: Request) -> ProducerToken | None:
        token = bearer(request)
        return None if token is None else await services.registry.producer(token)

    def stored_response(stored: Stored) -> Response:
        status = 200 if stored.duplicate else 202
        return JSONResponse({"id": stored.id, "duplicate": stored.duplicate}, status_code=status)

    async def post_interrupt(request: Request) -> Response:
        """A producer over its limits is refused from the request's head
        (``Ingest.refuse_early``) before its body is parsed; any other refusal comes in
        the usual order (the body's before the token's)."""
        body = await read_body(request)
        check_json_media(request)
        token_refused: RemoteProtocolError | RelayError | None = None
        try:
            producer = await producer_of(request)
        except (RemoteProtocolError, RelayError) as exc:
            producer, token_refused = None, exc
        else:
            if producer is not None:
                await services.ingest.refuse_early(producer)
        doc = loads(body)
        if token_refused is not None:
            raise token_refused  # its refusal, now the body's is known
        return stored_response(await services.ingest.submit_doc(doc, producer))

    def batch_item(result: BatchResult) -> dict[str, Any]:
        if isinstance(result, Stored):
            return {"status": 200 if result.duplicate else 202, "id": result.id,
                    "duplicate": result.duplicate}
        return {"status": result.status, **result.to_dict()}

    async def post_batch(request: Request) -> Response:
        """``{"items": [draft or signed document, ...]}`` → ``{"results": [...]}``, one
        per item in order; 200 whenever the batch itself was well-formed."""
        body = await read_body(request, BATCH_BODY_MAX_BYTES)
        check_json_media(request)
        doc = loads(body, max_depth=MAX_DEPTH + 3)  # {"items": [item{payload}]}
        if not isinstance(doc, dict) or set(doc) != {"items"} or not isinstance(
            doc["items"], list
        ):
            raise MalformedInput('expected {"items": [...]}', code="malformed_batch")
        items = doc["items"]
        if not items:
            raise MalformedInput("items is empty", code="empty_batch")
        if len(items) > BATCH_MAX_ITEMS:
            raise TooLarge(f"at most {BATCH_MAX_ITEMS} items per batch (got {len(items)})",
                           code="too_many_items")
        results = await services.ingest.submit_batch(items, await producer_of(request))
        return JSONResponse({"results": [batch_item(r) for r in results]})

    async def send_text(request: Request) -> Response:
        """Plain text to one identity (``relay.plaintext``); answered like a draft."""
        body = await read_body(request)
        to = check_identity(request.path_params["id"])
        check_text_media(request.headers.get("content-type"))
        producer = await producer_of(request)
        if producer is not None:  # over its limits: refused before the text is read
            await services.ingest.refuse_early(producer)
        opts = options(request.query_params.multi_items(), request.headers)
        if producer is None:
            raise Unauthorized(
                "send needs 'Authorization: Bearer <producer token>'", code="missing_token"
            )
        doc = send_draft(to, decode_text(body), opts)
        return stored_response(
            await services.ingest.submit_draft(services.ingest.parse_draft(doc), producer)
        )

    async def enroll(request: Request) -> Response:
        body = await read_body(request)
        if services.gate is not None:  # per client address, before any other check
            await services.gate.check(request.scope)
        check_json_media(request)
        doc = loads(body)
        if not isinstance(doc, dict) or set(doc) != {"token", "identity", "proof"}:
            raise MalformedInput("expected {token, identity, proof}")
        token, proof = doc["token"], doc["proof"]
        if not isinstance(token, str) or not isinstance(proof, str):
            raise MalformedInput("token and proof must be strings")
        public = PublicIdentity.from_doc(doc["identity"])
        check_b64_signature(public.verifier(), proof, enroll_message(token, public.id))
        account = await services.registry.enroll(token, public)
        return JSONResponse(
            {"identity": public.id, "account": account, "relay": services.relay.public.to_doc()},
            status_code=201,
        )

    async def get_identity(request: Request) -> Response:
        identity = check_identity(request.path_params["id"])
        public, _ = await services.registry.require_identity(identity)
        return JSONResponse(public.to_doc())

    async def put_grant(request: Request) -> Response:
        recipient, signer = await signed_by_owner(request)
        await services.registry.grant(recipient, signer)
        return JSONResponse({"recipient": recipient, "signer": signer, "granted": True})

    async def delete_grant(request: Request) -> Response:
        recipient, signer = await signed_by_owner(request)
        await services.registry.revoke(recipient, signer)
        return JSONResponse({"recipient": recipient, "signer": signer, "granted": False})

    async def signed_by_owner(request: Request) -> tuple[str, str]:
        """A grant change signed by the identity in the path (``relay.signedrequest``)."""
        body = await read_body(request)
        recipient = check_identity(request.path_params["id"])
        signer = check_identity(request.path_params["signer"])
        await check_signed_request(
            services.registry, recipient, request.method, request.url.path,
            request.headers.get("authorization"), body, "change its grants")
        return recipient, signer

    async def healthz(_request: Request) -> Response:
        ok = services.healthy()
        # The relay's clock, for `mailslot doctor`'s skew check (signatures allow 300 s).
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        return JSONResponse({"ok": ok, "time": now}, status_code=200 if ok else 503)

    async def readyz(_request: Request) -> Response:
        state = await ready_check.check()  # cached ~1 s (relay.readiness)
        return JSONResponse(state.to_dict(), status_code=200 if state.ready else 503)

    links = [0]  # open in this process (handshakes counted from their first byte)

    async def connect(ws: WebSocket) -> None:
        if services.max_links is not None and links[0] >= services.max_links:
            await ws.send_denial_response(error_response(RelayFull(
                f"this relay holds its {services.max_links} links; retry later",
                retry_after=random.randint(*FULL_RETRY_SECONDS))))
            return
        started = services.handshakes.enter()
        if started is None:  # busy: answered at once, before any crypto
            await ws.send_denial_response(error_response(RelayFull(
                "this relay is busy with other edges' handshakes; retry later",
                retry_after=services.handshakes.retry_after())))
            return
        links[0] += 1
        welcomed = [False]

        def on_welcome() -> None:
            welcomed[0] = True
            services.handshakes.leave(started, welcomed=True)

        try:
            await serve_link(ws, on_welcome)
        finally:
            if not welcomed[0]:
                services.handshakes.leave(started, welcomed=False)
            links[0] -= 1

    async def serve_link(ws: WebSocket, on_welcome: Callable[[], None]) -> None:
        if services.gate is not None:
            try:  # per client address: an HTTP 429 (Retry-After) instead of the upgrade
                await services.gate.check(ws.scope)
            except RelayError as exc:
                await ws.send_denial_response(error_response(exc))
                return
        if SUBPROTOCOL not in ws.scope.get("subprotocols", []):
            await ws.close(code=4400, reason="subprotocol mailslot.v1 required")
            return
        await ws.accept(subprotocol=SUBPROTOCOL)
        session = LinkSession(ws, services.hub, services.registry, services.relay,
                              services.auth_timeout, quotas=link_quotas,
                              welcomed=on_welcome)
        try:
            await session.run()
        finally:
            await link_quotas.leave(session.session_id)

    routes = [
        Route("/v1/interrupts", guarded(post_interrupt), methods=["POST"]),
        Route("/v1/interrupts/batch", guarded(post_batch), methods=["POST"]),
        # Early in the list: a route is found by trying each in turn, and providers post
        # webhooks at the rate producers post interrupts.
        *hook_routes(services.store, services.registry, services.ingest, services.gate,
                     guarded, read_body, read_json),
        Route("/v1/send/{id}", guarded(send_text), methods=["POST"]),
        Route("/v1/enroll", guarded(enroll), methods=["POST"]),
        Route("/v1/identities/{id}", guarded(get_identity), methods=["GET"]),
        Route("/v1/identities/{id}/grants/{signer}", guarded(put_grant), methods=["PUT"]),
        Route("/v1/identities/{id}/grants/{signer}", guarded(delete_grant), methods=["DELETE"]),
        Route("/healthz", guarded(healthz), methods=["GET"]),
        Route("/readyz", guarded(readyz), methods=["GET"]),
        *admin_routes(services.store, services.registry, guarded, read_body, read_json),
        WebSocketRoute("/v1/connect", connect),
        Route("/metrics", MetricsEndpoint(metrics_of(services.store)), methods=["GET"]),
        Route("/v1/openapi.json", OpenApiEndpoint(), methods=["GET"]),
    ]

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return ErrorResponse({"error": "not_found", "message": "no such endpoint"}, 404)

    async def method_not_allowed(_request: Request, _exc: Exception) -> Response:
        return ErrorResponse({"error": "method_not_allowed", "message": "method not allowed"},
                             405)

    async def refused(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RemoteProtocolError | RelayError)
        return error_response(exc)

    async def last_resort(request: Request, exc: Exception) -> Response:
        return internal_error(request, exc)

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(ObserveMiddleware, metrics=metrics_of(services.store)),
        ],
        exception_handlers={
            404: not_found,
            405: method_not_allowed,
            RemoteProtocolError: refused,
            RelayError: refused,
            Exception: last_resort,
        },
    )
    app.state.connect = connect  # for ``LinksFirst``
    app.state.handshakes = services.handshakes  # for tests and benchmarks
    app.state.ready_check = ready_check
    return app


class LinksFirst:
    """What uvicorn serves: ``WS /v1/connect`` straight to the link's handler, past
    Starlette's middleware and router. They do nothing for a WebSocket, but each layer is
    a coroutine frame kept for as long as the link lives, about 5 KiB per connected edge.
    Everything else goes to the Starlette app of ``build_app``."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.connect: Callable[[WebSocket], Awaitable[None]] = app.state.connect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope.get("path") == "/v1/connect":
            await self.connect(WebSocket(scope, receive, send))
            return
        await self.app(scope, receive, send)
