"""Model judgment, only when needed: an intent's judge command asked "should this wake?".

The judge is any program (a small script calling an LLM, a rules engine, ``jq``…). It gets
the minimal interrupt JSON on stdin and answers one JSON object on stdout::

    {"wake": true, "reason": "the failing test touches payments", "tokens": 812}

It runs through ``edge.spawn.run_child``: as an argv (never through a shell), in its own
process group so a timeout or a cancel kills everything it started, with a capped stdout
(past ``ANSWER_MAX_BYTES`` the judge is killed at once). Every way it can fail — cannot
start, exits non-zero, hangs, prints garbage or too much — becomes a ``Judgment`` with
``failure`` set; the engine then applies the intent's ``on_failure``. The daemon is never
harmed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from edge.intents.model import Judge
from edge.spawn import run_child

#: Largest answer read from a judge; more is a failure, not a crash.
ANSWER_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class Judgment:
    """A judge's answer: ``wake`` (None when it failed, ``failure`` says how), its reason,
    the tokens it reported spending, and how long it took. ``to_dict`` is what the
    activity log's ``judged`` step records."""

    wake: bool | None
    reason: str
    failure: str | None = None
    tokens: int = 0
    elapsed: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "wake": self.wake,
            "reason": self.reason,
            "failure": self.failure,
            "tokens": self.tokens,
            "elapsed_ms": round(self.elapsed * 1000, 1),
        }


def _failed(what: str, began: float) -> Judgment:
    return Judgment(wake=None, reason=what, failure=what, elapsed=time.monotonic() - began)


async def ask_judge(judge: Judge, doc: dict[str, Any]) -> Judgment:
    """Ask ``judge`` about ``doc`` (the minimal interrupt) once, never longer than its
    timeout; every failure is a ``Judgment`` with ``failure`` set, never an exception."""
    began = time.monotonic()
    stdin = json.dumps(doc, separators=(",", ":")).encode()
    try:
        ended = await run_child(judge.command, timeout=judge.timeout, keep=ANSWER_MAX_BYTES,
                                stdin=stdin, kill_past_keep=True)
    except OSError as exc:
        return _failed(f"cannot start judge: {exc.strerror or exc}", began)
    if ended.timed_out:
        return _failed(f"timed out after {judge.timeout:g}s", began)
    if ended.overflowed:
        return _failed(f"answer larger than {ANSWER_MAX_BYTES} bytes", began)
    if ended.returncode != 0:
        return _failed(f"exited with status {ended.returncode}", began)
    return parse_answer(bytes(ended.stdout.head), began)


#: Longest ``reason`` kept from an answer (the rest is cut off).
REASON_MAX_CHARS = 500
#: Most tokens one answer may report (more is a judge's bug, counted as 0).
TOKENS_MAX = 10**9


def parse_answer(out: bytes, began: float) -> Judgment:
    """The ``Judgment`` for what a judge printed: any bytes give one (a failure for
    anything but ``{"wake": bool, …}``), never an exception. The reason is cut to
    ``REASON_MAX_CHARS`` and made storable (a lone surrogate from a ``\\udXXX`` escape
    becomes ``?``), so the verdict can always be recorded in the activity log."""
    try:
        answer = json.loads(out)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _failed("garbage answer (not JSON)", began)
    if not isinstance(answer, dict) or not isinstance(answer.get("wake"), bool):
        return _failed('garbage answer (expected {"wake": true|false, ...})', began)
    reason = answer.get("reason")
    if reason is None:
        text = ""
    elif isinstance(reason, str):
        text = reason[:REASON_MAX_CHARS]
    else:  # a number or a structure: its JSON, shortened
        try:
            text = json.dumps(reason, ensure_ascii=False)[:REASON_MAX_CHARS]
        except (ValueError, RecursionError):
            text = ""
    text = text.encode("utf-8", "replace").decode("utf-8")
    tokens = answer.get("tokens", 0)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens <= TOKENS_MAX:
        tokens = 0
    return Judgment(
        wake=answer["wake"],
        reason=text,
        tokens=tokens,
        elapsed=time.monotonic() - began,
    )
