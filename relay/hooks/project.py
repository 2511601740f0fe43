"""From a verified delivery to the interrupt it becomes, or to why it becomes none: pure
functions, in the order ``process`` applies them.

1. ``read_delivery``: the body parsed by the rules of ``shared.limits`` (finite numbers,
   safe integers, at most ``MAX_DEPTH`` deep); the delivery id and the event name taken
   where the source puts them (headers: ``verify.Verified``; Stripe's ``id``/``type``,
   Slack's ``event_id``/``event.type``, Standard Webhooks' ``type``: the body); a
   handshake (GitHub ``ping``, Slack ``url_verification``) recognised and answered.
2. ``passes``: the hook's filter, in the match language of intents (``shared.match``),
   over ``{"event": …, "payload": <the body>, "headers": {lowercase name: value}}``.
3. ``render_type``: the hook's type template. A segment (between dots) whose
   placeholder is missing, ``null``, empty or not a scalar is left out with its dot:
   ``github.{event}.{payload.action}`` is ``github.issues.opened`` for an issue and
   ``github.push`` for a push (which has no action). A value's characters outside the
   type alphabet become ``-`` (``pull_request`` → ``pull-request``); the type is cut at
   128 characters.
4. ``pick_priority``: the first rule whose ``when`` holds, else the default.
5. ``project``: only the listed paths of the body, nested as in the body; a path whose
   value would take the projection over ``keep_max_bytes`` is left out; the whole body
   (``payload.body``) only with ``store_body``, and only if it fits ``body_max_bytes``.
   What was left out is listed in ``payload._truncated``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.errors import HookRequestInvalid
from relay.hooks.model import Hook, HookFilter, template_segments
from relay.hooks.verify import Verified
from shared.envelope import Priority
from shared.errors import LimitExceeded
from shared.limits import MAX_DEPTH, check_json, loads
from shared.match import MISSING, any_glob, field_value, unmet
from shared.tokens import OPAQUE_RE, check_type

_EVENT = re.compile(r"[A-Za-z0-9_.:/-]{1,100}")
_NOT_TYPE = re.compile(r"[^A-Za-z0-9.:/-]")
_TYPE_TEXT = re.compile(r"[A-Za-z0-9.:/-]*")
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
#: The key of ``payload`` that lists what did not fit.
TRUNCATED = "_truncated"


@dataclass(frozen=True)
class HookDelivery:
    """A verified delivery, read. ``doc`` is what filters and templates look at."""

    event: str | None
    delivery_id: str | None
    body: Any
    doc: dict[str, Any]


@dataclass(frozen=True)
class Handshake:
    """Not an event: the provider checks the URL. Answer 200 with ``answer``; store
    nothing."""

    answer: dict[str, Any]


@dataclass(frozen=True)
class Filtered:
    """The hook's filter refused the event: count it, store nothing, answer 200 (a
    provider must not retry it)."""

    reason: str


@dataclass(frozen=True)
class Mapped:
    """The interrupt to publish: ``type``, ``priority``, ``payload``; ``event_id`` is the
    provider's delivery id (``source.event_id`` and the ``Nats-Msg-Id``), if it sends one."""

    type: str
    priority: Priority
    payload: dict[str, Any]
    event_id: str | None
    event: str | None
    left_out: tuple[str, ...] = field(default=())


def process(hook: Hook, verified: Verified, headers: Mapping[str, str],
            body: bytes, *, lowered: bool = False) -> Handshake | Filtered | Mapped:
    """What a delivery ``verify`` accepted becomes. Raises ``HookRequestInvalid``
    (``malformed_body``), ``shared.errors.MalformedInput`` (not JSON) or
    ``LimitExceeded`` (a number, string or depth outside ``shared.limits``).
    ``lowered``: ``headers`` is a dict whose names are lowercase already (not copied)."""
    read = read_delivery(hook.source.kind, verified, headers, body, lowered=lowered)
    if isinstance(read, Handshake):
        return read
    reason = passes(hook.filter, read.doc)
    if reason is not None:
        return Filtered(reason)
    payload, left_out = project(read.body, hook.keep_paths(), hook.keep_max_bytes,
                                store_body=hook.store_body, body_max_bytes=hook.body_max_bytes)
    return Mapped(type=render_type(hook.type_template(), read.doc),
                  priority=pick_priority(hook, read.doc), payload=payload,
                  event_id=read.delivery_id, event=read.event, left_out=left_out)


def read_delivery(kind: str, verified: Verified, headers: Mapping[str, str],
                  body: bytes, *, lowered: bool = False) -> HookDelivery | Handshake:
    """Parse the body and find the event and delivery id (step 1 above)."""
    parsed = loads(body, "webhook body", MAX_DEPTH)
    event, delivery_id = verified.event, verified.delivery_id
    if kind == "github" and event == "ping":
        return Handshake({"ok": True, "event": "ping"})
    if kind == "stripe":
        event = _body_event(parsed, ("type",), required=True)
        delivery_id = _body_id(parsed, "id", required=True)
    elif kind == "slack":
        kind_of = _body_event(parsed, ("type",), required=True)
        if kind_of == "url_verification":
            challenge = parsed.get("challenge")
            if not isinstance(challenge, str) or not 0 < len(challenge) <= 200:
                raise _malformed("a url_verification without its challenge")
            return Handshake({"challenge": challenge})
        if kind_of == "event_callback":
            event = _body_event(parsed, ("event", "type"), required=True)
            delivery_id = _body_id(parsed, "event_id", required=True)
        else:
            event, delivery_id = kind_of, _body_id(parsed, "event_id", required=False)
    elif kind == "standard-webhooks":
        event = _body_event(parsed, ("type",), required=False)
    doc = {"event": event, "payload": parsed,
           "headers": headers if lowered and isinstance(headers, dict)
           else {str(k).lower(): str(v) for k, v in headers.items()}}
    return HookDelivery(event=event, delivery_id=delivery_id, body=parsed, doc=doc)


def passes(hook_filter: HookFilter, doc: dict[str, Any]) -> str | None:
    """``None`` if the filter keeps the event, else why not, in words."""
    event = doc.get("event")
    if hook_filter.event is not None and not any_glob(event, hook_filter.event):
        return f"event {event!r} not in {hook_filter.event}"
    return unmet(hook_filter.all, hook_filter.any, doc)


def render_type(template: str, doc: dict[str, Any]) -> str:
    """The type ``template`` gives for ``doc`` (step 3 above): always a valid
    ``shared.envelope.TypeName``."""
    segments: list[str] = []
    for pieces in _segments(template):
        texts: list[str] = []
        for keys, literal in pieces:
            text = _placeholder_text(_at(doc, keys)) if keys else literal
            if text is None:
                break  # the segment is left out, with its dot
            texts.append(text)
        else:
            segments.append("".join(texts))
    return check_type(".".join(segments)[:128])


@functools.lru_cache(maxsize=1024)
def _segments(template: str) -> tuple[tuple[tuple[tuple[str, ...], str], ...], ...]:
    """``template_segments``, parsed once per template (hooks keep theirs): each piece
    as (the keys of its field, cut; none for literal text) and its text."""
    return tuple(tuple((tuple(text.split(".")) if is_field else (), text)
                       for is_field, text in pieces)
                 for pieces in template_segments(template))


def _placeholder_text(value: Any) -> str | None:
    text = _scalar_text(value)
    if text is None or _TYPE_TEXT.fullmatch(text):
        return text
    return _NOT_TYPE.sub("-", text)


def pick_priority(hook: Hook, doc: dict[str, Any]) -> Priority:
    """The priority of the first rule whose ``when`` holds, else the hook's default."""
    for rule in hook.priority:
        if passes(rule.when, doc) is None:
            return rule.priority
    return hook.default_priority


def project(body: Any, paths: Sequence[str], max_bytes: int, *, store_body: bool = False,
            body_max_bytes: int = 0) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The payload (step 5 above) and the paths (and ``body``) left out for size. A
    path that leads nowhere is not "left out": it is simply absent."""
    left_out: list[str] = []
    # All of them first, in one walk of the paths' tree: the common case, measured once.
    payload = _take(body, _tree(tuple(paths))) if isinstance(body, dict) else {}
    if _size(payload) > max_bytes:  # path by path, each kept only if it still fits
        found = [(path, keys, value) for path, keys in _split(tuple(paths))
                 if (value := _at(body, keys)) is not MISSING]
        payload = {}
        ours: set[int] = set()  # the containers built here (not the body's own)
        for path, keys, value in found:
            undo = _put(payload, keys, value, ours)
            if undo is not None and _size(payload) > max_bytes:
                undo()
                left_out.append(path)
    if store_body:
        if _size(body) <= body_max_bytes and _fits_depth(body):
            payload["body"] = body
        else:
            left_out.append("body")
    if left_out:
        payload[TRUNCATED] = left_out
    return payload, tuple(left_out)


@functools.lru_cache(maxsize=1024)
def _split(paths: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each path with its keys, cut once per list of paths (hooks keep theirs)."""
    return tuple((path, tuple(path.split("."))) for path in paths)


def _at(body: Any, keys: tuple[str, ...]) -> Any:
    """``shared.match.field_value`` for a path already cut into its keys."""
    value = body
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return value


#: A tree of paths (``_tree``): each key to the tree below it, or to ``None`` where a
#: path ends there (its value is kept whole, whatever longer paths ask below it).
Tree = dict[str, "Tree | None"]


@functools.lru_cache(maxsize=1024)
def _tree(paths: tuple[str, ...]) -> Tree:
    """The paths as a ``Tree``, in the order they are first named (the payload's)."""
    tree: Tree = {}
    for path in paths:
        node: Tree | None = tree
        *above, last = path.split(".")
        for key in above:
            assert node is not None
            child = node.setdefault(key, {})
            if child is None:
                break  # inside a value kept whole
            node = child
        else:
            assert node is not None
            node[last] = None  # kept whole: replaces what longer paths asked below it
    return tree


def _take(value: dict[str, Any], tree: Tree) -> dict[str, Any]:
    """What ``tree`` keeps of ``value``: the values where paths end, nested as in the
    body; a path that leads nowhere adds nothing (not even its parents)."""
    taken: dict[str, Any] = {}
    for key, below in tree.items():
        if key in value:
            child = value[key]
            if below is None:
                taken[key] = child
            elif isinstance(child, dict) and (inner := _take(child, below)):
                taken[key] = inner
    return taken


def _put(payload: dict[str, Any], keys: tuple[str, ...], value: Any,
         ours: set[int]) -> Callable[[], None] | None:
    """Put ``value`` at ``keys`` in ``payload``; the undo, or ``None`` when a value kept
    before already holds it (a shorter path, or the same one twice)."""
    node, created = payload, None
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = {}
            ours.add(id(child))
            node[key] = child
            if created is None:
                created = (node, key)
        elif not (isinstance(child, dict) and id(child) in ours):
            return None  # inside a value kept whole
        node = child
    last = keys[-1]
    before = node.get(last, MISSING)
    if before is not MISSING and not (isinstance(before, dict) and id(before) in ours):
        return None
    node[last] = value  # a whole value replaces what longer paths built

    def undo() -> None:
        if created is not None:
            del created[0][created[1]]
        elif before is MISSING:
            del node[last]
        else:
            node[last] = before

    return undo


def _size(value: Any) -> int:
    return len(_COMPACT.encode(value).encode("utf-8"))


def _fits_depth(body: Any) -> bool:
    try:
        check_json({"body": body}, MAX_DEPTH)
    except LimitExceeded:
        return False
    return True


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str) and value:
        return value
    return None


def _body_event(body: Any, path: tuple[str, ...], *, required: bool) -> str | None:
    value = field_value(body, ".".join(path))
    if isinstance(value, str) and _EVENT.fullmatch(value):
        return value
    if required:
        raise _malformed(f"no event name in {'.'.join(path)}")
    return None


def _body_id(body: Any, key: str, *, required: bool) -> str | None:
    value = field_value(body, key)
    if isinstance(value, str) and OPAQUE_RE.fullmatch(value):
        return value
    if required:
        raise _malformed(f"no delivery id in {key}")
    return None


def _malformed(what: str) -> HookRequestInvalid:
    return HookRequestInvalid(f"the body is not what the source sends: {what}",
                              code="malformed_body")
