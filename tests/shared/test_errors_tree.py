"""The one error tree across ``shared/``, ``relay/`` and ``edge/``: every exception class
the project defines derives from ``shared.errors.MailslotError``, sits in exactly one of
the two fault branches, names its own code, and is drawn where ``shared.errors`` says it
is — so a new error class cannot quietly start a root of its own or hide its fault."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType

import pytest

import edge
import relay
import shared
from edge.errors import EdgeError, UsageError
from relay.errors import ConfigInvalid, RelayError, StartupFailed, StoreLost
from shared import errors
from shared.errors import (
    AlreadyRunning,
    ExitCode,
    LocalError,
    MailslotError,
    RemoteError,
    RemoteProtocolError,
)

CODE_RE = re.compile(r"[a-z][a-z_]*[a-z]")
#: Never raised themselves: the root, the two fault branches, the relay's package root.
ABSTRACT: set[type[MailslotError]] = {MailslotError, LocalError, RemoteError, RelayError}
#: The errors that end a command with something other than ``ExitCode.ERROR``.
EXIT_CODES = {
    UsageError: ExitCode.USAGE,
    AlreadyRunning: ExitCode.ALREADY_RUNNING,
    StartupFailed: ExitCode.STARTUP_FAILED,
    StoreLost: ExitCode.STORE_LOST,
    ConfigInvalid: ExitCode.USAGE,
}


def project_modules() -> list[ModuleType]:
    modules: list[ModuleType] = []
    for package in (shared, relay, edge):
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.rsplit(".", 1)[-1] != "__main__":  # runs the CLI when imported
                modules.append(importlib.import_module(info.name))
    return modules


def exception_classes() -> list[type[BaseException]]:
    """Every exception class defined (not just imported) in the three packages."""
    found: dict[str, type[BaseException]] = {}
    for module in project_modules():
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[name] for name in sorted(found)]


CLASSES = exception_classes()
ERRORS = [cls for cls in CLASSES if issubclass(cls, MailslotError)]
CONCRETE = [cls for cls in ERRORS if cls not in ABSTRACT]


def ids(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_the_walk_finds_the_classes_of_every_package() -> None:
    modules = {cls.__module__.split(".")[0] for cls in CLASSES}
    assert modules == {"shared", "relay", "edge"}
    assert len(CONCRETE) > 50


@pytest.mark.parametrize("cls", CLASSES, ids=ids)
def test_every_exception_class_is_a_mailslot_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, MailslotError), f"{ids(cls)} is outside the tree"


@pytest.mark.parametrize("cls", CONCRETE, ids=ids)
def test_every_error_is_exactly_one_kind_of_fault(cls: type[MailslotError]) -> None:
    local, remote = issubclass(cls, LocalError), issubclass(cls, RemoteError)
    assert local != remote, f"{ids(cls)}: local={local}, remote={remote}"


def test_package_roots_take_sides_as_documented() -> None:
    assert issubclass(EdgeError, LocalError)  # the edge's own state: always this side
    # The relay's root is on neither side; each of its children is on one.
    assert not issubclass(RelayError, LocalError | RemoteError)
    assert not issubclass(LocalError, RemoteError) and not issubclass(RemoteError, LocalError)


@pytest.mark.parametrize("cls", CONCRETE, ids=ids)
def test_every_error_names_its_own_code(cls: type[MailslotError]) -> None:
    """A class that only inherited its parent's code would be reported as the parent."""
    assert "code" in vars(cls), f"{ids(cls)} has no code of its own"
    assert CODE_RE.fullmatch(cls.code), (ids(cls), cls.code)


@pytest.mark.parametrize("cls", CONCRETE, ids=ids)
def test_status_and_close_code_fit_the_fault(cls: type[MailslotError]) -> None:
    if issubclass(cls, RemoteError):
        # Where the outside is at fault, the answer is 4xx.
        assert cls.status is None or 400 <= cls.status < 500, (ids(cls), cls.status)
    elif cls is not AlreadyRunning:  # 409, but never an HTTP answer: it ends a command
        # Where we are, it is 5xx (our store, our start-up) or no HTTP answer at all.
        assert cls.status is None or 500 <= cls.status < 600, (ids(cls), cls.status)
    if issubclass(cls, RemoteProtocolError):
        assert cls.close_code == 1009 or 4000 <= cls.close_code < 5000, ids(cls)
    elif issubclass(cls, LocalError):
        assert cls.close_code in (None, 1011, 1013), (ids(cls), cls.close_code)


@pytest.mark.parametrize("cls", CONCRETE, ids=ids)
def test_exit_codes_are_as_documented(cls: type[MailslotError]) -> None:
    assert cls.exit_code == EXIT_CODES.get(cls, ExitCode.ERROR), ids(cls)
    assert cls.exit_code in set(ExitCode)


@pytest.mark.parametrize(
    "cls", [c for c in CONCRETE if c.__init__ is MailslotError.__init__], ids=ids
)
def test_to_dict_is_the_one_error_body(cls: type[MailslotError]) -> None:
    error = cls("what went wrong, and what to do")
    assert error.to_dict() == {"error": cls.code, "message": "what went wrong, and what to do"}
    assert str(error) == error.message
    assert cls("x", code="more_specific").to_dict()["error"] == "more_specific"
    assert cls.code != "more_specific"  # the override is per instance


#: Public errors that stay next to the code that raises and catches them (the docstring says).
OUTSIDE_ERRORS_MODULES = {"edge.store.activityline.BadLine"}


@pytest.mark.parametrize("cls", ERRORS, ids=ids)
def test_every_public_error_lives_in_its_packages_errors_module(
        cls: type[MailslotError]) -> None:
    if cls.__name__.startswith("_") or ids(cls) in OUTSIDE_ERRORS_MODULES:
        return
    assert cls.__module__ == cls.__module__.split(".")[0] + ".errors", ids(cls)


def test_one_constructor_and_one_to_dict() -> None:
    """Both branches share the root's: no copy of ``__init__`` or ``to_dict`` in a root."""
    for cls in ERRORS:
        assert cls.to_dict is MailslotError.to_dict, ids(cls)
    for root in (LocalError, RemoteError, RemoteProtocolError, RelayError, EdgeError):
        assert "__init__" not in vars(root), ids(root)


# -- the drawing ------------------------------------------------------------------------

_NODE = re.compile(r"^(?P<indent>(?:│   |    )*)(?:├── |└── )(?P<name>\w+)(?P<rest>.*)$")
_ANNOTATION = re.compile(r"(close \d{4}|exit \d+|\d{3})\s*$")


def drawing() -> dict[str, tuple[str, str]]:
    """``shared.errors``' tree: name → (the name it is drawn under, its trailing annotation)."""
    assert errors.__doc__ is not None
    block = errors.__doc__.split("::", 1)[1]
    parents = ["MailslotError"]
    drawn: dict[str, tuple[str, str]] = {}
    for line in block.splitlines():
        node = _NODE.match(line.strip("\n")[4:])  # the block is indented by four spaces
        if node is None:
            continue
        depth = len(node["indent"]) // 4
        del parents[depth + 1:]
        annotation = _ANNOTATION.search(node["rest"])
        assert node["name"] not in drawn, f"{node['name']} is drawn twice"
        drawn[node["name"]] = (parents[depth], annotation[1] if annotation else "")
        parents.append(node["name"])
    return drawn


def test_the_drawing_shows_every_public_error_under_an_ancestor() -> None:
    drawn = drawing()
    by_name = {cls.__name__: cls for cls in ERRORS}
    public = {name for name in by_name if not name.startswith("_")}
    assert set(drawn) == public - {"MailslotError", "RelayError"}  # RelayError: prose
    for name, (parent, _) in drawn.items():
        # Drawn under an ancestor, and so on its side of the fault split.
        assert issubclass(by_name[name], by_name[parent]), f"{name} is drawn under {parent}"
    assert {parent for parent, _ in drawn.values() if parent != "MailslotError"} >= {
        "LocalError", "RemoteError"}
    assert [name for name, (parent, _) in drawn.items() if parent == "MailslotError"] == [
        "LocalError", "RemoteError"]


def test_the_drawing_says_each_status_close_and_exit_code_right() -> None:
    by_name = {cls.__name__: cls for cls in ERRORS}
    annotated = 0
    for name, (_, annotation) in drawing().items():
        cls = by_name[name]
        if annotation.startswith("close "):
            assert cls.close_code == int(annotation.removeprefix("close ")), name
        elif annotation.startswith("exit "):
            assert cls.exit_code == int(annotation.removeprefix("exit ")), name
        elif annotation:
            assert cls.status == int(annotation), name
        annotated += bool(annotation)
        if cls in EXIT_CODES:
            assert annotation == f"exit {int(EXIT_CODES[cls])}", name
    assert annotated >= 25
