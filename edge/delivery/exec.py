"""The ``exec`` route: run the runtime's command once with the wake on its stdin.

``route.argv`` runs through ``edge.spawn.run_child``, as a watch's command does: an argv,
never a shell, so nothing in the wake or the environment is ever interpreted; in its own
session and process group, killed whole at ``route.timeout`` and, once the command exits,
whatever it left running in that group is killed too (a runtime that wants to leave
something behind must detach it itself). The wake is the command's stdin (compact UTF-8
JSON), its environment is the edge's plus ``route.env`` plus the caller's ``MAILSLOT_*``
variables (later wins), its cwd ``route.cwd`` or the user's home. stderr is discarded;
stdout is read to its end but only the first ``STDOUT_MAX_BYTES`` are kept. A command
that ran is never retried for its outcome: running an agent twice costs more than missing
a wake. (Only a crash of the edge before the outcome was recorded runs it again —
``edge.delivery.deliverer`` — with the same ``MAILSLOT_DELIVERY`` key, the caller's
idempotency key, so the runtime can tell.) Outcome:

* exit 0: ``ok``, unless stdout is a JSON object whose ``"outcome"`` is one of
  ``OUTCOMES`` (that wins). Anything else on stdout is ignored and
  ``detail["stdout_ignored"]`` says why.
* exit non-zero (or killed by a signal): ``error``.
* ``"tokens"`` (a whole number >= 0) is honoured either way: spent is spent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.delivery.outcome import (
    STDOUT_MAX_BYTES,
    ChannelResult,
    elapsed_ms,
    read_report,
    wake_bytes,
)
from edge.intents.model import ExecRoute
from edge.spawn import Capture, run_child


async def deliver_exec(route: ExecRoute, wake: dict[str, Any], env: dict[str, str], *,
                       on_start: Callable[[int], None] | None = None) -> ChannelResult:
    """Run ``route.argv`` once with ``wake`` on stdin and ``env`` (the ``MAILSLOT_*``
    variables) on top of the edge's environment and ``route.env``. Never longer than
    ``route.timeout``; if cancelled, the command's process group is killed before the
    cancel goes on. Never sets ``retry``. ``on_start`` gets the command's pid (its
    process group's id) as soon as it runs, before it is fed the wake."""
    began = time.monotonic()
    stdin = wake_bytes(wake)
    cwd = os.path.expanduser(route.cwd) if route.cwd else str(Path.home())
    if not os.path.isabs(cwd):
        return _failed(began, f"cannot start: cwd {cwd!r} is not absolute")
    try:
        ended = await run_child(route.argv, timeout=route.timeout, keep=STDOUT_MAX_BYTES,
                                cwd=cwd, env={**os.environ, **route.env, **env},
                                stdin=stdin, on_start=on_start)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in argv or env
        filename = getattr(exc, "filename", None)
        what = filename if filename is not None else route.argv[0]
        why = getattr(exc, "strerror", None) or exc
        return _failed(began, f"cannot start: {what}: {why}")
    if ended.timed_out:
        return _failed(began, "timed out", timeout_s=route.timeout)
    return _result(began, ended.returncode, ended.stdout)


def _failed(began: float, error: str, **extra: Any) -> ChannelResult:
    return ChannelResult(outcome="error", detail={
        "exit_code": None, "error": error, "duration_ms": elapsed_ms(began), **extra})


def _result(began: float, code: int, capture: Capture) -> ChannelResult:
    outcome, tokens, ignored = read_report(bytes(capture.head), capture.truncated)
    detail: dict[str, Any] = {"exit_code": code, "duration_ms": elapsed_ms(began),
                              "stdout_bytes": capture.size}
    if ignored:
        detail["stdout_ignored"] = ignored
    if code != 0:
        detail["error"] = (f"killed by signal {-code}" if code < 0
                           else f"exited with status {code}")
        return ChannelResult(outcome="error", tokens=tokens, detail=detail)
    return ChannelResult(outcome=outcome or "ok", tokens=tokens, detail=detail)
