"""Disk use of an edge per N interrupts (default 10,000): ``scripts/disk_use`` (not part of
the test suite).

A real relay process and a real ``mailslot edge run`` (set up through the CLI, as
``scripts/bench`` does) take N interrupts (payload ``{"n": i, "text": "x" * 200}``, no
intents file: each is received, verified and left unmatched, three log lines). Once the
engine has decided them all the edge is stopped and the data folder measured: the inbox
(``inbox.sqlite3`` with its WAL), the engine state, the activity log (every segment and
its head), each database checkpointed first. Then every item is acked and one upkeep pass runs as the daemon would with
``inbox_days`` elapsed (``edge.upkeep.Upkeep.step``: prune, incremental vacuum, log
retention down to ``--log-max-bytes``), while another connection keeps committing small
write transactions to the inbox, as the link does, and times them: how long pruning
holds the link up. Then the folder is measured again.

    scripts/disk_use [-n 10000] [--log-max-bytes 65536]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import Setup, wait_for

from edge.config import EdgePaths, RetentionConfig
from edge.upkeep import Upkeep


def _size(paths: list[Path]) -> int:
    return sum(p.stat().st_blocks * 512 for p in paths if p.exists())


def checkpoint(data: Path) -> dict[str, int]:
    """Move each database's WAL into it and truncate the WAL (as SQLite does when its last
    connection closes cleanly); returns the WAL sizes found first. A running daemon's WAL
    files hold up to about 4 MiB each (SQLite's 1000-page autocheckpoint), whatever the
    number of interrupts: a constant, not a cost per interrupt. The daemon empties them as
    it stops (``Database.close(checkpoint=True)``), so what it left is 0 here."""
    found = {}
    for name in ("inbox", "engine"):
        wal = data / f"{name}.sqlite3-wal"
        found[name] = wal.stat().st_size if wal.exists() else 0
        with sqlite3.connect(data / f"{name}.sqlite3") as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return found


def measure(data: Path) -> dict[str, int]:
    """Bytes on disk (allocated blocks) of each part of the edge's data folder."""
    parts = {
        "inbox": [data / f"inbox.sqlite3{s}" for s in ("", "-wal", "-shm")],
        "engine": [data / f"engine.sqlite3{s}" for s in ("", "-wal", "-shm")],
        "activity log": sorted(data.glob("activity.log*")),
    }
    sizes = {name: _size(files) for name, files in parts.items()}
    sizes["data folder"] = _size([p for p in data.rglob("*") if p.is_file()])
    return sizes


def _decided(engine: Path) -> int:
    if not engine.exists():
        return 0
    with sqlite3.connect(f"file:{engine}?mode=ro", uri=True) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'inbox_cursor'").fetchone()
    return int(row[0]) if row else 0


def _writer(inbox: Path, stop: threading.Event, waits: list[float]) -> None:
    """What the link does while upkeep runs: short write transactions on the inbox, each
    timed from BEGIN IMMEDIATE (waiting for the write lock) to COMMIT."""
    db = sqlite3.connect(inbox, isolation_level=None, timeout=30)
    try:
        while not stop.is_set():
            began = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO status (key, value) VALUES ('disk_use', ?) ON CONFLICT(key)"
                       " DO UPDATE SET value = excluded.value", (str(began),))
            db.execute("COMMIT")
            waits.append(time.perf_counter() - began)
            stop.wait(0.002)  # pacing: about what a busy link commits
    finally:
        db.close()


def _print(title: str, sizes: dict[str, int], n: int) -> None:
    print(title)
    for name, size in sizes.items():
        print(f"  {name:<13} {size / 2**20:8.2f} MiB  ({size / n * 10_000 / 2**20:.2f} MiB "
              f"per 10,000 interrupts)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="interrupts (default 10000)")
    parser.add_argument("--log-max-bytes", type=int, default=64 * 1024,
                        help="log_max_bytes for the upkeep pass (default 65536)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailslot-disk-") as tmp:
        setup = Setup(Path(tmp))
        setup.start()
        try:
            setup.start_edge()
            await setup.post_all(args.n)
            engine = setup.edge_home / "data" / "engine.sqlite3"
            await wait_for(lambda: _decided(engine) >= args.n, 900, "every interrupt decided",
                           interval=0.2)
        finally:
            setup.stop()
        paths = EdgePaths.resolve({"MAILSLOT_HOME": str(setup.edge_home)})
        wal = checkpoint(paths.data_dir)
        print(f"WAL files left by the daemon: inbox {wal['inbox'] / 2**20:.2f} MiB, "
              f"engine {wal['engine'] / 2**20:.2f} MiB (checkpointed before measuring)")
        _print(f"{args.n} interrupts received and decided (edge stopped):",
               measure(paths.data_dir), args.n)
        with sqlite3.connect(paths.inbox_file) as db:
            db.execute("UPDATE interrupts SET state = 'acked'")
        retention = RetentionConfig(log_segment_bytes=16 * 1024,
                                    log_max_bytes=args.log_max_bytes)
        later = datetime.now(UTC) + timedelta(days=retention.inbox_days + 1)
        upkeep = Upkeep(retention, paths, clock=lambda: later)
        stop, alone = threading.Event(), []
        writer = threading.Thread(target=_writer, args=(paths.inbox_file, stop, alone))
        writer.start()
        stop.wait(1.0)  # the same writes with nothing else running: the baseline
        stop.set()
        writer.join()
        alone.sort()
        stop, waits = threading.Event(), []
        writer = threading.Thread(target=_writer, args=(paths.inbox_file, stop, waits))
        writer.start()
        began = time.perf_counter()
        try:
            done = upkeep.step()
        finally:
            took = time.perf_counter() - began
            stop.set()
            writer.join()
        assert not done.errors, done.errors
        waits.sort()
        print(f"upkeep pass: {took:.2f} s; meanwhile {len(waits)} inbox write transactions "
              f"of another connection took p50 {waits[len(waits) // 2] * 1e3:.1f} ms, "
              f"max {waits[-1] * 1e3:.1f} ms (alone, before: p50 "
              f"{alone[len(alone) // 2] * 1e3:.1f} ms, max {alone[-1] * 1e3:.1f} ms)")
        upkeep.step()  # the rotated segment goes on the next pass
        checkpoint(paths.data_dir)
        _print(f"after acking all and one upkeep pass {retention.inbox_days:g} days later "
               f"(pruned {done.inbox} items, gave back {done.pages} pages, log capped at "
               f"{args.log_max_bytes} bytes):", measure(paths.data_dir), args.n)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
