"""``edge.delivery.manage`` (``mailslot deliveries`` and its MCP tools) on a real engine
database: the filters, the refusals with their codes, a retry taking the intent's
current route and poking the daemon, a drop saying in the log what became of the wake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.config import EdgePaths
from edge.delivery.manage import drop_delivery, list_deliveries, retry_delivery, show_delivery
from edge.errors import NotDroppable, NotRetryable, UnknownDelivery
from edge.store.activity import ActivityLog
from edge.store.deliveries import DeliveryQueue
from edge.store.instances import Instance

T = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
OLD = {"kind": "webhook", "url": "http://127.0.0.1:9/old", "max_attempts": 1}


@pytest.fixture
def paths(tmp_path: Path) -> EdgePaths:
    paths = EdgePaths(tmp_path / "config", tmp_path / "data")
    paths.ensure()
    paths.intents_file.write_text('[[intent]]\nid = "ci"\n[intent.route]\nkind = "webhook"\n'
                                  'url = "http://127.0.0.1:9/new"\n')
    return paths


def _queue(paths: EdgePaths) -> DeliveryQueue:
    return DeliveryQueue.open(paths.engine_file)


def _enqueue(queue: DeliveryQueue, n: int, **extra: object) -> int:
    return queue.enqueue(wake=n, intent="ci", route=OLD, session="", interrupts=[f"i{n}"],
                         permissions={}, wake_doc={"text": "t"}, at=T.timestamp(), **extra)


def test_list_show_retry_drop(paths: EdgePaths) -> None:
    assert list_deliveries(paths) == []  # no engine database yet: nothing, nothing made
    with pytest.raises(UnknownDelivery):
        show_delivery(paths, "msg_nothing")
    queue = _queue(paths)
    holder = Instance.start(paths.instances_dir, "test")
    try:
        _enqueue(queue, 1)
        _enqueue(queue, 2, skipped="route webhook disabled: 410")
        _enqueue(queue, 3)
        (running,) = queue.claim("webhook", holder, 60, T)
        queue.fail(running, {"error": "HTTP 503"}, T)  # gave up (max_attempts 1)
        (running,) = queue.claim("webhook", holder, 60, T)  # 3, now running
    finally:
        queue.close()
    failed = list_deliveries(paths, "failed")
    assert [(d["seq"], d["status"], d["outcome"]) for d in failed] == [
        (2, "failed", "skipped"), (1, "failed", "error")]
    assert [d["seq"] for d in list_deliveries(paths, "pending")] == [3]
    assert [d["seq"] for d in list_deliveries(paths, limit=2)] == [3, 2]

    with pytest.raises(NotRetryable, match="running now"):
        retry_delivery(paths, "3")
    with pytest.raises(NotDroppable):
        drop_delivery(paths, running.key)
    key = failed[1]["key"]
    again = retry_delivery(paths, key, T + timedelta(minutes=1))
    assert (again["status"], again["attempts"], again["target"]) == (
        "pending", 0, "http://127.0.0.1:9/new")  # the intent's route as it is now
    assert show_delivery(paths, key)["route"]["url"] == "http://127.0.0.1:9/new"
    assert paths.poke_file.exists()  # the daemon was woken
    with pytest.raises(NotRetryable, match="pending"):
        retry_delivery(paths, "1")
    assert drop_delivery(paths, "1")["dropped"] is True  # pending: never sent
    holder.stop()
    with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
        steps = [(e.step, e.detail.get("status") or e.detail.get("rule"))
                 for e in log.trace("i1")]
    assert steps == [("delivered", "requeued"), ("outcome", "dropped")]
