"""``edge.errors``: the edge's local faults under ``EdgeError`` (a ``LocalError``), its
remote ones under ``RemoteError``, each with its own code, all named in the module's tree."""

from __future__ import annotations

import re

import pytest

from edge import errors
from edge.approvals.desk import AlreadyDecided, InvalidRequest, UnknownApproval, WiderAction
from edge.approvals.dial import ApprovalError, InvalidAction
from edge.errors import (
    EdgeConfigError,
    EdgeError,
    InboxError,
    KeyFileError,
    NotInitialized,
    UsageError,
)
from edge.fswatch import FsWatchError
from edge.intents.file import (
    DuplicateIntent,
    DuplicateWatch,
    IntentFileError,
    InvalidIntent,
    InvalidWatch,
    UnknownIntent,
    UnknownWatch,
)
from edge.link.client import LinkClosed
from edge.link.relayclient import RelayRefused, RelayUnreachable
from edge.mcp.tools import InvalidArguments
from edge.store.activity import ActivityLogError, NoRecord
from edge.store.activityline import BadLine
from edge.store.inbox import ClaimedByOther, NotPending
from edge.watches.filepaths import WatchDefinitionError
from shared.errors import ExitCode, LocalError, MailslotError, RemoteError

#: class → code, written out: these are what ``mailslot`` prints and ``--json`` says.
LOCAL: dict[type[MailslotError], str] = {
    EdgeError: "edge_error",
    EdgeConfigError: "config_error",
    KeyFileError: "key_file_error",
    NotInitialized: "not_initialized",
    UsageError: "usage",
    InboxError: "inbox_error",
    NotPending: "not_pending",
    ClaimedByOther: "claimed_by_other",
    ActivityLogError: "activity_log_error",
    NoRecord: "no_record",
    IntentFileError: "intent_file_error",
    InvalidIntent: "invalid_intent",
    DuplicateIntent: "duplicate_intent",
    UnknownIntent: "unknown_intent",
    InvalidWatch: "invalid_watch",
    DuplicateWatch: "duplicate_watch",
    UnknownWatch: "unknown_watch",
    WatchDefinitionError: "invalid_watch",
    FsWatchError: "fswatch_failed",
    InvalidArguments: "invalid_arguments",
    ApprovalError: "approval_error",
    InvalidAction: "invalid_action",
    UnknownApproval: "unknown_approval",
    AlreadyDecided: "already_decided",
    WiderAction: "wider_action",
    InvalidRequest: "invalid_request",
    BadLine: "bad_line",
}
REMOTE: dict[type[MailslotError], str] = {
    RelayRefused: "relay_refused",
    RelayUnreachable: "relay_unreachable",
    LinkClosed: "link_closed",
}


@pytest.mark.parametrize("cls", list(LOCAL), ids=lambda c: c.__name__)
def test_local_faults_are_local_with_their_code(cls: type[MailslotError]) -> None:
    assert issubclass(cls, LocalError) and not issubclass(cls, RemoteError)
    assert cls.code == LOCAL[cls]
    assert (cls.status, cls.close_code) == (None, None)
    assert cls.exit_code == (ExitCode.USAGE if cls is UsageError else ExitCode.ERROR)


@pytest.mark.parametrize("cls", list(REMOTE), ids=lambda c: c.__name__)
def test_remote_faults_are_remote_with_their_code(cls: type[MailslotError]) -> None:
    assert issubclass(cls, RemoteError) and not issubclass(cls, LocalError)
    assert not issubclass(cls, EdgeError)
    assert cls.code == REMOTE[cls]


def test_usage_errors_exit_2() -> None:
    error = UsageError("unrecognized arguments: --nope")
    assert error.exit_code == ExitCode.USAGE == 2
    assert error.to_dict() == {"error": "usage", "message": "unrecognized arguments: --nope"}


def test_a_relay_refusal_carries_the_relays_status_and_code() -> None:
    refused = RelayRefused(404, "unknown_identity", "no such identity")
    assert (refused.status, refused.code) == (404, "unknown_identity")
    assert refused.message == "no such identity (relay answered 404)"
    assert refused.to_dict() == {"error": "unknown_identity",
                                 "message": "no such identity (relay answered 404)"}
    assert RelayRefused.code == "relay_refused"  # the relay's code is per instance


def test_the_docstring_names_every_edge_error() -> None:
    assert errors.__doc__ is not None
    named = set(re.findall(r"\b[A-Z]\w+\b", errors.__doc__))
    missing = {cls.__name__ for cls in {**LOCAL, **REMOTE}} - named
    assert not missing
