"""The declarative intents file, ``intents.toml``: load it, edit it, watch it.

Rules this module keeps:

* ``edge.intents.model`` and ``edge.intents.declarations`` are the single source of truth for what an intent
  and a watch are; this module only maps TOML to ``Declarations`` (``[settings]`` →
  ``settings``, ``[[intent]]`` → ``intents``, ``[[watch]]`` → ``watches``, ``[approvals]``
  → ``approvals``) and back, and turns every problem into an ``IntentFileError`` naming
  file, line and field.
* Loading uses the standard ``tomllib``. Editing (``mailslot intent|watch ...``) keeps the
  user's comments and layout: a new intent or watch is appended as a block rendered with
  ``tomlkit``, a removed one's lines are cut out, pausing sets one key with ``tomlkit``.
  Intents and watches are edited by the same functions, told the ``Section``. Every edit
  is checked before it is written: the new text must parse, and to exactly the old
  declarations with only the intended change. Writes are atomic and serialized by a lock
  file.
* ``IntentWatcher`` is the one place that imports ``watchfiles``: hot reload on inotify
  events, the last good set stays in force while the file is broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import fcntl
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import tomlkit
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from tomlkit.exceptions import TOMLKitError

from edge.config import FILE_MODE, private_dir, write_atomic
from edge.errors import EdgeError
from edge.intents.declarations import Declarations, Watch
from edge.intents.model import Intent, parse_duration

#: What a file created by ``mailslot intent add`` or ``mailslot watch add`` starts with.
HEADER = (
    "# mailslot intents and watches: what may wake an agent, and when. Edit by hand or\n"
    "# with `mailslot intent|watch add|pause|resume|rm` (comments and layout are kept);\n"
    "# the edge daemon reloads this file whenever it changes.\n"
)
#: TOML top-level key → field of ``Declarations``.
_TOP_LEVEL = {
    "settings": "settings", "intent": "intents", "watch": "watches", "approvals": "approvals",
}
#: The arrays of tables the edit functions work on: ``[[intent]]`` and ``[[watch]]``.
Section = Literal["intent", "watch"]
#: Sub-models written as ``[SECTION.NAME]`` tables (in this order, after the plain keys);
#: other sub-models are inline tables.
_TABLES: dict[Section, tuple[str, ...]] = {
    "intent": ("match", "judge", "policy"),
    "watch": ("schedule", "match"),
}


class IntentFileError(EdgeError):
    """``intents.toml`` cannot be read, is not TOML, or does not describe valid intents.
    ``line`` is 1-based (``None`` when no line applies); ``reason`` names the field."""

    code = "intent_file_error"

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}")


class InvalidIntent(EdgeError):
    """An intent given on the command line is not valid; nothing was written."""

    code = "invalid_intent"


class DuplicateIntent(EdgeError):
    """``intent add`` with an id the file already has; nothing was written."""

    code = "duplicate_intent"


class UnknownIntent(EdgeError):
    """No intent with that id in the file."""

    code = "unknown_intent"


class InvalidWatch(EdgeError):
    """A watch given on the command line is not valid; nothing was written."""

    code = "invalid_watch"


class DuplicateWatch(EdgeError):
    """``watch add`` with an id the file already has; nothing was written."""

    code = "duplicate_watch"


class UnknownWatch(EdgeError):
    """No watch with that id in the file."""

    code = "unknown_watch"


# -- loading ---------------------------------------------------------------------------


def load_intents(path: Path) -> Declarations:
    """The settings, intents and watches in ``path``; a missing file declares nothing
    (defaults). Raises ``IntentFileError`` for anything else that is wrong."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Declarations()
    except OSError as exc:
        raise IntentFileError(path, None, f"cannot read ({exc.strerror})") from None
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise IntentFileError(path, data[: exc.start].count(b"\n") + 1, "not UTF-8 text") from None
    return parse_intents(text, path)


def parse_intents(text: str, path: Path) -> Declarations:
    """The pure part of ``load_intents``: ``text`` is the file's content, ``path`` is only
    used in errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, text, path) from None
    for key in doc:
        if key not in _TOP_LEVEL:
            hint = difflib.get_close_matches(key, list(_TOP_LEVEL), n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise IntentFileError(
                path,
                _Locator(text).line_of((key,)),
                f"unknown top-level key {key!r}: only [settings], [[intent]] and [[watch]]"
                f"{did_you_mean}, plus [approvals]",
            )
    model_input = {_TOP_LEVEL[key]: value for key, value in doc.items()}
    try:
        return Declarations.model_validate(model_input)
    except ValidationError as exc:
        raise _validation_error(exc, doc, _Locator(text), path) from None


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str, path: Path) -> IntentFileError:
    message = str(exc)
    line: int | None = getattr(exc, "lineno", None)
    if (m := re.search(r"\s*\(at line (\d+), column \d+\)$", message)) is not None:
        line = line or int(m.group(1))
        message = message[: m.start()]
    elif (m := re.search(r"\s*\(at end of document\)$", message)) is not None:
        # TOML lines end at "\n" only (splitlines would also split at \f, \x1c, \u2028…)
        line = line or text.rstrip("\n").count("\n") + 1
        message = message[: m.start()] + " at the end of the file"
    return IntentFileError(path, line, f"not valid TOML: {message}")


def validation_problems(
    exc: ValidationError, root: type[BaseModel]
) -> list[tuple[tuple[str | int, ...], str]]:
    """Each problem of ``exc`` as (location, reason in words): pydantic's prefixes removed,
    the tags it puts into locations inside a discriminated union removed (``("watches", 0,
    "timer", "schedule")`` → ``("watches", 0, "schedule")``), an unknown field named as
    such with the closest known field as a hint, an unknown or missing tag as a problem of
    the tag field (``kind``)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        raw = tuple(p for p in error["loc"] if isinstance(p, str | int))
        loc, models = _walk(root, raw)
        reason = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            ctx = error.get("ctx") or {}
            field = str(ctx.get("discriminator", "kind")).strip("'\"")
            tags = list(dict.fromkeys(str(t) for m in models for t in _tags(m)))
            one_of = f"one of {', '.join(tags)}"
            loc = (*loc, field)
            if error["type"] == "union_tag_not_found":
                reason = f"Field required ({one_of})"
            else:
                tag = str(ctx.get("tag"))
                hint = difflib.get_close_matches(tag, tags, n=1)
                did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
                reason = f"unknown {field} {tag!r}{did_you_mean}: {one_of}"
        elif error["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
            reason = "unknown field"
            _, owners = _walk(root, raw[:-1])
            known = [name for model in owners for name in model.model_fields]
            hint = difflib.get_close_matches(loc[-1], known, n=1)
            if hint:
                reason += f" (did you mean {hint[0]!r}?)"
        problems.append((loc, reason))
    return problems


def dotted(loc: tuple[str | int, ...]) -> str:
    """``("policy", "condition", 0, "op")`` → ``policy.condition[0].op``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


#: Field of ``Declarations`` → TOML top-level key.
_TOML_KEY = {field: key for key, field in _TOP_LEVEL.items()}


def _validation_error(
    exc: ValidationError, doc: dict[str, Any], locator: _Locator, path: Path
) -> IntentFileError:
    found: list[tuple[int | None, str]] = []
    for loc, reason in validation_problems(exc, Declarations):
        toml_loc: tuple[str | int, ...] = ()
        if loc:
            toml_loc = (_TOML_KEY.get(str(loc[0]), loc[0]), *loc[1:])
        else:  # a check across the whole file: only duplicate ids are
            section: Section = "watch" if reason.startswith("duplicate watch id") else "intent"
            if (dup := _duplicate(doc, section)) is not None:
                toml_loc = (section, dup[1], "id")
                reason += f" (first at line {locator.line_of((section, dup[0], 'id'))})"
        line = locator.line_of(toml_loc) if toml_loc else None
        found.append((line, _name_problem(toml_loc, reason, doc)))
    found.sort(key=lambda p: (p[0] is None, p[0] or 0))
    line, reason = found[0]
    if len(found) > 1:
        reason += f" (and {len(found) - 1} more problem{'s' if len(found) > 2 else ''})"
    return IntentFileError(path, line, reason)


def _name_problem(loc: tuple[str | int, ...], reason: str, doc: dict[str, Any]) -> str:
    if len(loc) >= 2 and loc[0] in _TABLES and isinstance(loc[1], int):
        items = doc.get(str(loc[0]))
        raw = items[loc[1]] if isinstance(items, list) else None
        ident = raw.get("id") if isinstance(raw, dict) else None
        who = f"{loc[0]} {ident!r}" if isinstance(ident, str) else f"{loc[0]} #{loc[1] + 1}"
        return f"{who}: {dotted(loc[2:])}: {reason}" if loc[2:] else f"{who}: {reason}"
    return f"{dotted(loc)}: {reason}" if loc else reason


def _duplicate(doc: dict[str, Any], section: Section) -> tuple[int, int] | None:
    """(first, second): indexes of the first two items of ``section`` with the same id."""
    seen: dict[str, int] = {}
    items = doc.get(section)
    for index, raw in enumerate(items if isinstance(items, list) else []):
        ident = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(ident, str):
            if ident in seen:
                return seen[ident], index
            seen[ident] = index
    return None


def _walk(
    root: type[BaseModel], loc: tuple[str | int, ...]
) -> tuple[tuple[str | int, ...], list[type[BaseModel]]]:
    """``loc`` without discriminated-union tags, and the models that may sit at its end
    (none past a plain value; several at an untagged union of models)."""
    models: list[type[BaseModel]] = [root]
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, int):
            out.append(part)
            continue
        if len(models) > 1 and (tagged := [m for m in models if part in _tags(m)]):
            models = tagged  # pydantic names the union member it tried: not a field
            continue
        out.append(part)
        infos = [m.model_fields.get(part) for m in models]
        models = [m for info in infos if info is not None for m in _models_in(info.annotation)]
    return tuple(out), models


def _tags(model: type[BaseModel]) -> list[object]:
    """The values of ``model``'s single-valued ``Literal`` fields: its union tags."""
    return [
        args[0]
        for info in model.model_fields.values()
        if get_origin(info.annotation) is Literal and len(args := get_args(info.annotation)) == 1
    ]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


# -- where things are in the text ------------------------------------------------------

_ATOM_STOP = set(" \t\r\n[]{}=,#\"'")
Loc = tuple[str | int, ...]


class _Locator:
    """Line numbers of the keys and tables of a (valid) TOML text, by path as the parsed
    document nests them: ``("intent", 2, "policy", "active_hours", "timezone")`` is the
    ``timezone`` key in the ``active_hours`` inline table in the ``[intent.policy]`` table
    of the third ``[[intent]]``. tomllib gives values only, so this is a small scanner:
    strings and comments skipped, ``[[array]]`` headers counted, arrays indexed."""

    def __init__(self, text: str) -> None:
        self.lines: dict[Loc, int] = {}
        #: Every table header: (path it opens, line), in file order.
        self.headers: list[tuple[Loc, int]] = []
        self._tokens = _tokenize(text)
        self._pos = 0
        self._aot_count: dict[Loc, int] = {}
        self._scan()

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc``, else of its nearest enclosing key or table that has one."""
        for end in range(len(loc), 0, -1):
            if (line := self.lines.get(loc[:end])) is not None:
                return line
        return None

    def _peek(self) -> tuple[str, str, int]:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else ("eof", "", 0)

    def _next(self) -> tuple[str, str, int]:
        token = self._peek()
        self._pos += 1
        return token

    def _mark(self, loc: Loc, line: int) -> None:
        for end in range(1, len(loc) + 1):
            self.lines.setdefault(loc[:end], line)

    def _scan(self) -> None:
        table: Loc = ()
        while (token := self._peek())[0] != "eof":
            if token[0] == "nl":
                self._next()
            elif token == ("p", "[", token[2]):
                self._next()
                is_array = self._peek()[:2] == ("p", "[")
                if is_array:
                    self._next()
                parts, _ = self._key()
                table = self._resolve(parts, is_array)
                self.lines[table] = token[2]
                self._mark(table, token[2])
                self.headers.append((table, token[2]))
                self._skip_line()
            else:
                self._key_value(table)
                self._skip_line()

    def _resolve(self, parts: list[str], is_array: bool) -> Loc:
        out: list[str | int] = []
        for index, part in enumerate(parts):
            out.append(part)
            key = tuple(out)
            if is_array and index == len(parts) - 1:
                self._aot_count[key] = self._aot_count.get(key, 0) + 1
                out.append(self._aot_count[key] - 1)
            elif key in self._aot_count:
                out.append(self._aot_count[key] - 1)
        return tuple(out)

    def _key(self) -> tuple[list[str], int]:
        parts: list[str] = []
        line = self._peek()[2]
        while self._peek()[0] in ("str", "atom"):
            kind, value, _ = self._next()
            parts.extend([value] if kind == "str" else [p for p in value.split(".") if p])
        return parts, line

    def _key_value(self, base: Loc) -> None:
        parts, line = self._key()
        if not parts or self._peek()[:2] != ("p", "="):
            return
        self._next()
        loc = base + tuple(parts)
        self._mark(loc, line)
        self._value(loc)

    def _value(self, loc: Loc) -> None:
        kind, value, _ = self._next()
        if (kind, value) == ("p", "["):
            index = 0
            while (token := self._peek())[0] != "eof":
                if token[0] == "nl":
                    self._next()
                elif token[:2] == ("p", "]"):
                    self._next()
                    return
                elif token[:2] == ("p", ","):
                    self._next()
                    index += 1
                else:
                    self._mark((*loc, index), token[2])
                    self._value((*loc, index))
        elif (kind, value) == ("p", "{"):
            while (token := self._peek())[0] != "eof":
                if token[0] == "nl" or token[:2] == ("p", ","):
                    self._next()
                elif token[:2] == ("p", "}"):
                    self._next()
                    return
                elif token[0] in ("str", "atom"):
                    self._key_value(loc)
                else:
                    self._next()

    def _skip_line(self) -> None:
        while self._peek()[0] not in ("nl", "eof"):
            self._next()


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, line) with kind ``nl``, ``p`` (one of ``[]{}=,``), ``str`` (a decoded
    single-line string; multi-line ones are skipped over as ``str`` with no text) or
    ``atom`` (bare keys, numbers, booleans, dates). Comments are dropped."""
    tokens: list[tuple[str, str, int]] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            tokens.append(("nl", "", line))
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "[]{}=,":
            tokens.append(("p", c, line))
            i += 1
        elif text.startswith(('"""', "'''"), i):
            quote = text[i : i + 3]
            j = i + 3
            while j < n and not text.startswith(quote, j):
                j += 2 if quote == '"""' and text[j] == "\\" else 1
            j += 3
            while j < n and text[j] == quote[0]:  # up to two quotes may end the content
                j += 1
            tokens.append(("str", "", line))
            line += text.count("\n", i, j)
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if c == '"' and text[j] == "\\" else 1
            raw = text[i : j + 1]
            try:
                value = tomllib.loads(f"k = {raw}")["k"]
            except tomllib.TOMLDecodeError:
                value = raw
            tokens.append(("str", value, line))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in _ATOM_STOP:
                j += 1
            tokens.append(("atom", text[i:j], line))
            i = j
    return tokens


# -- editing ---------------------------------------------------------------------------


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
    field = _TOP_LEVEL[section]

    def edit(text: str, old: Declarations) -> tuple[str, Declarations]:
        if any(existing.id == item.id for existing in getattr(old, field)):
            raise _DUPLICATE[section](f"{section} {item.id!r} already exists in {path}")
        block = render(section, item)
        body = text.rstrip()
        new_text = f"{body}\n\n{block}" if body else f"{HEADER}\n{block}"
        return new_text, old.model_copy(update={field: [*getattr(old, field), item]})

    _edit(path, edit)


def _remove(path: Path, section: Section, item_id: str) -> bool:
    field = _TOP_LEVEL[section]

    def edit(text: str, old: Declarations) -> tuple[str, Declarations]:
        index = _index(old, section, item_id)
        locator = _Locator(text)
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

    return _edit(path, edit)


def _set_paused(path: Path, section: Section, item_id: str, paused: bool) -> bool:
    field = _TOP_LEVEL[section]

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

    return _edit(path, edit)


class _NotThere(Exception):
    pass


class _NoNull(Exception):
    pass


def _index(declarations: Declarations, section: Section, item_id: str) -> int:
    for index, item in enumerate(getattr(declarations, _TOP_LEVEL[section])):
        if item.id == item_id:
            return index
    raise _NotThere


def _edit(path: Path, edit: Callable[[str, Declarations], tuple[str, Declarations]]) -> bool:
    """Under the lock: read, check, ``edit``, check that the new text parses to exactly
    the declarations ``edit`` promised, write atomically. ``False`` if the intent or
    watch ``edit`` looks for is not there."""
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
    tables = _TABLES[section]
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


# -- hot reload ------------------------------------------------------------------------


class IntentWatcher:
    """Keeps ``current`` equal to the last good content of ``path``, and says so.

    The file is loaded once at construction: good → ``on_load(declarations)``; bad →
    ``on_error(err)`` and ``current`` declares nothing (no intent wakes anything, no watch
    runs, every interrupt still reaches the inbox, the daemon keeps running until the file
    is fixed).
    ``run(stop)`` then waits on inotify events for the file's folder (the file may be
    rewritten, replaced by a rename, created or deleted) and reloads after ``debounce``
    seconds without a further change:

    * good → ``current`` is replaced and ``on_load(new)`` is called, if the declarations
      changed or the previous load had failed; a deleted file is good and declares nothing;
    * bad → ``on_error(err)``, and the last good declarations stay in force.

    Callbacks run in the event loop's thread and must not block. ``ready`` is set once
    changes are being captured: a change made after that is never missed.
    """

    def __init__(
        self,
        path: Path,
        on_load: Callable[[Declarations], None],
        on_error: Callable[[IntentFileError], None],
        debounce: float = 0.05,
    ) -> None:
        self.path = path
        self.ready = asyncio.Event()
        self._on_load = on_load
        self._on_error = on_error
        self._debounce_ms = max(1, int(debounce * 1000))
        self._current = Declarations()
        self._error: IntentFileError | None = None
        self._reload(initial=True)

    @property
    def current(self) -> Declarations:
        """The declarations in force: the last file content that loaded without error."""
        return self._current

    @property
    def error(self) -> IntentFileError | None:
        """Why the file on disk is not in force, or ``None`` if it is."""
        return self._error

    async def run(self, stop: asyncio.Event) -> None:
        """Reload on every change until ``stop`` is set; returns within ``debounce``."""
        from watchfiles import awatch

        private_dir(self.path.parent)
        # Our own stop flag for watchfiles' thread: awatch sets it when cancelled, and it
        # must not set the caller's event.
        halt = asyncio.Event()
        changes = awatch(
            self.path.parent,
            watch_filter=lambda _change, name: Path(name).name == self.path.name,
            # watchfiles' notify thread wakes every ``step`` ms; an edited config can
            # wait half a second, an idle daemon should not spin.
            step=max(self._debounce_ms, 500),
            stop_event=halt,
            recursive=False,
        )
        # The generator's first step creates the inotify watch before it first awaits;
        # one turn of the loop lets it run, then a reload catches what changed before.
        pending = asyncio.ensure_future(anext(changes))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.sleep(0)
            self._reload(catch_up=True)
            self.ready.set()
            while True:
                await asyncio.wait({pending, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if stopping.done():
                    return
                try:
                    pending.result()
                except StopAsyncIteration:
                    return
                self._reload()
                pending = asyncio.ensure_future(anext(changes))
        finally:
            halt.set()  # the watch thread sees it within one debounce step
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
            await changes.aclose()

    def _reload(self, initial: bool = False, catch_up: bool = False) -> None:
        try:
            loaded = load_intents(self.path)
        except IntentFileError as exc:
            repeated = self._error is not None and str(self._error) == str(exc)
            self._error = exc
            if not (catch_up and repeated):
                self._on_error(exc)
            return
        failed, self._error = self._error is not None, None
        if initial or failed or loaded != self._current:
            self._current = loaded
            self._on_load(loaded)
