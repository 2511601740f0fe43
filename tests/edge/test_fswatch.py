"""``edge.fswatch``: the one watchfiles adapter, on real folders with real inotify."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edge.errors import FsWatchError
from edge.fswatch import FsWatch


async def test_a_change_after_entering_is_reported_with_our_names(tmp_path: Path) -> None:
    async with FsWatch(tmp_path, recursive=False, step_ms=10, debounce_ms=50) as changes:
        (tmp_path / "a.txt").write_text("one")  # no wait: the watch is armed already
        batch = await asyncio.wait_for(changes.next(), 10)
    assert batch is not None
    assert ("created", str(tmp_path / "a.txt")) in batch
    assert {change for change, _ in batch} <= {"created", "modified"}


async def test_accept_filters_with_our_change_names(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    def accept(change: str, path: str) -> bool:
        seen.append((change, path))
        return Path(path).name == "wanted"

    (tmp_path / "wanted").write_text("x")
    async with FsWatch(tmp_path, recursive=False, accept=accept, step_ms=10,
                       debounce_ms=50) as changes:
        (tmp_path / "other").write_text("y")
        (tmp_path / "wanted").unlink()
        batches = []
        while not any(c == "deleted" for b in batches for c, _ in b):
            batch = await asyncio.wait_for(changes.next(), 10)
            assert batch
            batches.append(batch)
    assert all(Path(p).name == "wanted" for b in batches for _, p in b)
    assert ("deleted", str(tmp_path / "wanted")) in seen
    assert any(Path(p).name == "other" for _, p in seen)  # offered, and refused


async def test_a_timeout_gives_an_empty_batch_and_loses_nothing(tmp_path: Path) -> None:
    async with FsWatch(tmp_path, recursive=False, step_ms=10, debounce_ms=50) as changes:
        assert await changes.next(timeout=0.05) == frozenset()
        waiter = asyncio.create_task(changes.next())
        await asyncio.sleep(0.05)
        waiter.cancel()  # an abandoned wait: the step in flight goes on
        with pytest.raises(asyncio.CancelledError):
            await waiter
        (tmp_path / "late").write_text("z")
        batch = await asyncio.wait_for(changes.next(), 10)
    assert batch and ("created", str(tmp_path / "late")) in batch


async def test_stop_ends_next_at_once_and_is_never_set_by_the_watch(tmp_path: Path) -> None:
    stop = asyncio.Event()
    async with FsWatch(tmp_path, recursive=False, stop=stop, step_ms=500) as changes:
        waiter = asyncio.create_task(changes.next())
        await asyncio.sleep(0.05)
        began = time.monotonic()
        stop.set()
        assert await asyncio.wait_for(waiter, 10) is None
        assert time.monotonic() - began < 0.25  # not a step of the watch thread
    other = asyncio.Event()
    task = asyncio.create_task(_watch_forever(tmp_path, other))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not other.is_set()


async def _watch_forever(folder: Path, stop: asyncio.Event) -> None:
    async with FsWatch(folder, recursive=False, stop=stop, step_ms=20) as changes:
        while await changes.next() is not None:
            pass


async def test_halt_ends_the_watch(tmp_path: Path) -> None:
    changes = FsWatch(tmp_path, recursive=False, step_ms=20)
    await changes.start()
    try:
        changes.halt()
        assert await asyncio.wait_for(changes.next(), 10) is None
        assert await changes.next() is None
    finally:
        await changes.close()
        await changes.close()  # twice is fine


async def test_a_missing_folder_is_our_error(tmp_path: Path) -> None:
    with pytest.raises(FsWatchError) as caught:
        async with FsWatch(tmp_path / "nowhere", recursive=True):
            pass
    assert caught.value.code == "fswatch_failed"
    assert "nowhere" in str(caught.value) and "FileNotFoundError" in str(caught.value)
