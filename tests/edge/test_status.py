"""``edge.status``: the status of an edge read from outside the daemon, and its
Prometheus text (real files, no daemon)."""

from __future__ import annotations

from pathlib import Path

from edge.config import EdgePaths
from edge.metrics import metrics_text
from edge.status import COUNTERS, counters, watch_runtime


def test_a_fresh_edge_reads_as_zero_and_nothing_is_created(tmp_path: Path) -> None:
    paths = EdgePaths.resolve({"MAILSLOT_HOME": str(tmp_path)})
    assert counters(paths) == dict.fromkeys(COUNTERS, 0)
    assert watch_runtime(paths) == {}
    assert not paths.watches_file.exists()


def test_metrics_text_has_every_figure() -> None:
    status = {"counters": {"tick.fired": 3, "sleep.entered": 1},
              "pending": {"now": 2, "next": 0, "later": 1}, "connected": True,
              "delivered_total": 7, "rejected": 4}
    text = metrics_text(status)
    assert "mailslot_tick_fired_total 3.0" in text
    assert 'mailslot_inbox_pending{priority="now"} 2.0' in text
    assert "mailslot_link_connected 1.0" in text
    assert "mailslot_delivered_total 7.0" in text
    assert "mailslot_rejected_total 4.0" in text
