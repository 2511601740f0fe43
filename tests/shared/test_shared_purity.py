"""``shared/`` is protocol logic without I/O: no sockets, files, NATS, SQLite, event loop,
processes, threads or clocks. Checked on the source (every import and a few builtins) and
on a fresh interpreter (what importing shared actually loads).

What shared imports, and why it is allowed: ``base64``, ``binascii``, ``hashlib``, ``json``,
``re``, ``enum``, ``dataclasses``, ``typing``, ``collections.abc`` (pure values),
``math`` (``isfinite``, for the limits);
``datetime`` for types only (the caller passes ``now``; shared never reads a clock);
``pydantic`` and ``cryptography`` (pure computation); and ``os`` for exactly one thing,
``os.urandom`` (sealing nonces: randomness, not I/O — key generation in ``cryptography``
does the same).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import shared

SHARED = Path(shared.__file__).resolve().parent
MODULES = sorted(SHARED.glob("*.py"))

ALLOWED = {
    "__future__", "base64", "binascii", "collections", "dataclasses", "datetime", "enum",
    "hashlib", "json", "math", "re", "typing", "pydantic", "cryptography", "shared", "os",
}
#: Never, whatever else changes: each of these is I/O, a clock, or another layer.
FORBIDDEN = {
    "asyncio", "socket", "ssl", "selectors", "select", "sqlite3", "nats", "websockets",
    "watchfiles", "httpx", "starlette", "uvicorn", "subprocess", "threading",
    "multiprocessing", "concurrent", "pathlib", "io", "shutil", "tempfile", "urllib", "http",
    "logging", "time", "signal", "platformdirs", "relay", "edge",
}
#: The only attributes of ``os`` that shared may touch.
OS_ALLOWED = {"urandom"}
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "compile", "__import__",
                   "breakpoint"}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}


def imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            assert node.module is not None
            roots.add(node.module.split(".")[0])
    return roots


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def test_every_module_is_checked() -> None:
    names = {p.stem for p in MODULES}
    assert {"envelope", "signing", "sealing", "frames", "link", "identity"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_only_pure_modules(path: Path) -> None:
    roots = imported_roots(parse(path))
    assert not roots & FORBIDDEN, f"{path.name} imports {sorted(roots & FORBIDDEN)}"
    assert roots <= ALLOWED, f"{path.name} imports {sorted(roots - ALLOWED)} (review, then allow)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_os_is_used_only_for_urandom(path: Path) -> None:
    tree = parse(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            assert {a.name for a in node.names} <= OS_ALLOWED, path.name
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            assert node.attr in OS_ALLOWED, f"{path.name}: os.{node.attr}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_io_builtins_and_no_clock_reads(path: Path) -> None:
    for node in ast.walk(parse(path)):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_CALLS, f"{path.name}: {node.func.id}()"
        if isinstance(node.func, ast.Attribute):
            assert node.func.attr not in CLOCK_CALLS, f"{path.name}: .{node.func.attr}()"


def test_checker_catches_what_it_should() -> None:
    """The checks above are only as good as this: feed them offending source."""
    bad = ast.parse("import asyncio\nfrom os.path import join\nimport sqlite3 as db\n")
    assert imported_roots(bad) == {"asyncio", "os", "sqlite3"}
    assert imported_roots(bad) & FORBIDDEN == {"asyncio", "sqlite3"}
    call = ast.parse("datetime.now(UTC)").body[0]
    assert isinstance(call, ast.Expr) and isinstance(call.value, ast.Call)
    assert isinstance(call.value.func, ast.Attribute) and call.value.func.attr in CLOCK_CALLS


def test_importing_shared_loads_no_io_library() -> None:
    """In a fresh interpreter, importing every shared module (and its dependencies,
    pydantic and cryptography) must not pull in an event loop, network or database."""
    names = ", ".join(f"shared.{p.stem}" for p in MODULES if p.stem != "__init__")
    code = (
        f"import sys, {names}\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    loaded = set(result.stdout.split())
    assert "shared" in loaded
    never = {"asyncio", "sqlite3", "nats", "websockets", "watchfiles", "httpx", "starlette",
             "uvicorn", "subprocess", "ssl", "relay", "edge"}
    assert not loaded & never, sorted(loaded & never)
