"""The edge's errors: the faults of its local state (config, keys, inbox, files), under
``shared.errors.LocalError``, and the few about input from outside, under ``RemoteError``.

::

    LocalError
    ├── EdgeError           edge_error: the edge's local state (this module)
    │   ├── EdgeConfigError config_error: edge.json missing, not JSON, or a field is invalid
    │   ├── KeyFileError    key_file_error: identity key file unsafe (mode), unreadable or not a key
    │   ├── NotInitialized  not_initialized: no identity yet: the user must run ``mailslot edge init``
    │   ├── UsageError      usage: a bad command line (the CLI's parser raises it; exit 2)
    │   ├── InboxError      inbox_error: the SQLite inbox refused an operation (locked, corrupt, newer)
    │   │   ├── NotPending      not_pending: ack/nack of an item unknown or no longer pending
    │   │   └── ClaimedByOther  claimed_by_other: another puller holds a live claim on the item
    │   │                   (both in edge.store.inbox)
    │   ├── ActivityLogError, NoRecord                edge.store.activity
    │   ├── IntentFileError, InvalidIntent, DuplicateIntent, UnknownIntent,
    │   │   InvalidWatch, DuplicateWatch, UnknownWatch   edge.intents.file
    │   ├── WatchDefinitionError                      edge.watches.filepaths
    │   ├── FsWatchError                              edge.fswatch
    │   ├── InvalidArguments                          edge.mcp.tools
    │   └── ApprovalError, InvalidAction              edge.approvals.dial
    │       └── UnknownApproval, AlreadyDecided, WiderAction, InvalidRequest
    │                                                 edge.approvals.desk
    └── BadLine             bad_line: an activity log line that does not parse; its reader
                            and verifier catch it (edge.store.activityline)
    RemoteError
    ├── RelayRefused        the relay answered non-2xx: its status and code (edge.link.relayclient)
    ├── RelayUnreachable    relay_unreachable: no answer from the relay (edge.link.relayclient)
    └── LinkClosed          link_closed: the relay closed or refused the link (edge.link.client)

Private control-flow classes (``edge.intents.edit``, ``edge.delivery.webhook``) derive
from ``LocalError`` with a code of their own and never leave their module.

Peers' protocol faults are ``shared.errors.RemoteProtocolError``. Every message names the
file involved and says what to do; none ever contains key material. The CLI prints
``mailslot: CODE: message`` and exits with the error's ``exit_code``.
"""

from __future__ import annotations

from shared.errors import ExitCode, LocalError


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


class InboxError(EdgeError):
    """The inbox database refused an operation; SQLite's error is translated here."""

    code = "inbox_error"


class UsageError(EdgeError):
    """A bad command line, raised by the CLI's parser instead of printed, so that it is
    reported like every other error (one line, or JSON with ``--json``)."""

    code = "usage"
    exit_code = ExitCode.USAGE
