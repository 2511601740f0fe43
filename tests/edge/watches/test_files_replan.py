"""``edge.watches.files``: a re-plan (``set_watches`` with another set) subscribes anew
before it lets the old subscription go, so a watch that stays in force misses nothing
while the set changes around it (real files, real inotify)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests_support import wait_until

from edge.fswatch import FsWatchService
from edge.intents.declarations import FileWatch
from edge.watches.fileevents import FileEvent
from edge.watches.files import FileWatcher


def _watch(path: Path, id: str) -> FileWatch:
    return FileWatch(id=id, kind="file", paths=[str(path)], debounce=0.02)


@pytest.mark.parametrize("shared", [True, False], ids=["daemons-service", "own-services"])
async def test_a_watch_that_stays_misses_nothing_while_the_set_changes(
        tmp_path: Path, shared: bool) -> None:
    kept, other = tmp_path / "kept", tmp_path / "other"
    kept.mkdir()
    other.mkdir()
    seen: set[str] = set()

    def emit(event: FileEvent) -> None:
        if event.watch.id == "kept":
            seen.update(Path(c["path"]).name for c in event.changes if c["change"] == "created")

    service = FsWatchService() if shared else None
    watcher = FileWatcher(emit, service)
    stay = _watch(kept, "kept")
    watcher.set_watches([stay])
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        await asyncio.wait_for(watcher.ready.wait(), 10)
        written: list[str] = []

        async def write() -> None:
            for i in range(300):
                name = f"f{i:03}"
                (kept / name).write_text("x")
                written.append(name)
                await asyncio.sleep(0)

        writer = asyncio.create_task(write())
        replans = 0
        while not writer.done():
            # another watch comes and goes: each time the whole set is subscribed anew
            watcher.set_watches([stay, _watch(other, f"other{replans}")] if replans % 2
                                else [stay])
            replans += 1
            await asyncio.sleep(0.002)
        await writer
        assert replans > 10
        await wait_until(lambda: seen >= set(written), 10, "every file the kept watch saw")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        if service is not None:
            service.close()
    assert seen == set(written)
