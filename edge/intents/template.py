"""Webhook body templates: a wake shaped as a runtime expects it, with JSON paths only.

A webhook route's ``template`` is a JSON value (a TOML table, array, string, number or
boolean) that becomes the request body in place of the wake document. Strings in it may
hold *placeholders*, ``{path}``, and nothing else is ever interpreted: no expressions,
no filters, no code.

* A path is names and array indexes joined by dots (``wake.intent``,
  ``interrupts.0.payload.repo``), resolved in the wake document; a few short names stand
  for common paths (``ALIASES``: ``{summary}`` is ``{text}``, ``{session}`` is
  ``{wake.session}``…), and ``{delivery}`` is the delivery key (``msg_…``, the same on
  every attempt).
* A string that is exactly one placeholder becomes the value there, whatever its type
  (``"{interrupts}"`` is the array, ``"{wake}"`` the object). A placeholder inside other
  text is replaced by the value's text: a string as is, anything else as compact JSON.
* ``{{`` and ``}}`` are literal braces. Object keys are taken literally.
* Checked when the intents file loads (``check_template``): a brace that opens no
  placeholder, a malformed path, or a path whose first name is not one of ``ROOTS`` is a
  config error then, with its line, so a template that loads always renders.
* At delivery, a path that is missing *in this wake* (``interrupts.1`` when one
  interrupt came, a payload field a producer left out) is ``null`` as a whole value and
  the empty string inside text: the wake is still delivered.

No I/O; ``edge.delivery.webhook`` renders (``render_template``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: The first name of a path: the wake document's top-level keys, the aliases, the key.
DOCUMENT_ROOTS = ("text", "wake", "interrupts", "permissions")
ALIASES: dict[str, tuple[str | int, ...]] = {
    "summary": ("text",),
    "intent": ("wake", "intent"),
    "session": ("wake", "session"),
    "priority": ("wake", "priority"),
    "events": ("wake", "events"),
    "at": ("wake", "at"),
    "interrupt": ("interrupts", 0),
    "type": ("interrupts", 0, "type"),
    "payload": ("interrupts", 0, "payload"),
}
ROOTS = (*DOCUMENT_ROOTS, *ALIASES, "delivery")
#: How deep a template may nest, and how long a path may be.
MAX_DEPTH = 16
MAX_PATH = 256

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

Path = tuple[str | int, ...]
#: A parsed string: literal text and paths, in order.
Parts = list[str | Path]


def parse_path(text: str) -> Path:
    """``"interrupts.0.payload"`` → ``("interrupts", 0, "payload")``; ``ValueError``
    (saying why) for anything that is not such a path or starts elsewhere than ``ROOTS``."""
    if not text or len(text) > MAX_PATH:
        raise ValueError(f"{{{text}}}: a placeholder holds a path of 1 to {MAX_PATH} characters")
    path: list[str | int] = []
    for segment in text.split("."):
        if segment.isascii() and segment.isdigit() and path:
            path.append(int(segment))
        elif _NAME.fullmatch(segment):
            path.append(segment)
        else:
            raise ValueError(f"{{{text}}}: {segment!r} is not a name or an array index"
                             " (paths are names and numbers joined by dots)")
    if path[0] not in ROOTS:
        raise ValueError(f"{{{text}}}: unknown name {path[0]!r}; a path starts with one of"
                         f" {', '.join(ROOTS)}")
    return tuple(path)


def parse_string(text: str) -> Parts:
    """The literal text and the paths of one template string; ``ValueError`` for a stray
    brace or a bad path."""
    parts: Parts = []
    literal: list[str] = []
    end = 0
    for match in _TOKEN.finditer(text):
        literal.append(text[end:match.start()])
        end = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
        elif match.group(1) is not None:
            if "".join(literal):
                parts.append("".join(literal))
            literal = []
            parts.append(parse_path(match.group(1).strip()))
        else:
            raise ValueError(f"{text[:80]!r}: a lone {token!r} (write {token * 2} for a"
                             " literal brace)")
    literal.append(text[end:])
    if "".join(literal):
        parts.append("".join(literal))
    return parts


def check_template(value: Any) -> Any:
    """``value`` if it is a template that can always be rendered; ``ValueError``
    otherwise (see the module's rules). For pydantic's ``AfterValidator``."""
    _check(value, 0)
    return value


def _check(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        parse_string(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("object keys are strings")
            _check(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1)
    elif value is not None and not isinstance(value, bool | int | float):
        raise ValueError(f"{type(value).__name__} is not a JSON value")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("NaN and infinity are not JSON")


def render_template(template: Any, wake: dict[str, Any], delivery: str) -> Any:
    """The body ``template`` makes of ``wake`` (see the module's rules). ``template``
    passed ``check_template``."""
    if isinstance(template, str):
        parts = parse_string(template)
        if len(parts) == 1 and isinstance(parts[0], tuple):
            return resolve(parts[0], wake, delivery)
        return "".join(p if isinstance(p, str) else _text(resolve(p, wake, delivery))
                       for p in parts)
    if isinstance(template, dict):
        return {k: render_template(v, wake, delivery) for k, v in template.items()}
    if isinstance(template, list):
        return [render_template(v, wake, delivery) for v in template]
    return template


def resolve(path: Path, wake: dict[str, Any], delivery: str) -> Any:
    """The value at ``path`` in ``wake`` (aliases expanded; ``delivery`` for
    ``{delivery}``), or None where the wake has nothing there."""
    head, rest = path[0], path[1:]
    if head == "delivery":
        return delivery if not rest else None
    node: Any = wake
    for step in (*ALIASES.get(str(head), (head,)), *rest):
        if isinstance(node, dict) and isinstance(step, str):
            node = node.get(step)
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            return None
        if node is None:
            return None
    return node


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
