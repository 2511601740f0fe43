"""Relay errors. Each carries the HTTP status, WebSocket close code and machine-readable
code it maps to; ``relay.app`` turns any of them (or a ``shared.errors.RemoteProtocolError``)
into ``{"error": code, "message": text}`` at one place, ``relay.session`` into an error
frame and a close.

``RelayError`` is the relay's root; every child also derives from exactly one branch of
``shared.errors`` (the whole tree is drawn there)::

    RelayError                   500  internal (close 1011)
    │   refusals of a request: the client is at fault (RemoteError)
    ├── Unauthorized             401  missing_token / invalid_token / token_expired / bad_auth
    │                                 / stale_request / replayed_request (a signed request's
    │                                 nonce, used before)
    ├── Forbidden                403  recipient_not_allowed / type_not_allowed / untrusted_signer
    │                                 / account_disabled (close 4403 on a link) / wrong_account
    │                                 / not_admin (a signed admin request by no admin identity)
    ├── NotFound                 404  unknown_identity / unknown_account / unknown_token
    │                                 / unknown_enrollment
    ├── Conflict                 409  exists / token_used
    ├── UnsupportedMediaType     415  unsupported_media_type (a body that is not JSON)
    ├── QueueFull                429  queue_full (the recipient's per-priority cap)
    ├── RateLimited              429  rate_limited (the account's or token's publish rate;
    │                                 carries retry_after, sent as Retry-After)
    ├── QuotaExceeded            429  quota_exceeded (the plan's max_identities, max_pending,
    │                                 max_pending_per_identity)
    ├── TooManyEdges             429  edges_exceeded: the plan's max_connected_edges (close 4429
    │                                 on a link, after an error frame saying when to retry)
    ├── HookRequestInvalid       400  missing_header / malformed_header / malformed_body: a
    │                                 webhook delivery without what its source always sends
    ├── HookUnverified           401  bad_signature / stale_timestamp: a webhook delivery
    │                                 that no secret of its hook verifies, or replayed late
    ├── HookGone                 410  hook_deleted: a delivery to a deleted hook
    │   failures of ours (LocalError)
    ├── StorageFull              507  storage_full (the stream's max_bytes, all accounts)
    ├── ByteQuotaExceeded        507  quota_bytes_exceeded (the plan's max_pending_bytes,
    │                                 max_pending_bytes_per_identity: that account only)
    ├── StoreUnavailable         503  store_unavailable (JetStream did not acknowledge)
    ├── RelayFull                503  relay_full: this process has its --max-links links
    │                                 (a handshake refused with Retry-After)
    ├── ConfigInvalid                 config_syntax / config_invalid / config_unreadable: the
    │                                 --config file (exit 2)
    ├── StartupFailed                 port_in_use / store_unavailable / ...: a server could not
    │                                 start; nothing was left running (exit 6)
    └── StoreLost                     store_lost: the embedded nats-server died and could not be
                                      restarted in time; the relay exits (exit 7)

The last two are never HTTP answers: they end a command. A second relay on the same data
folder is refused with ``shared.errors.AlreadyRunning`` (exit 5), raised by
``shared.host.lockfile``.

Two more classes are not under ``RelayError``: neither is ever an HTTP answer, and
neither leaves the relay (``relay.store`` raises the first and ``relay.session`` catches
it; the session raises the second to end a link)::

    LocalError
    └── ConsumerGone                  consumer_gone: a pull consumer vanished (reaped, taken
                                      over, lost in a restart); the session resets it
    RemoteError
    └── SessionClosed                 auth_timeout / bad_auth / replaced / ...: the session
                                      ends the edge's link with its close code, no error frame

The constructor and ``to_dict`` are ``shared.errors.MailslotError``'s: a class here only
sets its status, code, close code and exit code (``SessionClosed`` also takes the close
code and reason it ends the link with).
"""

from __future__ import annotations

from typing import Any

from shared.errors import ExitCode, LocalError, MailslotError, RemoteError


class RelayError(MailslotError):
    """Root of the relay's errors. Never raised itself: its defaults are what an error
    without a mapping of its own would be answered with (500, ``internal``, 1011)."""

    status: int = 500
    code: str = "internal"
    close_code: int = 1011
    exit_code: int = ExitCode.ERROR


class Unauthorized(RelayError, RemoteError):
    status, code, close_code = 401, "invalid_token", 4401


class Forbidden(RelayError, RemoteError):
    status, code, close_code = 403, "forbidden", 4403


class NotFound(RelayError, RemoteError):
    status, code, close_code = 404, "not_found", 4404


class Conflict(RelayError, RemoteError):
    status, code = 409, "exists"


class UnsupportedMediaType(RelayError, RemoteError):
    status, code = 415, "unsupported_media_type"


class QueueFull(RelayError, RemoteError):
    status, code = 429, "queue_full"


class RetryLater:
    """Mixed into a refusal that says when to come back: ``retry_after`` whole seconds
    (at least 1), in the body and as ``Retry-After`` (``relay.app.error_response``). Not
    an error class itself: each user keeps its own place in the tree."""

    def __init__(self, message: str = "", retry_after: int = 1, *,
                 code: str | None = None) -> None:
        super().__init__(message, code=code)  # type: ignore[call-arg]  # the error's
        self.retry_after = max(1, retry_after)

    def details(self) -> dict[str, Any]:
        return {"retry_after": self.retry_after}


def answer_headers(exc: Exception) -> dict[str, str] | None:
    """The HTTP headers a refusal carries besides its body: ``Retry-After`` for one that
    says when to come back (``RetryLater``); None for the others."""
    return {"Retry-After": str(exc.retry_after)} if isinstance(exc, RetryLater) else None


class RateLimited(RetryLater, RelayError, RemoteError):
    """Over a publish rate: retry after ``retry_after`` whole seconds (``Retry-After``)."""

    status, code = 429, "rate_limited"


class QuotaExceeded(RelayError, RemoteError):
    status, code = 429, "quota_exceeded"


class TooManyEdges(RelayError, RemoteError):
    """The account has its plan's ``max_connected_edges`` links open: the link is refused
    at auth (an ``error`` frame, then close 4429); the edge retries later."""

    status, code, close_code = 429, "edges_exceeded", 4429


class ByteQuotaExceeded(RelayError, LocalError):
    """The account (or the recipient) has its plan's pending bytes queued: new interrupts
    wait for its edges to take some (retry later with the same id); nothing is dropped."""

    status, code = 507, "quota_bytes_exceeded"


class StorageFull(RelayError, LocalError):
    """The interrupt stream holds its ``max_bytes``: new interrupts wait for the edges
    to drain it (a client may retry later); nothing stored is dropped."""

    status, code = 507, "storage_full"


class ConfigInvalid(RelayError, LocalError):
    """The relay's ``--config`` file cannot be read or parsed; nothing was started."""

    status, code, exit_code = 500, "config_invalid", ExitCode.USAGE


class StoreUnavailable(RelayError, LocalError):
    status, code, close_code = 503, "store_unavailable", 1013


class RelayFull(RetryLater, RelayError, LocalError):
    """This relay process has its ``--max-links`` links open: a new handshake gets HTTP
    503 with ``Retry-After`` (a jittered hint) instead of the upgrade, so that a
    reconnect storm beyond its capacity spreads out, or moves to another relay behind the
    balancer, instead of exhausting the process's file descriptors."""

    status, code, close_code = 503, "relay_full", 1013


class StartupFailed(RelayError, LocalError):
    """A server could not start; everything it had started was stopped again."""

    status, code, exit_code = 503, "startup_failed", ExitCode.STARTUP_FAILED


class StoreLost(RelayError, LocalError):
    """The embedded nats-server exited and did not come back within the restart timeout."""

    status, code, exit_code = 503, "store_lost", ExitCode.STORE_LOST


class ConsumerGone(LocalError):
    """The per-connection consumer vanished (reaped, deleted by a takeover, or lost in a
    server restart). The caller must ``reset`` and try again. Never leaves the relay: the
    session's pump catches it."""

    code = "consumer_gone"


class SessionClosed(RemoteError):
    """The relay ends the edge's link: WebSocket close ``close_code`` with ``code`` as the
    reason (``auth_timeout``, ``bad_auth``, ``replaced``, ...), and no error frame."""

    code = "session_closed"
    close_code: int

    def __init__(self, close_code: int, code: str) -> None:
        super().__init__(f"link closed: {code}", code=code)
        self.close_code = close_code


class HookUnverified(RelayError, RemoteError):
    """A delivery to a hook (``/v1/hooks/<id>``) whose signature does not verify with any
    of the hook's secrets (``bad_signature``), or whose signed timestamp is outside its
    source's tolerance (``stale_timestamp``: only said of a signature that verified).
    Nothing is stored; ``relay.hooks.verify`` raises it."""

    status, code = 401, "bad_signature"


class HookRequestInvalid(RelayError, RemoteError):
    """A delivery to a hook without a header its source always sends (``missing_header``),
    with one that does not parse (``malformed_header``), or with a body that lacks what
    the source always puts in it (``malformed_body``). Nothing is stored."""

    status, code = 400, "missing_header"


class HookGone(RelayError, RemoteError):
    """A delivery to a deleted hook: 410 ``hook_deleted`` (a provider stops retrying)."""

    status, code = 410, "hook_deleted"
