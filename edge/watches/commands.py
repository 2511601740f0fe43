"""Command watches: run a ``CommandWatch``'s command once and decide whether it fires.

The command runs through ``edge.spawn.run_child`` (as judges and exec routes do): an
argv, never through a shell (so text from anywhere — a payload, a file name — passed as an
argument is never interpreted), with stdin from ``/dev/null``, in its own process group
and session, in ``cwd`` (default: the user's home). Only stdout is read: stderr is
discarded, so that progress messages and warnings neither disturb ``change`` detection nor
break the JSON a ``condition`` parses (a command that wants stderr considered can say
``2>&1`` in a shell it runs itself). stdout is read to its end: the first ``output_max``
bytes are kept, all of it is hashed, the rest is dropped as it comes, so a command
printing gigabytes costs time, never memory. At ``timeout`` the whole process group is
killed (so a command that leaves a background process holding its stdout runs into the
timeout); when the command exits, whatever it left running in its group is killed too.

Every way a run can fail — cannot start, times out — is a ``CommandResult`` with
``error`` set and ``fire`` false; the daemon is never harmed.

When a run fires (``fire_on``):

* ``change``: the output's SHA-256 differs from ``previous_hash``. The first run (no
  previous hash) only records the baseline and never fires; the caller keeps
  ``output_hash`` of each run that has no ``error`` and passes it to the next.
* ``exit_code``: the exit code is in ``exit_codes`` or, if that list is empty, is not 0
  (a command killed by a signal has a negative code, the signal's number).
* ``condition``: stdout is a JSON document (up to ``PARSE_MAX_BYTES``) and every
  predicate holds on ``{"output": <the document>, "exit_code": <code>}`` — fields as
  ``output.status`` or ``exit_code``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.intents.declarations import CommandWatch
from edge.spawn import Capture, run_child
from shared.match import describe, holds

#: Largest output a ``condition`` watch parses (kept in memory for the parse only).
PARSE_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class CommandResult:
    """One run. ``output`` is the first ``output_max`` bytes of stdout as text (invalid
    UTF-8 replaced), ``truncated`` if there was more; ``output_hash`` is the SHA-256 of
    the whole stdout (of what was read, if ``error`` is set). ``changed`` is set for
    ``change`` watches once there is a baseline."""

    fire: bool
    reason: str
    exit_code: int | None
    output: str
    truncated: bool
    output_hash: str
    duration: float
    error: str | None = None
    changed: bool | None = None

    def payload(self) -> dict[str, Any]:
        """The interrupt payload: minimal and JSON-able."""
        doc: dict[str, Any] = {
            "exit_code": self.exit_code,
            "output": self.output,
            "truncated": self.truncated,
            "duration_ms": round(self.duration * 1000, 1),
        }
        if self.changed is not None:
            doc["changed"] = self.changed
        if self.error is not None:
            doc["error"] = self.error
        return doc


async def run_command(watch: CommandWatch, previous_hash: str | None) -> CommandResult:
    """Run ``watch``'s command once (never longer than ``watch.timeout``) and decide
    whether it fires. Never raises for anything the command does; if cancelled, the
    command's process group is killed before the cancel goes on."""
    began = time.monotonic()
    keep = PARSE_MAX_BYTES if watch.fire_on == "condition" else watch.output_max
    cwd = os.path.expanduser(watch.cwd) if watch.cwd else str(Path.home())
    if not os.path.isabs(cwd):
        return _result(watch, Capture(keep), began, None,
                       error=f"cannot start: cwd {cwd!r} is not absolute")
    try:
        ended = await run_child(watch.argv, timeout=watch.timeout, keep=keep, cwd=cwd)
    except OSError as exc:
        what = exc.filename if exc.filename is not None else watch.argv[0]
        return _result(watch, Capture(keep), began, None,
                       error=f"cannot start: {what}: {exc.strerror or exc}")
    if ended.timed_out:
        return _result(watch, ended.stdout, began, None,
                       error=f"timed out after {watch.timeout:g}s")
    return _decide(watch, ended.stdout, began, ended.returncode, previous_hash)


def _result(watch: CommandWatch, capture: Capture, began: float, exit_code: int | None, *,
            fire: bool = False, reason: str = "", error: str | None = None,
            changed: bool | None = None) -> CommandResult:
    return CommandResult(
        fire=fire,
        reason=reason or error or "",
        exit_code=exit_code,
        output=bytes(capture.head[: watch.output_max]).decode("utf-8", errors="replace"),
        truncated=capture.size > watch.output_max,
        output_hash=capture.hash.hexdigest(),
        duration=time.monotonic() - began,
        error=error,
        changed=changed,
    )


def _decide(watch: CommandWatch, capture: Capture, began: float, code: int | None,
            previous_hash: str | None) -> CommandResult:
    if watch.fire_on == "change":
        digest = capture.hash.hexdigest()
        if previous_hash is None:
            return _result(watch, capture, began, code,
                           reason="first run: output recorded as the baseline")
        changed = digest != previous_hash
        return _result(watch, capture, began, code, fire=changed, changed=changed,
                       reason="output changed" if changed else "output unchanged")
    if watch.fire_on == "exit_code":
        if watch.exit_codes:
            fire = code in watch.exit_codes
            verb = "is" if fire else "is not"
            reason = f"exit code {code} {verb} in {watch.exit_codes}"
        else:
            fire = code != 0
            reason = f"exit code {code} (not 0)" if fire else "exit code 0"
        return _result(watch, capture, began, code, fire=fire, reason=reason)
    if capture.size > PARSE_MAX_BYTES:
        return _result(watch, capture, began, code,
                       reason=f"output larger than {PARSE_MAX_BYTES} bytes is not parsed")
    try:
        document = json.loads(bytes(capture.head))
    except (ValueError, RecursionError):
        return _result(watch, capture, began, code, reason="output is not JSON")
    doc = {"output": document, "exit_code": code}
    failing = next((p for p in watch.condition if not holds(p, doc)), None)
    if failing is not None:
        return _result(watch, capture, began, code, reason=f"{describe(failing)} does not hold")
    return _result(watch, capture, began, code, fire=True, reason="every condition holds")
