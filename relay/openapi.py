"""The OpenAPI 3.1 document of the relay's HTTP API, served at ``GET /v1/openapi.json``.

Generated, not written: the paths come from the routes of the running app (so a route
cannot exist undocumented — one without an entry in ``OPERATIONS`` still appears, with
its methods, path parameters and the error body), and the bodies from the pydantic models
the handlers validate with (``relay.ingest.Draft``, ``shared.envelope.Envelope``…),
through ``model_json_schema``. Where a handler checks a body by hand, the model here
(``EnrollRequest``, ``SignedInterrupt``, ``IdentityDocument``) says exactly what that check
accepts. Every schema goes under ``components/schemas``; refs point there.

A new endpoint: add an ``Operation`` to ``OPERATIONS`` under its method and path template.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from relay.admin import PREFIX as ADMIN_PREFIX
from relay.admin import AccountCreate, AccountUpdate, EnrollmentCreate, TokenCreate
from relay.hooks.routes import ADMIN_PREFIX as HOOKS
from relay.hooks.routes import DELIVERY_PATH, OWN_PREFIX, DeliveryAnswer, HookCreate, HookRotate
from relay.ingest import Draft
from shared.envelope import Envelope
from shared.limits import BATCH_MAX_ITEMS

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

OPENAPI_VERSION = "3.1.0"
_PARAM_RE = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?}")
_HTTP_METHODS = ("get", "put", "post", "delete", "patch")


class ErrorBody(BaseModel):
    """Every refusal: a machine-readable ``error`` code and a sentence for people."""

    model_config = ConfigDict(extra="forbid")
    error: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    message: str
    request_id: str | None = Field(default=None, description="only on a 500")


class SignedInterrupt(BaseModel):
    """A producer-signed interrupt: ``envelope`` is the envelope's JSON text, exactly the
    bytes that were signed; ``signature`` is base64url Ed25519 over them."""

    model_config = ConfigDict(extra="forbid")
    envelope: str = Field(json_schema_extra={"contentMediaType": "application/json"})
    signature: str


class InterruptAccepted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    duplicate: bool = Field(description="true (status 200) if this id was stored before")


class IdentityDocument(BaseModel):
    """An identity's public keys; self-certifying (the id derives from ``sign_key``)."""

    model_config = ConfigDict(extra="forbid")
    id: str
    sign_key: str
    box_key: str
    box_sig: str


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(description="a one-time enrollment token (mse_…)")
    identity: IdentityDocument
    proof: str = Field(description="signature by the identity over the token")


class Enrolled(BaseModel):
    model_config = ConfigDict(extra="forbid")
    identity: str
    account: str
    relay: IdentityDocument


class GrantState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipient: str
    signer: str
    granted: bool


class BatchRequest(BaseModel):
    """Up to ``BATCH_MAX_ITEMS`` interrupts, each a draft or a signed envelope, checked
    and stored as a single post would be."""

    model_config = ConfigDict(extra="forbid")
    items: list[Draft | SignedInterrupt] = Field(min_length=1, max_length=BATCH_MAX_ITEMS)


class BatchResults(BaseModel):
    """One result per item, in order: ``{id, duplicate}`` or ``{error, message}``."""

    results: list[dict[str, Any]]


class Health(BaseModel):
    ok: bool
    time: str  # the relay's clock, ISO 8601 UTC (``mailslot doctor`` checks the skew)


class Readiness(BaseModel):
    ready: bool
    #: When not ready: ``nats_disconnected`` or ``no_stream_leader`` (``relay.readiness``).
    error: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Operation:
    """One method on one path: its request body's models (one of them), its answers."""

    summary: str
    body: tuple[type[BaseModel], ...] = ()
    #: status → model of the JSON body, or a media type for a body that is not JSON.
    responses: dict[int, type[BaseModel] | str] = field(default_factory=dict)
    security: tuple[str, ...] = ()
    websocket: bool = False
    #: Query parameters (all optional strings) and a text/plain body, for /v1/send.
    query: tuple[str, ...] = ()
    text_body: bool = False


_GRANT = "/v1/identities/{id}/grants/{signer}"
#: The admin routes take the admin key or a request signed by an admin identity.
_ADMIN = ("adminCredential", "signedRequest")
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("post", "/v1/interrupts"): Operation(
        "store an interrupt: a draft (with a producer token) or a signed envelope",
        body=(Draft, SignedInterrupt),
        responses={202: InterruptAccepted, 200: InterruptAccepted},
        security=("producerToken", "none"),
    ),
    ("post", "/v1/interrupts/batch"): Operation(
        "store up to BATCH_MAX_ITEMS interrupts, a result for each", body=(BatchRequest,),
        responses={200: BatchResults}, security=("producerToken", "none"),
    ),
    ("post", "/v1/send/{id}"): Operation(
        "plain text to one identity: the body becomes payload.text",
        query=("type", "priority", "title", "session", "dedupe_key", "id", "event_id"),
        text_body=True, responses={202: InterruptAccepted, 200: InterruptAccepted},
        security=("producerToken",),
    ),
    ("post", ADMIN_PREFIX): Operation(
        "create an account", body=(AccountCreate,), security=_ADMIN,
    ),
    ("patch", ADMIN_PREFIX + "/{account}"): Operation(
        "change an account's plan (applies from the next request)", body=(AccountUpdate,),
        security=_ADMIN,
    ),
    ("post", ADMIN_PREFIX + "/{account}/enrollments"): Operation(
        "create enrollment tokens", body=(EnrollmentCreate,), security=_ADMIN,
    ),
    ("post", ADMIN_PREFIX + "/{account}/tokens"): Operation(
        "create a producer token", body=(TokenCreate,), security=_ADMIN,
    ),
    ("post", DELIVERY_PATH): Operation(
        "a provider's webhook delivery, verified on the raw bytes (see README, Webhooks)",
        responses={202: DeliveryAnswer, 200: DeliveryAnswer},
    ),
    ("post", HOOKS): Operation(
        "create a hook (its secret, where the relay makes it, is answered once)",
        body=(HookCreate,), security=_ADMIN,
    ),
    ("post", HOOKS + "/{hook_id}/rotate-secret"): Operation(
        "a new secret; the current one verifies for the grace period too",
        body=(HookRotate,), security=_ADMIN,
    ),
    ("post", OWN_PREFIX): Operation(
        "the identity creates a hook of its own (Mailslot-Signature request)",
        body=(HookCreate,), security=("signedRequest",),
    ),
    ("get", OWN_PREFIX): Operation(
        "the identity's hooks (Mailslot-Signature request)", security=("signedRequest",),
    ),
    ("delete", OWN_PREFIX + "/{hook_id}"): Operation(
        "the identity deletes one of its hooks (Mailslot-Signature request)",
        security=("signedRequest",),
    ),
    ("post", OWN_PREFIX + "/{hook_id}/rotate-secret"): Operation(
        "the identity rotates one of its hooks' secret (Mailslot-Signature request)",
        body=(HookRotate,), security=("signedRequest",),
    ),
    ("post", "/v1/enroll"): Operation(
        "spend an enrollment token on an identity", body=(EnrollRequest,),
        responses={201: Enrolled},
    ),
    ("get", "/v1/identities/{id}"): Operation(
        "an identity's public keys", responses={200: IdentityDocument},
    ),
    ("put", _GRANT): Operation(
        "the recipient grants a producer key (Mailslot-Signature request)",
        responses={200: GrantState}, security=("signedRequest",),
    ),
    ("delete", _GRANT): Operation(
        "the recipient revokes a producer key (Mailslot-Signature request)",
        responses={200: GrantState}, security=("signedRequest",),
    ),
    ("get", "/healthz"): Operation("liveness", responses={200: Health, 503: Health}),
    ("get", "/readyz"): Operation("readiness (NATS connected)",
                                  responses={200: Readiness, 503: Readiness}),
    ("get", "/metrics"): Operation(
        "Prometheus metrics (404 here when --metrics-listen moved them)",
        responses={200: "text/plain; version=0.0.4"},
    ),
    ("get", "/v1/openapi.json"): Operation("this document", responses={200: "application/json"}),
    ("get", "/v1/connect"): Operation(
        "the edge link: a WebSocket upgrade, subprotocol mailslot.v1", websocket=True,
    ),
}

SECURITY_SCHEMES = {
    "adminCredential": {"type": "http", "scheme": "bearer",
                        "description": "the relay's admin credential (msa_…)"},
    "producerToken": {"type": "http", "scheme": "bearer",
                      "description": "a producer token (msp_…)"},
    "signedRequest": {"type": "apiKey", "in": "header", "name": "Authorization",
                      "description": "Mailslot-Signature identity=…, ts=…, nonce=…, sig=…"},
}


def route_methods(routes: Iterable[Any], prefix: str = "") -> list[tuple[str, str]]:
    """``(method, path template)`` of every route of a Starlette app (read by duck typing:
    ``path``, ``methods``, and ``routes`` for a mount); a WebSocket route is ``get``."""
    found: list[tuple[str, str]] = []
    for route in routes:
        path = prefix + str(getattr(route, "path", ""))
        inner = getattr(route, "routes", None)
        if inner is not None and not hasattr(route, "methods"):
            found.extend(route_methods(inner, path))
            continue
        methods = getattr(route, "methods", None)
        if methods is None:  # a WebSocket route
            found.append(("get", path))
            continue
        found.extend((m.lower(), path) for m in sorted(methods) if m.lower() in _HTTP_METHODS)
    return found


def build_document(routes: Iterable[Any], version: str = "1") -> dict[str, Any]:
    """The OpenAPI document of an app with these routes."""
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for method, path in route_methods(routes):
        op = OPERATIONS.get((method, path)) or Operation(
            f"{method.upper()} {path}",
            security=_ADMIN if path.startswith("/v1/admin/") else (),
        )
        paths.setdefault(path, {})[method] = _operation(op, method, path, components)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "mailslot relay", "version": version},
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items())),
                       "securitySchemes": SECURITY_SCHEMES},
    }


def _operation(op: Operation, method: str, path: str, components: dict[str, Any]
               ) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "summary": op.summary,
        "operationId": _operation_id(method, path),
        "responses": {},
    }
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
              for p in _PARAM_RE.findall(path)]
    params += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
               for q in op.query]
    if params:
        doc["parameters"] = params
    if op.text_body:
        doc["requestBody"] = {"required": True,
                              "content": {"text/plain": {"schema": {"type": "string"}}}}
    if op.body:
        schemas = [_ref(model, components) for model in op.body]
        doc["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": schemas[0] if len(schemas) == 1 else {"oneOf": schemas}}}}
    for status, answer in sorted(op.responses.items()):
        if isinstance(answer, str):
            doc["responses"][str(status)] = {"description": answer,
                                             "content": {answer: {"schema": {}}}}
        else:
            doc["responses"][str(status)] = {
                "description": answer.__doc__.strip().splitlines()[0] if answer.__doc__
                else answer.__name__,
                "content": {"application/json": {"schema": _ref(answer, components)}},
            }
    if op.websocket:
        doc["responses"]["101"] = {"description": "switching to the WebSocket link"}
    doc["responses"]["4XX"] = {
        "description": "refused: the code says why",
        "content": {"application/json": {"schema": _ref(ErrorBody, components)}},
    }
    if op.security:
        doc["security"] = [{} if s == "none" else {s: []} for s in op.security]
    return doc


def _ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    """Put ``model`` (and the models it uses) under components; return a ref to it."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components.setdefault(model.__name__, schema)
    if model is SignedInterrupt:
        envelope = Envelope.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in envelope.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components.setdefault("Envelope", envelope)
        schema["properties"]["envelope"]["contentSchema"] = {
            "$ref": "#/components/schemas/Envelope"}
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", _PARAM_RE.sub(r"by_\1", path)).strip("_")
    return f"{method}_{words}"


class OpenApiEndpoint:
    """``GET /v1/openapi.json``: the document of the app serving it (``scope["app"]``),
    built on the first request and kept (routes do not change while the app runs)."""

    def __init__(self) -> None:
        self._body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._body is None:
            routes = getattr(scope.get("app"), "routes", ())
            self._body = json.dumps(build_document(routes), separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self._body)).encode())]})
        await send({"type": "http.response.body", "body": self._body})
