"""``edge.inotify``: one inotify instance shared by every watch of a process, read on the
event loop (real kernel watches on real folders)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests_support import wait_until

from edge.fswatch import FsWatchService
from edge.inotify import InotifyHub


@pytest.fixture
async def hub() -> AsyncIterator[InotifyHub]:
    shared = InotifyHub()
    yield shared
    shared.close()



async def test_watches_of_one_folder_share_one_kernel_watch(tmp_path: Path,
                                                             hub: InotifyHub) -> None:
    seen_a, seen_b = [], []
    (tmp_path / "sub").mkdir()
    a = hub.subscribe([tmp_path], recursive=True, deliver=lambda c, p: seen_a.append((c, p)),
                      on_error=lambda exc: None)
    b = hub.subscribe([tmp_path], recursive=False,
                      deliver=lambda c, p: seen_b.append((c, p)), on_error=lambda exc: None)
    assert hub.watched == 2  # the folder and its sub-folder, once each
    (tmp_path / "sub" / "x").write_text("1")
    (tmp_path / "y").write_text("2")
    await wait_until(lambda: len({p for _, p in seen_a}) == 2, timeout=5)
    await wait_until(lambda: any(p.endswith("/y") for _, p in seen_b), timeout=5)
    assert all(not p.endswith("/x") for _, p in seen_b)  # not below a flat watch
    hub.unsubscribe(a)
    assert hub.watched == 1  # the flat one still needs the folder
    hub.unsubscribe(b)
    assert hub.watched == 0


async def test_no_thread_and_nothing_read_while_idle(tmp_path: Path, hub: InotifyHub) -> None:
    before = threading.active_count()
    seen: list[tuple[str, str]] = []
    hub.subscribe([tmp_path], recursive=True, deliver=lambda c, p: seen.append((c, p)),
                  on_error=lambda exc: None)
    assert threading.active_count() == before
    (tmp_path / "f").write_text("x")
    await wait_until(lambda: bool(seen), timeout=5)


async def test_a_deleted_root_is_reported_and_its_watch_dropped(tmp_path: Path,
                                                                hub: InotifyHub) -> None:
    root = tmp_path / "root"
    root.mkdir()
    seen: list[tuple[str, str]] = []
    hub.subscribe([root], recursive=False, deliver=lambda c, p: seen.append((c, p)),
                  on_error=lambda exc: None)
    root.rmdir()
    await wait_until(lambda: ("deleted", str(root)) in seen, timeout=5)
    await wait_until(lambda: hub.watched == 0, timeout=5)


async def test_a_folder_moved_away_is_forgotten_and_one_moved_in_followed(
        tmp_path: Path, hub: InotifyHub) -> None:
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    (inside / "a").mkdir()
    (outside / "b").mkdir()
    (outside / "b" / "c").mkdir()
    seen: list[tuple[str, str]] = []
    hub.subscribe([inside], recursive=True, deliver=lambda c, p: seen.append((c, p)),
                  on_error=lambda exc: None)
    assert hub.watched == 2
    os.rename(inside / "a", outside / "a")
    os.rename(outside / "b", inside / "b")
    await wait_until(lambda: ("created", str(inside / "b")) in seen, timeout=5)
    assert ("deleted", str(inside / "a")) in seen
    assert hub.watched == 3  # in, in/b, in/b/c
    (inside / "b" / "c" / "f").write_text("x")
    await wait_until(lambda: ("created", str(inside / "b" / "c" / "f")) in seen, timeout=5)
    (outside / "a" / "g").write_text("y")  # moved away: not ours any more
    await asyncio.sleep(0.1)
    assert all("/out/" not in p for _, p in seen)


async def test_a_missing_root_raises_and_leaves_nothing(tmp_path: Path,
                                                        hub: InotifyHub) -> None:
    with pytest.raises(FileNotFoundError):
        hub.subscribe([tmp_path, tmp_path / "nowhere"], recursive=False,
                      deliver=lambda c, p: None, on_error=lambda exc: None)
    assert hub.watched == 0


async def test_the_service_shares_one_instance_across_watches(tmp_path: Path) -> None:
    fs = FsWatchService("inotify")
    try:
        async with fs.watch(tmp_path, recursive=False) as one, \
                fs.watch(tmp_path, recursive=False, step_ms=10, debounce_ms=20) as two:
            assert fs.kernel_watches == 1
            (tmp_path / "z").write_text("x")
            assert await asyncio.wait_for(two.next(), 5)
            assert await asyncio.wait_for(one.next(), 5)
        assert fs.kernel_watches == 0
    finally:
        fs.close()


async def test_a_subscription_gets_what_came_between_subscribe_and_unsubscribe(
        tmp_path: Path, hub: InotifyHub) -> None:
    seen_a: list[tuple[str, str]] = []
    seen_b: list[tuple[str, str]] = []
    a = hub.subscribe([tmp_path], recursive=False, deliver=lambda c, p: seen_a.append((c, p)),
                      on_error=lambda exc: None)
    (tmp_path / "before").write_text("1")  # queued in the kernel, not read yet: no await
    b = hub.subscribe([tmp_path], recursive=False, deliver=lambda c, p: seen_b.append((c, p)),
                      on_error=lambda exc: None)
    (tmp_path / "between").write_text("2")
    hub.unsubscribe(a)  # still no await: what is queued is read for it first
    assert ("created", str(tmp_path / "before")) in seen_a
    assert ("created", str(tmp_path / "between")) in seen_a
    (tmp_path / "after").write_text("3")
    await wait_until(lambda: ("created", str(tmp_path / "after")) in seen_b, timeout=5)
    assert all(not p.endswith("/before") for _, p in seen_b)
    assert all(not p.endswith("/after") for _, p in seen_a)
    hub.unsubscribe(b)
