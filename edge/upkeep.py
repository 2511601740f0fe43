"""The daemon's upkeep: what keeps an edge that runs for months within a bounded disk.

Every ``retention.check_every`` seconds (``edge.json``, ``edge.config.RetentionConfig``),
in a worker thread, never on the event loop, one pass:

1. rotates the activity log when its active file holds ``log_segment_bytes`` or its
   first entry is ``log_segment_days`` old (one rename, ``ActivityLog.rotate``);
2. drops rotated segments whose last entry is older than ``log_keep_days``, and the
   oldest ones while the log's files hold more than ``log_max_bytes``
   (``ActivityLog.retain``: the retention record keeps the chain verifiable);
3. deletes acked inbox items and finished deliveries older than ``inbox_days`` and
   ``deliveries_days``, and gives the freed pages back (``edge.store.prune``: small
   batches, nothing pending or still needed).

A pass that fails is logged and tried again at the next one: upkeep never stops the
daemon. ``convert`` (at start, before the link runs) turns on incremental vacuum for a
home made before it existed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.config import EdgePaths, RetentionConfig
from edge.store.activity import ActivityLog
from edge.store.db import Database
from edge.store.prune import (
    convert,
    give_back,
    prune_deliveries,
    prune_engine,
    prune_inbox,
)
from shared.errors import MailslotError
from shared.host.waiting import first_of

log = logging.getLogger("mailslot.edge.upkeep")


@dataclass
class Pass:
    """What one pass did (for logs and tests)."""

    rotated: Path | None = None
    segments: list[Path] = field(default_factory=list)
    inbox: int = 0
    deliveries: int = 0
    engine: int = 0  # the engine's records (wakes, dedupe keys, …) past ``engine_days``
    pages: int = 0
    errors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.rotated or self.segments or self.inbox or self.deliveries
                    or self.engine or self.pages or self.errors)


class Upkeep:
    """The ``upkeep`` part of the daemon: ``await run(stop)``; ``step()`` is one pass."""

    def __init__(self, config: RetentionConfig, paths: EdgePaths,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self.paths = paths
        self.clock = clock
        self.passes = 0

    def convert(self) -> list[Path]:
        """Turn on incremental vacuum in the inbox and the engine state made before it
        existed (one VACUUM each, once): call before anything serves. Returns the files
        converted."""
        done = []
        for path, label in ((self.paths.inbox_file, "inbox"),
                            (self.paths.engine_file, "engine state")):
            if not path.exists():
                continue
            try:
                with Database.open(path, label) as db:
                    if convert(db):
                        done.append(path)
                        log.info("%s: converted to incremental vacuum (once)", path)
            except MailslotError as exc:  # busy (another process reading): next start
                log.warning("%s: not converted to incremental vacuum yet: %s", path, exc)
        return done

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                result = await asyncio.to_thread(self.step, stop.is_set)
            except Exception as exc:  # housekeeping never takes the daemon down
                log.warning("upkeep pass failed: %s: %s", type(exc).__name__, exc)
                result = Pass()
            if result:
                log.info("upkeep: rotated %s, %d log segment(s), %d inbox item(s), "
                         "%d deliveries, %d engine record(s) pruned, %d page(s) given back",
                         result.rotated.name if result.rotated else "nothing",
                         len(result.segments), result.inbox, result.deliveries,
                         result.engine, result.pages)
            await first_of(stop.wait(), timeout=self.config.check_every)

    def step(self, stopping: Callable[[], bool] = lambda: False) -> Pass:
        """One pass: the log, then the inbox and the deliveries; each part's failure is
        logged and kept in ``errors``, the other parts still run."""
        config, now, done = self.config, self.clock(), Pass()
        self.passes += 1

        def keep_going() -> bool:
            return not stopping()

        try:
            self._log(now, done)
        except (MailslotError, OSError) as exc:
            done.errors.append(f"activity log: {exc}")
            log.warning("upkeep: activity log: %s", exc)
        try:
            if self.paths.inbox_file.exists() and self.paths.engine_file.exists():
                with (Database.open(self.paths.inbox_file, "inbox") as inbox,
                      Database.open(self.paths.engine_file, "engine state") as engine):
                    if config.inbox_days:
                        done.inbox = prune_inbox(
                            inbox, engine, now - timedelta(days=config.inbox_days),
                            keep_going=keep_going)
                    if config.deliveries_days:
                        done.deliveries = prune_deliveries(
                            engine, now - timedelta(days=config.deliveries_days),
                            self.paths.data_dir / "permissions", keep_going=keep_going)
                    if config.engine_days:
                        done.engine = prune_engine(
                            engine, now - timedelta(days=config.engine_days),
                            keep_going=keep_going)
                    done.pages = (give_back(inbox, keep_going=keep_going)
                                  + give_back(engine, keep_going=keep_going))
        except (MailslotError, OSError) as exc:
            done.errors.append(f"pruning: {exc}")
            log.warning("upkeep: pruning: %s", exc)
        return done

    def _log(self, now: datetime, done: Pass) -> None:
        paths, config = self.paths, self.config
        if not paths.activity_file.exists():
            return
        with ActivityLog.open(paths.activity_file, paths.activity_key_file) as activity:
            done.rotated = activity.rotate(
                max_bytes=config.log_segment_bytes,
                max_age=timedelta(days=config.log_segment_days), now=now)
            done.segments = activity.retain(
                keep_after=now - timedelta(days=config.log_keep_days)
                if config.log_keep_days else None,
                max_bytes=config.log_max_bytes or None)
