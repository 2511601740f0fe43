"""Editing ``intents.toml`` the way a careful user would: comments and layout kept.

Rules this module keeps:

* ``mailslot intent|watch add|pause|resume|rm`` and ``mailslot approvals promote`` (and
  the MCP tools that do the same) edit through ``edit_file``: under a lock file, the text
  is read and parsed (``edge.intents.file``), changed, and written atomically only if the
  new text parses to exactly the old declarations with only the intended change.
* A new intent or watch is appended as a block rendered with ``tomlkit`` (``render``:
  defaults left out, durations written as ``"30m"``); a removed one's lines are cut out,
  with the comment lines right above them; pausing sets one key with ``tomlkit``. Intents
  and watches are edited by the same functions, told the ``Section``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any, get_args

import tomlkit
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from tomlkit.exceptions import TOMLKitError

from edge.approvals.dial import check_action
from edge.config import FILE_MODE, private_dir, write_atomic
from edge.errors import (
    DuplicateIntent,
    DuplicateWatch,
    EdgeError,
    IntentFileError,
    InvalidIntent,
    InvalidWatch,
)
from edge.intents.approvalrules import Rule
from edge.intents.declarations import Declarations, Watch
from edge.intents.file import TABLES, TOP_LEVEL, Section, parse_intents
from edge.intents.locate import Locator
from edge.intents.model import Intent, parse_duration
from shared.errors import LocalError

#: What a file created by ``mailslot intent add`` or ``mailslot watch add`` starts with.
HEADER = (
    "# mailslot intents and watches: what may wake an agent, and when. Edit by hand or\n"
    "# with `mailslot intent|watch add|pause|resume|rm` (comments and layout are kept);\n"
    "# the edge daemon reloads this file whenever it changes.\n"
)
#: An edit: (the file's text, what it declares) → (the new text, what that must declare).
Edit = Callable[[str, Declarations], tuple[str, Declarations]]


def add_intent(path: Path, intent: Intent) -> None:
    """Append ``intent`` to the file (created if missing), as a ``[[intent]]`` block after
    everything else. Raises ``DuplicateIntent`` if the id exists, ``IntentFileError`` if
    the file is broken (fix it first); nothing is written then."""
    _add(path, "intent", intent)


def add_watch(path: Path, watch: Watch) -> None:
    """Append ``watch`` as a ``[[watch]]`` block, as ``add_intent`` does an intent;
    ``DuplicateWatch`` if the id exists."""
    _add(path, "watch", watch)


def remove_intent(path: Path, intent_id: str) -> bool:
    """Remove the intent's block (its ``[[intent]]`` and ``[intent.*]`` tables, with the
    comment lines right above them). ``False`` if there is no such intent."""
    return _remove(path, "intent", intent_id)


def remove_watch(path: Path, watch_id: str) -> bool:
    """Remove the watch's ``[[watch]]`` block, as ``remove_intent`` does an intent's."""
    return _remove(path, "watch", watch_id)


def set_paused(path: Path, intent_id: str, paused: bool) -> bool:
    """Set ``paused`` on the intent (an existing ``paused`` line keeps its comment).
    ``False`` if there is no such intent."""
    return _set_paused(path, "intent", intent_id, paused)


def set_watch_paused(path: Path, watch_id: str, paused: bool) -> bool:
    """Set ``paused`` on the watch, as ``set_paused`` does on an intent."""
    return _set_paused(path, "watch", watch_id, paused)


_DUPLICATE: dict[Section, type[EdgeError]] = {"intent": DuplicateIntent, "watch": DuplicateWatch}
_INVALID: dict[Section, type[EdgeError]] = {"intent": InvalidIntent, "watch": InvalidWatch}


def _add(path: Path, section: Section, item: Intent | Watch) -> None:
    field = TOP_LEVEL[section]

    def edit(text: str, old: Declarations) -> tuple[str, Declarations]:
        if any(existing.id == item.id for existing in getattr(old, field)):
            raise _DUPLICATE[section](f"{section} {item.id!r} already exists in {path}")
        block = render(section, item)
        body = text.rstrip()
        new_text = f"{body}\n\n{block}" if body else f"{HEADER}\n{block}"
        return new_text, old.model_copy(update={field: [*getattr(old, field), item]})

    edit_file(path, edit)


def _remove(path: Path, section: Section, item_id: str) -> bool:
    field = TOP_LEVEL[section]

    def edit(text: str, old: Declarations) -> tuple[str, Declarations]:
        index = _index(old, section, item_id)
        locator = Locator(text)
        lines = text.splitlines(keepends=True)
        starts = [_attached_start(lines, line) for _, line in locator.headers]
        doomed: set[int] = set()
        for k, (loc, _) in enumerate(locator.headers):
            if loc[:2] == (section, index):
                end = starts[k + 1] if k + 1 < len(starts) else len(lines) + 1
                doomed.update(range(starts[k], end))
        if doomed:
            new_text = "".join(line for n, line in enumerate(lines, 1) if n not in doomed)
            if len(lines) in doomed:  # cut at the end: no trailing blank lines
                new_text = new_text.rstrip("\n") + "\n"
        else:  # written as an inline array, ``intent = [{...}]``
            doc = tomlkit.parse(text)
            del doc[section][index]
            new_text = tomlkit.dumps(doc)
        remaining = [i for i in getattr(old, field) if i.id != item_id]
        return new_text, old.model_copy(update={field: remaining})

    return edit_file(path, edit)


def _set_paused(path: Path, section: Section, item_id: str, paused: bool) -> bool:
    field = TOP_LEVEL[section]

    def edit(text: str, old: Declarations) -> tuple[str, Declarations]:
        index = _index(old, section, item_id)
        item = getattr(old, field)[index]
        if item.paused == paused:
            return text, old
        doc = tomlkit.parse(text)
        doc[section][index]["paused"] = paused
        changed = list(getattr(old, field))
        changed[index] = item.model_copy(update={"paused": paused})
        return tomlkit.dumps(doc), old.model_copy(update={field: changed})

    return edit_file(path, edit)


class _NotThere(LocalError):
    """No item with that id in the section. Private control flow: never leaves this
    module (the locked edit catches it and returns ``False``)."""

    code = "not_there"


class _NoNull(LocalError):
    """A value TOML cannot hold (``None``). Private control flow: never leaves this
    module (``render`` turns it into ``InvalidIntent`` or ``InvalidWatch``)."""

    code = "no_null"


def _index(declarations: Declarations, section: Section, item_id: str) -> int:
    for index, item in enumerate(getattr(declarations, TOP_LEVEL[section])):
        if item.id == item_id:
            return index
    raise _NotThere


def edit_file(path: Path, edit: Edit) -> bool:
    """Change ``intents.toml`` at ``path`` (created, with its folder, if missing) safely:
    under the file's lock, read it and parse it (``IntentFileError`` if it is broken:
    the user fixes it first), call ``edit(text, declarations)``, which returns the new
    text and the declarations that text must parse to, check that it parses to exactly
    those, and write it atomically. Nothing is written if any step fails, or if the text
    did not change.

    ``edit`` raises nothing of its own but the edge's errors (a duplicate id, say), which
    pass through; a ``tomlkit`` failure becomes ``IntentFileError``. Returns ``False`` if
    the intent or watch an edit of this module looks for is not there, else ``True``."""
    private_dir(path.parent)
    with _locked(path):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise IntentFileError(path, None, f"cannot read ({exc})") from None
        old = parse_intents(text, path)
        try:
            new_text, expected = edit(text, old)
        except _NotThere:
            return False
        except TOMLKitError as exc:
            raise IntentFileError(path, None, f"cannot edit: {exc}") from None
        if new_text == text:
            return True
        try:
            new = parse_intents(new_text, path)
        except IntentFileError as exc:
            raise IntentFileError(
                path, None, f"the edit would break the file ({exc.reason}); nothing written"
            ) from None
        if new != expected:
            raise IntentFileError(
                path, None, "the edit cannot be made safely in this layout; edit the file by hand"
            )
        write_atomic(path, new_text.encode())
    return True


def _attached_start(lines: list[str], header_line: int) -> int:
    """The first line of the comment block directly above a header (the header's own
    line if none); the comment block that opens the file belongs to the file."""
    start = header_line
    while start > 1 and lines[start - 2].lstrip().startswith("#"):
        start -= 1
    if start == 1 and header_line > 1:
        return header_line
    return start


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialize editors (CLI processes) on ``intents.toml.lock`` next to the file."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def render_intent(intent: Intent) -> str:
    """``intent`` as a ``[[intent]]`` block: fields at their defaults are left out,
    durations are written as ``"30m"``, predicates and ``active_hours`` inline."""
    return render("intent", intent)


def render_watch(watch: Watch) -> str:
    """``watch`` as a ``[[watch]]`` block (``id`` and ``kind`` first, ``[watch.schedule]``
    and ``[watch.match]`` as tables), as ``render_intent`` renders an intent."""
    return render("watch", watch)


def render(section: Section, item: Intent | Watch) -> str:
    """``item`` as one ``[[section]]`` block that parses back to ``item``; raises
    ``InvalidIntent`` or ``InvalidWatch`` for a value TOML cannot write (a null)."""
    try:
        return _render_item(section, item)
    except _NoNull:
        raise _INVALID[section](
            "TOML has no null: use 'present'/'absent' or a real value"
        ) from None


def _render_item(section: Section, item: Intent | Watch) -> str:
    table = tomlkit.table()
    fields = type(item).model_fields
    tables = TABLES[section]
    first = [n for n in ("id", "kind") if n in fields]
    plain = [n for n in fields if n not in tables and n not in first]
    for name in first + plain + [n for n in tables if n in fields]:
        value = getattr(item, name)
        if value == fields[name].get_default(call_default_factory=True):
            continue
        if name in tables:
            table.add(name, _render_model(value, tomlkit.table()))
        else:
            table.add(name, _render(value, _is_duration(fields[name])))
    doc = tomlkit.document()
    array = tomlkit.aot()
    array.append(table)
    doc.add(section, array)
    return tomlkit.dumps(doc)


def _render_model(model: BaseModel, into: Any) -> Any:
    fields = type(model).model_fields
    for name, info in fields.items():
        value = getattr(model, name)
        if value == info.get_default(call_default_factory=True) and name != "op":
            continue
        into.add(name, _render(value, _is_duration(info)))
    return into


def _is_duration(info: FieldInfo) -> bool:
    """Whether the field holds a ``Duration`` (also inside ``Duration | None``)."""

    def parsed_by(metadata: Any) -> bool:
        return any(
            getattr(m, "func", None) is parse_duration or parsed_by(get_args(m)) for m in metadata
        )

    return parsed_by(info.metadata) or parsed_by(get_args(info.annotation))


def _render(value: Any, duration: bool = False) -> Any:
    if duration and isinstance(value, int | float):
        return format_duration(value)
    if isinstance(value, BaseModel):
        return _render_model(value, tomlkit.inline_table())
    if isinstance(value, dict):
        table = tomlkit.inline_table()
        for key, item in value.items():
            table.add(key, _render(item))
        return table
    if isinstance(value, list):
        array = tomlkit.array()
        array.extend(_render(item) for item in value)
        if len(value) > 1 and any(isinstance(i, BaseModel | dict) for i in value):
            array.multiline(True)
        return array
    if value is None:
        raise _NoNull
    return value.value if isinstance(value, Enum) else value


def format_duration(seconds: float) -> str | float:
    """``1800.0`` → ``"30m"``: the largest unit that divides it exactly; a float that no
    unit writes exactly stays a number of seconds."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds == 0:
        return "0s"
    millis = round(seconds * 1000, 6)
    if millis.is_integer() and parse_duration(f"{int(millis)}ms") == seconds:
        return f"{int(millis)}ms"
    return seconds


# -- promotion: an allow rule in [approvals] -------------------------------------------


def promote(path: Path, action: str) -> bool:
    """Append ``{pattern = ACTION, decision = "allow"}`` to ``[approvals].rules`` in the
    intents file (comments and layout kept, written atomically under the file's lock).
    ``False`` if that rule is already there."""
    action = check_action(action)
    rule = Rule(pattern=action, decision="allow")
    added = True

    def edit(text: str, old: Declarations) -> tuple[str, Declarations]:
        nonlocal added
        if rule in old.approvals.rules:
            added = False
            return text, old
        doc = tomlkit.parse(text)
        entry = tomlkit.inline_table()
        entry.update({"pattern": action, "decision": "allow"})
        if "approvals" not in doc:
            table = tomlkit.table()
            table.add("rules", tomlkit.array())
            doc.add("approvals", table)
        section: Any = doc["approvals"]
        if "rules" not in section:
            section["rules"] = tomlkit.array()
        section["rules"].append(entry)
        new_text = tomlkit.dumps(doc)
        if not text.strip():
            new_text = f"{HEADER}\n{new_text}"
        settings = old.approvals.model_copy(update={"rules": [*old.approvals.rules, rule]})
        return new_text, old.model_copy(update={"approvals": settings})

    edit_file(path, edit)
    return added
