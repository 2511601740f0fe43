"""``edge.errors``: the edge's local faults under ``EdgeError`` (a ``LocalError``), its
remote ones under ``RemoteError``, each with its own code, all named in the module's tree,
all defined there, and the module a leaf that imports from ``shared`` only."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from edge import errors
from edge.errors import (
    ActivityLogError,
    AlreadyDecided,
    ApprovalError,
    ClaimedByOther,
    DuplicateIntent,
    DuplicateWatch,
    EdgeConfigError,
    EdgeError,
    FsWatchError,
    InboxError,
    IntentFileError,
    InvalidAction,
    InvalidArguments,
    InvalidIntent,
    InvalidRequest,
    InvalidWatch,
    KeyFileError,
    LinkClosed,
    NoRecord,
    NotInitialized,
    NotPending,
    RelayRefused,
    RelayUnreachable,
    UnknownApproval,
    UnknownIntent,
    UnknownWatch,
    UsageError,
    WatchDefinitionError,
    WiderAction,
)
from edge.store.activityline import BadLine
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


def test_every_edge_error_is_defined_here_but_the_log_lines_own() -> None:
    elsewhere = {cls.__name__ for cls in {**LOCAL, **REMOTE} if cls.__module__ != errors.__name__}
    assert elsewhere == {"BadLine"}  # private to the activity log's modules


def test_the_module_is_a_leaf_importing_from_shared_only() -> None:
    """Any edge module can import its errors without pulling in (or cycling through) the
    code that raises them."""
    tree = ast.parse(Path(errors.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    project = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
    assert project and all(name.split(".")[0] == "shared" for name in project), project
