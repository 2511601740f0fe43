"""One line of the activity log (``edge.store.activity``): its bytes and its shape.

``canonical`` is the one function that makes the bytes that are hashed, signed and
stored; ``fields`` is the one shape check of a stored line, used by the writer (to
continue the chain) and by the verifier (``edge.store.activitycheck``). No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from shared.errors import LocalError

STEPS = (
    "received", "verified", "rejected", "matched", "unmatched", "judged", "suppressed",
    "deferred", "coalesced", "woken", "delivered", "outcome", "activity",
    "intents_loaded", "intents_refused", "replayed",
    # local watches (see edge.watches.runner)
    "watch_fired", "watch_skipped", "watch_error", "sleep_started", "sleep_ended",
    "sleep_interrupted",
    # approvals (see edge.approvals)
    "approval_requested", "approval_decided", "approval_suggested",
)
STEP_SET = frozenset(STEPS)
ZERO_HASH = "0" * 64
_FIELDS = frozenset({"seq", "at", "step", "interrupt", "intent", "type", "detail", "prev", "mac"})
_HEX = frozenset("0123456789abcdef")


class Anchor(NamedTuple):
    """A place in the chain recorded outside the log: the ``seq`` of an entry and the
    SHA-256 of its line (what the next entry's ``prev`` holds)."""

    seq: int
    hash: str


#: Built once: ``json.dumps`` with options builds a new encoder on every call, which was
#: half the cost of a log entry while draining (three entries per interrupt).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)
#: What ``_CANONICAL`` writes for a ``str`` (``ensure_ascii=False``), as one C call.
encode_str: Callable[[str], str] = json.encoder.encode_basestring


def canonical(obj: Any) -> str:
    """The one serialization of entries and head: what is hashed, signed and stored."""
    return _CANONICAL.encode(obj)


def _json_text(value: str | None) -> str:
    """``canonical(value)`` for the plain-string fields of an entry (or null)."""
    return "null" if value is None else encode_str(value)


def _plain(value: object) -> bool:
    return value is None or type(value) is str


def entry_texts(seq: int, at: str, step: str, interrupt: str | None, intent: str | None,
                type_: str | None, detail: dict[str, Any], prev: str) -> tuple[str, str] | None:
    """The canonical JSON of an entry split around where ``mac`` goes: ``head + "," +
    tail`` is ``canonical(body)`` (what the MAC covers) and ``head + ',"mac":"…",' +
    tail`` is the stored line (sorted keys put ``mac`` between ``interrupt`` and
    ``prev``). Built from the fields, so that an entry costs one encoding of its
    ``detail`` rather than two of the whole entry: the log is written three times per
    drained interrupt. ``None`` when a field is not a plain string (or null), which only
    ``canonical`` itself may encode; the caller then falls back to it. Raises what
    ``canonical`` raises for a ``detail`` that is not JSON."""
    if not (_plain(interrupt) and _plain(intent) and _plain(type_) and type(step) is str
            and type(prev) is str):
        return None
    head = (f'{{"at":{encode_str(at)},"detail":{canonical(detail)},'
            f'"intent":{_json_text(intent)},"interrupt":{_json_text(interrupt)}')
    tail = (f'"prev":{encode_str(prev)},"seq":{seq:d},"step":{encode_str(step)},'
            f'"type":{_json_text(type_)}}}')
    return head, tail


class BadLine(LocalError):
    """A log line that does not parse. Never leaves the activity log's own modules: the
    log's reader (``edge.store.activity``) and verifier (``edge.store.activitycheck``)
    catch it and report the line as damaged instead."""

    code = "bad_line"


def fields(line: bytes) -> tuple[dict[str, Any], datetime]:
    """Parse and shape-check one line: its fields as stored, and its time. Raises
    ``BadLine`` saying what is wrong."""
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise BadLine("not JSON") from None
    if not isinstance(doc, dict) or doc.keys() != _FIELDS:
        raise BadLine("not an activity entry (wrong fields)")
    seq, prev, mac = doc["seq"], doc["prev"], doc["mac"]
    if type(seq) is not int or seq < 1:
        raise BadLine("seq is not a positive integer")
    for name, value in (("prev", prev), ("mac", mac)):
        if not (isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)):
            raise BadLine(f"{name} is not a SHA-256 hex digest")
    if doc["step"] not in STEP_SET:
        raise BadLine(f"unknown step {doc['step']!r}")
    if any(doc[k] is not None and not isinstance(doc[k], str) for k in ("interrupt", "intent", "type")):
        raise BadLine("interrupt, intent and type must be strings or null")
    if not isinstance(doc["detail"], dict):
        raise BadLine("detail is not an object")
    try:
        at = datetime.fromisoformat(doc["at"]) if isinstance(doc["at"], str) else None
    except ValueError:
        at = None
    if at is None or at.utcoffset() is None:
        raise BadLine("at is not an ISO 8601 UTC time")
    return doc, at
