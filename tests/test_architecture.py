"""The rules the layout of ``shared/``, ``relay/`` and ``edge/`` keeps, checked on the
source with ``ast`` (nothing of the project is imported), so that a change cannot quietly
break them. Each rule is its own test, and each failure names the file and line to fix.

a. The import graph of project modules is acyclic. It counts the imports that run when a
   module is imported (module level, including inside a top-level ``try``/``if``/class
   body) *and* those under ``if TYPE_CHECKING:``: such an import does not run, but it is
   still a dependency a reader follows, and letting it close a circle would let a cycle
   hide behind annotations. Imports inside functions are rule b's business.
b. No import inside a function or method, except in ``edge/cli/``, and there only of the
   modules listed in ``LAZY_IMPORTS`` in ``edge/cli/main.py``, each in the file named next
   to it (start-up cost: a command that does not need httpx or mcp does not pay for
   loading them).
c. Layers: only ``edge/cli/`` (and ``edge/__main__.py``, the entry point) imports
   ``edge.cli``; ``relay/`` never imports ``edge``;
   ``edge/`` outside ``edge/cli/`` never imports ``relay``; ``shared/`` imports neither,
   and its pure protocol modules (``shared/*.py``) never import ``shared.host``, the one
   part of shared that touches the host (``tests/shared/test_shared_purity.py`` checks the rest
   of their purity). Every import counts here, wherever it is written.
d. Each outside library is imported by the modules named in ``ADAPTERS`` and no other
   (one adapter per library; two only where the second is truly another role).
e. Every exception class defined in the project derives from
   ``shared.errors.MailslotError`` (bases followed by name through the project's imports).
f. No module over 600 lines; public class names are unique across the three packages.
g. Tests mirror the source: ``tests/edge/store/test_inbox.py`` tests ``edge/store/inbox.py``
   (``test_<module>[_<aspect>].py``, or ``test_<folder>[_<aspect>].py`` for a test of the
   package as a whole), in a folder that exists in the source. ``tests/system/`` holds
   whole-flow tests and ``tests/fuzz/`` the property-based ones; at the top of ``tests/``
   only this file.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "relay", "edge")
MAX_LINES = 600
ERROR_ROOT = "shared.errors.MailslotError"

#: Outside library → the only modules that may import it (paths from the repository root).
ADAPTERS: dict[str, frozenset[str]] = {
    "sqlite3": frozenset({"edge/store/db.py"}),
    "watchfiles": frozenset({"edge/fswatch.py"}),
    # Linux's inotify, read on the event loop: the daemon's one file-system watcher.
    "inotify_simple": frozenset({"edge/inotify.py"}),
    # The relay's WebSocket side is uvicorn's (``ws="websockets-sansio"``) behind
    # starlette: the relay never imports websockets itself.
    "websockets": frozenset({"edge/link/client.py"}),
    # The edge's relay client, its webhook channel, and the admin API's client (the
    # `mailslot relay account|token|…` commands).
    "httpx": frozenset({"edge/link/relayclient.py", "edge/delivery/webhook.py",
                        "relay/adminclient.py"}),
    "mcp": frozenset({"edge/mcp/server.py"}),
    # The stream, KV and publishing; and the drain's pull consumers (another role).
    "nats": frozenset({"relay/store.py", "relay/drain.py"}),
    "uvicorn": frozenset({"relay/server.py"}),
    "uvloop": frozenset({"relay/server.py"}),
    # The HTTP routes, and the WebSocket session they hand a link to.
    # The admin API's routes (relay/admin.py) are mounted by app.py.
    # The webhook ingress routes (relay/hooks/routes.py), too.
    "starlette": frozenset({"relay/app.py", "relay/session.py", "relay/admin.py",
                            "relay/hooks/routes.py"}),
    "tomlkit": frozenset({"edge/intents/edit.py"}),
    # The edge signs its outgoing webhook routes; the relay verifies incoming hooks.
    "standardwebhooks": frozenset({"edge/delivery/webhook.py", "relay/hooks/stdwebhooks.py"}),
    # The schedule of a timer watch, and the check at load time that its cron
    # expression parses (so a bad one is refused with its line in intents.toml).
    "cronsim": frozenset({"edge/watches/timing.py", "edge/intents/declarations.py"}),
    # The edge's status page, and the relay's own metrics (a registry per relay).
    "prometheus_client": frozenset({"edge/metrics.py", "relay/metrics.py"}),
}

TOP, TYPE_ONLY, IN_FUNCTION = "module level", "TYPE_CHECKING", "in a function"
#: What ``python -m edge`` runs: the one module outside edge/cli/ that imports it.
ENTRY_POINT = "edge.__main__"
BUILTIN_EXCEPTIONS = frozenset(
    name for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)


@dataclass(frozen=True)
class Import:
    target: str  # the dotted name imported: a project module, or anything outside
    line: int
    where: str  # TOP, TYPE_ONLY or IN_FUNCTION


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int
    imports: list[Import] = field(default_factory=list)

    @property
    def rel(self) -> str:
        return self.path.relative_to(ROOT).as_posix()

    def at(self, line: int) -> str:
        return f"{self.rel}:{line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            found[module_name(path)] = Module(
                module_name(path), path, ast.parse(text, str(path)), text.count("\n")
            )
    for module in found.values():
        module.imports = list(_imports(module, found))
    return found


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if module.path.name != "__init__.py":
        package.pop()
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: Module, known: dict[str, Module]) -> Iterator[Import]:
    def visit(node: ast.AST, where: str) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = IN_FUNCTION
            elif isinstance(child, ast.If) and where == TOP and _is_type_checking(child.test):
                yield from visit_all(child.body, TYPE_ONLY)
                yield from visit_all(child.orelse, TOP)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(alias.name, child.lineno, inner)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(module, child)
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    yield Import(sub if sub in known else base, child.lineno, inner)
            yield from visit(child, inner)

    def visit_all(nodes: list[ast.stmt], where: str) -> Iterator[Import]:
        for statement in nodes:
            wrapper = ast.Module(body=[statement], type_ignores=[])
            yield from visit(wrapper, where)

    yield from visit(module.tree, TOP)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def project_target(name: str) -> str | None:
    """The project module an imported name refers to (its longest known prefix)."""
    known = modules()
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


# -- a. acyclic -----------------------------------------------------------------------


def graph() -> dict[str, dict[str, int]]:
    """module → {imported project module: line}, for imports that count (rule a)."""
    edges: dict[str, dict[str, int]] = {name: {} for name in modules()}
    for module in modules().values():
        for imp in module.imports:
            target = project_target(imp.target)
            if imp.where != IN_FUNCTION and target is not None and target != module.name:
                edges[module.name].setdefault(target, imp.line)
    return edges


def strongly_connected(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components with more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def one_cycle(edges: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """The shortest cycle through the component's first module (breadth-first)."""
    members, start = set(component), component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges[node]):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child in members and child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle in {component}")


def test_a_the_import_graph_is_acyclic() -> None:
    edges = graph()
    problems = []
    for component in strongly_connected(edges):
        cycle = one_cycle(edges, component)
        steps = " → ".join(
            f"{a} ({modules()[a].at(edges[a][b])})" for a, b in pairwise(cycle)
        )
        problems.append(
            f"import cycle of {len(component)} modules: {steps} → {cycle[0]}. Move the "
            f"shared piece down a floor so dependencies point one way"
        )
    assert not problems, "\n".join(problems)


# -- b. no import inside a function ---------------------------------------------------


def lazy_imports() -> dict[str, set[str] | None]:
    """``LAZY_IMPORTS`` in edge/cli/main.py, read from its source: module → the files that
    may import it lazily (``None``: any file of edge/cli/). Entries are ``(module, file,
    why)`` tuples, or bare module names."""
    main = modules().get("edge.cli.main")
    assert main is not None, "edge/cli/main.py is missing"
    for node in main.tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if not any(isinstance(t, ast.Name) and t.id == "LAZY_IMPORTS" for t in targets):
            continue
        value = node.value
        assert isinstance(value, (ast.Tuple, ast.List)), (
            f"edge/cli/main.py:{node.lineno}: LAZY_IMPORTS must be a tuple")
        allowed: dict[str, set[str] | None] = {}
        for element in value.elts:
            items = element.elts if isinstance(element, ast.Tuple) else [element]
            texts = [i.value for i in items[:2]
                     if isinstance(i, ast.Constant) and isinstance(i.value, str)]
            assert texts, f"edge/cli/main.py:{element.lineno}: LAZY_IMPORTS lists module names"
            if len(texts) == 1:
                allowed[texts[0]] = None
            else:
                files = allowed.setdefault(texts[0], set())
                if files is not None:
                    files.add(texts[1])
        return allowed
    return {}


def lazy_allowed(allowed: dict[str, set[str] | None], module: Module, target: str) -> bool:
    if not _in(module.name, "edge.cli"):
        return False
    for name, files in allowed.items():
        if _in(target, name) and (files is None or module.rel in files):
            return True
    return False


def test_b_no_import_inside_a_function_except_the_clis_listed_lazy_ones() -> None:
    lazy = lazy_imports()
    problems: dict[str, None] = {}  # ordered, one line per import statement
    for module in modules().values():
        in_cli = _in(module.name, "edge.cli")
        for imp in module.imports:
            if imp.where != IN_FUNCTION or lazy_allowed(lazy, module, imp.target):
                continue
            why = (
                f"if it is for start-up cost, add ({imp.target!r}, {module.rel!r}, why) to "
                f"LAZY_IMPORTS in edge/cli/main.py, else import it at the top" if in_cli else
                "import it at the top of the module; if that makes a cycle, move the "
                "shared code down a floor (lazy imports are for edge/cli/ only)"
            )
            problems[f"{module.at(imp.line)} imports {imp.target} inside a function: {why}"] = None
    if not lazy:
        problems["edge/cli/main.py defines no LAZY_IMPORTS tuple: list the CLI's lazy "
                 "imports there"] = None
    assert not problems, "\n".join(problems)


# -- c. layers ------------------------------------------------------------------------


def layer_rule(importer: str, target: str) -> str | None:
    """Why ``importer`` may not import ``target`` (both dotted names), or None."""
    if _in(target, "edge.cli") and not (_in(importer, "edge.cli") or importer == ENTRY_POINT):
        return "domain code must not import the CLI; move what both need out of edge/cli/"
    if _in(importer, "relay") and _in(target, "edge"):
        return "relay/ never imports edge/ (the edge registers relay commands, not back)"
    if _in(importer, "edge") and not _in(importer, "edge.cli") and _in(target, "relay"):
        return "edge/ domain code never imports relay/ (only edge/cli/ wires the two)"
    if _in(importer, "shared") and (_in(target, "relay") or _in(target, "edge")):
        return "shared/ is the bottom floor: it imports neither relay/ nor edge/"
    if (_in(importer, "shared") and not _in(importer, "shared.host")
            and _in(target, "shared.host")):
        return "shared/'s protocol modules are pure: only shared/host/ touches the host"
    return None


def test_c_layers_point_one_way() -> None:
    problems: dict[str, None] = {}
    for module in modules().values():
        for imp in module.imports:
            why = layer_rule(module.name, imp.target)
            if why is not None:
                problems[f"{module.at(imp.line)}: {module.name} imports {imp.target}: {why}"] = None
    assert not problems, "\n".join(problems)


# -- d. one adapter per outside library -----------------------------------------------


def test_d_each_outside_library_has_its_named_adapters_only() -> None:
    importers: dict[str, dict[str, int]] = {library: {} for library in ADAPTERS}
    for module in modules().values():
        for imp in module.imports:
            root = imp.target.split(".")[0]
            if root in importers:
                importers[root].setdefault(module.rel, imp.line)
    problems = []
    for library, allowed in ADAPTERS.items():
        for rel, line in sorted(importers[library].items()):
            if rel not in allowed:
                problems.append(
                    f"{rel}:{line} imports {library}: only {', '.join(sorted(allowed))} may; "
                    f"use that adapter's interface (or, for a truly different role, name the "
                    f"module in ADAPTERS in tests/test_architecture.py)"
                )
        for rel in sorted(allowed - set(importers[library])):
            problems.append(f"ADAPTERS names {rel} for {library}, but it does not import it: "
                            f"update the table in tests/test_architecture.py")
    assert not problems, "\n".join(problems)


# -- e. one exception root ------------------------------------------------------------


def aliases(module: Module) -> dict[str, str]:
    """Local name → dotted name, from the module's imports (anywhere at module level)."""
    names: dict[str, str] = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    names[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                names[alias.asname or alias.name] = f"{base}.{alias.name}"
    return names


def dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    if isinstance(node, ast.Subscript):  # Generic[T] and the like
        return dotted(node.value)
    return None


@cache
def classes() -> dict[str, list[str]]:
    """Every class defined at module level in the project → its bases, as dotted names
    resolved through the module's imports (``builtins.X`` for builtins)."""
    found: dict[str, list[str]] = {}
    for module in modules().values():
        local = {n.name for n in module.tree.body if isinstance(n, ast.ClassDef)}
        names = aliases(module)
        for node in module.tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            bases = []
            for base in node.bases:
                text = dotted(base)
                if text is None:
                    continue
                head, _, rest = text.partition(".")
                if head in local and not rest:
                    bases.append(f"{module.name}.{head}")
                elif head in names:
                    bases.append(names[head] + (f".{rest}" if rest else ""))
                elif head in BUILTIN_EXCEPTIONS and not rest:
                    bases.append(f"builtins.{head}")
                else:
                    bases.append(text)
            found[f"{module.name}.{node.name}"] = bases
    return found


def canonical(name: str, seen: frozenset[str] = frozenset()) -> str:
    """Follow re-exports: ``edge.errors.X`` imported into ``edge.other`` and named from
    there is still ``edge.errors.X``."""
    if name in classes() or name in seen:
        return name
    module, _, attr = name.rpartition(".")
    if module in modules():
        target = aliases(modules()[module]).get(attr)
        if target is not None:
            return canonical(target, seen | {name})
    return name


def ancestry(name: str) -> set[str]:
    """Every base of the class, transitively, canonical names."""
    found: set[str] = set()
    todo = [name]
    while todo:
        for base in classes().get(todo.pop(), []):
            base = canonical(base)
            if base not in found:
                found.add(base)
                todo.append(base)
    return found


def is_exception(name: str) -> bool:
    for base in ancestry(name):
        if base.startswith("builtins.") and base.split(".", 1)[1] in BUILTIN_EXCEPTIONS:
            return True
        last = base.rsplit(".", 1)[-1]
        if base not in classes() and last.endswith(("Error", "Exception", "Warning")):
            return True  # an outside library's exception class
    return False


def test_e_every_exception_derives_from_mailslot_error() -> None:
    problems = []
    for name in sorted(classes()):
        if name == ERROR_ROOT or not is_exception(name):
            continue
        if ERROR_ROOT not in ancestry(name):
            module, _, cls = name.rpartition(".")
            bases = ", ".join(classes()[name])
            problems.append(
                f"{modules()[module].rel}: exception {cls}({bases}) does not derive from "
                f"{ERROR_ROOT}: put it under the edge's or the relay's error tree"
            )
    assert not problems, "\n".join(problems)


# -- f. size and names ----------------------------------------------------------------


def test_f_no_module_over_600_lines() -> None:
    problems = [
        f"{module.rel} has {module.lines} lines (max {MAX_LINES}): split it by concept"
        for module in modules().values() if module.lines > MAX_LINES
    ]
    assert not problems, "\n".join(problems)


def test_f_public_class_names_are_unique() -> None:
    defined: dict[str, list[str]] = {}
    for module in modules().values():
        for node in module.tree.body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                defined.setdefault(node.name, []).append(module.at(node.lineno))
    problems = [
        f"class {name} is defined {len(places)} times ({', '.join(places)}): give each "
        f"its own name (or make the local one private)"
        for name, places in sorted(defined.items()) if len(places) > 1
    ]
    assert not problems, "\n".join(problems)


# -- g. tests mirror the source -------------------------------------------------------

TESTS = ROOT / "tests"
EXEMPT = ("system", "fuzz")


def mirror_problem(test: Path) -> str | None:
    """Why ``test`` (a tests/…/test_*.py file) is not where the source says, or None."""
    rel = test.relative_to(TESTS)
    if len(rel.parts) == 1:
        if rel.name == Path(__file__).name:
            return None
        return ("a whole-flow test belongs in tests/system/, a test of one module in "
                "the folder that mirrors it")
    if rel.parts[0] in EXEMPT:
        return None
    if rel.parts[0] not in PACKAGES:
        return f"tests/{rel.parts[0]}/ mirrors no source package ({', '.join(PACKAGES)})"
    source = ROOT.joinpath(*rel.parts[:-1])
    if not (source / "__init__.py").is_file():
        return f"{source.relative_to(ROOT)}/ is not a source package: mirror an existing one"
    subject = test.stem.removeprefix("test_")
    names = {p.stem for p in source.glob("*.py") if p.stem != "__init__"} | {source.name}
    if any(subject == name or subject.startswith(name + "_") for name in names):
        return None
    return (f"no module {subject.split('_')[0]}.py in {source.relative_to(ROOT)}/: name it "
            f"test_<module>[_<aspect>].py after the module it tests")


def test_g_tests_mirror_the_source() -> None:
    problems = []
    for test in sorted(TESTS.rglob("test_*.py")):
        why = mirror_problem(test)
        if why is not None:
            problems.append(f"{test.relative_to(ROOT)}: {why}")
    assert not problems, "\n".join(problems)
