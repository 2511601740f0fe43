"""The daemon's lifecycle: start → run (one TaskGroup) → stop(timeout) → close.

A real edge home (key, config, SQLite stores) pointed at a relay that is not there: the
link keeps retrying, which is what it does on a real machine with the relay down, and
every other part runs for real. Extra parts (one that ignores the stop, one that fails)
are added the way the daemon lists its own, through ``parts()``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from tests_support import wait_until

from edge.config import EdgePaths
from edge.daemon import EdgeDaemon, Part
from edge.errors import EdgeError
from edge.store.inbox import Inbox
from shared.host.lockfile import edge_lock


@pytest.fixture
def paths(enrolled_home: Path) -> EdgePaths:
    """A key and a config pointed at a relay that is not there (``conftest``)."""
    return EdgePaths.resolve({"MAILSLOT_HOME": str(enrolled_home)})


class WithParts(EdgeDaemon):
    """The real daemon plus the parts a test adds."""

    def __init__(self, paths: EdgePaths, extra: dict[str, Part], stop_timeout: float) -> None:
        super().__init__(paths, stop_timeout=stop_timeout)
        self.extra = extra

    def parts(self) -> dict[str, Part]:
        return {**super().parts(), **self.extra}


async def ignores_stop(_stop: asyncio.Event) -> None:
    await asyncio.Event().wait()  # never looks at the stop event


def status(paths: EdgePaths) -> dict[str, object]:
    with Inbox.open(paths.inbox_file) as inbox:
        return dict(inbox.status())


def assert_closed(daemon: EdgeDaemon, paths: EdgePaths) -> None:
    """Everything is closed and the lock given back: a new lock on the home succeeds."""
    assert daemon.inboxes is None and daemon.activity is None and daemon.instance is None
    edge_lock(paths.data_dir).acquire().release()
    assert status(paths).get("connected") is False


def test_each_role_has_its_own_inbox_given_at_construction(paths: EdgePaths) -> None:
    daemon = EdgeDaemon(paths)
    daemon.start()
    try:
        inboxes = daemon.inboxes
        assert inboxes is not None and daemon.link is not None and daemon.engine is not None
        assert len({id(inbox) for inbox in inboxes.all()}) == 4
        assert daemon.link.inbox is inboxes.link
        assert daemon.link.receiver.inbox is inboxes.receiver
        assert daemon.engine.inbox is inboxes.engine
        assert daemon.watches is not None and daemon.watches.raiser.inbox is inboxes.watches
    finally:
        daemon.close()
    assert_closed(daemon, paths)


async def test_stop_waits_for_the_parts_then_closes(paths: EdgePaths) -> None:
    daemon = EdgeDaemon(paths)
    daemon.start()
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    await wait_until(lambda: len(daemon._tasks) == len(daemon.parts()), 10, "every part running")
    stop.set()
    await asyncio.wait_for(running, 10)
    assert daemon.cancelled == []  # every real part stops by itself
    assert_closed(daemon, paths)


async def test_a_part_that_ignores_stop_is_cancelled_after_the_timeout_and_named(
    paths: EdgePaths, caplog: pytest.LogCaptureFixture
) -> None:
    # 1.5 s: the real parts' watch threads wake every 0.5 s to see the stop
    daemon = WithParts(paths, {"stuck": ignores_stop}, stop_timeout=1.5)
    daemon.start()
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    await wait_until(lambda: "stuck" in daemon._tasks, 10, "the stuck part running")
    caplog.set_level(logging.WARNING, logger="mailslot.edge")
    stop.set()
    await asyncio.wait_for(running, 10)
    assert daemon.cancelled == ["stuck"]
    assert "stuck did not stop within 1.5s: cancelled" in caplog.text
    assert_closed(daemon, paths)


async def test_a_failing_part_stops_the_others_cleanly_and_its_error_is_raised_once(
    paths: EdgePaths, caplog: pytest.LogCaptureFixture
) -> None:
    async def fails(_stop: asyncio.Event) -> None:
        await asyncio.sleep(0.1)
        raise EdgeError("the part broke")

    daemon = WithParts(paths, {"broken": fails}, stop_timeout=5)
    daemon.start()
    caplog.set_level(logging.INFO, logger="mailslot.edge")
    with pytest.raises(EdgeError, match="the part broke") as raised:
        await asyncio.wait_for(daemon.run(asyncio.Event()), 10)
    assert not isinstance(raised.value, BaseExceptionGroup)
    assert daemon.cancelled == []  # the real parts saw the stop and ended by themselves
    assert caplog.text.count("Traceback") == 0
    assert_closed(daemon, paths)


async def test_stop_with_nothing_running_reports_nothing_and_a_new_daemon_runs(
    paths: EdgePaths,
) -> None:
    assert await EdgeDaemon(paths).stop(0.1) == []
    for _ in range(2):  # the first one gave everything back
        daemon = EdgeDaemon(paths)
        daemon.start()
        stop = asyncio.Event()
        stop.set()
        await asyncio.wait_for(daemon.run(stop), 10)
        assert daemon.cancelled == []
        assert_closed(daemon, paths)
