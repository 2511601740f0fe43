"""What the exec and webhook channel tests share: a wake as the engine builds them, and the
check every ``ChannelResult`` must pass (a known outcome, a detail the log can hold)."""

from __future__ import annotations

import json
from typing import Any

from edge.delivery.outcome import ChannelResult
from edge.store.deliveries import OUTCOMES

WAKE: dict[str, Any] = {
    "wake": {"id": "01JWAKE", "intent": "ci-red", "session": "main", "priority": "high",
             "reason": "build failed on main — café"},
    "interrupts": [{"id": "01JINT", "type": "ci.failed", "payload": {"branch": "main"}}],
    "permissions": {"allow": ["git:read"], "expires": "2030-01-01T00:00:00Z"},
}


def is_json(result: ChannelResult) -> None:
    assert json.loads(json.dumps(result.detail)) == result.detail
    assert result.outcome in OUTCOMES
