"""The admin API: accounts, enrollment tokens, producer tokens, identities, admin
identities and the admin credential, under ``/v1/admin/…``, every request authenticated
by the admin credential (``Authorization: Bearer msa_…``) or signed by an admin identity
(``Authorization: Mailslot-Signature …``), both checked by ``relay.adminauth``::

    POST   /v1/admin/accounts                              create {name}
    GET    /v1/admin/accounts                              list
    GET    /v1/admin/accounts/{account}                    show, with usage against quotas
    PATCH  /v1/admin/accounts/{account}                    change {plan}
    DELETE /v1/admin/accounts/{account}                    delete, purging what it holds
    POST   /v1/admin/accounts/{account}/disable            refuse its producers and edges
    POST   /v1/admin/accounts/{account}/enable             ... and accept them again
    POST   /v1/admin/accounts/{account}/enrollments        create {count?, expires_in?}
    GET    /v1/admin/accounts/{account}/enrollments        list (unspent)
    DELETE /v1/admin/accounts/{account}/enrollments/{id}   revoke
    POST   /v1/admin/accounts/{account}/tokens             create {to, name?, types?, expires_in?}
    GET    /v1/admin/accounts/{account}/tokens             list (never the secret)
    DELETE /v1/admin/accounts/{account}/tokens/{id}        revoke
    GET    /v1/admin/accounts/{account}/identities         list
    DELETE /v1/admin/accounts/{account}/identities/{id}    revoke
    GET    /v1/admin/admins                                the admin identities
    PUT    /v1/admin/admins/{id}                           name an identity admin
    DELETE /v1/admin/admins/{id}                           ... and no longer
    POST   /v1/admin/admin-key/rotate                      a new admin credential, shown once

``relay.app`` mounts ``admin_routes`` and hands in its ``guarded`` wrapper (errors to
answers) and its body readers. Every handler reads the body first (a refusal then
leaves the keep-alive connection usable), checks the credential, then the input; the
checks of each concept are ``relay.registry``'s. Bodies are validated by the pydantic
models below (``extra="forbid"``): ``400 unknown_field`` / ``400 invalid_request``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.adminauth import (
    admin_identities,
    authorized_body,
    check_admin,
    grant_admin,
    revoke_admin,
    rotate_admin_credential,
)
from relay.config import Plan
from relay.errors import NotFound
from relay.hooks.registry import HookRegistry
from relay.registry import (
    MAX_ENROLLMENT_COUNT,
    MAX_EXPIRES_SECONDS,
    MAX_RECIPIENTS,
    MAX_TYPE_GLOBS,
    Registry,
    check_type_glob,
    expiry,
    public_id,
    token_hash,
)
from relay.store import Store
from relay.usage import UsageLedger, byte_caps
from shared.errors import MalformedInput
from shared.tokens import IDENTITY_RE, NAME_RE, check_identity, check_name

Handler = Callable[[Request], Awaitable[Response]]
BodyReader = Callable[[Request], Awaitable[bytes]]
JsonReader = Callable[[Request], Awaitable[tuple[bytes, Any]]]

PREFIX = "/v1/admin/accounts"
ADMINS = "/v1/admin/admins"
ROTATE_KEY = "/v1/admin/admin-key/rotate"
M = TypeVar("M", bound=BaseModel)


class AccountCreate(BaseModel):
    """``POST /v1/admin/accounts``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: Annotated[str, AfterValidator(lambda v: check_name(v, "account"))]
    #: One of the plans of the relay's ``--config`` (default: its ``default_plan``).
    plan: Annotated[str, AfterValidator(lambda v: check_name(v, "plan"))] | None = None


class AccountUpdate(BaseModel):
    """``PATCH /v1/admin/accounts/{account}``: run it under another plan from now on."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    #: One of the plans of the relay's ``--config``.
    plan: Annotated[str, AfterValidator(lambda v: check_name(v, "plan"))]


class EnrollmentCreate(BaseModel):
    """``POST …/enrollments``: ``count`` one-time tokens, each valid ``expires_in``
    seconds (default: until spent or revoked)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    count: int = Field(default=1, ge=1, le=MAX_ENROLLMENT_COUNT)
    expires_in: float | None = Field(default=None, gt=0, le=MAX_EXPIRES_SECONDS)


class TokenCreate(BaseModel):
    """``POST …/tokens``: a producer token that may send to the ``to`` identities (one
    id or a list, all in the account), types matching ``types`` (globs, default ``*``),
    for ``expires_in`` seconds (default: until revoked). ``name`` is the interrupts'
    ``source.name``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    to: (
        Annotated[str, AfterValidator(check_identity)]
        | Annotated[list[Annotated[str, AfterValidator(check_identity)]],
                    Field(min_length=1, max_length=MAX_RECIPIENTS)]
    )
    name: Annotated[str, AfterValidator(lambda v: check_name(v, "token name"))] = "producer"
    types: Annotated[
        list[Annotated[str, AfterValidator(check_type_glob)]],
        Field(min_length=1, max_length=MAX_TYPE_GLOBS),
    ] = ["*"]
    expires_in: float | None = Field(default=None, gt=0, le=MAX_EXPIRES_SECONDS)


def _parse(model: type[M], doc: object) -> M:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        if first["type"] == "extra_forbidden":
            raise MalformedInput(f"{where}: unknown field", code="unknown_field") from exc
        raise MalformedInput(f"{where}: {first['msg']}", code="invalid_request") from exc


def _account(request: Request) -> str:
    """The account named in the path; a name that cannot exist is simply unknown."""
    name = str(request.path_params["account"])
    if NAME_RE.fullmatch(name) is None:
        raise NotFound(f"no account {name[:64]!r}", code="unknown_account")
    return name


def _identity(request: Request) -> str:
    """The identity named in the path; an id that cannot exist is simply unknown."""
    identity = str(request.path_params["id"])
    if IDENTITY_RE.fullmatch(identity) is None:
        raise NotFound(f"no identity {identity[:64]!r}", code="unknown_identity")
    return identity


def admin_reader(
    request: Request, body: bool, read_body: BodyReader, read_json: JsonReader
) -> Callable[[], Awaitable[tuple[bytes, Any]]]:
    """What ``relay.adminauth.authorized_body`` reads: the raw body (a signature covers
    it) and, with ``body``, its JSON. The hook routes' admin side uses it too."""

    async def read() -> tuple[bytes, Any]:
        if body:
            return await read_json(request)
        return await read_body(request), None

    return read


def admin_routes(
    store: Store, registry: Registry, guarded: Callable[[Handler], Handler],
    read_body: BodyReader, read_json: JsonReader,
) -> list[Route]:
    """The admin API's routes, for ``relay.app``'s route list."""

    async def authorized(request: Request, body: bool = False) -> Any:
        """The request's JSON body (with ``body``), once the admin credential or the
        admin identity's signature is checked (``relay.adminauth.authorized_body``)."""
        return await authorized_body(registry, request.method, request.url.path,
                                     request.headers.get("authorization"),
                                     admin_reader(request, body, read_body, read_json))

    async def create_account(request: Request) -> Response:
        body = _parse(AccountCreate, await authorized(request, body=True))
        token = await registry.create_account(body.name, body.plan)
        record = await registry.account(body.name)
        return JSONResponse({**record, "enrollment_token": token}, status_code=201)

    async def list_accounts(request: Request) -> Response:
        await authorized(request)
        accounts = [await registry.account(name) for name in await registry.accounts()]
        return JSONResponse({"accounts": accounts})

    async def show_account(request: Request) -> Response:
        await authorized(request)
        account = _account(request)
        record = await registry.account(account)
        usage = await registry.usage(account)
        usage.update(await quota_usage(store, registry, account, usage))
        return JSONResponse({**record, "usage": usage})

    async def update_account(request: Request) -> Response:
        body = _parse(AccountUpdate, await authorized(request, body=True))
        account = _account(request)
        record = await registry.account(account)
        if registry.config is None or body.plan not in registry.config.plans:
            known = ", ".join(sorted(registry.config.plans)) if registry.config else "default"
            raise NotFound(f"no plan {body.plan!r} (plans: {known})", code="unknown_plan")
        record = {**record, "plan": body.plan}
        await store.kv_put(f"account.{account}", record)  # one write: every process sees it
        return JSONResponse(record)

    async def delete_account(request: Request) -> Response:
        await authorized(request)
        account = _account(request)
        members = [i["id"] for i in await registry.identities(account)]
        purged = await registry.delete_account(account)
        for identity in members:  # re-enrolling the same key must not bring admin back
            await revoke_admin(store, identity)
        hooks = await HookRegistry(store).delete_account(account)  # deliveries then 410
        return JSONResponse({"name": account, "deleted": True, "purged": purged,
                             "hooks_deleted": hooks})

    def set_disabled(disabled: bool) -> Handler:
        async def handler(request: Request) -> Response:
            await authorized(request)
            return JSONResponse(await registry.set_disabled(_account(request), disabled))

        return handler

    async def create_enrollments(request: Request) -> Response:
        body = _parse(EnrollmentCreate, await authorized(request, body=True))
        account = _account(request)
        tokens = [await registry.enrollment_token(account, body.expires_in)
                  for _ in range(body.count)]
        return JSONResponse(
            {"account": account, "expires_at": expiry(body.expires_in),
             "enrollment_tokens": tokens, "ids": [public_id(token_hash(t)) for t in tokens]},
            status_code=201,
        )

    async def list_enrollments(request: Request) -> Response:
        await authorized(request)
        account = _account(request)
        return JSONResponse({"enrollments": await registry.enrollment_tokens(account)})

    async def revoke_enrollment(request: Request) -> Response:
        await authorized(request)
        account, token_id = _account(request), str(request.path_params["id"])
        await registry.revoke_enrollment(account, token_id)
        return JSONResponse({"id": token_id, "account": account, "revoked": True})

    async def create_token(request: Request) -> Response:
        body = _parse(TokenCreate, await authorized(request, body=True))
        account = _account(request)
        token, record = await registry.create_producer_token_record(
            account, body.to, body.name, body.types, body.expires_in
        )
        return JSONResponse(
            {"id": record["id"], "account": account, "name": record["name"],
             "to": record["recipients"], "types": record["types"],
             "created_at": record["created_at"], "expires_at": record["expires_at"],
             "token": token},
            status_code=201,
        )

    async def list_tokens(request: Request) -> Response:
        await authorized(request)
        return JSONResponse({"tokens": await registry.producer_tokens(_account(request))})

    async def revoke_token(request: Request) -> Response:
        await authorized(request)
        account, token_id = _account(request), str(request.path_params["id"])
        record = await registry.revoke_producer_token(account, token_id)
        return JSONResponse({"id": token_id, "account": account, "revoked": True,
                             "revoked_at": record["revoked_at"]})

    async def list_identities(request: Request) -> Response:
        await authorized(request)
        return JSONResponse({"identities": await registry.identities(_account(request))})

    async def revoke_identity(request: Request) -> Response:
        await authorized(request)
        account, identity = _account(request), str(request.path_params["id"])
        if IDENTITY_RE.fullmatch(identity) is None:
            raise NotFound(f"no identity {identity[:64]!r} in account {account}",
                           code="unknown_identity")
        purged = await registry.revoke_identity(account, identity)
        await revoke_admin(store, identity)
        return JSONResponse({"id": identity, "account": account, "revoked": True,
                             "purged_interrupts": purged})

    async def list_admins(request: Request) -> Response:
        await authorized(request)
        return JSONResponse({"admins": await admin_identities(registry)})

    async def grant(request: Request) -> Response:
        by = await authorized_as(request)
        identity = _identity(request)
        return JSONResponse(await grant_admin(registry, identity, by))

    async def revoke(request: Request) -> Response:
        await authorized(request)
        identity = _identity(request)
        return JSONResponse({"id": identity, "admin": False,
                             "was_admin": await revoke_admin(store, identity)})

    async def rotate_key(request: Request) -> Response:
        await authorized(request)
        secret, rotated_at = await rotate_admin_credential(store)
        return JSONResponse({"admin_key": secret, "rotated_at": rotated_at})

    async def authorized_as(request: Request) -> str:
        """Who sent this body-less request: ``relay.adminauth.BY_KEY`` or the signer."""
        raw = await read_body(request)
        return await check_admin(registry, request.method, request.url.path,
                                 request.headers.get("authorization"), raw)

    one = PREFIX + "/{account}"
    table: list[tuple[str, str, Handler]] = [
        (PREFIX, "POST", create_account),
        (PREFIX, "GET", list_accounts),
        (one, "GET", show_account),
        (one, "DELETE", delete_account),
        (one, "PATCH", update_account),
        (one + "/disable", "POST", set_disabled(True)),
        (one + "/enable", "POST", set_disabled(False)),
        (one + "/enrollments", "POST", create_enrollments),
        (one + "/enrollments", "GET", list_enrollments),
        (one + "/enrollments/{id}", "DELETE", revoke_enrollment),
        (one + "/tokens", "POST", create_token),
        (one + "/tokens", "GET", list_tokens),
        (one + "/tokens/{id}", "DELETE", revoke_token),
        (one + "/identities", "GET", list_identities),
        (one + "/identities/{id}", "DELETE", revoke_identity),
        (ADMINS, "GET", list_admins),
        (ADMINS + "/{id}", "PUT", grant),
        (ADMINS + "/{id}", "DELETE", revoke),
        (ROTATE_KEY, "POST", rotate_key),
    ]
    return [Route(path, guarded(handler), methods=[method]) for path, method, handler in table]


async def quota_usage(
    store: Store, registry: Registry, account: str, usage: dict[str, Any]
) -> dict[str, Any]:
    """``usage`` (``Registry.usage``) against every quota of the account's plan:
    ``{"quotas": {name: {"used", "limit"}}}`` plus the byte ledger's ``pending_bytes``
    (recounted first, ``relay.usage``) and ``connected_edges`` (live links in every
    process, ``relay.connections``); each None when the plan does not keep it."""
    limits = usage["limits"]
    ids = [i["id"] for i in await registry.identities(account)]
    per_identity = [sum((await store.pending(i)).values()) for i in ids]
    _, plan = registry.config.plan_of(usage["plan"]) if registry.config else (None, Plan())
    ledger = await UsageLedger(store).recount(account, ids) if byte_caps(plan) else None
    edges = (len(await store.link_identities(account))
             if plan.max_connected_edges is not None else None)
    used = {
        "identities": usage["identities"],
        "pending": usage["pending_total"],
        "pending_per_identity": max(per_identity, default=0),
        "pending_bytes": ledger[""] if ledger else None,
        "pending_bytes_per_identity": (
            max((ledger[i] for i in ids), default=0) if ledger else None),
        "connected_edges": edges,
    }
    keys = {"identities": "max_identities", "pending": "max_pending"}
    return {
        "pending_bytes": used["pending_bytes"],
        "connected_edges": edges,
        "quotas": {name: {"used": value, "limit": limits.get(keys.get(name, "max_" + name))}
                   for name, value in used.items()},
    }
