"""The relay's HTTP surface (an ASGI app; uvicorn serves it, WebSockets via the
websockets library). Every refusal is ``{"error": code, "message": text}`` with the
status the error class carries; nothing is stored unless every check passed.

    POST   /v1/interrupts                      store an interrupt (signed, or a draft + token)
    POST   /v1/enroll                          spend an enrollment token on an identity
    GET    /v1/identities/{id}                 public keys (self-certifying)
    PUT    /v1/identities/{id}/grants/{signer} recipient grants a producer key (signed request)
    DELETE /v1/identities/{id}/grants/{signer} ... and revokes it
    GET    /healthz  /readyz
    WS     /v1/connect                         the edge link (subprotocol mailslot.v1)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from relay.errors import RelayError, Unauthorized
from relay.ingest import Ingest
from relay.registry import ProducerToken, Registry
from relay.session import LinkSession
from relay.store import Store
from shared.auth import (
    REQUEST_SKEW_SECONDS,
    check_b64_signature,
    enroll_message,
    parse_request_header,
    request_message,
)
from shared.errors import MalformedInput, RemoteProtocolError, TooLarge
from shared.frames import SUBPROTOCOL
from shared.identity import Identity, PublicIdentity
from shared.signing import signed_from_doc
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
    auth_timeout: float = 10.0


def error_response(exc: RemoteProtocolError | RelayError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status)


def build_app(services: Services) -> Starlette:
    def guarded(handler: Handler) -> Handler:
        async def wrapper(request: Request) -> Response:
            try:
                return await handler(request)
            except (RemoteProtocolError, RelayError) as exc:
                if exc.status >= 500:
                    log.warning("%s %s: %s", request.method, request.url.path, exc.message)
                return error_response(exc)

        return wrapper

    async def read_json(request: Request) -> tuple[bytes, Any]:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > services.max_body_bytes:
                raise TooLarge(
                    f"body is larger than {services.max_body_bytes} bytes", code="body_too_large"
                )
        try:
            return bytes(body), json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise MalformedInput(f"body is not valid JSON: {exc}", code="malformed_json") from exc

    def bearer(request: Request) -> str | None:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <token>'", code="invalid_token")
        return token.strip()

    async def post_interrupt(request: Request) -> Response:
        _, doc = await read_json(request)
        token = bearer(request)
        producer: ProducerToken | None = None
        if token is not None:
            producer = await services.registry.producer(token)
        if isinstance(doc, dict) and "envelope" in doc:
            stored = await services.ingest.submit_signed(signed_from_doc(doc), producer)
        else:
            if producer is None:
                raise Unauthorized(
                    "a draft needs 'Authorization: Bearer <producer token>'", code="missing_token"
                )
            stored = await services.ingest.submit_draft(services.ingest.parse_draft(doc), producer)
        status = 200 if stored.duplicate else 202
        return JSONResponse({"id": stored.id, "duplicate": stored.duplicate}, status_code=status)

    async def enroll(request: Request) -> Response:
        _, doc = await read_json(request)
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
        """Check a Mailslot-Signature request made by the identity in the path."""
        recipient = check_identity(request.path_params["id"])
        signer = check_identity(request.path_params["signer"])
        body = await request.body()
        header = request.headers.get("authorization")
        if header is None:
            raise Unauthorized("signed request required", code="missing_auth")
        claimed, ts, sig = parse_request_header(header)
        if claimed != recipient:
            raise Unauthorized("only the identity itself may change its grants", code="bad_auth")
        if abs(time.time() - ts) > REQUEST_SKEW_SECONDS:
            raise Unauthorized("request timestamp too far from now", code="stale_request")
        public, _ = await services.registry.require_identity(recipient)
        message = request_message(request.method, request.url.path, ts, body)
        check_b64_signature(public.verifier(), sig, message)
        return recipient, signer

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(_request: Request) -> Response:
        ready = services.store.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def connect(ws: WebSocket) -> None:
        if SUBPROTOCOL not in ws.scope.get("subprotocols", []):
            await ws.close(code=4400, reason="subprotocol mailslot.v1 required")
            return
        await ws.accept(subprotocol=SUBPROTOCOL)
        await LinkSession(
            ws, services.store, services.registry, services.relay, services.auth_timeout
        ).run()

    routes = [
        Route("/v1/interrupts", guarded(post_interrupt), methods=["POST"]),
        Route("/v1/enroll", guarded(enroll), methods=["POST"]),
        Route("/v1/identities/{id}", guarded(get_identity), methods=["GET"]),
        Route("/v1/identities/{id}/grants/{signer}", guarded(put_grant), methods=["PUT"]),
        Route("/v1/identities/{id}/grants/{signer}", guarded(delete_grant), methods=["DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        WebSocketRoute("/v1/connect", connect),
    ]

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return JSONResponse({"error": "not_found", "message": "no such endpoint"}, 404)

    async def method_not_allowed(_request: Request, _exc: Exception) -> Response:
        return JSONResponse({"error": "method_not_allowed", "message": "method not allowed"}, 405)

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: method_not_allowed})
