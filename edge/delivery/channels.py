"""Delivery channels: hand one wake to a runtime, once, and say how it went.

A channel makes exactly one attempt and turns everything that can happen into a
``ChannelResult``: it never raises for anything the runtime or the network does (a wake
that is not JSON is the caller's bug and does raise). Queueing, backoff, the daily token
budget and disabling a route are the caller's (``edge.delivery.deliverer``): it reads ``retry``,
``disable`` and ``tokens`` and keeps ``detail`` (JSON-able) for the activity log.

``exec`` runs ``route.argv`` the way ``edge.watches.commands`` runs a watch's command: an
argv, never a shell, so nothing in the wake or the environment is ever interpreted; in
its own session and process group, killed whole at ``route.timeout`` and, once the
command exits, whatever it left running in that group is killed too (a runtime that
wants to leave something behind must detach it itself). The wake is the command's stdin
(compact UTF-8 JSON), its environment is the edge's plus ``route.env`` plus the caller's
``MAILSLOT_*`` variables (later wins), its cwd ``route.cwd`` or the user's home. stderr
is discarded; stdout is read to its end but only the first ``STDOUT_MAX_BYTES`` are kept.
A command that ran is never retried for its outcome: running an agent twice costs more
than missing a wake. (Only a crash of the edge before the outcome was recorded runs it
again — ``edge.delivery.deliverer`` — with the same ``MAILSLOT_DELIVERY`` key, the caller's
idempotency key, so the runtime can tell.) Outcome:

* exit 0: ``ok``, unless stdout is a JSON object whose ``"outcome"`` is one of
  ``OUTCOMES`` (that wins). Anything else on stdout is ignored and
  ``detail["stdout_ignored"]`` says why.
* exit non-zero (or killed by a signal): ``error``.
* ``"tokens"`` (a whole number >= 0) is honoured either way: spent is spent.

``webhook`` POSTs the wake to ``route.url`` with Standard Webhooks headers
(``webhook-id`` = the caller's delivery key, ``msg_<ULID>``: the same on every retry and
unique across edges, so the receiver can deduplicate on it; ``webhook-timestamp``;
``webhook-signature`` made by the ``standardwebhooks`` library from the ``whsec_`` secret
in ``environ[route.secret_env]``) and, if
``route.bearer_env`` is set, ``authorization: Bearer``. A route without ``secret_env``
is sent unsigned (a bearer-only receiver such as an OpenClaw gateway). Redirects are not
followed and proxy or ``.netrc`` settings from the environment are not used, so the
credentials go to ``route.url`` and nowhere else. The whole exchange is bounded by
``route.timeout``. Outcome:

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
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from edge.intents.model import ExecRoute, WebhookRoute
from edge.store.deliveries import OUTCOMES
from edge.watches.commands import _Capture, _drain, _kill_group, _kill_spawned

#: What a runtime may report it did with a wake (``mailslot outcome`` takes the same).
#: Most of a command's stdout, or of a webhook's response body, that is kept and parsed.
STDOUT_MAX_BYTES = 64 * 1024
#: Most of a refusing receiver's response body quoted in ``detail["error"]``.
EXCERPT_CHARS = 200
#: Statuses that say "not now" rather than "no": the delivery is tried again later.
RETRY_STATUSES = frozenset({408, 429})

_REDACTED = "[redacted]"
#: A bearer token goes into a header verbatim: printable ASCII, no spaces.
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class ChannelResult:
    """One attempt. ``outcome`` is one of ``OUTCOMES``; ``tokens`` counts against the daily
    budget; ``retry``: a transient failure, try again later; ``disable``: the runtime
    answered 410 Gone, disable the route. ``detail`` is JSON-able and free of secrets:
    ``exit_code`` or ``status``, ``duration_ms``, ``error``, ``stdout_ignored``…"""

    outcome: str
    tokens: int = 0
    retry: bool = False
    disable: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


def wake_bytes(wake: dict[str, Any]) -> bytes:
    """The wake as sent: compact UTF-8 JSON. Raises ``TypeError``/``ValueError`` for a
    document that is not JSON (NaN included): that is the caller's bug."""
    return json.dumps(wake, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


# -- exec -----------------------------------------------------------------------------


async def deliver_exec(route: ExecRoute, wake: dict[str, Any], env: dict[str, str], *,
                       on_start: Callable[[int], None] | None = None) -> ChannelResult:
    """Run ``route.argv`` once with ``wake`` on stdin and ``env`` (the ``MAILSLOT_*``
    variables) on top of the edge's environment and ``route.env``. Never longer than
    ``route.timeout``; if cancelled, the command's process group is killed before the
    cancel goes on. Never sets ``retry``. ``on_start`` gets the command's pid (its
    process group's id) as soon as it runs, before it is fed the wake."""
    began = time.monotonic()
    stdin = wake_bytes(wake)
    cwd = os.path.expanduser(route.cwd) if route.cwd else str(Path.home())
    if not os.path.isabs(cwd):
        return _exec_failed(began, None, f"cannot start: cwd {cwd!r} is not absolute")
    capture = _Capture(STDOUT_MAX_BYTES)
    try:
        proc = await _spawn(route.argv, cwd, {**os.environ, **route.env, **env})
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in argv or env
        filename = getattr(exc, "filename", None)
        what = filename if filename is not None else route.argv[0]
        why = getattr(exc, "strerror", None) or exc
        return _exec_failed(began, None, f"cannot start: {what}: {why}")
    try:
        if on_start is not None:
            on_start(proc.pid)
        await asyncio.wait_for(_exchange(proc, stdin, capture), route.timeout)
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        return _exec_failed(began, None, "timed out", timeout_s=route.timeout)
    except BaseException:  # cancelled: leave nothing running, and reap it
        _kill_group(proc)
        with contextlib.suppress(asyncio.CancelledError):  # a second cancel: still re-raise
            await asyncio.shield(proc.wait())
        raise
    _kill_group(proc)  # whatever it left behind in its group
    return _exec_result(began, proc.returncode, capture)


async def _spawn(argv: list[str], cwd: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    # As edge.watches.commands._spawn, with the wake on a pipe and the runtime's environment.
    spawning = asyncio.ensure_future(asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=cwd,
        env=env,
        start_new_session=True,
    ))
    try:
        return await asyncio.shield(spawning)
    except asyncio.CancelledError:
        spawning.add_done_callback(_kill_spawned)
        raise


async def _exchange(proc: asyncio.subprocess.Process, stdin: bytes, capture: _Capture) -> None:
    # Feed and drain at once: a runtime that prints before it has read all of a large
    # wake would otherwise wait on us while we wait on it.
    await asyncio.gather(_feed(proc, stdin), _drain(proc, capture))


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    # A command that exits without reading its stdin is its own business, not a failure.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        try:
            proc.stdin.write(data)
            await proc.stdin.drain()
        finally:
            proc.stdin.close()


def _exec_failed(began: float, exit_code: int | None, error: str, **extra: Any) -> ChannelResult:
    return ChannelResult(outcome="error", detail={
        "exit_code": exit_code, "error": error, "duration_ms": _ms(began), **extra})


def _exec_result(began: float, code: int | None, capture: _Capture) -> ChannelResult:
    outcome, tokens, ignored = _report(bytes(capture.head), capture.size > STDOUT_MAX_BYTES)
    detail: dict[str, Any] = {"exit_code": code, "duration_ms": _ms(began),
                              "stdout_bytes": capture.size}
    if ignored:
        detail["stdout_ignored"] = ignored
    if code != 0:
        detail["error"] = (f"killed by signal {-code}" if code is not None and code < 0
                           else f"exited with status {code}")
        return ChannelResult(outcome="error", tokens=tokens, detail=detail)
    return ChannelResult(outcome=outcome or "ok", tokens=tokens, detail=detail)


# -- webhook --------------------------------------------------------------------------


class _Refused(Exception):
    """The route cannot be delivered as configured (a missing or unusable credential)."""


async def deliver_webhook(
    route: WebhookRoute,
    wake: dict[str, Any],
    delivery_id: str,
    environ: Mapping[str, str] = os.environ,
) -> ChannelResult:
    """POST ``wake`` to ``route.url`` once, signed for ``delivery_id`` (keep it the same
    across retries of one delivery), with credentials read from ``environ`` now."""
    began = time.monotonic()
    body = wake_bytes(wake)
    credentials: list[str] = []
    try:
        headers = _headers(route, body, delivery_id, environ, credentials)
    except _Refused as exc:
        return _scrubbed(ChannelResult(outcome="error", detail={
            "status": None, "error": str(exc), "duration_ms": _ms(began)}), credentials)
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
            "duration_ms": _ms(began)}), credentials)
    return _scrubbed(_classify(began, status, reason, response_headers, raw, truncated,
                               credentials), credentials)


def _headers(route: WebhookRoute, body: bytes, delivery_id: str, environ: Mapping[str, str],
             credentials: list[str]) -> dict[str, str]:
    """The request headers; every credential read is appended to ``credentials`` (to be
    scrubbed from the result) before anything can fail with it."""
    now = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": delivery_id,
        "webhook-timestamp": str(now),
    }
    if route.secret_env is not None:
        secret = environ.get(route.secret_env, "")
        if not secret:
            raise _Refused(f"the signing secret is missing: environment variable "
                           f"{route.secret_env} (secret_env) is not set")
        credentials.append(secret)
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
        token = environ.get(route.bearer_env, "")
        if not token:
            raise _Refused(f"the bearer token is missing: environment variable "
                           f"{route.bearer_env} (bearer_env) is not set")
        credentials.append(token)
        if not _TOKEN_RE.fullmatch(token):
            raise _Refused(f"environment variable {route.bearer_env} (bearer_env) does not "
                           "hold a usable bearer token (printable ASCII, no spaces)")
        headers["authorization"] = f"Bearer {token}"
    return headers


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
    detail: dict[str, Any] = {"status": status, "duration_ms": _ms(began)}
    if 200 <= status < 300:
        outcome, tokens, ignored = _report(raw, truncated)
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
        "status": None, "error": error, "duration_ms": _ms(began)})


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


# -- shared ---------------------------------------------------------------------------


def _report(raw: bytes, truncated: bool) -> tuple[str | None, int, str | None]:
    """What a runtime reported on stdout or in a response body: ``(outcome or None,
    tokens, why something was ignored or None)``. Empty output reports nothing."""
    if truncated:
        return None, 0, f"larger than {STDOUT_MAX_BYTES} bytes"
    if not raw.strip():
        return None, 0, None
    try:
        answer = json.loads(raw)
    except (ValueError, RecursionError):
        return None, 0, "not JSON"
    if not isinstance(answer, dict):
        return None, 0, "not a JSON object"
    ignored: list[str] = []
    outcome = answer.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        ignored.append(f"outcome {str(outcome)[:40]!r} is not one of {', '.join(OUTCOMES)}")
        outcome = None
    tokens = answer.get("tokens", 0)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        ignored.append("tokens is not a whole number >= 0")
        tokens = 0
    return outcome, tokens, "; ".join(ignored) or None


def _ms(began: float) -> float:
    return round((time.monotonic() - began) * 1000, 1)
