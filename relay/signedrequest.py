"""Requests an identity signs itself (``Authorization: Mailslot-Signature …``): its grants
(``relay.app``) and its own hooks (``relay.hooks.routes``) are changed this way, with no
admin and no bearer token; an admin identity administers the relay this way
(``relay.adminauth``, which shares ``verify_signed_request``).

The checks, in order, all before the caller changes anything: the header parsed
strictly (``shared.auth``), signed by the identity in the path, the time within
``REQUEST_SKEW_SECONDS`` of the relay's clock, the signature over method, path, time,
nonce and body, then the nonce spent atomically in the shared nonce bucket (by every
relay process on the NATS), so that a captured request cannot be replayed.
"""

from __future__ import annotations

import time

from relay.errors import Unauthorized
from relay.registry import Registry
from shared.auth import (
    REQUEST_SKEW_SECONDS,
    RequestSignature,
    check_b64_signature,
    parse_request_header,
    request_message,
)


async def check_signed_request(
    registry: Registry, identity: str, method: str, path: str, header: str | None,
    body: bytes, what: str,
) -> str:
    """Check that ``identity`` itself signed this request; return its account. ``what``
    ends the refusal of a request signed by someone else ("change its grants")."""
    if header is None:
        raise Unauthorized("signed request required", code="missing_auth")
    signed = parse_request_header(header)
    if signed.identity != identity:
        raise Unauthorized(f"only the identity itself may {what}", code="bad_auth")
    return await verify_signed_request(registry, signed, method, path, body)


async def verify_signed_request(
    registry: Registry, signed: RequestSignature, method: str, path: str, body: bytes
) -> str:
    """The checks after the header's format and its signer (``check_signed_request``,
    ``relay.adminauth``): the time, the signer known (``404 unknown_identity``), the
    signature, then the nonce spent. Returns the signer's account."""
    identity, ts, nonce, sig = signed
    if abs(int(time.time()) - ts) > REQUEST_SKEW_SECONDS:
        raise Unauthorized(
            f"request timestamp is more than {REQUEST_SKEW_SECONDS} s from the relay's clock",
            code="stale_request",
        )
    public, account = await registry.require_identity(identity)
    check_b64_signature(public.verifier(), sig, request_message(method, path, ts, nonce, body))
    await registry.spend_request_nonce(identity, nonce)
    return account
