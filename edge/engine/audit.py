"""The activity log read from outside the daemon: opened only if it exists
(``open_log``), and checked against the anchor the engine state keeps outside it
(``verify_log``, for ``mailslot log --verify``), so a log deleted together with its head
is caught."""

from __future__ import annotations

from edge.config import EdgePaths
from edge.store.activity import ActivityLog, head_file
from edge.store.activitycheck import Problem, VerifyReport
from edge.store.activityline import Anchor
from edge.store.enginestate import EngineState


def open_log(paths: EdgePaths) -> ActivityLog | None:
    """The log, or None if the engine never wrote one (then there is nothing to read and
    nothing is created)."""
    if not paths.activity_file.exists() and not head_file(paths.activity_file).exists():
        return None
    return ActivityLog.open(paths.activity_file, paths.activity_key_file)


def engine_anchor(paths: EdgePaths) -> Anchor | None:
    """The anchor the engine state keeps outside the log, if the engine ever ran here."""
    if not paths.engine_file.exists():
        return None
    state = EngineState.open(paths.engine_file)
    try:
        return state.log_anchor()
    finally:
        state.close()


def verify_log(paths: EdgePaths) -> VerifyReport:
    """The log against its head and the engine's anchor. A log that is gone while the
    engine state vouches for entries is ``log_missing`` (nothing is created to check it)."""
    anchor = engine_anchor(paths)
    log = open_log(paths)
    if log is None:
        if anchor is None or anchor.seq == 0:
            return VerifyReport(True, 0, [])
        return VerifyReport(False, 0, [Problem(anchor.seq, 1, (
            f"{paths.activity_file} and its head are missing but the engine state records "
            f"seq {anchor.seq}: the log was deleted or moved"), "log_missing")])
    with log:
        return log.verify(anchor)
