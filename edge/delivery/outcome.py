"""What one delivery attempt comes to, whatever the route: the contract between a channel
(``edge.delivery.exec``, ``edge.delivery.webhook``) and the deliverer.

A channel makes exactly one attempt and turns everything that can happen into a
``ChannelResult``: it never raises for anything the runtime or the network does (a wake
that is not JSON is the caller's bug and does raise). Queueing, backoff, the daily token
budget and disabling a route are the caller's (``edge.delivery.deliverer``): it reads
``retry``, ``disable`` and ``tokens`` and keeps ``detail`` (JSON-able, free of secrets)
for the activity log.

Both channels send the wake as ``wake_bytes`` and read what the runtime answers (an exec
command's stdout, a webhook's 2xx response body) with ``read_report``: a JSON object whose
``"outcome"`` is one of ``OUTCOMES`` wins over the plain ``ok``, and ``"tokens"`` (a whole
number >= 0) counts against the budget; anything else is ignored and said so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from edge.store.deliveries import OUTCOMES

#: Most of a command's stdout, or of a webhook's response body, that is kept and parsed.
STDOUT_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class ChannelResult:
    """One attempt. ``outcome`` is one of ``OUTCOMES``; ``tokens`` counts against the daily
    budget; ``retry``: a transient failure, try again later; ``disable``: the runtime
    answered 410 Gone, disable the route. ``detail`` is JSON-able and free of secrets:
    ``exit_code`` or ``status``, ``duration_ms``, ``error``, ``stdout_ignored``…"""

    outcome: str
    tokens: int = 0
    retry: bool = False
    disable: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


def wake_bytes(wake: dict[str, Any]) -> bytes:
    """The wake as sent: compact UTF-8 JSON. Raises ``TypeError``/``ValueError`` for a
    document that is not JSON (NaN included): that is the caller's bug."""
    return json.dumps(wake, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def read_report(raw: bytes, truncated: bool) -> tuple[str | None, int, str | None]:
    """What a runtime reported on stdout or in a response body: ``(outcome or None,
    tokens, why something was ignored or None)``. Empty output reports nothing."""
    if truncated:
        return None, 0, f"larger than {STDOUT_MAX_BYTES} bytes"
    if not raw.strip():
        return None, 0, None
    try:
        answer = json.loads(raw)
    except (ValueError, RecursionError):
        return None, 0, "not JSON"
    if not isinstance(answer, dict):
        return None, 0, "not a JSON object"
    ignored: list[str] = []
    outcome = answer.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        ignored.append(f"outcome {str(outcome)[:40]!r} is not one of {', '.join(OUTCOMES)}")
        outcome = None
    tokens = answer.get("tokens", 0)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        ignored.append("tokens is not a whole number >= 0")
        tokens = 0
    return outcome, tokens, "; ".join(ignored) or None


def elapsed_ms(began: float) -> float:
    """Milliseconds since ``began`` (a ``time.monotonic()``), as ``detail["duration_ms"]``."""
    return round((time.monotonic() - began) * 1000, 1)
