"""``mailslot claude install|uninstall``: mailslot's entries in Claude Code's settings.

What is written (Claude Code's settings and MCP documentation: hooks live under
``hooks.<Event>`` in ``settings.json`` — ``~/.claude/settings.json`` for the user,
``.claude/settings.json`` in a project — and MCP servers under ``mcpServers`` in
``.mcp.json`` at a project's root, or in ``~/.claude.json`` for the user):

* ``hooks.SessionStart``: one matcher group running ``mailslot hook claude session-start``;
* ``hooks.Stop``: one running ``mailslot hook claude stop`` with ``"asyncRewake": true``;
* ``mcpServers.mailslot``: ``mailslot mcp`` (``--channel`` if asked) on stdio.

Rules this module keeps:

* Idempotent: an entry that is already there as it would be written is left alone; one
  of ours that differs (mailslot moved) is updated in place; nothing else in the file
  is touched, and keys keep their order.
* Exactly undone: each file's text before and after the install, and which entries the
  install added, are kept in ``data/claude-install.json``. ``uninstall`` puts a file back
  byte for byte when it is still as the install left it (a file the install created is
  removed, with the ``.claude`` folder if the install made it and it is empty);
  otherwise it removes only the entries the install added (and the containers that
  became empty), keeping the user's later edits. Without a record (another
  ``MAILSLOT_HOME``), it removes the hooks whose command is a mailslot hook and a
  ``mailslot`` server that runs ``mailslot mcp``.
* A file that is not a JSON object, or whose ``hooks``/``mcpServers`` are not of the
  documented shape, is ``ClaudeSettingsError`` and is never written. Writes are atomic
  (a temporary file renamed over), with the file's mode kept.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.config import private_dir, write_atomic
from edge.errors import ClaudeSettingsError

#: The name the MCP server is registered under.
SERVER = "mailslot"
#: Hook events and the ``mailslot hook claude`` mode each runs.
HOOK_MODES = {"SessionStart": "session-start", "Stop": "stop"}
#: A SessionStart hook should be quick: Claude Code waits for it.
SESSION_START_TIMEOUT = 10


@dataclass(frozen=True)
class Target:
    """Where the entries go: the settings file (hooks) and the MCP file (servers)."""

    settings: Path
    mcp: Path

    @classmethod
    def for_project(cls, folder: Path) -> Target:
        return cls(folder / ".claude" / "settings.json", folder / ".mcp.json")

    @classmethod
    def for_user(cls, home: Path) -> Target:
        return cls(home / ".claude" / "settings.json", home / ".claude.json")


@dataclass(frozen=True)
class Entries:
    """What to register: the argv that runs mailslot, its environment (``MAILSLOT_HOME``),
    the mailslot session for the hooks, and whether the server is a channel."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    session: str | None = None
    channel: bool = False

    def hook_command(self, mode: str) -> str:
        """The shell command line of one hook (Claude Code runs hooks through a shell)."""
        words = [*self.argv, "hook", "claude", mode]
        if self.session:
            words += ["--session", self.session]
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        return (prefix + " " if prefix else "") + shlex.join(words)

    def hook_group(self, event: str) -> dict[str, Any]:
        handler: dict[str, Any] = {"type": "command",
                                   "command": self.hook_command(HOOK_MODES[event])}
        if event == "SessionStart":
            handler["timeout"] = SESSION_START_TIMEOUT
        else:
            # in the background, waking the session when it exits 2; "async" too, so
            # that a Claude Code without asyncRewake still never waits for it
            handler["async"] = True
            handler["asyncRewake"] = True
        return {"hooks": [handler]}

    def server(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "stdio", "command": self.argv[0],
                               "args": [*self.argv[1:], "mcp", *(["--channel"] if self.channel
                                                                 else [])]}
        if self.env:
            doc["env"] = dict(self.env)
        return doc


@dataclass
class FileChange:
    """One file's text before and after (None: the file does not exist), and what was
    added (``hooks.SessionStart``, ``mcpServers.mailslot``…) or removed."""

    path: Path
    before: str | None
    after: str | None
    entries: list[str] = field(default_factory=list)
    created_dir: bool = False

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def action(self) -> str:
        if not self.changed:
            return "unchanged"
        if self.before is None:
            return "create"
        return "delete" if self.after is None else "update"


# -- reading and writing ---------------------------------------------------------------


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClaudeSettingsError(f"{path}: cannot read: {exc}") from None


def parse(path: Path, text: str | None) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ClaudeSettingsError(f"{path}: not JSON ({exc}); fix it first") from None
    if not isinstance(doc, dict):
        raise ClaudeSettingsError(f"{path}: not a JSON object; fix it first")
    return doc


def dump(doc: dict[str, Any], like: str | None) -> str:
    """``doc`` as JSON text, indented as ``like`` is (2 spaces by default)."""
    indent = 2
    if like:
        for line in like.splitlines()[1:]:
            stripped = line.lstrip(" ")
            if stripped and len(stripped) < len(line):
                indent = len(line) - len(stripped)
                break
    return json.dumps(doc, indent=indent, ensure_ascii=False) + "\n"


def write_file(path: Path, text: str | None, mode: int | None = None) -> None:
    """Atomically replace ``path`` with ``text`` (None: remove it), keeping its mode (a
    new file: ``mode``, else 0644; ``~/.claude.json``, Claude Code's own state, 0600)."""
    if text is None:
        path.unlink(missing_ok=True)
        return
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644 if path.name != ".claude.json" else 0o600
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode("utf-8"), mode)


# -- install ------------------------------------------------------------------------------


def _table(doc: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = doc.setdefault(key, {})
    if not isinstance(value, dict):
        raise ClaudeSettingsError(f"{path}: {key!r} is not a JSON object; fix it first")
    return value


def _groups(hooks: dict[str, Any], event: str, path: Path) -> list[Any]:
    value = hooks.setdefault(event, [])
    if not isinstance(value, list):
        raise ClaudeSettingsError(f"{path}: hooks.{event} is not a JSON array; fix it first")
    return value


def _ours(group: Any, event: str) -> bool:
    """A matcher group that runs a ``mailslot hook claude <mode>`` for ``event``."""
    if not isinstance(group, dict) or not isinstance(group.get("hooks"), list):
        return False
    marker = f" hook claude {HOOK_MODES[event]}"
    return any(isinstance(h, dict) and isinstance(h.get("command"), str)
               and marker in h["command"] for h in group["hooks"])


def _our_server(doc: Any) -> bool:
    if not isinstance(doc, dict) or not isinstance(doc.get("args"), list):
        return False
    command = str(doc.get("command", ""))
    return "mcp" in doc["args"] and (Path(command).name == "mailslot"
                                     or doc["args"][:2] == ["-m", "edge"])


def plan_install(target: Target, entries: Entries) -> list[FileChange]:
    """The two files as ``install`` would leave them."""
    changes = []
    text = read_text(target.settings)
    doc = parse(target.settings, text)
    added: list[str] = []
    hooks = _table(doc, "hooks", target.settings)
    for event in HOOK_MODES:
        groups = _groups(hooks, event, target.settings)
        wanted = entries.hook_group(event)
        mine = [i for i, g in enumerate(groups) if _ours(g, event)]
        if not mine:
            groups.append(wanted)
            added.append(f"hooks.{event}")
        elif groups[mine[0]] != wanted:
            groups[mine[0]] = wanted
    after = dump(doc, text) if added or parse(target.settings, text) != doc else text
    changes.append(FileChange(target.settings, text, after, added,
                              created_dir=not target.settings.parent.exists()))
    text = read_text(target.mcp)
    doc = parse(target.mcp, text)
    servers = _table(doc, "mcpServers", target.mcp)
    added = []
    if SERVER not in servers:
        added.append(f"mcpServers.{SERVER}")
    if servers.get(SERVER) != entries.server():
        servers[SERVER] = entries.server()
    after = dump(doc, text) if parse(target.mcp, text) != doc else text
    changes.append(FileChange(target.mcp, text, after, added))
    return changes


# -- uninstall ----------------------------------------------------------------------------


def _remove(doc: dict[str, Any], entry: str, path: Path) -> bool:
    """Remove ``entry`` (``hooks.EVENT``: our matcher groups; ``mcpServers.NAME``) and
    the containers that became empty; whether anything was removed."""
    table, _, name = entry.partition(".")
    container = doc.get(table)
    if not isinstance(container, dict):
        return False
    if table == "hooks":
        groups = container.get(name)
        if not isinstance(groups, list):
            return False
        kept = [g for g in groups if not _ours(g, name)]
        if len(kept) == len(groups):
            return False
        if kept:
            container[name] = kept
        else:
            del container[name]
    else:
        if name not in container:
            return False
        del container[name]
    if not container:
        del doc[table]
    return True


def plan_uninstall(target: Target, record: dict[str, Any]) -> list[FileChange]:
    """The two files as ``uninstall`` would leave them, given the install's ``record``
    (``{path: {"before", "after", "entries", "created_dir"}}``; may be empty)."""
    changes = []
    for path, fallback in ((target.settings, [f"hooks.{e}" for e in HOOK_MODES]),
                           (target.mcp, [f"mcpServers.{SERVER}"])):
        text = read_text(path)
        mine = record.get(str(path))
        if mine is not None and text == mine.get("after"):
            changes.append(FileChange(path, text, mine.get("before"), list(mine["entries"]),
                                      created_dir=bool(mine.get("created_dir"))))
            continue
        doc = parse(path, text)
        if mine is not None:
            wanted = list(mine["entries"])
        else:  # no record: what is recognisably ours
            servers = doc.get("mcpServers")
            wanted = [e for e in fallback if e.startswith("hooks.") or (
                isinstance(servers, dict) and _our_server(servers.get(SERVER)))]
        removed = [e for e in wanted if _remove(doc, e, path)]
        changes.append(FileChange(path, text, dump(doc, text) if removed else text, removed))
    return changes


# -- the record of installs ---------------------------------------------------------------


def load_record(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ClaudeSettingsError(f"{path}: cannot read the install record: {exc}") from None
    return doc if isinstance(doc, dict) else {}


def apply(changes: list[FileChange], record_file: Path, *, installing: bool) -> None:
    """Write the changed files and update the record (after the files: a crash between
    the two leaves files an uninstall still recognises by their entries)."""
    record = load_record(record_file)
    for change in changes:
        if change.changed:
            write_file(change.path, change.after)
            if not installing and change.after is None and change.created_dir:
                _remove_empty(change.path.parent)
        key = str(change.path)
        if installing and change.changed:
            # a file changed again since an earlier install keeps that install's "before"
            earlier: dict[str, Any] = record.get(key) or {}
            if not earlier or earlier.get("after") != change.before:
                earlier = {"before": change.before, "entries": [],
                           "created_dir": change.created_dir}
            record[key] = {"before": earlier["before"], "after": change.after,
                           "entries": sorted({*earlier["entries"], *change.entries}),
                           "created_dir": bool(earlier.get("created_dir"))}
        elif not installing:
            record.pop(key, None)
    # 0600: it holds copies of the settings files (``~/.claude.json`` holds tokens)
    private_dir(record_file.parent)
    write_file(record_file, json.dumps(record, indent=2) + "\n" if record else None, 0o600)


def _remove_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (the user keeps things there): leave it
        folder.rmdir()
