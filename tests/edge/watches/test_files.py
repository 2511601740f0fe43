"""``edge.watches.files`` (with ``filepaths`` and ``fileevents``): real files, real inotify.
Events are awaited, never slept for."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from edge.errors import EdgeError, WatchDefinitionError
from edge.intents.declarations import FileWatch
from edge.watches.fileevents import FileEvent, merge, ordered
from edge.watches.filepaths import check_file_watch
from edge.watches.files import FileWatcher
from shared.envelope import PAYLOAD_MAX_BYTES


def watch(*paths: Path | str, id: str = "files", debounce: float = 0.05, **options: Any
          ) -> FileWatch:
    return FileWatch(id=id, kind="file", paths=[str(p) for p in paths], debounce=debounce,
                     **options)


def changes(event: FileEvent) -> list[tuple[str, str]]:
    return [(Path(c["path"]).name, c["change"]) for c in event.changes]


class Running:
    """A ``FileWatcher`` running in a task; what it emits, with the time it came."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[float, FileEvent]] = asyncio.Queue()
        self.watcher = FileWatcher(lambda event: self.queue.put_nowait((time.monotonic(), event)))
        self.stop = asyncio.Event()

    async def next(self, watch_id: str | None = None, timeout: float = 5.0) -> FileEvent:
        return (await self.timed(watch_id, timeout))[1]

    async def timed(self, watch_id: str | None = None, timeout: float = 5.0
                    ) -> tuple[float, FileEvent]:
        at, event = await asyncio.wait_for(self.queue.get(), timeout)
        if watch_id is not None:
            assert event.watch.id == watch_id, (event.watch.id, event.changes)
        return at, event

    async def ready(self) -> None:
        await asyncio.wait_for(self.watcher.ready.wait(), 10)

    def pending(self) -> list[FileEvent]:
        events = []
        while not self.queue.empty():
            events.append(self.queue.get_nowait()[1])
        return events


@asynccontextmanager
async def running(*watches: FileWatch) -> AsyncIterator[Running]:
    run = Running()
    run.watcher.set_watches(list(watches))
    task = asyncio.create_task(run.watcher.run(run.stop))
    await run.ready()
    try:
        yield run
    finally:
        run.stop.set()
        await asyncio.wait_for(task, 5)


# -- events ---------------------------------------------------------------------------


async def test_created_modified_deleted_each_make_one_event_fast(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    async with running(watch(tmp_path)) as run:
        latencies = []
        actions: list[tuple[Callable[[], object], str]] = [
            (lambda: target.write_text("one"), "created"),
            (lambda: target.write_text("two"), "modified"),
            (target.unlink, "deleted"),
        ]
        for action, expected in actions:
            began = time.monotonic()
            action()
            at, event = await run.timed("files")
            latencies.append(at - began)
            assert changes(event) == [("notes.txt", expected)]
            assert event.event_type() == f"file.{expected}"
            assert event.payload() == {"changes": [{"path": str(target), "change": expected}],
                                       "count": 1}
        assert max(latencies) < 1.0, latencies
        assert run.pending() == []


async def test_a_burst_within_the_debounce_is_one_event(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    async with running(watch(tmp_path, debounce=0.3)) as run:
        with log.open("a") as f:
            for i in range(20):
                f.write(f"line {i}\n")
                f.flush()
        many = [tmp_path / f"out-{i:02}.o" for i in range(20)]
        for path in many:
            path.write_bytes(b"\0")
        event = await run.next("files")
        assert changes(event) == [("build.log", "created")] + [(p.name, "created") for p in many]
        # Anything of the burst left over would share the next window with this one.
        (tmp_path / "after.txt").write_text("x")
        assert changes(await run.next("files")) == [("after.txt", "created")]
        assert run.pending() == []


async def test_created_then_deleted_within_the_window_is_nothing(tmp_path: Path) -> None:
    async with running(watch(tmp_path, debounce=0.3)) as run:
        scratch = tmp_path / "scratch"
        scratch.write_text("x")
        scratch.unlink()
        (tmp_path / "kept").write_text("x")
        assert changes(await run.next("files")) == [("kept", "created")]

        # replaced within a window (deleted, then created again): modified
        (tmp_path / "kept").unlink()
        (tmp_path / "kept").write_text("y")
        (tmp_path / "kept.bak").write_text("y")
        event = await run.next("files")
        assert changes(event) == [("kept", "modified"), ("kept.bak", "created")]
        assert event.event_type() == "file.changed"


async def test_ignored_paths_never_emit(tmp_path: Path) -> None:
    strict = watch(tmp_path, id="strict", ignore=["build", "*.log"], debounce=0.2)
    everything = watch(tmp_path, id="everything", default_ignores=False, debounce=0.2)
    async with running(strict, everything) as run:
        (tmp_path / ".git" / "objects").mkdir(parents=True)
        (tmp_path / ".git" / "objects" / "ab").write_text("blob")
        (tmp_path / ".git" / "HEAD").write_text("ref")
        for name in ["foo.swp", "foo~", "4913", ".#foo", "#foo#", "x.tmp", "run.log"]:
            (tmp_path / name).write_text("x")
        (tmp_path / "build").mkdir()
        (tmp_path / "build" / "out.o").write_text("x")
        (tmp_path / "real.txt").write_text("x")

        events = {e.watch.id: e for e in [await run.next(), await run.next()]}
        assert changes(events["strict"]) == [("real.txt", "created")]
        seen = {name for name, _ in changes(events["everything"])}
        assert {"foo.swp", "foo~", "4913", "HEAD", "out.o", "real.txt"} <= seen
        assert run.pending() == []


async def test_what_a_new_folder_holds_is_seen(tmp_path: Path) -> None:
    # inotify watches a new folder only once it reported it: what was put in it before
    # (always the case for a folder moved in) has no event of its own.
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    tree.mkdir()
    (outside / "moved" / "deep").mkdir(parents=True)
    (outside / "moved" / "deep" / "x.py").write_text("x")
    (outside / "moved" / "readme.md").write_text("x")
    # a wide debounce: this test is about what is seen, not about how it is grouped
    async with running(watch(tree, id="all", debounce=0.5),
                       watch(tree / "**" / "*.py", id="py", debounce=0.5),
                       watch(tree / "*" / "*.md", id="md", debounce=0.5)) as run:
        (outside / "moved").rename(tree / "moved")
        (tree / "made" / "sub").mkdir(parents=True)
        (tree / "made" / "sub" / "y.py").write_text("x")
        events = {e.watch.id: e for e in [await run.next(), await run.next(), await run.next()]}
        assert changes(events["all"]) == [
            ("made", "created"), ("sub", "created"), ("y.py", "created"),
            ("moved", "created"), ("deep", "created"), ("x.py", "created"),
            ("readme.md", "created")]
        assert changes(events["py"]) == [("y.py", "created"), ("x.py", "created")]
        assert changes(events["md"]) == [("readme.md", "created")]
        assert run.pending() == []


async def test_a_glob_matches_per_component(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    py = watch(tmp_path / "*.py", id="py")
    deep = watch(tmp_path / "**" / "*.py", id="deep")
    async with running(py, deep) as run:
        (tmp_path / "x.txt").write_text("x")
        (tmp_path / "pkg" / "inner.py").write_text("x")
        (tmp_path / "pkg" / "notes.txt").write_text("x")
        (tmp_path / "top.py").write_text("x")
        events = {e.watch.id: e for e in [await run.next(), await run.next()]}
        assert changes(events["py"]) == [("top.py", "created")]
        assert changes(events["deep"]) == [("inner.py", "created"), ("top.py", "created")]
        assert run.pending() == []


async def test_a_literal_file_and_its_atomic_replacement(tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    async with running(watch(target)) as run:
        (tmp_path / "other.toml").write_text("x")
        target.write_text("a = 1\n")
        assert changes(await run.next("files")) == [("config.toml", "created")]

        temporary = tmp_path / ".config.toml.tmp"  # how editors and tools save atomically
        temporary.write_text("a = 2\n")
        temporary.rename(target)
        assert changes(await run.next("files")) == [("config.toml", "created")]
        assert run.pending() == []


async def test_changes_filters_after_merging(tmp_path: Path) -> None:
    gone = watch(tmp_path, id="gone", changes=["deleted"])
    barrier = watch(tmp_path, id="all")
    async with running(gone, barrier) as run:
        victim = tmp_path / "victim"
        victim.write_text("x")
        victim.write_text("y")
        assert changes(await run.next("all")) == [("victim", "created")]
        victim.unlink()
        events = {e.watch.id: e for e in [await run.next(), await run.next()]}
        assert changes(events["gone"]) == [("victim", "deleted")]
        assert events["gone"].event_type() == "file.deleted"


async def test_include_content_is_capped(tmp_path: Path) -> None:
    reader = watch(tmp_path, include_content=True, content_max=63, type="notes.changed")
    async with running(reader) as run:
        (tmp_path / "a-small.txt").write_text("hello")
        assert (await run.next()).payload()["content"] == {str(tmp_path / "a-small.txt"): "hello"}

        (tmp_path / "b-big.txt").write_text("é" * 1000)
        (tmp_path / "c-after.txt").write_text("more")
        (tmp_path / "link.txt").symlink_to(tmp_path / "a-small.txt")
        event = await run.next()
        payload = event.payload()
        assert event.event_type() == "notes.changed"
        assert payload["count"] == 3 and payload["truncated"] is True
        text = payload["content"][str(tmp_path / "b-big.txt")]
        assert text and set(text) == {"é"}  # cut on a character, not inside one
        texts = payload["content"].values()
        assert sum(len(json.dumps(t, ensure_ascii=False).encode()) for t in texts) <= 63
        assert str(tmp_path / "c-after.txt") not in payload["content"]  # no room left
        assert str(tmp_path / "link.txt") not in payload["content"]  # never through a link

        (tmp_path / "a-small.txt").unlink()
        assert (await run.next()).payload() == {
            "changes": [{"path": str(tmp_path / "a-small.txt"), "change": "deleted"}],
            "count": 1, "content": {}}


async def test_content_is_never_included_unless_asked(tmp_path: Path) -> None:
    async with running(watch(tmp_path)) as run:
        (tmp_path / "secret.txt").write_text("s3cret")
        payload = (await run.next()).payload()
        assert "content" not in payload and "s3cret" not in json.dumps(payload)


# -- the watcher ----------------------------------------------------------------------


async def test_set_watches_swaps_the_set_live(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    async with running(watch(one, id="one")) as run:
        (one / "a").write_text("x")
        assert changes(await run.next("one")) == [("a", "created")]

        run.watcher.set_watches([watch(two, id="two")])
        assert not run.watcher.ready.is_set()
        await run.ready()
        (one / "b").write_text("x")
        (two / "c").write_text("x")
        assert changes(await run.next("two")) == [("c", "created")]

        run.watcher.set_watches([watch(two, id="two", paused=True), watch(one, id="one")])
        await run.ready()
        (two / "d").write_text("x")
        (one / "e").write_text("x")
        assert changes(await run.next("one")) == [("e", "created")]

        # the same set again (intents.toml reloaded for another reason): nothing to redo
        run.watcher.set_watches([watch(two, id="two", paused=True), watch(one, id="one")])
        assert run.watcher.ready.is_set()

        run.watcher.set_watches([])
        await run.ready()
        assert run.pending() == []


async def test_stop_returns_promptly_and_emits_what_is_pending(tmp_path: Path) -> None:
    run = Running()
    run.watcher.set_watches([watch(tmp_path, id="slow", debounce=30),
                             watch(tmp_path, id="fast")])
    task = asyncio.create_task(run.watcher.run(run.stop))
    await run.ready()
    (tmp_path / "f").write_text("x")
    await run.next("fast")  # routed in the same step: "slow" holds it in its window

    began = time.monotonic()
    run.stop.set()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - began < 0.5
    assert [(e.watch.id, changes(e)) for e in run.pending()] == [("slow", [("f", "created")])]


async def test_a_deleted_folder_is_survived_and_watched_again(tmp_path: Path) -> None:
    gone, stays = tmp_path / "gone", tmp_path / "stays"
    gone.mkdir()
    stays.mkdir()
    async with running(watch(gone, id="gone"), watch(stays, id="stays")) as run:
        (gone / "a").write_text("x")
        assert changes(await run.next("gone")) == [("a", "created")]

        shutil.rmtree(gone)
        assert sorted(changes(await run.next("gone"))) == [("a", "deleted"), ("gone", "deleted")]
        await run.ready()
        (stays / "b").write_text("x")
        assert changes(await run.next("stays")) == [("b", "created")]

        gone.mkdir()
        assert changes(await run.next("gone")) == [("gone", "created")]
        await run.ready()
        (gone / "c").write_text("x")
        assert changes(await run.next("gone")) == [("c", "created")]
        assert run.pending() == []


async def test_a_deleted_glob_base_is_watched_again(tmp_path: Path) -> None:
    base = tmp_path / "a" / "b"
    base.mkdir(parents=True)
    # "top" sees the folder come and go in the same stream, after the glob base did.
    async with running(watch(base / "*.txt", id="glob"), watch(tmp_path / "*", id="top")) as run:
        (base / "one.txt").write_text("x")
        assert changes(await run.next("glob")) == [("one.txt", "created")]

        shutil.rmtree(tmp_path / "a")
        events = {e.watch.id: e for e in [await run.next(), await run.next()]}
        assert changes(events["glob"]) == [("one.txt", "deleted")]
        assert changes(events["top"]) == [("a", "deleted")]
        await run.ready()  # now watching tmp_path for the base to come back

        base.mkdir(parents=True)
        assert changes(await run.next("top")) == [("a", "created")]
        await run.ready()
        (base / "two.txt").write_text("x")
        (base / "two.md").write_text("x")
        assert changes(await run.next("glob")) == [("two.txt", "created")]
        assert run.pending() == []


async def test_a_failing_receiver_does_not_stop_the_watching(tmp_path: Path) -> None:
    seen: asyncio.Queue[FileEvent] = asyncio.Queue()

    def emit(event: FileEvent) -> None:
        seen.put_nowait(event)
        if len(event.changes) and event.changes[0]["path"].endswith("boom"):
            raise RuntimeError("receiver bug")

    watcher = FileWatcher(emit)
    watcher.set_watches([watch(tmp_path)])
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await asyncio.wait_for(watcher.ready.wait(), 10)
    (tmp_path / "boom").write_text("x")
    await asyncio.wait_for(seen.get(), 5)
    (tmp_path / "fine").write_text("x")
    assert changes(await asyncio.wait_for(seen.get(), 5)) == [("fine", "created")]
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_no_watches_is_ready_and_stops(tmp_path: Path) -> None:
    async with running() as run:
        assert run.watcher.ready.is_set()


# -- definitions ----------------------------------------------------------------------


def test_check_file_watch_accepts_what_can_be_watched(tmp_path: Path) -> None:
    check_file_watch(watch(tmp_path, tmp_path / "not-yet.txt", tmp_path / "**" / "*.py",
                           tmp_path / "*" / "x[0-9].log", "~", "~/.bashrc"))


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("relative/dir", "is not absolute"),
        ("./here.txt", "is not absolute"),
        ("{tmp}/missing/file.txt", "does not exist"),
        ("{tmp}/missing/*.py", "does not exist"),
        ("{tmp}/../etc", "contains '..'"),
        ("{tmp}/**.py", "** must be a whole component"),
        ("{tmp}/[ab/cd]", "unbalanced"),
        ("/**/*.log", "whole file system"),
    ],
)
def test_check_file_watch_refuses(tmp_path: Path, path: str, why: str) -> None:
    raw = path.format(tmp=tmp_path)
    with pytest.raises(WatchDefinitionError) as caught:
        check_file_watch(watch(tmp_path, raw, id="mine"))
    message = str(caught.value)
    assert why in message and "'mine'" in message and raw in message
    assert caught.value.code == "invalid_watch" and isinstance(caught.value, EdgeError)


# -- merging and payloads (no I/O) ----------------------------------------------------


@pytest.mark.parametrize(
    ("sequence", "result"),
    [
        (["created", "modified", "modified"], "created"),
        (["created", "deleted"], None),
        (["created", "deleted", "created"], "created"),
        (["modified", "deleted"], "deleted"),
        (["deleted", "created"], "modified"),
        (["modified", "modified"], "modified"),
    ],
)
def test_merge(sequence: list[Any], result: str | None) -> None:
    window: dict[str, Any] = {}
    for change in sequence:
        merge(window, "/p", change)
    assert window.get("/p") == result


def _folded(orders: dict[str, list[Any]]) -> dict[str, Any]:
    window: dict[str, Any] = {}
    for path, order in sorted(orders.items()):
        for change in order:
            merge(window, path, change)
    return window


@pytest.mark.parametrize(
    ("reported", "result"),
    [
        (set(), "created"),
        # the write raced the new folder's watch: only the modification was reported,
        # in the same step as the folder (test_what_a_new_folder_holds_is_seen's flake)
        ({"modified"}, "created"),
        ({"created"}, "created"),
        ({"created", "modified"}, "created"),
        ({"created", "deleted"}, "created"),  # it exists: replaced after the scan
    ],
)
def test_what_a_new_folders_scan_found_was_created_first(
        tmp_path: Path, reported: set[Any], result: str) -> None:
    found = tmp_path / "made" / "y.py"
    found.parent.mkdir()
    found.write_text("x")
    orders = ordered({str(found.parent): {"created"}, str(found): reported},
                     [str(found), str(found)])  # nested new folders find it twice
    assert _folded(orders) == {str(found.parent): "created", str(found): result}


def test_a_step_without_a_scan_keeps_the_reported_order(tmp_path: Path) -> None:
    there, gone = tmp_path / "there", tmp_path / "gone"
    there.write_text("x")
    orders = ordered({str(there): {"created", "deleted"}, str(gone): {"created", "deleted"},
                      str(tmp_path / "renamed-over"): {"modified", "created"}})
    assert _folded(orders) == {str(there): "modified", str(tmp_path / "renamed-over"): "modified"}


def test_a_payload_fits_an_interrupt_whatever_changed() -> None:
    many = [{"path": f"/data/{'deep/' * 10}file-{i:05}.csv", "change": "created"}
            for i in range(5000)]
    payload = FileEvent(watch("/data"), many).payload()
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    assert size <= PAYLOAD_MAX_BYTES
    assert payload["count"] == 5000 and payload["truncated"] is True
    assert payload["changes"] == many[: len(payload["changes"])]


def test_event_type() -> None:
    one = [{"path": "/a", "change": "modified"}]
    both = [*one, {"path": "/b", "change": "created"}]
    assert FileEvent(watch("/d"), one).event_type() == "file.modified"
    assert FileEvent(watch("/d"), both).event_type() == "file.changed"
    assert FileEvent(watch("/d", type="docs.edited"), both).event_type() == "docs.edited"


def test_file_event_is_frozen() -> None:
    event = FileEvent(watch("/d"), [])
    with pytest.raises(AttributeError):
        event.watch = watch("/e")  # type: ignore[misc]
    assert os.sep == "/"
