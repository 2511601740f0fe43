"""The one table of limits: everything mailslot accepts from the outside fits in it.

The relay checks these before it answers 2xx, and the edge checks the *same* functions on
receipt, so an interrupt the relay stored is one the edge will take: nothing is
acknowledged to a producer and then refused downstream. The rules are I-JSON's
(RFC 7493) plus sizes and a clock skew:

=====================  ==============  ===========================================
limit                  value           beyond it
=====================  ==============  ===========================================
payload                16 KiB          413 ``payload_too_large``
envelope               64 KiB          413 ``too_large``
signed wire document   128 KiB         413 ``too_large``
edge frame             64 KiB          WebSocket close 1009
relay frame            4 MiB           (the relay packs deliveries under it)
items per frame        1024            close 4400 ``invalid_frame``
items per HTTP batch   256             413 ``too_many_items``
HTTP batch body        4 MiB           413 ``body_too_large``
nesting depth          32              422 ``too_deep``
numbers                finite          422 ``non_finite_number``
integers               ±(2**53 - 1)    422 ``number_out_of_range``
strings                UTF-8 text      422 ``invalid_string`` (no lone surrogates)
created_at             ≤ now + 300 s   422 ``clock_skew`` (relay clock, at the door)
store TTL              10 years        kept that long (``expires_at`` may be later)
=====================  ==============  ===========================================

Depth counts containers: ``{}`` is 1 deep, ``{"a": [1]}`` is 2. A payload may be
``MAX_DEPTH`` deep; a document that carries one (an envelope, a draft) one more.
Only the future side of ``created_at`` is bounded: an interrupt legitimately waits in a
queue for days, so an old one is not suspicious, one from the future is. It is the one
rule the edge does not re-check: it is about the relay's clock, and the edge's may be
behind it (the relay checked it before its 2xx).

Pure functions on values; no I/O (``shared`` is sans-I/O).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

from shared.errors import LimitExceeded, MalformedInput, TooLarge

#: Largest serialized ``payload`` (or sealed plaintext) an envelope may carry.
PAYLOAD_MAX_BYTES = 16 * 1024
#: Largest envelope text (the signed bytes).
ENVELOPE_MAX_BYTES = 64 * 1024
#: Largest ``{"envelope", "signature"}`` wire document: room for the JSON escaping of the
#: envelope string.
SIGNED_MAX_BYTES = 2 * ENVELOPE_MAX_BYTES
#: Longest ``sealed.ct``: unpadded base64url of a full payload plus its 16-byte AEAD tag.
SEALED_CT_MAX_CHARS = -(-(PAYLOAD_MAX_BYTES + 16) * 4 // 3)
#: Largest frame an edge may send (acks and credits are small).
EDGE_FRAME_MAX_BYTES = 64 * 1024
#: Largest frame a relay may send; it packs deliveries under this.
RELAY_FRAME_MAX_BYTES = 4 * 1024 * 1024
#: Most items in one deliver or ack frame.
MAX_BATCH = 1024
#: Default cap on an HTTP request body at the relay (``RelayConfig.max_body_bytes``):
#: a signed wire document plus headroom.
BODY_MAX_BYTES = 160 * 1024
#: Most interrupts in one ``POST /v1/interrupts/batch``; each item is also held to the
#: single-post limits above.
BATCH_MAX_ITEMS = 256
#: Largest ``POST /v1/interrupts/batch`` body: room for many small items, not for 256
#: signed documents at their cap (split those).
BATCH_BODY_MAX_BYTES = 4 * 1024 * 1024
#: Deepest nesting of containers in a payload (the payload object counts as one).
MAX_DEPTH = 32
#: Largest magnitude of a JSON integer: every JSON parser (JavaScript's included) reads
#: integers up to this exactly, so the agent sees the number the producer sent.
MAX_SAFE_INTEGER = 2**53 - 1
#: How far ahead of the relay's clock an envelope's ``created_at`` may be (checked at the door).
CLOCK_SKEW_SECONDS = 300
#: Longest time the relay's store keeps an unacknowledged interrupt by its ``expires_at``
#: (10 years): a later ``expires_at`` is allowed, and the edge still honours it, but
#: JetStream's per-message TTL is capped here (it overflows past ~292 years).
TTL_MAX_SECONDS = 10 * 365 * 24 * 3600


def _refuse_constant(name: str) -> Any:
    raise LimitExceeded(f"{name} is not a finite number", code="non_finite_number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise LimitExceeded(f"{text[:40]} is too large for a number", code="non_finite_number")
    return value


def loads(data: str | bytes, what: str = "body", max_depth: int = MAX_DEPTH + 1) -> Any:
    """Parse JSON text from the outside by the rules above: ``NaN``/``Infinity`` and
    numbers that overflow a double are refused (Python's ``json`` would take them and
    they would later be written out as ``null`` or not at all), nesting is bounded
    (``max_depth``: by default a document that carries a payload), strings are valid
    Unicode, integers safe.

    Raises ``MalformedInput`` (``malformed_json``) or ``LimitExceeded``."""
    try:
        doc = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise LimitExceeded(f"{what} nests deeper than {max_depth}", code="too_deep") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedInput(f"{what} is not valid JSON: {exc}", code="malformed_json") from exc
    check_json(doc, max_depth, what)
    return doc


def check_json(value: object, max_depth: int = MAX_DEPTH, what: str = "payload") -> None:
    """Check a parsed JSON value against the table, in one iterative pass (a hostile
    document cannot exhaust the stack): depth, finite numbers, safe integers, strings
    and keys that are valid Unicode. Raises ``LimitExceeded`` naming the rule broken.

    Values JSON has no type for (a tuple, a datetime) never come from a parser, only from
    this process's own code; they are left to serialization (a tuple counts as a list)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children: Any
        if isinstance(node, dict):
            children = node.values()
            for key in node:
                if type(key) is str and not key.isascii():
                    check_text(key, what + ": a key")
        elif isinstance(node, list | tuple):
            children = node
        else:
            _check_scalar(node, what)
            continue
        if depth > max_depth:
            raise LimitExceeded(f"{what} nests deeper than {max_depth}", code="too_deep")
        for child in children:
            kind = type(child)
            if kind is str:  # the common cases first, without a call
                if not child.isascii():
                    check_text(child, what + ": a string")
            elif kind is dict or kind is list or isinstance(child, dict | list | tuple):
                stack.append((child, depth + 1))
            elif kind is not bool and child is not None:
                _check_scalar(child, what)


def _check_scalar(node: object, what: str) -> None:
    if isinstance(node, bool):
        return
    if isinstance(node, int):
        if not -MAX_SAFE_INTEGER <= node <= MAX_SAFE_INTEGER:
            raise LimitExceeded(
                f"{what}: integers must be within ±{MAX_SAFE_INTEGER}", code="number_out_of_range"
            )
    elif isinstance(node, float):
        if not math.isfinite(node):
            raise LimitExceeded(f"{what}: numbers must be finite", code="non_finite_number")
    elif isinstance(node, str):
        check_text(node, what + ": a string")


def _is_text(value: str) -> bool:
    """True unless ``value`` holds a lone surrogate (which no UTF-8 can carry)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: str, what: str) -> str:
    """A string from the outside must be encodable as UTF-8 (no lone surrogates)."""
    if not (value.isascii() or _is_text(value)):
        raise LimitExceeded(f"{what} is not valid text", code="invalid_string")
    return value


def check_created_at(created_at: datetime, now: datetime) -> None:
    """Refuse an envelope made more than ``CLOCK_SKEW_SECONDS`` in the checker's future."""
    if created_at > now + timedelta(seconds=CLOCK_SKEW_SECONDS):
        raise LimitExceeded(
            f"created_at {created_at.isoformat()} is more than {CLOCK_SKEW_SECONDS} s "
            "in the future (check this machine's clock)",
            code="clock_skew",
        )


def check_size(data: str | bytes, limit: int, what: str, code: str = "too_large") -> None:
    """Refuse text over ``limit`` bytes as UTF-8 (see ``byte_length``)."""
    if byte_length(data) > limit:
        raise TooLarge(f"{what} is larger than {limit} bytes", code=code)


def byte_length(data: str | bytes) -> int:
    """Caps are in bytes on the wire; text that arrived as ``str`` is measured as UTF-8
    (a lone surrogate counts as the 3 bytes it would take, and fails later as JSON)."""
    if isinstance(data, bytes):
        return len(data)
    if data.isascii():
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))
