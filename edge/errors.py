"""One error tree for the edge's local state: config, keys, inbox.

::

    EdgeError
    ├── ActivityLogError    activity_log_error: the activity log cannot be written or trusted (edge.store.activity)
    ├── EdgeConfigError     config_error: edge.json missing, not JSON, or a field is invalid
    ├── KeyFileError        key_file_error: identity key file unsafe (mode), unreadable or not a key
    ├── NotInitialized      not_initialized: no identity yet: the user must run ``mailslot edge init``
    ├── UsageError          usage: a bad command line (the CLI's parser raises it; exit 2)
    └── InboxError          inbox_error: the SQLite inbox refused an operation (locked, corrupt, newer)
        └── ClaimedByOther  claimed_by_other: another puller holds a live claim on the item

These are faults of the local machine or of the user's setup, not of a remote peer (those
are ``shared.errors.RemoteProtocolError``). Every message names the file involved and says
what to do; none ever contains key material. The CLI prints ``str(exc)`` and exits non-zero.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error raised by the edge's local state modules."""

    code = "edge_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
    exit_code = 2  # relay.errors.ExitCode.USAGE
