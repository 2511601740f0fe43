"""Approvals expire on time: the daemon's timer for pending requests.

A request nobody decides within ``[approvals].expires`` becomes ``expired`` when its time
comes, whether or not anyone reads it: ``ApprovalTimer`` (a part of the edge daemon)
sleeps until the next pending request's expiry, expires what is due through the desk
(``approval.expired`` raised, ``approval_decided`` recorded, once: a row leaves
``pending`` once, whoever gets there first — this timer, a reader, a channel), then sleeps
again.

Rules this module keeps:

* No polling. The timer is armed at the next expiry and re-armed on change: every request
  left pending pokes the daemon (``EdgePaths.poke_file``, inotify), the only way an
  earlier expiry can appear. With nothing pending it sleeps until poked.
* A failed round (a locked database, an unwritable log) is logged and tried again
  ``RETRY`` seconds later; it never stops the daemon.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from edge.approvals.desk import ApprovalDesk, InboxNotifier
from edge.config import POKE_FILE, EdgePaths
from edge.fswatch import FsWatch, FsWatchService
from edge.intents.approvalrules import ApprovalSettings
from edge.store.activity import ActivityLog
from edge.store.approvals import ApprovalStore

log = logging.getLogger("mailslot.edge.approvals")

#: After a failed round, look again this much later.
RETRY = 5.0
#: Wake this much after an expiry, so that the row is past it when read.
MARGIN = 0.01


class ApprovalTimer:
    """Build with the edge's paths, a function returning the current ``[approvals]``
    settings (the daemon's last good intents file) and the process's file-system watcher
    (``None``: one of its own), then ``await run(stop)``."""

    def __init__(self, paths: EdgePaths, settings: Callable[[], ApprovalSettings],
                 fs: FsWatchService | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.paths = paths
        self.settings = settings
        self.fs = fs
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: expire what is due, sleep until the next expiry or a poke."""
        async with FsWatch(self.paths.data_dir, recursive=False, step_ms=500, stop=stop,
                           accept=lambda _change, path: Path(path).name == POKE_FILE,
                           service=self.fs) as pokes:
            while not stop.is_set():
                try:
                    due = await asyncio.to_thread(self.expire_due)
                except Exception:  # a locked or broken store: say so, look again later
                    log.exception("approvals: expiring requests failed")
                    timeout: float | None = RETRY
                else:
                    timeout = None if due is None else max(
                        0.0, (due - self.clock()).total_seconds() + MARGIN)
                if await pokes.next(timeout=timeout) is None:
                    return

    def expire_due(self) -> datetime | None:
        """Expire every pending request whose time has come; return when the next one
        will (``None``: nothing is pending). Runs in a worker thread."""
        store = ApprovalStore.open(self.paths.engine_file)
        try:
            if store.overdue(self.clock()):
                notifier = InboxNotifier(self.paths)
                try:
                    with ActivityLog.open(self.paths.activity_file,
                                          self.paths.activity_key_file) as activity:
                        expired = ApprovalDesk(store, activity, notifier, self.settings(),
                                               self.clock).expire()
                finally:
                    notifier.close()
                for approval in expired:
                    log.info("approval %s (%s) expired", approval.id, approval.action)
            return store.next_expiry()
        finally:
            store.close()
