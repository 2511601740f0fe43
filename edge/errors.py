"""The edge's whole error tree, under ``shared.errors``' root: the faults of its local
state (config, keys, inbox, files, approvals), under ``LocalError``, and the few about
input from outside (the relay's answers and link), under ``RemoteError``.

Every public error class the edge raises is defined here, so this module is a leaf: it
imports from ``shared`` only, and any edge module can import it without a cycle::

    LocalError
    ├── EdgeError           edge_error: the edge's local state
    │   ├── EdgeConfigError config_error: edge.json missing, not JSON, or a field is invalid
    │   ├── KeyFileError    key_file_error: identity key file unsafe (mode), unreadable or not a key
    │   ├── NotInitialized  not_initialized: no identity yet: the user must run ``mailslot edge init``
    │   ├── UsageError      usage: a bad command line (the CLI's parser raises it; exit 2)
    │   ├── InboxError      inbox_error: the SQLite inbox refused an operation (locked, corrupt, newer)
    │   │   ├── NotPending      not_pending: ack/nack of an item unknown or no longer pending
    │   │   └── ClaimedByOther  claimed_by_other: another puller holds a live claim on the item
    │   ├── ActivityLogError    activity_log_error: the activity log cannot be written or trusted
    │   ├── NoRecord            no_record: no activity entry for that interrupt
    │   ├── IntentFileError     intent_file_error: intents.toml unreadable or invalid, with its line
    │   ├── InvalidIntent       invalid_intent: an intent from the command line is not valid
    │   ├── DuplicateIntent     duplicate_intent: intent add with an id the file already has
    │   ├── UnknownIntent       unknown_intent: no intent with that id
    │   ├── InvalidWatch        invalid_watch: a watch from the command line is not valid
    │   ├── DuplicateWatch      duplicate_watch: watch add with an id the file already has
    │   ├── UnknownWatch        unknown_watch: no watch with that id
    │   ├── WatchDefinitionError  invalid_watch: a watch that cannot be watched as defined
    │   ├── FsWatchError        fswatch_failed: the kernel's change reports fail for a folder
    │   ├── InvalidArguments    invalid_arguments: an MCP tool called off its schema
    │   ├── DeliveryError       delivery_error: `mailslot deliveries` refused; nothing changed
    │   │   ├── UnknownDelivery     unknown_delivery: no delivery with that key or number
    │   │   ├── NotRetryable        not_retryable: pending, running or delivered already
    │   │   ├── NotDroppable        not_droppable: running, or delivered already
    │   │   └── RouteDisabled       route_disabled: its route is disabled (a 410): resume it
    │   ├── HookInputError      hook_input: what Claude Code gave a hook is not usable
    │   ├── ClaudeSettingsError claude_settings: a Claude Code settings file cannot be edited
    │   ├── ServiceError        service_error: `mailslot service` could not do it
    │   │   ├── NeedsRoot           needs_root: a --system install or uninstall, not as root
    │   │   └── ServiceManagerFailed  service_manager_failed: systemctl/launchctl refused
    │   └── ApprovalError       approval_error: an approval refused; nothing was changed
    │       ├── InvalidAction       invalid_action: not an action pattern
    │       ├── UnknownApproval     unknown_approval: no approval with that id
    │       ├── AlreadyDecided      already_decided: the approval is decided already
    │       ├── WiderAction         wider_action: an edit may only narrow the action
    │       ├── InvalidRequest      invalid_request: a summary, note, session or intent refused
    │       └── InvalidPermissionRequest  invalid_permission_request: a Claude Code
    │                                     permission request that cannot be read
    └── BadLine             bad_line: an activity log line that does not parse; its reader
                            and verifier catch it (edge.store.activityline)
    RemoteError
    ├── RelayRefused        the relay answered non-2xx: its status and code
    ├── RelayUnreachable    relay_unreachable: no answer from the relay
    └── LinkClosed          link_closed: the relay closed or refused the link

``BadLine`` and the private control-flow classes (``edge.intents.edit``,
``edge.delivery.webhook``) stay in the one module that raises and catches them: each
derives from ``LocalError`` with a code of its own and never leaves the code that catches it.

Peers' protocol faults are ``shared.errors.RemoteProtocolError``. Every message names the
file involved and says what to do; none ever contains key material. The CLI prints
``mailslot: CODE: message`` and exits with the error's ``exit_code``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from shared.errors import ExitCode, LocalError, RemoteError


class EdgeError(LocalError):
    """Root of the errors of the edge's local state: the user's setup or our own files."""

    code = "edge_error"


class EdgeConfigError(EdgeError):
    """The edge configuration file is missing, not JSON, or has an invalid field."""

    code = "config_error"


class KeyFileError(EdgeError):
    """The identity key file cannot be used: unsafe mode, unreadable, exists, or garbage."""

    code = "key_file_error"


class NotInitialized(EdgeError):
    """No identity exists yet; the user must run ``mailslot edge init`` first."""

    code = "not_initialized"


class UsageError(EdgeError):
    """A bad command line, raised by the CLI's parser instead of printed, so that it is
    reported like every other error (one line, or JSON with ``--json``)."""

    code = "usage"
    exit_code = ExitCode.USAGE


class InboxError(EdgeError):
    """The inbox database refused an operation; SQLite's error is translated here."""

    code = "inbox_error"


class NotPending(InboxError):
    """``ack``/``nack`` of an interrupt that is unknown or no longer pending: nothing was
    changed; the caller must not treat it as handled by this call."""

    code = "not_pending"

    def __init__(self, id: str) -> None:
        super().__init__(f"{id} is not pending (unknown, or already acked)")


class ClaimedByOther(InboxError):
    """``ack``/``nack`` refused: another owner holds a live claim on the item. The caller
    must leave the item alone (its owner will ack or nack it), or wait for the lease to
    run out (``until``) and claim it."""

    code = "claimed_by_other"

    def __init__(self, id: str, owner: str, until: datetime) -> None:
        super().__init__(
            f"{id} is claimed by {owner} until {until.isoformat()}; only that owner may"
            " ack or nack it before the lease runs out"
        )
        self.id = id
        self.owner = owner
        self.until = until


class ActivityLogError(EdgeError):
    """The activity log cannot be written or read: an OS error, a missing key for an
    existing log, or a head anchor that no longer vouches for the log."""

    code = "activity_log_error"


class NoRecord(EdgeError):
    """The log has no entry for the interrupt asked about (unknown id, or not decided
    yet); ``mailslot explain`` and the MCP ``explain`` tool refuse with it."""

    code = "no_record"


class IntentFileError(EdgeError):
    """``intents.toml`` cannot be read, is not TOML, or does not describe valid intents.
    ``line`` is 1-based (``None`` when no line applies); ``reason`` names the field."""

    code = "intent_file_error"

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}")


class InvalidIntent(EdgeError):
    """An intent given on the command line is not valid; nothing was written."""

    code = "invalid_intent"


class DuplicateIntent(EdgeError):
    """``intent add`` with an id the file already has; nothing was written."""

    code = "duplicate_intent"


class UnknownIntent(EdgeError):
    """No intent with that id in the file."""

    code = "unknown_intent"


class InvalidWatch(EdgeError):
    """A watch given on the command line is not valid; nothing was written."""

    code = "invalid_watch"


class DuplicateWatch(EdgeError):
    """``watch add`` with an id the file already has; nothing was written."""

    code = "duplicate_watch"


class UnknownWatch(EdgeError):
    """No watch with that id in the file."""

    code = "unknown_watch"


class WatchDefinitionError(EdgeError):
    """A watch cannot be watched as defined: a relative path, a missing folder, a bad glob."""

    code = "invalid_watch"


class FsWatchError(EdgeError):
    """The kernel's change reports cannot be had for a folder: it does not exist, the
    inotify limit is reached, or watchfiles' thread failed. The watch is over; close it
    (and, if it should go on, start a new one)."""

    code = "fswatch_failed"


class InvalidArguments(EdgeError):
    """A tool was called with arguments that do not fit its schema; nothing was done."""

    code = "invalid_arguments"


class DeliveryError(EdgeError):
    """Root of the refusals of ``mailslot deliveries`` (nothing was changed)."""

    code = "delivery_error"


class UnknownDelivery(DeliveryError):
    code = "unknown_delivery"


class NotRetryable(DeliveryError):
    """Only a delivery that gave up (``failed``: out of attempts, or skipped while its
    route was disabled) or ended in ``error`` can be sent again."""

    code = "not_retryable"


class NotDroppable(DeliveryError):
    """A running delivery, or one its runtime took, cannot be dropped."""

    code = "not_droppable"


class RouteDisabled(DeliveryError):
    """The intent's route is disabled (its runtime answered 410): ``mailslot intent
    resume ID`` first."""

    code = "route_disabled"


class HookInputError(EdgeError):
    """What Claude Code handed a ``mailslot hook claude`` command on stdin is not a
    JSON object of the documented shape (outside input: refused, never a traceback)."""

    code = "hook_input"


class ClaudeSettingsError(EdgeError):
    """A Claude Code settings file (``settings.json``, ``.mcp.json``) is not a JSON
    object, or its entries are not of the shape ``mailslot claude install`` edits; it is
    left untouched."""

    code = "claude_settings"


class ServiceError(EdgeError):
    """``mailslot service`` cannot install, remove or show the service as asked (the
    message says what to do); what it wrote so far stays listed in its manifest."""

    code = "service_error"


class NeedsRoot(ServiceError):
    """A ``--system`` unit is written to ``/etc/systemd/system``: run it with sudo, or
    ``--dry-run`` to see it."""

    code = "needs_root"


class ServiceManagerFailed(ServiceError):
    """``systemctl``/``launchctl`` (or ``useradd``, ``loginctl``) exited non-zero or is
    missing; the message carries its command line and what it printed."""

    code = "service_manager_failed"


class ApprovalError(EdgeError):
    """Root of the approval errors (all the caller's fault; nothing was changed)."""

    code = "approval_error"


class InvalidAction(ApprovalError):
    code = "invalid_action"


class UnknownApproval(ApprovalError):
    code = "unknown_approval"


class AlreadyDecided(ApprovalError):
    code = "already_decided"


class WiderAction(ApprovalError):
    """``approvals edit`` may only narrow a request: the new action must stand for a
    subset of what was asked (``deploy:staging`` for ``deploy:*``), never more."""

    code = "wider_action"


class InvalidRequest(ApprovalError):
    """A summary, note, session or intent that cannot be stored."""

    code = "invalid_request"


class InvalidPermissionRequest(ApprovalError):
    """A ``notifications/claude/channel/permission_request`` whose params cannot be read
    (outside input). ``request_id``: the request's id when that much was readable (the
    channel then answers ``deny``), else ``None`` (nothing to answer)."""

    code = "invalid_permission_request"

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class RelayRefused(RemoteError):
    """The relay answered non-2xx: ``status`` and ``code`` are the relay's own."""

    code = "relay_refused"

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (relay answered {status})")
        self.status, self.code = status, code


class RelayUnreachable(RemoteError):
    """No answer from the relay: down, unreachable, or not an HTTP(S) URL."""

    code = "relay_unreachable"


class LinkClosed(RemoteError):
    """The relay closed the link or refused to open it; the client reconnects."""

    code = "link_closed"
