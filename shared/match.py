"""The match language: predicates over a JSON document, and shell-style globs.

One language for everything that decides "does this event concern me?": an intent's
``match`` and ``policy.condition`` at the edge (over the interrupt's envelope), a command
watch's ``condition`` (over the command's output), and a relay hook's ``filter`` (over
``{"event": …, "payload": <the webhook body>, "headers": {…}}``). Each caller builds its
document; this module only reads it.

* A ``Predicate`` is one test on one field, named by a dotted path (``payload.branch``,
  ``headers.x-github-event``). A path that does not lead to a value is *missing*: only
  ``ne`` and ``absent`` hold on it (``present``/``absent`` treat ``null`` as missing too).
* A glob is a shell pattern as ``fnmatch.fnmatchcase`` reads it (``*``, ``?``, ``[seq]``,
  ``[!seq]``; case-sensitive; no escaping), over the whole string. It is re-implemented
  here, rule for rule (``tests/shared/test_match.py`` checks it against ``fnmatchcase``),
  because ``shared/`` imports only the pure modules on its list.
* ``unmet`` applies the ``all``/``any`` pair every caller uses and says, in words, why a
  document does not match.

Pure: values in, values out (the compiled patterns are remembered in bounded memos, as
``fnmatch`` and ``re`` do: that changes no result). A ``Predicate``'s pattern is checked
when it is validated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Op = Literal["eq", "ne", "in", "glob", "regex", "lt", "le", "gt", "ge", "present", "absent"]

#: A dotted path: words, then words that may also hold ``-`` (HTTP header names).
FIELD_RE = r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_-]+)*$"


class _Missing:
    """The value of a path that leads nowhere (distinct from a JSON ``null``)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Predicate(BaseModel):
    """One test on one field of a document: ``payload.branch``, ``type``,
    ``source.name``, ``session``, ``priority``… (a dotted path into the document)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: Annotated[str, Field(pattern=FIELD_RE)]
    op: Op = "eq"
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> Predicate:
        if self.op == "glob":
            glob_regex(_as_str(self.value, "glob"))  # every glob translates
        elif self.op == "regex":
            text = _as_str(self.value, "regex")
            try:
                regex(text)
            except re.error as exc:
                raise ValueError(f"bad regular expression {text!r}: {exc}") from exc
        elif self.op in ("lt", "le", "gt", "ge"):
            if isinstance(self.value, bool) or not isinstance(self.value, int | float):
                raise ValueError(f"op {self.op} needs a number value")
        elif self.op == "in" and not isinstance(self.value, list):
            raise ValueError("op in needs a list value")
        elif self.op in ("present", "absent") and self.value is not None:
            raise ValueError(f"op {self.op} takes no value")
        return self


def _as_str(value: Any, op: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"op {op} needs a string value")
    return value


def field_value(doc: Any, path: str) -> Any:
    """The value at a dotted path of ``doc``, or ``MISSING``."""
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def holds(predicate: Predicate, doc: Any) -> bool:
    """Whether ``predicate`` holds on ``doc``. Never raises on any JSON document."""
    value = field_value(doc, predicate.field)
    op, want = predicate.op, predicate.value
    if op == "present":
        return value is not MISSING and value is not None
    if op == "absent":
        return value is MISSING or value is None
    if value is MISSING:
        return op == "ne"
    if op == "eq":
        return bool(value == want)
    if op == "ne":
        return bool(value != want)
    if op == "in":
        return bool(value in want)
    if op == "glob":
        return isinstance(value, str) and glob_regex(want).match(value) is not None
    if op == "regex":
        return isinstance(value, str) and regex(want).search(value) is not None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    number = float(value)
    return bool(
        {"lt": number < want, "le": number <= want, "gt": number > want, "ge": number >= want}[op]
    )


def describe(predicate: Predicate) -> str:
    """The predicate in words: ``payload.branch eq 'main'``, ``title present``."""
    if predicate.op in ("present", "absent"):
        return f"{predicate.field} {predicate.op}"
    return f"{predicate.field} {predicate.op} {predicate.value!r}"


def unmet(all_: Sequence[Predicate], any_: Sequence[Predicate], doc: Any) -> str | None:
    """``None`` if every ``all_`` predicate holds on ``doc`` and, when ``any_`` is not
    empty, at least one of ``any_`` does; else why not, in words."""
    for predicate in all_:
        if not holds(predicate, doc):
            return f"{describe(predicate)} does not hold"
    if any_ and not any(holds(p, doc) for p in any_):
        return "none of the 'any' predicates holds"
    return None


# -- globs ----------------------------------------------------------------------------


def any_glob(value: Any, patterns: Iterable[str]) -> bool:
    """Whether ``value`` is a string that one of the glob ``patterns`` matches."""
    return isinstance(value, str) and any(
        glob_regex(p).match(value) is not None for p in patterns)


#: Glob (and regex) → its compiled pattern: bounded memos (emptied when full), as
#: ``fnmatch`` and ``re`` keep; values only, so they change no result. A glob's
#: translation is the slow part; a hit here is one dict lookup.
_GLOBS: dict[str, re.Pattern[str]] = {}
_REGEXES: dict[str, re.Pattern[str]] = {}
_MEMO_MAX = 4096


def glob_regex(pattern: str) -> re.Pattern[str]:
    """The compiled regular expression of a glob: ``.match(text)`` is
    ``fnmatchcase(text, pattern)``."""
    compiled = _GLOBS.get(pattern)
    if compiled is None:
        if len(_GLOBS) >= _MEMO_MAX:
            _GLOBS.clear()
        compiled = _GLOBS[pattern] = re.compile(_translate(pattern))
    return compiled


def regex(pattern: str) -> re.Pattern[str]:
    """``re.compile(pattern)``, remembered."""
    compiled = _REGEXES.get(pattern)
    if compiled is None:
        if len(_REGEXES) >= _MEMO_MAX:
            _REGEXES.clear()
        compiled = _REGEXES[pattern] = re.compile(pattern)
    return compiled


def globs_regex(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regular expression for several globs: ``.match(text)`` is not ``None`` when
    one of them matches all of ``text`` (none given: never). Compile once, match often."""
    return re.compile("|".join(_translate(p) for p in patterns) or "(?!)")




def _translate(pattern: str) -> str:
    """A glob as a regular expression that matches the whole string: the rules of
    ``fnmatch.translate``. Pieces first (a star stays a marker, runs of stars are one),
    then stars placed so that matching never backtracks badly: an interior
    ``*fixed`` becomes the atomic ``(?>.*?fixed)``."""
    pieces: list[str | None] = []  # None: a star
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not pieces or pieces[-1] is not None:
                pieces.append(None)
        elif c == "?":
            pieces.append(".")
        elif c == "[":
            members, i = _char_class(pattern, i)
            pieces.append(members)
        else:
            pieces.append(re.escape(c))
    out: list[str] = []
    k, n = 0, len(pieces)
    while k < n and (fixed_piece := pieces[k]) is not None:
        out.append(fixed_piece)
        k += 1
    while k < n:  # a star, then fixed pieces up to the next star or the end
        k += 1
        fixed: list[str] = []
        while k < n and (fixed_piece := pieces[k]) is not None:
            fixed.append(fixed_piece)
            k += 1
        text = "".join(fixed)
        out.append(f".*{text}" if k == n else f"(?>.*?{text})")
    return rf"(?s:{''.join(out)})\Z"


def _char_class(pattern: str, start: int) -> tuple[str, int]:
    """The ``[...]`` opening just before ``start``: its regex piece and where the glob
    goes on. Without a closing ``]`` the ``[`` is a literal. A ``]`` right after ``[``
    or ``[!`` is a member; ``-`` makes a range except first, last or right after a range;
    a reversed range (``z-a``) matches nothing; backslash is an ordinary member."""
    n = len(pattern)
    j = start
    if j < n and pattern[j] == "!":
        j += 1
    if j < n and pattern[j] == "]":
        j += 1
    while j < n and pattern[j] != "]":
        j += 1
    if j >= n:
        return "\\[", start
    members = pattern[start:j]
    members = _ranges(pattern, start, j) if "-" in members else members.replace("\\", r"\\")
    members = re.sub(r"([&~|])", r"\\\1", members)  # not set operations
    if not members:
        return "(?!)", j + 1  # an empty set: never matches
    if members == "!":
        return ".", j + 1  # a negated empty set: any character
    if members[0] == "!":
        members = "^" + members[1:]
    elif members[0] in ("^", "["):
        members = "\\" + members
    return f"[{members}]", j + 1


def _ranges(pattern: str, start: int, end: int) -> str:
    """The members of ``pattern[start:end]`` (which holds a ``-``) with each range's
    hyphen kept and every other hyphen (and backslash) escaped."""
    chunks: list[str] = []
    i = start
    k = start + 2 if pattern[start] == "!" else start + 1
    while (k := pattern.find("-", k, end)) >= 0:
        chunks.append(pattern[i:k])
        i = k + 1
        k += 3
    if tail := pattern[i:end]:
        chunks.append(tail)
    else:
        chunks[-1] += "-"
    for k in range(len(chunks) - 1, 0, -1):  # drop reversed ranges: invalid in a regex
        if chunks[k - 1][-1] > chunks[k][0]:
            chunks[k - 1] = chunks[k - 1][:-1] + chunks[k][1:]
            del chunks[k]
    return "-".join(c.replace("\\", r"\\").replace("-", r"\-") for c in chunks)
