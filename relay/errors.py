"""Relay errors. Each carries the HTTP status and the machine-readable code it maps to;
``relay.app`` turns any of them (or a ``shared.errors.RemoteProtocolError``) into
``{"error": code, "message": text}`` at one place.

::

    RelayError
    ├── Unauthorized        401  missing_token / invalid_token / bad_auth / stale_request
    │                            / replayed_request (a signed request's nonce, used before)
    ├── Forbidden           403  recipient_not_allowed / untrusted_signer
    ├── NotFound            404  unknown_identity / unknown_account
    ├── Conflict            409  exists / token_used
    ├── UnsupportedMediaType 415 unsupported_media_type (a body that is not JSON)
    ├── QueueFull           429  queue_full (the recipient's per-priority cap)
    ├── StoreUnavailable    503  store_unavailable (JetStream did not acknowledge)
    ├── AlreadyRunning           already_running: another process owns the folder (exit 5)
    ├── StartupFailed            port_in_use / store_unavailable / ...: a server could not
    │                            start; nothing was left running (exit 6)
    └── StoreLost                store_lost: the embedded nats-server died and could not be
                                 restarted in time; the relay exits (exit 7)

The last three are never HTTP answers: they end a command. ``ExitCode`` is the one table
of the ``mailslot`` command's exit codes (documented in the README, "Commands"); every
error carries the code its command exits with.
"""

from __future__ import annotations

from enum import IntEnum

from shared.errors import MailslotError


class ExitCode(IntEnum):
    """What ``mailslot`` exits with. 3 and 4 belong to ``approve request`` alone."""

    OK = 0
    ERROR = 1  # a refusal or failure, printed as ``mailslot: CODE: message``
    USAGE = 2  # bad command line (unknown flag, invalid value)
    APPROVAL_PENDING = 3  # approve request: not decided yet
    APPROVAL_REFUSED = 4  # approve request: denied, rejected or expired
    ALREADY_RUNNING = 5  # another process owns this relay data folder or edge home
    STARTUP_FAILED = 6  # a server could not start (port in use, store unavailable)
    STORE_LOST = 7  # relay: the embedded nats-server could not be brought back
    INTERRUPTED = 130  # a second Ctrl-C forced the process out


class RelayError(MailslotError):
    status: int = 500
    code: str = "internal"
    close_code: int = 1011
    exit_code: int = ExitCode.ERROR

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


class Unauthorized(RelayError):
    status, code, close_code = 401, "invalid_token", 4401


class Forbidden(RelayError):
    status, code, close_code = 403, "forbidden", 4403


class NotFound(RelayError):
    status, code, close_code = 404, "not_found", 4404


class Conflict(RelayError):
    status, code = 409, "exists"


class UnsupportedMediaType(RelayError):
    status, code = 415, "unsupported_media_type"


class QueueFull(RelayError):
    status, code = 429, "queue_full"


class StoreUnavailable(RelayError):
    status, code, close_code = 503, "store_unavailable", 1013


class AlreadyRunning(RelayError):
    """Another live process holds the folder's lock (``shared.host.lockfile``)."""

    status, code, exit_code = 409, "already_running", ExitCode.ALREADY_RUNNING
    #: The pid written in the lock file by its holder (None if it could not be read).
    pid: int | None = None


class StartupFailed(RelayError):
    """A server could not start; everything it had started was stopped again."""

    status, code, exit_code = 503, "startup_failed", ExitCode.STARTUP_FAILED


class StoreLost(RelayError):
    """The embedded nats-server exited and did not come back within the restart timeout."""

    status, code, exit_code = 503, "store_lost", ExitCode.STORE_LOST
