"""The one error tree of mailslot, split by who is at fault (as h11 does).

Every exception class the project defines derives from ``MailslotError``, and exactly one
of its two branches says whose fault it is: ``LocalError`` (this side: a misused API, the
machine's setup, a store or process of ours failing) or ``RemoteError`` (input from
outside: a peer's frames, an HTTP body or header, a relay's refusal). The relay's root,
``relay.errors.RelayError``, cuts across that split: it holds what the relay answers with
(500 ``internal``, close 1011, unless a child says otherwise) and each of its children also
derives from one branch. The edge's root, ``edge.errors.EdgeError``, is a ``LocalError``.
The whole tree, with the HTTP status, ``close`` code or ``exit`` code each maps to (``·``
marks a class that also derives from the package root named after it)::

    MailslotError                  code · message · status · close_code · exit_code · to_dict()
    ├── LocalError                 this side is at fault; status and close_code are None
    │   ├── LocalProtocolError     this side misused the protocol (a bug here)
    │   ├── AlreadyRunning         another process owns the folder (shared.host)    exit 5
    │   ├── StoreUnavailable       · RelayError: JetStream did not acknowledge        503
    │   ├── RelayFull              · RelayError: a relay process at its --max-links   503
    │   ├── StartupFailed          · RelayError: a server could not start            exit 6
    │   ├── StoreLost              · RelayError: the embedded nats-server is gone    exit 7
    │   ├── StorageFull            · RelayError: the stream holds its max_bytes       507
    │   ├── ByteQuotaExceeded      · RelayError: an account holds its plan's bytes    507
    │   ├── ConfigInvalid          · RelayError: the relay's --config file is bad    exit 2
    │   ├── ConsumerGone           relay: a pull consumer vanished; the session resets it
    │   ├── BadLine                edge.store.activityline: a log line that does not parse
    │   ├── EdgeError              the edge's local state
    │   │   ├── EdgeConfigError    edge.json missing, not JSON, or a field is invalid
    │   │   ├── KeyFileError       identity key file unsafe, unreadable or not a key
    │   │   ├── NotInitialized     no identity yet: run ``mailslot edge init``
    │   │   ├── UsageError         a bad command line                                exit 2
    │   │   ├── InboxError         the SQLite inbox refused an operation
    │   │   │   ├── NotPending     ack/nack of an item that is not pending
    │   │   │   └── ClaimedByOther another owner holds a live claim on the item
    │   │   ├── ActivityLogError   the activity log cannot be written or trusted
    │   │   ├── NoRecord           no activity entry for that interrupt
    │   │   ├── IntentFileError    intents.toml unreadable or invalid, with its line
    │   │   ├── InvalidIntent      an intent from the command line is not valid
    │   │   ├── DuplicateIntent    intent add with an id the file already has
    │   │   ├── UnknownIntent      no intent with that id
    │   │   ├── InvalidWatch       a watch from the command line is not valid
    │   │   ├── DuplicateWatch     watch add with an id the file already has
    │   │   ├── UnknownWatch       no watch with that id
    │   │   ├── WatchDefinitionError  a watch that cannot be watched as defined
    │   │   ├── FsWatchError       the kernel's change reports fail for a folder
    │   │   ├── InvalidArguments   an MCP tool called off its schema
    │   │   ├── ServiceError       `mailslot service` could not do it
    │   │   │   ├── NeedsRoot      a --system install or uninstall, not as root
    │   │   │   └── ServiceManagerFailed  systemctl/launchctl refused or missing
    │   │   ├── DeliveryError      `mailslot deliveries` refused (nothing changed)
    │   │   │   ├── UnknownDelivery
    │   │   │   ├── NotRetryable   only a delivery that gave up can be retried
    │   │   │   ├── NotDroppable   a running delivery cannot be dropped
    │   │   │   └── RouteDisabled  the intent's route is disabled (410): resume it
    │   │   ├── HookInputError     a Claude Code hook's stdin is not what it documents
    │   │   ├── ClaudeSettingsError  a Claude Code settings file is not a JSON object
    │   │   └── ApprovalError      an approval refused
    │   │       ├── InvalidAction  not an action pattern
    │   │       ├── UnknownApproval
    │   │       ├── AlreadyDecided
    │   │       ├── WiderAction
    │   │       ├── InvalidRequest
    │   │       └── InvalidPermissionRequest  a Claude Code permission prompt unread
    │   └── (private control flow, caught in their module: edge.intents.edit,
    │        edge.delivery.webhook)
    └── RemoteError                input from outside is at fault
        ├── RemoteProtocolError    the peer sent something we refuse                 400
        │   ├── MalformedInput     not JSON, not the expected document               400
        │   ├── InvalidToken       identity/subject/name outside the alphabet         422
        │   ├── InvalidEnvelope    envelope fields that break a rule, unknown         422
        │   ├── Expired            envelope past its expires_at                       422
        │   ├── TooLarge           payload, envelope or frame over its cap            413
        │   │   └── PayloadCapExceeded  the payload, inside validation (shared.envelope) 413
        │   ├── LimitExceeded      too deep, non-finite or unsafe number, bad text,   422
        │   │                      created_at in the future (shared.limits)
        │   ├── BadSignature       signature does not verify                          401
        │   ├── UntrustedSigner    signer not trusted for this recipient              403
        │   ├── WrongRecipient     envelope addressed to someone else                 403
        │   ├── InvalidIdentity    identity document not self-certifying              422
        │   ├── SealError          sealed payload cannot be opened                    422
        │   └── LinkError          WebSocket frame out of order or unknown     close 4400
        ├── Unauthorized           · RelayError: no, bad or replayed credentials      401
        ├── Forbidden              · RelayError: not allowed for this recipient       403
        ├── NotFound               · RelayError: unknown identity or account          404
        ├── Conflict               · RelayError: exists, or a token already used      409
        ├── UnsupportedMediaType   · RelayError: a body that is not JSON              415
        ├── QueueFull              · RelayError: the recipient's per-priority cap     429
        ├── RateLimited            · RelayError: over a publish rate (retry_after)    429
        ├── QuotaExceeded          · RelayError: over a plan's identities or pending  429
        ├── TooManyEdges           · RelayError: over a plan's connected edges        429
        ├── HookRequestInvalid     · RelayError: a webhook without its source's headers 400
        ├── HookUnverified         · RelayError: a webhook signature that does not verify 401
        ├── HookGone               · RelayError: a delivery to a deleted hook         410
        ├── SessionClosed          relay: the session ends an edge's link (its close code)
        ├── RelayRefused           edge: the relay said no (its status)
        ├── RelayUnreachable       edge: the relay did not answer
        └── LinkClosed             edge: the relay closed or refused the link

Each class is defined in its package's errors module (``shared.errors``, ``relay.errors``,
``edge.errors``), so that importing an error never imports the code that raises it; the
only exceptions are ``BadLine`` and the private control-flow classes, which stay in the
activity log's modules or the one module that raises and catches them.

Every error carries ``code`` (machine-readable, stable), ``message``, ``status`` (the
HTTP status it maps to, or None), ``close_code`` (the WebSocket close code, or None) and
``exit_code`` (what ``mailslot`` exits with when the error ends a command: ``ExitCode``).
Adapters (the relay's HTTP and WebSocket handlers, the edge link, the CLI) turn these into
answers at one boundary; nothing else needs to know the mapping. Library exceptions
(nats, starlette, websockets, httpx, sqlite3) are translated into this tree by the one
module that imports the library.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """What ``mailslot`` exits with (the README, "Commands"). 3 and 4 belong to
    ``approve request`` alone."""

    OK = 0
    ERROR = 1  # a refusal or failure, printed as ``mailslot: CODE: message``
    USAGE = 2  # bad command line (unknown flag, invalid value)
    APPROVAL_PENDING = 3  # approve request: not decided yet
    APPROVAL_REFUSED = 4  # approve request: denied, rejected or expired
    ALREADY_RUNNING = 5  # another process owns this relay data folder or edge home
    STARTUP_FAILED = 6  # a server could not start (port in use, store unavailable)
    STORE_LOST = 7  # relay: the embedded nats-server could not be brought back
    INTERRUPTED = 130  # a second Ctrl-C forced the process out


class MailslotError(Exception):
    """Root of every error mailslot raises. Catch this at a boundary and answer with
    ``to_dict()`` and the ``status``, ``close_code`` or ``exit_code`` the error carries.

    Subclasses set the class attributes; ``code`` may be overridden per instance (a more
    specific reason, e.g. ``malformed_json`` for a ``MalformedInput``)."""

    #: Machine-readable and stable: what ``{"error": ...}`` and ``mailslot: CODE:`` say.
    code: str = "error"
    #: The HTTP status this error is answered with, where it has one.
    status: int | None = None
    #: The WebSocket close code it ends a link with, where it has one.
    close_code: int | None = None
    #: What the ``mailslot`` command exits with when this error ends it.
    exit_code: int = ExitCode.ERROR

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        if code is not None:
            self.code = code
        #: Human-readable; names what is wrong and what to do. Never key material.
        self.message = message or self.code
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of an error answer: ``{"error": code, "message": text}``, plus
        what ``details()`` adds (e.g. ``retry_after``)."""
        return {"error": self.code, "message": self.message, **self.details()}

    def details(self) -> dict[str, Any]:
        """Machine-readable fields a subclass adds to its answer's body (none here)."""
        return {}


class LocalError(MailslotError):
    """This side is at fault: an API misused, the local machine's setup, or a store or
    process of ours failing. Fix the setup or the code; retrying the same input is useless
    unless the machine's state changes."""


class RemoteError(MailslotError):
    """Input from outside is at fault: a peer's frames, an HTTP body or header, a relay's
    refusal or silence. Refuse it (or report it); change nothing."""


class LocalProtocolError(LocalError):
    """This side tried something the protocol forbids: a programming error, not input."""

    code = "local_protocol_error"


class AlreadyRunning(LocalError):
    """Another live process holds the folder's lock (``shared.host.lockfile``): a relay on
    the same data folder, or a daemon on the same edge home."""

    status, code, exit_code = 409, "already_running", ExitCode.ALREADY_RUNNING
    #: The pid written in the lock file by its holder (None if it could not be read).
    pid: int | None = None


class RemoteProtocolError(RemoteError):
    """Input from the outside breaks a protocol rule. Refuse it; change nothing."""

    status: int = 400
    code: str = "bad_request"
    close_code: int = 4400


class MalformedInput(RemoteProtocolError):
    status, code = 400, "malformed"


class InvalidToken(RemoteProtocolError, ValueError):
    """Also a ``ValueError`` so that pydantic validators report it with the field name."""

    status, code = 422, "invalid_token"


class InvalidEnvelope(RemoteProtocolError):
    status, code = 422, "invalid_envelope"


class Expired(RemoteProtocolError):
    status, code = 422, "expired"


class TooLarge(RemoteProtocolError):
    status, code, close_code = 413, "too_large", 1009


class LimitExceeded(RemoteProtocolError):
    """A value outside ``shared.limits``: ``too_deep``, ``non_finite_number``,
    ``number_out_of_range``, ``invalid_string``, ``clock_skew``."""

    status, code = 422, "limit_exceeded"


class BadSignature(RemoteProtocolError):
    status, code, close_code = 401, "bad_signature", 4401


class UntrustedSigner(RemoteProtocolError):
    status, code, close_code = 403, "untrusted_signer", 4403


class WrongRecipient(RemoteProtocolError):
    status, code, close_code = 403, "wrong_recipient", 4403


class InvalidIdentity(RemoteProtocolError):
    status, code = 422, "invalid_identity"


class SealError(RemoteProtocolError):
    status, code = 422, "seal_error"


class LinkError(RemoteProtocolError):
    status, code, close_code = 400, "link_error", 4400


class PayloadCapExceeded(TooLarge, ValueError):
    """Raised inside validation so that the caller can answer 413, not 422. Also a
    ``ValueError``: pydantic reports only those (with the field) from a validator."""

    code = "payload_too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"payload is larger than {max_bytes} bytes")
