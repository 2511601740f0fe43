"""The error tree: one root, split by who is at fault, every remote error carrying the HTTP
status, machine-readable code and WebSocket close code it maps to. (The tree across all
three packages, and its drawing, are tested in ``test_errors_tree.py``.)"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from shared import errors
from shared.errors import (
    AlreadyRunning,
    BadSignature,
    ExitCode,
    Expired,
    InvalidEnvelope,
    InvalidIdentity,
    InvalidToken,
    LimitExceeded,
    LinkError,
    LocalError,
    LocalProtocolError,
    MailslotError,
    MalformedInput,
    PayloadCapExceeded,
    RemoteError,
    RemoteProtocolError,
    SealError,
    TooLarge,
    UntrustedSigner,
    WrongRecipient,
)
from shared.limits import PAYLOAD_MAX_BYTES

SHARED = Path(errors.__file__).resolve().parent
CODE_RE = re.compile(r"[a-z][a-z_]*[a-z]")

#: class → (HTTP status, code, WebSocket close code), written out independently of the
#: module so that a changed mapping is a visible, reviewed change.
REMOTE = {
    MalformedInput: (400, "malformed", 4400),
    InvalidToken: (422, "invalid_token", 4400),
    InvalidEnvelope: (422, "invalid_envelope", 4400),
    Expired: (422, "expired", 4400),
    TooLarge: (413, "too_large", 1009),
    LimitExceeded: (422, "limit_exceeded", 4400),
    BadSignature: (401, "bad_signature", 4401),
    UntrustedSigner: (403, "untrusted_signer", 4403),
    WrongRecipient: (403, "wrong_recipient", 4403),
    InvalidIdentity: (422, "invalid_identity", 4400),
    SealError: (422, "seal_error", 4400),
    LinkError: (400, "link_error", 4400),
}


def error_classes() -> list[type[BaseException]]:
    return [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    ]


def test_every_error_class_is_a_mailslot_error() -> None:
    classes = error_classes()
    # + root, the two branches, the two protocol errors, AlreadyRunning, PayloadCapExceeded
    assert len(classes) == len(REMOTE) + 7
    for cls in classes:
        assert issubclass(cls, MailslotError), cls


def test_table_covers_every_remote_error() -> None:
    remote = {c for c in error_classes() if issubclass(c, RemoteProtocolError)}
    assert remote - {RemoteProtocolError, PayloadCapExceeded} == set(REMOTE)


def test_a_payload_over_its_cap_is_too_large_and_a_value_error() -> None:
    """Raised inside pydantic validation, so also a ``ValueError``; answered 413."""
    error = PayloadCapExceeded(PAYLOAD_MAX_BYTES)
    assert isinstance(error, TooLarge) and isinstance(error, ValueError)
    assert (error.status, error.code, error.close_code) == (413, "payload_too_large", 1009)
    assert error.to_dict() == {"error": "payload_too_large",
                               "message": f"payload is larger than {PAYLOAD_MAX_BYTES} bytes"}


@pytest.mark.parametrize("cls", list(REMOTE), ids=lambda c: c.__name__)
def test_remote_error_carries_status_code_and_close_code(cls: type[RemoteProtocolError]) -> None:
    status, code, close_code = REMOTE[cls]
    error = cls("something is wrong")
    assert (error.status, error.code, error.close_code) == (status, code, close_code)
    assert CODE_RE.fullmatch(error.code)
    assert 400 <= error.status < 500
    assert error.close_code == 1009 or 4000 <= error.close_code < 5000
    assert error.to_dict() == {"error": code, "message": "something is wrong"}


def test_codes_are_unique_per_class() -> None:
    codes = [code for _, code, _ in REMOTE.values()]
    assert len(set(codes)) == len(codes)


def test_local_and_remote_faults_are_disjoint() -> None:
    assert not issubclass(LocalProtocolError, RemoteProtocolError)
    assert issubclass(LocalProtocolError, LocalError)
    assert issubclass(RemoteProtocolError, RemoteError)
    assert not issubclass(LocalError, RemoteError) and not issubclass(RemoteError, LocalError)
    for cls in REMOTE:
        assert not issubclass(cls, LocalProtocolError)
        assert not issubclass(cls, LocalError)
    # A local fault is no answer to a peer: it maps to no HTTP status and no close code.
    local = LocalProtocolError("x")
    assert (local.status, local.close_code) == (None, None)
    assert local.exit_code == ExitCode.ERROR


def test_the_root_carries_code_message_status_close_and_exit_codes() -> None:
    error = MailslotError("something broke")
    assert (error.code, error.message, str(error)) == ("error", "something broke", "something broke")
    assert (error.status, error.close_code, error.exit_code) == (None, None, ExitCode.ERROR)
    assert error.to_dict() == {"error": "error", "message": "something broke"}
    assert MailslotError("x", code="other_reason").to_dict() == {
        "error": "other_reason", "message": "x"}
    # Raised bare (internal control flow), the message falls back to the code.
    assert LocalProtocolError().message == str(LocalProtocolError()) == "local_protocol_error"


def test_already_running_ends_the_command_with_exit_5() -> None:
    """Pure, so that ``shared.host.lockfile`` raises it without importing ``relay/``."""
    error = AlreadyRunning("relay.lock is held by pid 7 (pid 7)")
    assert issubclass(AlreadyRunning, LocalError)
    assert (error.code, error.status, error.exit_code) == ("already_running", 409, 5)
    assert error.exit_code == ExitCode.ALREADY_RUNNING
    assert error.pid is None
    assert error.to_dict() == {"error": "already_running",
                               "message": "relay.lock is held by pid 7 (pid 7)"}


def test_exit_codes_are_the_documented_table() -> None:
    """README, "Commands": the ``mailslot`` command's exit codes."""
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0, "ERROR": 1, "USAGE": 2, "APPROVAL_PENDING": 3, "APPROVAL_REFUSED": 4,
        "ALREADY_RUNNING": 5, "STARTUP_FAILED": 6, "STORE_LOST": 7, "INTERRUPTED": 130,
    }


def test_invalid_token_is_also_a_value_error() -> None:
    assert issubclass(InvalidToken, ValueError)
    with pytest.raises(ValueError, match="bad"):
        raise InvalidToken("bad token")
    # Only InvalidToken: the others must not be swallowed by ``except ValueError``.
    for cls in set(REMOTE) - {InvalidToken}:
        assert not issubclass(cls, ValueError), cls


def test_code_override_is_per_instance() -> None:
    error = MalformedInput("body is not JSON", code="malformed_json")
    assert error.code == "malformed_json"
    assert error.status == 400
    assert error.message == str(error) == "body is not JSON"
    assert error.to_dict() == {"error": "malformed_json", "message": "body is not JSON"}
    assert MalformedInput.code == "malformed"
    assert MalformedInput("again").code == "malformed"


def test_docstring_tree_matches_the_classes() -> None:
    """The tree drawn in the module docstring lists every class with its status (the
    classes with none, and the parent of each class, are checked in test_errors_tree)."""
    assert errors.__doc__ is not None
    drawn: dict[str, str] = {}
    for line in errors.__doc__.splitlines():
        match = re.search(r"(?:├──|└──)\s+(\w+)\s+.*?(close \d+|\d{3})\s*$", line)
        if match:
            drawn[match.group(1)] = match.group(2)
    names = {c.__name__ for c in error_classes()} - {"MailslotError"}
    assert names - set(drawn) == {"LocalError", "RemoteError", "LocalProtocolError",
                                  "AlreadyRunning"}
    assert drawn["RemoteProtocolError"] == "400"
    for cls, (status, _, close_code) in REMOTE.items():
        expected = f"close {close_code}" if drawn[cls.__name__].startswith("close") else str(status)
        assert drawn[cls.__name__] == expected, cls.__name__


def test_error_codes_raised_in_shared_are_machine_readable() -> None:
    """Every ``code="..."`` passed anywhere in shared/ is a stable snake_case token."""
    codes: set[str] = set()
    for path in sorted(SHARED.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "code"
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                codes.add(node.value.value)
    assert {"malformed_json", "payload_too_large", "unknown_frame", "credit_exceeded"} <= codes
    for code in codes:
        assert CODE_RE.fullmatch(code), code
