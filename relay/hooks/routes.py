"""The HTTP routes of webhook ingress, mounted by ``relay.app``::

    POST   /v1/hooks/{hook_id}                     a provider's delivery (verify.py's order)
    POST   /v1/admin/hooks                         create {name, to, source, …} (admin)
    GET    /v1/admin/hooks[?account=&to=]          list (secrets never shown)
    GET    /v1/admin/hooks/{hook_id}               show, with its last refusals
    DELETE /v1/admin/hooks/{hook_id}               delete (deliveries then 410)
    POST   /v1/admin/hooks/{hook_id}/pause         deliveries 503 hook_paused (Retry-After)
    POST   /v1/admin/hooks/{hook_id}/resume        … and accepted again
    POST   /v1/admin/hooks/{hook_id}/rotate-secret {secret?, grace?}: both verify in grace
    POST   /v1/identities/{id}/hooks               the identity creates its own (signed)
    GET    /v1/identities/{id}/hooks               … lists them (signed)
    …      /v1/identities/{id}/hooks/{hook_id}[/…] … and everything /v1/admin/hooks/{hook_id}
                                                   does, for its own hooks (signed)

A delivery, in this order (``relay.hooks.verify``'s docstring says why): the body read
with the hook cap (413 before anything is verified); the per-address gate of the
unauthenticated endpoints; the hook (404 ``unknown_hook``, 410 ``hook_deleted``), its
account (403 ``account_disabled``), paused (503 ``hook_paused``, ``Retry-After``); JSON
only (415); the signature on the raw bytes (400/401); the hook's own rate (429); parsed,
filtered, mapped (``relay.hooks.project``: a handshake or a filtered event answered 200,
nothing stored); a delivery id claimed before (``HookRegistry.claim``: the hooks bucket,
7 days) answered 200 ``duplicate``; else published through ``Ingest.submit_webhook`` (the
account's quotas) and answered 202 once JetStream acknowledged (503 ``store_unavailable``
if it did not).

A redelivered id is stored once, by two guards: JetStream's own deduplication of the
publish (``Nats-Msg-Id`` = ``msg_id(hook, delivery)``, within the stream's duplicate
window, 10 minutes by default: a provider's quick retries, two relay processes racing
with the same delivery) and the claim (a key per hook and delivery id in the hooks
bucket, kept 7 days: a redelivery hours or days later, e.g. GitHub's "Redeliver"). The
claim must be decided before the publish: a later redelivery, once JetStream's window
is past, can only be told from a new delivery by it, so a claim made in parallel with
the publish would store that redelivery a second time. So it is awaited first, and the
interrupt is made, signed and published (``Ingest.submit_webhook``) only when it says
so; a delivery claimed before costs no interrupt at all. (Sending the claim ahead and
signing while it travels, as this route once did, hid no more than the signature's
~50 µs of its round trip and cost the relay a socket write of its own per delivery: the
request had to be flushed at once instead of with the other requests' writes.) A relay
killed -9 between the two leaves a claim without an interrupt (the provider got no
2xx): a retry within the window is stored (the claim is that recent, and the publish
decides), a retry after it is answered as a duplicate — the one loss, which no order of two separate writes
avoids (publishing first would instead store a late retry twice). A publish that fails
gives back a claim it made (``release``), so the provider's retry is stored; not one it
found made moments before by another delivery of the id (which may be stored: released,
a retry after the window would store it again).

Failures are answered by ``relay.app.guarded`` like every route's, whose log lines name
the route template, never the path (it holds the hook's id, the URL's secret part).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from relay.admin import admin_reader
from relay.adminauth import authorized_body
from relay.errors import NotFound, RelayError
from relay.hooks.model import (
    BODY_MAX_BYTES,
    PROVIDER_SECRET,
    HookFilter,
    HookSource,
    Path,
    PriorityRule,
    Template,
    describe_error,
    new_hook,
    new_secret,
)
from relay.hooks.project import Filtered, Handshake, process
from relay.hooks.registry import HookRecord, HookRegistry, delivery_ref
from relay.hooks.verify import verify_lowered
from relay.ingest import Ingest
from relay.metrics import metrics_of
from relay.plaintext import check_json_media
from relay.ratelimit import AddressLimiter, RateLimiter
from relay.registry import Registry
from relay.signedrequest import check_signed_request
from relay.store import Store
from shared.envelope import IdentityId, Name, Priority
from shared.errors import MalformedInput, RemoteProtocolError
from shared.limits import loads
from shared.tokens import check_identity

log = logging.getLogger("mailslot.relay.hooks")

DELIVERY_PATH = "/v1/hooks/{hook_id}"
ADMIN_PREFIX = "/v1/admin/hooks"
OWN_PREFIX = "/v1/identities/{id}/hooks"
#: What a paused hook tells the provider to wait before delivering again.
PAUSED_RETRY_AFTER = 60
#: How long the previous secret still verifies after a rotation, by default; at most.
DEFAULT_GRACE_SECONDS = 86_400
MAX_GRACE_SECONDS = 30 * 86_400
#: Per-hook counters ``count`` keeps at hand (beyond it, looked up again).
COUNTERS_KEPT = 4096
#: Most (account, hook) pairs the webhook metric names; past it the rest are counted as
#: account and hook ``other`` (hooks are made by tenants: the scrape stays bounded).
LABELLED_HOOKS = 10_000

Handler = Callable[[Request], Awaitable[Response]]
BodyReader = Callable[..., Awaitable[bytes]]
JsonReader = Callable[[Request], Awaitable[tuple[bytes, Any]]]
#: How a route finds the hook in its path, having checked who asks (``by_admin``,
#: ``by_owner``): the hook and the request's JSON body (with ``body``).
Finder = Callable[..., Awaitable[tuple["HookRecord", Any]]]


class HookCreate(BaseModel):
    """``POST /v1/admin/hooks`` (``to`` required) or ``POST /v1/identities/{id}/hooks``
    (``to`` is that identity): the fields of ``relay.hooks.model.Hook`` and ``secret``,
    the provider's (Stripe, Slack: required before a delivery verifies) or your own;
    without it, one is made (GitHub, Standard Webhooks, hmac) and answered once."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: Name
    to: IdentityId | None = None
    source: HookSource
    secret: Annotated[str, Field(min_length=8, max_length=512,
                                 json_schema_extra={"writeOnly": True})] | None = None
    paused: bool = False
    filter: HookFilter = HookFilter()
    type: Template | None = None
    priority: Annotated[list[PriorityRule], Field(max_length=32)] = []
    default_priority: Priority = Priority.next
    keep: Annotated[list[Path], Field(max_length=32)] | None = None
    keep_max_bytes: int = 2048
    store_body: bool = False
    body_max_bytes: int = 8192
    rate: float | None = None
    burst: int = 20


class HookRotate(BaseModel):
    """``POST /v1/admin/hooks/{hook_id}/rotate-secret``: ``secret`` (the provider's new
    one, or yours; else one is made and answered once), and how many seconds the current
    one still verifies (``grace``, default 24 h; 0: at once)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    secret: Annotated[str, Field(min_length=8, max_length=512,
                                 json_schema_extra={"writeOnly": True})] | None = None
    grace: float = Field(default=DEFAULT_GRACE_SECONDS, ge=0, le=MAX_GRACE_SECONDS)


class DeliveryAnswer(BaseModel):
    """What a provider is answered on a 2xx: ``{id, duplicate: false}`` (202, stored),
    ``{duplicate: true}`` (200, stored before), ``{filtered: reason}`` (200, refused by
    the hook's filter), or a handshake's answer (200: ``{challenge}`` for Slack,
    ``{ok, event}`` for GitHub's ping)."""

    id: str | None = None
    duplicate: bool | None = None
    filtered: str | None = None
    challenge: str | None = None


#: Built once (``json.dumps`` with options builds an encoder per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer rendered as ASCII (a message quoting outside text always encodes)."""
    return Response(_ENCODER.encode(doc), status_code=status, headers=headers,
                    media_type="application/json")


def _headers(scope: Scope) -> dict[str, str]:
    """A request's headers, names lowercase, read once from the ASGI scope (decoded as
    Starlette decodes them; a header sent twice: its last value)."""
    return {name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]}


def _invalid(exc: ValidationError) -> MalformedInput:
    if any(e["type"] == "extra_forbidden" for e in exc.errors()):
        return MalformedInput(describe_error(exc), code="unknown_field")
    return MalformedInput(describe_error(exc), code="invalid_hook")


def hook_routes(store: Store, registry: Registry, ingest: Ingest,
                gate: AddressLimiter | None, guarded: Callable[[Handler], Handler],
                read_body: BodyReader, read_json: JsonReader) -> list[Route]:
    """The routes above, for ``relay.app``'s route list (``guarded``: its failure path)."""
    hooks = HookRegistry(store)
    limiter = ingest.limiter or RateLimiter(store)
    metrics = metrics_of(store)
    #: JetStream's duplicate window (``HookRegistry.claim``), with a margin.
    window = max(0.0, store.settings.duplicate_window - 30)

    #: Each (account, hook name, outcome) counter's ``inc``, looked up once (a metric's
    #: ``labels()`` takes a lock and checks its labels each time).
    counters: dict[tuple[str, str, str], Callable[[], None]] = {}
    #: The (account, hook name) pairs the metric has named so far (``LABELLED_HOOKS``).
    labelled: set[tuple[str, str]] = set()

    def count(found: HookRecord, outcome: str) -> None:
        if metrics is None:
            return
        key = (found.account, found.hook.name, outcome)
        inc = counters.get(key)
        if inc is None:
            if len(counters) >= COUNTERS_KEPT:
                counters.clear()  # hooks come and go: start over rather than grow
            pair = key[:2]
            if pair not in labelled and len(labelled) < LABELLED_HOOKS:
                labelled.add(pair)
            shown = key if pair in labelled else ("other", "other", outcome)
            inc = counters[key] = metrics.webhooks.labels(*shown).inc
        inc()

    # -- the door ---------------------------------------------------------------------

    async def deliver(request: Request) -> Response:
        body = await read_body(request, BODY_MAX_BYTES)
        scope = request.scope
        if gate is not None:  # a stranger may call this: per client address, first
            await gate.check(scope)
        found = await hooks.find(str(scope["path_params"]["hook_id"]))
        try:
            outcome, answer = await accept(found, scope, body)
        except (RemoteProtocolError, RelayError) as exc:
            count(found, exc.code)
            if exc.status < 500:
                await hooks.refused(found.hook.id, exc.status, exc.code, exc.message)
            raise
        count(found, outcome)
        return answer

    async def accept(found: HookRecord, scope: Scope, body: bytes) -> tuple[str, Response]:
        hook, now = found.hook, time.time()
        await registry.require_active_account(found.account)
        if hook.paused:
            message = f"hook {hook.name} is paused; deliver again after it is resumed"
            await hooks.refused(hook.id, 503, "hook_paused", message)
            return "hook_paused", _json(
                {"error": "hook_paused", "message": message, "retry_after": PAUSED_RETRY_AFTER},
                503, {"Retry-After": str(PAUSED_RETRY_AFTER)})
        headers = _headers(scope)
        check_json_media(headers.get("content-type"))
        verified = verify_lowered(hook.source, hook.valid_secrets(now), headers, body, now)
        if hook.rate is not None:
            await limiter.take_bucket(f"hook.{hook.id}", hook.rate, hook.burst,
                                      f"hook {hook.name}", "delivery rate")
        result = process(hook, verified, headers, body, lowered=True)
        if isinstance(result, Handshake):
            return "handshake", _json(result.answer)
        if isinstance(result, Filtered):
            return "filtered", _json({"filtered": result.reason})
        event_id = result.event_id
        delivery = None if event_id is None else delivery_ref(hook.id, event_id)
        claim = None if delivery is None else await hooks.claim(delivery, window)
        if claim == "stored":
            return "duplicate", _json({"duplicate": True})  # claimed days ago, maybe
        try:
            stored = await ingest.submit_webhook(
                found.account, hook.to, hook.name, result.type, result.priority,
                result.payload, event_id, None if delivery is None else delivery.msg_id)
        except BaseException:
            if delivery is not None and claim == "made":
                await hooks.release(delivery)  # ours, and nothing stored
            raise
        if stored.duplicate:  # JetStream's duplicate (within its window)
            return "duplicate", _json({"duplicate": True})
        return "accepted", _json({"id": stored.id, "duplicate": False}, 202)

    # -- managing hooks ---------------------------------------------------------------

    async def admin(request: Request, body: bool = False) -> Any:
        """Read the body, check the admin credential (or an admin identity's signature),
        then refuse a bad body (as ``relay.admin``): nobody learns anything without it."""
        return await authorized_body(registry, request.method, request.url.path,
                                     request.headers.get("authorization"),
                                     admin_reader(request, body, read_body, read_json))

    async def signed(request: Request) -> tuple[str, Any]:
        """A ``Mailslot-Signature`` request by the identity in the path (as the grant
        routes check it: skew, signature, then the nonce spent); its account and body."""
        raw = await read_body(request)
        identity = check_identity(request.path_params["id"])
        account = await check_signed_request(
            registry, identity, request.method, request.url.path,
            request.headers.get("authorization"), raw, "manage its hooks")
        await registry.require_active_account(account)
        if not raw:
            return account, None
        check_json_media(request.headers.get("content-type"))
        return account, loads(raw)

    async def create(doc: Any, to: str | None) -> Response:
        try:
            body = HookCreate.model_validate(doc)
        except ValidationError as exc:
            raise _invalid(exc) from exc
        target = to or body.to
        if target is None or (to is not None and body.to not in (None, to)):
            raise MalformedInput("to: the identity the hook's interrupts go to",
                                 code="invalid_hook")
        _, account = await registry.require_identity(target)
        options = {k: v for k, v in doc.items() if k not in ("name", "to", "source", "secret")}
        try:
            hook, generated = new_hook(body.name, target, doc["source"], secret=body.secret,
                                       **options)
        except ValidationError as exc:
            raise _invalid(exc) from exc
        record = await hooks.create(account, hook)
        shown = record.shown()
        answer: dict[str, Any] = {"hook": shown, "path": shown["path"], "secret": generated}
        if hook.source.kind == "none":
            answer["warning"] = ("source none: nothing is verified, whoever knows the URL "
                                 "can post to this hook")
        elif not hook.secrets:
            answer["warning"] = ("no secret yet: every delivery is refused (401 "
                                 "bad_signature) until rotate-secret gives it the "
                                 "provider's")
        return _json(answer, 201)

    async def admin_create(request: Request) -> Response:
        return await create(await admin(request, body=True), None)

    async def admin_list(request: Request) -> Response:
        await admin(request)
        account = request.query_params.get("account")
        to = request.query_params.get("to")
        found = await hooks.hooks(account or None, to or None)
        return _json({"hooks": [r.shown() for r in found]})

    async def by_admin(request: Request, body: bool = False) -> tuple[HookRecord, Any]:
        doc = await admin(request, body)
        return await hooks.find(str(request.path_params["hook_id"])), doc

    async def by_owner(request: Request, body: bool = False) -> tuple[HookRecord, Any]:
        """The hook in the path, for a signed request by the identity it sends to."""
        _, doc = await signed(request)
        found = await hooks.find(str(request.path_params["hook_id"]))
        if found.hook.to != request.path_params["id"]:
            raise NotFound("no such hook", code="unknown_hook")
        return found, doc

    def show(find: Finder) -> Handler:
        async def handler(request: Request) -> Response:
            found, _ = await find(request)
            return _json({"hook": found.shown(),
                          "refusals": await hooks.refusals(found.hook.id)})

        return handler

    def delete(find: Finder) -> Handler:
        async def handler(request: Request) -> Response:
            found, _ = await find(request)
            await hooks.delete(found)
            return _json({"id": found.hook.id, "name": found.hook.name, "deleted": True})

        return handler

    def set_paused(find: Finder, paused: bool) -> Handler:
        async def handler(request: Request) -> Response:
            found, _ = await find(request)
            changed = await hooks.replace(found, found.hook.model_copy(update={"paused": paused}))
            return _json({"hook": changed.shown()})

        return handler

    def rotate(find: Finder) -> Handler:
        async def handler(request: Request) -> Response:
            found, doc = await find(request, True)
            try:
                body = HookRotate.model_validate(doc if doc is not None else {})
            except ValidationError as exc:
                raise _invalid(exc) from exc
            kind = found.hook.source.kind
            secret = body.secret or new_secret(kind)
            if secret is None:
                raise MalformedInput(
                    f"a {kind} hook's secret is the provider's: pass it as secret"
                    if kind in PROVIDER_SECRET else "a hook with source none has no secret",
                    code="secret_required")
            try:
                hook = found.hook.rotated(secret, time.time(), body.grace)
            except ValidationError as exc:
                raise _invalid(exc) from exc
            changed = await hooks.replace(found, hook)
            until = hook.secrets[1].until if len(hook.secrets) == 2 else None
            return _json({"hook": changed.shown(), "secret": None if body.secret else secret,
                          "previous_valid_until": until})

        return handler

    async def own_create(request: Request) -> Response:
        _, doc = await signed(request)
        return await create(doc, check_identity(request.path_params["id"]))

    async def own_list(request: Request) -> Response:
        await signed(request)
        found = await hooks.hooks(to=check_identity(request.path_params["id"]))
        return _json({"hooks": [r.shown() for r in found]})

    table: list[tuple[str, str, Handler]] = [
        (DELIVERY_PATH, "POST", deliver),
        (ADMIN_PREFIX, "POST", admin_create),
        (ADMIN_PREFIX, "GET", admin_list),
        (OWN_PREFIX, "POST", own_create),
        (OWN_PREFIX, "GET", own_list),
    ]
    for one, find in ((ADMIN_PREFIX + "/{hook_id}", by_admin),
                      (OWN_PREFIX + "/{hook_id}", by_owner)):
        table += [
            (one, "GET", show(find)),
            (one, "DELETE", delete(find)),
            (one + "/pause", "POST", set_paused(find, True)),
            (one + "/resume", "POST", set_paused(find, False)),
            (one + "/rotate-secret", "POST", rotate(find)),
        ]
    return [Route(path, guarded(handler), methods=[method]) for path, method, handler in table]
