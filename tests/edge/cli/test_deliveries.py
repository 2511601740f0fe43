"""``mailslot deliveries``: what README's *Deliveries* says ``show`` prints, text and JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from tests_support import json_out, mailslot

from edge.config import EdgePaths
from edge.store.deliveries import DeliveryQueue

T = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ROUTE = {"kind": "webhook", "url": "http://127.0.0.1:9/hook", "max_attempts": 3}
WAKE = {"text": "mailslot: intent ci woke you for ci.failed", "wake": {"intent": "ci"}}
PERMISSIONS = {"intent": "ci", "actions": ["ci:rerun"], "denied": ["deploy:prod"]}


def test_show_prints_route_wake_and_permission_envelope(home: Path) -> None:
    paths = EdgePaths.resolve({"MAILSLOT_HOME": str(home)})
    queue = DeliveryQueue.open(paths.engine_file)
    try:
        queue.enqueue(wake=1, intent="ci", route=ROUTE, session="api", interrupts=["i1"],
                      permissions=PERMISSIONS, wake_doc=WAKE, at=T.timestamp())
    finally:
        queue.close()

    shown = mailslot(home, "deliveries", "show", "1")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert f"  route: {json.dumps(ROUTE)}" in lines
    assert f"  wake: {json.dumps(WAKE)}" in lines
    assert f"  permissions: {json.dumps(PERMISSIONS)}" in lines

    doc = json_out(mailslot(home, "deliveries", "show", "1", "--json"))
    assert (doc["wake_doc"], doc["permissions"]) == (WAKE, PERMISSIONS)

    missing = mailslot(home, "deliveries", "show", "msg_nothing")
    assert (missing.returncode, missing.stderr.split(":")[1].strip()) == (1, "unknown_delivery")
