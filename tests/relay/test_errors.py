"""``relay.errors``: each refusal and failure with the status, code, close code and exit
code it maps to (written out here, so that a changed mapping is a visible change), on the
side of the fault split the module's docstring says."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from relay import errors
from relay.errors import (
    ByteQuotaExceeded,
    ConfigInvalid,
    Conflict,
    ConsumerGone,
    Forbidden,
    HookGone,
    HookRequestInvalid,
    HookUnverified,
    NotFound,
    QueueFull,
    QuotaExceeded,
    RateLimited,
    RelayError,
    RelayFull,
    SessionClosed,
    StartupFailed,
    StorageFull,
    StoreLost,
    StoreUnavailable,
    TooManyEdges,
    Unauthorized,
    UnsupportedMediaType,
)
from shared.errors import ExitCode, LocalError, MailslotError, RemoteError

#: class → (HTTP status, code, close code, exit code, fault)
RELAY: dict[type[RelayError], tuple[int, str, int, int, type[MailslotError]]] = {
    Unauthorized: (401, "invalid_token", 4401, ExitCode.ERROR, RemoteError),
    Forbidden: (403, "forbidden", 4403, ExitCode.ERROR, RemoteError),
    NotFound: (404, "not_found", 4404, ExitCode.ERROR, RemoteError),
    Conflict: (409, "exists", 1011, ExitCode.ERROR, RemoteError),
    UnsupportedMediaType: (415, "unsupported_media_type", 1011, ExitCode.ERROR, RemoteError),
    QueueFull: (429, "queue_full", 1011, ExitCode.ERROR, RemoteError),
    RateLimited: (429, "rate_limited", 1011, ExitCode.ERROR, RemoteError),
    QuotaExceeded: (429, "quota_exceeded", 1011, ExitCode.ERROR, RemoteError),
    StorageFull: (507, "storage_full", 1011, ExitCode.ERROR, LocalError),
    ByteQuotaExceeded: (507, "quota_bytes_exceeded", 1011, ExitCode.ERROR, LocalError),
    TooManyEdges: (429, "edges_exceeded", 4429, ExitCode.ERROR, RemoteError),
    HookRequestInvalid: (400, "missing_header", 1011, ExitCode.ERROR, RemoteError),
    HookUnverified: (401, "bad_signature", 1011, ExitCode.ERROR, RemoteError),
    HookGone: (410, "hook_deleted", 1011, ExitCode.ERROR, RemoteError),
    ConfigInvalid: (500, "config_invalid", 1011, ExitCode.USAGE, LocalError),
    StoreUnavailable: (503, "store_unavailable", 1013, ExitCode.ERROR, LocalError),
    RelayFull: (503, "relay_full", 1013, ExitCode.ERROR, LocalError),
    StartupFailed: (503, "startup_failed", 1011, ExitCode.STARTUP_FAILED, LocalError),
    StoreLost: (503, "store_lost", 1011, ExitCode.STORE_LOST, LocalError),
}


def test_the_table_covers_every_relay_error() -> None:
    defined = {
        obj for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, RelayError) and obj is not RelayError
    }
    assert defined == set(RELAY)


@pytest.mark.parametrize("cls", list(RELAY), ids=lambda c: c.__name__)
def test_each_maps_to_its_status_code_close_and_exit_code(cls: type[RelayError]) -> None:
    status, code, close_code, exit_code, fault = RELAY[cls]
    error = cls("refused")
    assert (error.status, error.code, error.close_code, error.exit_code) == (
        status, code, close_code, exit_code)
    assert isinstance(error, RelayError) and isinstance(error, fault)
    assert not isinstance(error, LocalError if fault is RemoteError else RemoteError)
    extra = {"retry_after": 1} if cls in (RateLimited, RelayFull) else {}  # sent as Retry-After too
    assert error.to_dict() == {"error": code, "message": "refused", **extra}
    assert cls("x", code="replayed_request").code == "replayed_request"


def test_the_root_answers_what_has_no_mapping_of_its_own() -> None:
    assert (RelayError.status, RelayError.code, RelayError.close_code) == (500, "internal", 1011)
    assert not issubclass(RelayError, LocalError) and not issubclass(RelayError, RemoteError)


def test_the_docstring_draws_each_with_its_status() -> None:
    assert errors.__doc__ is not None
    drawn = dict(re.findall(r"(?:├──|└──)\s+(\w+)\s+(\d{3})?", errors.__doc__))
    assert set(drawn) == {cls.__name__ for cls in RELAY} | {"ConsumerGone", "SessionClosed"}
    for cls, (status, *_) in RELAY.items():
        if drawn[cls.__name__]:  # StartupFailed, StoreLost, ConfigInvalid end a command
            assert drawn[cls.__name__] == str(status), cls.__name__
    assert {name for name, status in drawn.items() if not status} == {
        "StartupFailed", "StoreLost", "ConfigInvalid", "ConsumerGone", "SessionClosed"}


def test_every_relay_error_class_lives_in_this_module() -> None:
    for cls in [*RELAY, ConsumerGone, SessionClosed]:
        assert cls.__module__ == "relay.errors", cls.__name__


def test_a_session_close_carries_its_close_code_and_reason() -> None:
    closed = SessionClosed(4408, "auth_timeout")
    assert isinstance(closed, RemoteError)
    assert (closed.close_code, closed.code) == (4408, "auth_timeout")
    assert closed.to_dict() == {"error": "auth_timeout", "message": "link closed: auth_timeout"}


def test_a_vanished_consumer_is_ours_and_never_an_answer() -> None:
    gone = ConsumerGone("pull timed out")
    assert isinstance(gone, LocalError) and not isinstance(gone, RelayError)
    assert (gone.code, gone.status, gone.close_code) == ("consumer_gone", None, None)


def test_the_module_is_a_leaf_importing_from_shared_only() -> None:
    tree = ast.parse(Path(errors.__file__).read_text(encoding="utf-8"))
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    project = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
    assert project and all(name.split(".")[0] == "shared" for name in project), project
