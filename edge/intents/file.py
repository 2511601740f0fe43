"""The declarative intents file, ``intents.toml``, read: TOML in, ``Declarations`` out,
every problem an error naming file, line and field.

Rules this module keeps:

* ``edge.intents.model`` and ``edge.intents.declarations`` are the single source of truth
  for what an intent and a watch are; this module only maps TOML to ``Declarations``
  (``[settings]`` → ``settings``, ``[[intent]]`` → ``intents``, ``[[watch]]`` →
  ``watches``, ``[approvals]`` → ``approvals``) and turns every problem into an
  ``IntentFileError`` naming file, line (found by ``edge.intents.locate``) and field.
* Loading uses the standard ``tomllib``. Writing the file back, keeping the user's
  comments and layout, is ``edge.intents.edit``; reloading it when it changes is
  ``edge.intents.reload``. The errors of all three live here.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from edge.errors import IntentFileError
from edge.intents.declarations import Declarations
from edge.intents.locate import Locator

#: TOML top-level key → field of ``Declarations``.
TOP_LEVEL = {
    "settings": "settings", "intent": "intents", "watch": "watches", "approvals": "approvals",
}
#: The arrays of tables the edit functions work on: ``[[intent]]`` and ``[[watch]]``.
Section = Literal["intent", "watch"]
#: Sub-models written as ``[SECTION.NAME]`` tables (in this order, after the plain keys);
#: other sub-models are inline tables.
TABLES: dict[Section, tuple[str, ...]] = {
    "intent": ("match", "judge", "policy"),
    "watch": ("schedule", "match"),
}



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
        if key not in TOP_LEVEL:
            hint = difflib.get_close_matches(key, list(TOP_LEVEL), n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise IntentFileError(
                path,
                Locator(text).line_of((key,)),
                f"unknown top-level key {key!r}: only [settings], [[intent]] and [[watch]]"
                f"{did_you_mean}, plus [approvals]",
            )
    model_input = {TOP_LEVEL[key]: value for key, value in doc.items()}
    try:
        return Declarations.model_validate(model_input)
    except ValidationError as exc:
        raise _validation_error(exc, doc, Locator(text), path) from None


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
_TOML_KEY = {field: key for key, field in TOP_LEVEL.items()}


def _validation_error(
    exc: ValidationError, doc: dict[str, Any], locator: Locator, path: Path
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
    if len(loc) >= 2 and loc[0] in TABLES and isinstance(loc[1], int):
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
