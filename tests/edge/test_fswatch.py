"""``edge.fswatch``: the process's file-system watcher, on real folders with real inotify,
through both back-ends (inotify on the event loop; watchfiles' thread)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.errors import FsWatchError
from edge.fswatch import Backend, FsWatch, FsWatchService


@pytest.fixture(params=["inotify", "watchfiles"])
async def service(request: pytest.FixtureRequest) -> AsyncIterator[FsWatchService]:
    backend: Backend = request.param
    fs = FsWatchService(backend)
    yield fs
    fs.close()


async def test_a_change_after_entering_is_reported_with_our_names(tmp_path: Path, service: FsWatchService) -> None:
    async with service.watch(tmp_path, recursive=False, step_ms=10, debounce_ms=50) as changes:
        (tmp_path / "a.txt").write_text("one")  # no wait: the watch is armed already
        batch = await asyncio.wait_for(changes.next(), 10)
    assert batch is not None
    assert ("created", str(tmp_path / "a.txt")) in batch
    assert {change for change, _ in batch} <= {"created", "modified"}


async def test_accept_filters_with_our_change_names(tmp_path: Path, service: FsWatchService) -> None:
    seen: list[tuple[str, str]] = []

    def accept(change: str, path: str) -> bool:
        seen.append((change, path))
        return Path(path).name == "wanted"

    (tmp_path / "wanted").write_text("x")
    async with service.watch(tmp_path, recursive=False, accept=accept, step_ms=10,
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


async def test_a_timeout_gives_an_empty_batch_and_loses_nothing(tmp_path: Path, service: FsWatchService) -> None:
    async with service.watch(tmp_path, recursive=False, step_ms=10, debounce_ms=50) as changes:
        assert await changes.next(timeout=0.05) == frozenset()
        waiter = asyncio.create_task(changes.next())
        await asyncio.sleep(0.05)
        waiter.cancel()  # an abandoned wait: the step in flight goes on
        with pytest.raises(asyncio.CancelledError):
            await waiter
        (tmp_path / "late").write_text("z")
        batch = await asyncio.wait_for(changes.next(), 10)
    assert batch and ("created", str(tmp_path / "late")) in batch


async def test_stop_ends_next_at_once_and_is_never_set_by_the_watch(tmp_path: Path, service: FsWatchService) -> None:
    stop = asyncio.Event()
    async with service.watch(tmp_path, recursive=False, stop=stop, step_ms=500) as changes:
        waiter = asyncio.create_task(changes.next())
        await asyncio.sleep(0.05)
        began = time.monotonic()
        stop.set()
        assert await asyncio.wait_for(waiter, 10) is None
        assert time.monotonic() - began < 0.25  # not a step of the watch thread
    other = asyncio.Event()
    task = asyncio.create_task(_watch_forever(service, tmp_path, other))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not other.is_set()


async def _watch_forever(service: FsWatchService, folder: Path, stop: asyncio.Event) -> None:
    async with service.watch(folder, recursive=False, stop=stop, step_ms=20) as changes:
        while await changes.next() is not None:
            pass


async def test_halt_ends_the_watch(tmp_path: Path, service: FsWatchService) -> None:
    changes = service.watch(tmp_path, recursive=False, step_ms=20)
    await changes.start()
    try:
        changes.halt()
        assert await asyncio.wait_for(changes.next(), 10) is None
        assert await changes.next() is None
    finally:
        await changes.close()
        await changes.close()  # twice is fine


async def test_a_missing_folder_is_our_error(tmp_path: Path, service: FsWatchService) -> None:
    with pytest.raises(FsWatchError) as caught:
        async with service.watch(tmp_path / "nowhere", recursive=True):
            pass
    assert caught.value.code == "fswatch_failed"
    assert "nowhere" in str(caught.value) and "FileNotFoundError" in str(caught.value)


async def test_a_new_folder_in_a_recursive_watch_is_followed(
        tmp_path: Path, service: FsWatchService) -> None:
    async with service.watch(tmp_path, recursive=True, step_ms=10, debounce_ms=50) as changes:
        (tmp_path / "sub").mkdir()
        seen = await _until(changes, str(tmp_path / "sub"))
        (tmp_path / "sub" / "deep.txt").write_text("x")
        seen |= await _until(changes, str(tmp_path / "sub" / "deep.txt"))
    assert ("created", str(tmp_path / "sub")) in seen


async def test_a_write_to_a_file_created_in_the_same_batch_is_a_creation(
        tmp_path: Path, service: FsWatchService) -> None:
    async with service.watch(tmp_path, recursive=False, step_ms=100,
                             debounce_ms=400) as changes:
        path = tmp_path / "new.txt"
        with path.open("w") as handle:
            handle.write("one")
            handle.flush()
            handle.write("two")
        batch = await asyncio.wait_for(changes.next(), 10)
    assert batch == frozenset({("created", str(path))})


async def test_a_watch_without_a_service_has_its_own(tmp_path: Path) -> None:
    changes = FsWatch(tmp_path, recursive=False, step_ms=10, debounce_ms=50)
    async with changes:
        (tmp_path / "a").write_text("1")
        assert await asyncio.wait_for(changes.next(), 10)
    assert changes.service.kernel_watches == 0


async def _until(changes: FsWatch, path: str) -> set[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    while not any(p == path for _, p in seen):
        batch = await asyncio.wait_for(changes.next(), 10)
        assert batch is not None
        seen |= batch
    return seen


async def test_watchfiles_watches_share_one_thread_per_kind(tmp_path: Path) -> None:
    fs = FsWatchService("watchfiles")
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    try:
        async with fs.watch(one, recursive=False, step_ms=10, debounce_ms=50) as first:
            async with fs.watch(two, recursive=False, step_ms=10, debounce_ms=50) as second:
                assert fs.threads == 1  # one stream over both folders
                (one / "a").write_text("1")
                (two / "b").write_text("2")
                assert ("created", str(one / "a")) in await _until(first, str(one / "a"))
                assert ("created", str(two / "b")) in await _until(second, str(two / "b"))
            assert fs.threads == 1  # narrowed to the first folder again
            (one / "c").write_text("3")  # the first watch lost nothing in the swap
            await _until(first, str(one / "c"))
        assert fs.threads == 0
    finally:
        fs.close()
