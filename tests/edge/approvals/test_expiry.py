"""The daemon's approval timer (``edge.approvals.expiry``), run by a real edge daemon on a
real edge home (pointed at a relay that is not there: the link retries, every other part
runs): a pending request expires when its time comes with nobody reading it, and a
request made while the timer sleeps with nothing to wait for re-arms it (the poke), no
polling."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests_support import wait_until

from edge.approvals.desk import open_desk
from edge.approvals.expiry import ApprovalTimer
from edge.config import EdgePaths
from edge.daemon import EdgeDaemon
from edge.intents.approvalrules import ApprovalSettings
from edge.store.activity import ActivityLog
from edge.store.approvals import Approval, ApprovalStore
from edge.store.inbox import Inbox


@pytest.fixture
def paths(enrolled_home: Path) -> EdgePaths:
    paths = EdgePaths.resolve({"MAILSLOT_HOME": str(enrolled_home)})
    paths.intents_file.write_text('[approvals]\nlevel = 0\nexpires = "1s"\n')
    return paths


def _row(paths: EdgePaths, approval_id: str) -> Approval | None:
    """The row as stored, without the expiry a desk applies when it reads."""
    store = ApprovalStore.open(paths.engine_file)
    try:
        return store.get(approval_id)
    finally:
        store.close()


def _ask(paths: EdgePaths, action: str) -> Approval:
    with open_desk(paths) as desk:
        return desk.request(action, f"please {action}", session="api")


async def test_pending_requests_expire_on_time_with_nobody_reading(paths: EdgePaths) -> None:
    assert ApprovalTimer(paths, ApprovalSettings).expire_due() is None  # nothing pending
    first = _ask(paths, "repo:write")
    daemon = EdgeDaemon(paths)
    daemon.start()
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        row = await wait_until(
            lambda: (r := _row(paths, first.id)) is not None and r.status == "expired" and r,
            10, "the first request expired")
        assert row.decided == first.expires
        late = datetime.now(UTC) - first.expires
        assert late < timedelta(seconds=3), late
        # the timer now sleeps with nothing pending: a new request (its poke) re-arms it
        second = _ask(paths, "deploy:prod")
        await wait_until(lambda: (r := _row(paths, second.id)) is not None
                         and r.status == "expired", 10, "the second request expired")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    with Inbox.open(paths.inbox_file) as inbox:
        expired = [i for i in inbox.list(state=None, limit=100) if i.type == "approval.expired"]
    assert sorted(i.payload["id"] for i in expired) == sorted([first.id, second.id])
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
        decided = [e for e in log.entries() if e.step == "approval_decided"]
    assert [(e.detail["by"], e.detail["status"]) for e in decided] == [("expiry", "expired")] * 2
