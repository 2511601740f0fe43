"""Where things are in the text of ``intents.toml``: line numbers by path.

``tomllib`` gives values only, so the errors ``edge.intents.file`` reports
(``intents.toml:12: intent 'deploy': policy.cooldown: ...``) and the block cuts
``edge.intents.edit`` makes need a second, small reading of the same text.

Rules this module keeps:

* It is not a TOML parser: hand it only text that ``tomllib`` accepted (on other text
  its line numbers mean nothing).
* A path is what the parsed document nests: ``("intent", 2, "policy", "timeout")``.
  Strings and comments are skipped, ``[[array]]`` headers counted, arrays indexed.
* No I/O.
"""

from __future__ import annotations

import tomllib

_ATOM_STOP = set(" \t\r\n[]{}=,#\"'")
Loc = tuple[str | int, ...]


class Locator:
    """Line numbers of the keys and tables of a (valid) TOML text, by path as the parsed
    document nests them: ``("intent", 2, "policy", "active_hours", "timezone")`` is the
    ``timezone`` key in the ``active_hours`` inline table in the ``[intent.policy]`` table
    of the third ``[[intent]]``. tomllib gives values only, so this is a small scanner:
    strings and comments skipped, ``[[array]]`` headers counted, arrays indexed."""

    def __init__(self, text: str) -> None:
        self.lines: dict[Loc, int] = {}
        #: Every table header: (path it opens, line), in file order.
        self.headers: list[tuple[Loc, int]] = []
        self._tokens = tokenize(text)
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


def tokenize(text: str) -> list[tuple[str, str, int]]:
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
