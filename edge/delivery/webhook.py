"""The ``webhook`` route: POST the wake to the runtime's URL once, and say how it went.

This module is the edge's one adapter for ``httpx`` on the delivery side (the other is
``edge.link.relayclient``): every ``httpx`` exception is translated here into a
``ChannelResult`` (``edge.delivery.outcome``), never raised past it.

The wake goes to ``route.url`` (as the body; or, with ``route.template``, the body that
template shapes from it: ``edge.intents.template``) with ``user-agent: mailslot/<version>``
and Standard Webhooks headers (``webhook-id`` = the
caller's delivery key, ``msg_<ULID>``: the same on every retry and unique across edges, so
the receiver can deduplicate on it; ``webhook-timestamp``; ``webhook-signature`` made by
the ``standardwebhooks`` library from the ``whsec_`` secret in
``environ[route.secret_env]``) and, if ``route.bearer_env`` is set, ``authorization:
Bearer``. A route without ``secret_env`` is sent unsigned (a bearer-only receiver such as
an OpenClaw gateway). Redirects are not followed and proxy or ``.netrc`` settings from the
environment are not used, so the credentials go to ``route.url`` and nowhere else. The
whole exchange is bounded by ``route.timeout``. Outcome:

* 2xx: ``ok``; a JSON object body with ``"outcome"``/``"tokens"`` is honoured as for exec.
* 410: ``error`` with ``disable``: the runtime asked to be left alone.
* 408, 429, 5xx, connection refused or reset, timeout: ``error`` with ``retry``
  (``detail["retry_after_s"]`` when the receiver sent ``Retry-After`` in seconds).
* any other status, a missing or unusable secret or token: ``error``, not retried.

Secrets never leave this module: the secret and the bearer token are read from
``environ`` at each attempt, never logged, and scrubbed from every string in ``detail``
(a receiver that echoes its request headers back in an error body included).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from edge.about import package_version
from edge.delivery.outcome import (
    STDOUT_MAX_BYTES,
    ChannelResult,
    elapsed_ms,
    read_report,
    wake_bytes,
)
from edge.intents.model import WebhookRoute
from edge.intents.template import render_template
from shared.errors import LocalError

#: Most of a refusing receiver's response body quoted in ``detail["error"]``.
EXCERPT_CHARS = 200
#: Statuses that say "not now" rather than "no": the delivery is tried again later.
RETRY_STATUSES = frozenset({408, 429})

#: Sent with every request, so a receiver's logs say who called.
USER_AGENT = f"mailslot/{package_version()}"

_REDACTED = "[redacted]"
#: A bearer token goes into a header verbatim: printable ASCII, no spaces.
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")


class _Refused(LocalError):
    """The route cannot be delivered as configured (a missing or unusable credential).
    Private control flow: never leaves this module (``deliver_webhook`` catches it and
    answers a refused delivery)."""

    code = "route_refused"


async def deliver_webhook(
    route: WebhookRoute,
    wake: dict[str, Any],
    delivery_id: str,
    environ: Mapping[str, str] = os.environ,
) -> ChannelResult:
    """POST ``wake`` to ``route.url`` once, signed for ``delivery_id`` (keep it the same
    across retries of one delivery), with credentials read from ``environ`` now."""
    began = time.monotonic()
    body = wake_bytes(wake if route.template is None
                      else render_template(route.template, wake, delivery_id))
    credentials: list[str] = []
    try:
        headers = _headers(route, body, delivery_id, environ, credentials)
    except _Refused as exc:
        return _scrubbed(ChannelResult(outcome="error", detail={
            "status": None, "error": str(exc), "duration_ms": elapsed_ms(began)}), credentials)
    try:
        async with asyncio.timeout(route.timeout):
            status, reason, response_headers, raw, truncated = await _post(route, body, headers)
    except (TimeoutError, httpx.TimeoutException):
        return _scrubbed(_transient(began, f"timed out after {route.timeout:g}s"), credentials)
    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        return _scrubbed(_transient(began, f"connection failed: {_describe(exc)}"), credentials)
    except httpx.HTTPError as exc:
        return _scrubbed(ChannelResult(outcome="error", detail={
            "status": None, "error": f"request failed: {_describe(exc)}",
            "duration_ms": elapsed_ms(began)}), credentials)
    return _scrubbed(_classify(began, status, reason, response_headers, raw, truncated,
                               credentials), credentials)


def _headers(route: WebhookRoute, body: bytes, delivery_id: str, environ: Mapping[str, str],
             credentials: list[str]) -> dict[str, str]:
    """The request headers; every credential read is appended to ``credentials`` (to be
    scrubbed from the result) before anything can fail with it."""
    now = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(now),
    }
    if route.secret_env is not None:
        secret = _credential(environ, route.secret_env, "secret_env", "signing secret",
                             credentials)
        if not secret.startswith("whsec_"):
            raise _Refused(f"environment variable {route.secret_env} (secret_env) does not "
                           "hold a Standard Webhooks secret (whsec_ followed by base64)")
        credentials.append(secret.removeprefix("whsec_"))
        try:
            signer = Webhook(secret)
        except (ValueError, EmptyWebhookSecretError, RuntimeError):
            raise _Refused(f"environment variable {route.secret_env} (secret_env) holds an "
                           "unusable whsec_ secret (not base64, or empty)") from None
        # sign() takes the wall clock as an aware UTC datetime (a naive one would be
        # read as UTC whatever the local zone); it signs "id.timestamp.body".
        headers["webhook-signature"] = signer.sign(
            delivery_id, datetime.fromtimestamp(now, UTC), body.decode())
    if route.bearer_env is not None:
        token = _credential(environ, route.bearer_env, "bearer_env", "bearer token",
                            credentials)
        if not _TOKEN_RE.fullmatch(token):
            raise _Refused(f"environment variable {route.bearer_env} (bearer_env) does not "
                           "hold a usable bearer token (printable ASCII, no spaces)")
        headers["authorization"] = f"Bearer {token}"
    return headers


def _credential(environ: Mapping[str, str], variable: str, setting: str, what: str,
                credentials: list[str]) -> str:
    """The value of ``variable`` (named by the route's ``setting``), noted in
    ``credentials``; a missing or empty one refuses the route."""
    value = environ.get(variable, "")
    if not value:
        raise _Refused(f"the {what} is missing: environment variable {variable} ({setting})"
                       " is not set")
    credentials.append(value)
    return value


async def _post(route: WebhookRoute, body: bytes, headers: dict[str, str]
                ) -> tuple[int, str, httpx.Headers, bytes, bool]:
    async with (
        httpx.AsyncClient(timeout=route.timeout, follow_redirects=False, trust_env=False)
        as client,
        client.stream("POST", route.url, content=body, headers=headers) as response,
    ):
        kept = bytearray()
        truncated = False
        async for chunk in response.aiter_bytes():
            kept += chunk
            if len(kept) > STDOUT_MAX_BYTES:
                truncated = True
                break
        return (response.status_code, response.reason_phrase, response.headers,
                bytes(kept[:STDOUT_MAX_BYTES]), truncated)


def _classify(began: float, status: int, reason: str, headers: httpx.Headers, raw: bytes,
              truncated: bool, credentials: list[str]) -> ChannelResult:
    detail: dict[str, Any] = {"status": status, "duration_ms": elapsed_ms(began)}
    if 200 <= status < 300:
        outcome, tokens, ignored = read_report(raw, truncated)
        if ignored:
            detail["body_ignored"] = ignored
        return ChannelResult(outcome=outcome or "ok", tokens=tokens, detail=detail)
    detail["error"] = _refusal(status, reason, raw, credentials)
    if status == 410:
        return ChannelResult(outcome="error", disable=True, detail=detail)
    if status in RETRY_STATUSES or 500 <= status < 600:
        retry_after = headers.get("retry-after", "").strip()
        if retry_after.isascii() and retry_after.isdigit():  # not "²": int() refuses it
            detail["retry_after_s"] = int(retry_after)
        return ChannelResult(outcome="error", retry=True, detail=detail)
    return ChannelResult(outcome="error", detail=detail)


def _refusal(status: int, reason: str, raw: bytes, credentials: list[str]) -> str:
    text = f"HTTP {status} {reason}".rstrip()
    if 300 <= status < 400:
        text += " (redirects are not followed)"
    # Redact before cutting: a cut through a secret would leave a piece no redaction finds.
    excerpt = _redact(" ".join(raw.decode("utf-8", errors="replace").split()), credentials)
    if excerpt:
        text += ": " + (excerpt if len(excerpt) <= EXCERPT_CHARS
                        else excerpt[:EXCERPT_CHARS] + "…")
    return text


def _transient(began: float, error: str) -> ChannelResult:
    return ChannelResult(outcome="error", retry=True, detail={
        "status": None, "error": error, "duration_ms": elapsed_ms(began)})


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _scrubbed(result: ChannelResult, credentials: list[str]) -> ChannelResult:
    """``result`` with every credential replaced in every string of ``detail``: the last
    word on "secrets never reach the activity log", whatever a receiver echoes back."""
    if not any(credentials):
        return result

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return _redact(value, credentials)
        if isinstance(value, dict):
            return {scrub(k): scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return ChannelResult(outcome=result.outcome, tokens=result.tokens, retry=result.retry,
                         disable=result.disable, detail=scrub(result.detail))


def _redact(text: str, credentials: list[str]) -> str:
    for secret in sorted({c for c in credentials if c}, key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    return text
