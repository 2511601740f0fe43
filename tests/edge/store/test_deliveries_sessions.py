"""Which sessions' wakes a claimer takes (``DeliveryQueue.claim(sessions=…)``, and the
rule ``edge.store.claims.channel_sessions`` makes of ``mailslot mcp --channel --session S
[--include-unsessioned]``): real SQLite, real instances."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from engine_support import at

from edge.store.claims import channel_sessions
from edge.store.deliveries import DeliveryQueue
from edge.store.instances import Instance

T = at("2026-11-24 10:00")


def test_channel_sessions() -> None:
    assert channel_sessions(None) is None
    assert channel_sessions("main") == ("main",)
    assert channel_sessions("main", include_unsessioned=True) == ("main", "")
    with pytest.raises(ValueError, match="needs --session"):
        channel_sessions(None, include_unsessioned=True)
    with pytest.raises(ValueError):
        channel_sessions("two words")


def test_a_claimer_of_some_sessions_takes_and_waits_for_only_theirs(tmp_path: Path) -> None:
    queue = DeliveryQueue.open(tmp_path / "engine.sqlite3")
    me = Instance.start(tmp_path / "instances", "me")
    try:
        for n, session in enumerate(["b", "", "a", "b"]):
            queue.enqueue(wake=n, intent="i", route={"kind": "mcp"}, session=session,
                          interrupts=[str(n)], permissions={}, wake_doc={},
                          at=(T + timedelta(seconds=n)).timestamp())
        later = T + timedelta(minutes=1)
        # next_due sees only the chosen sessions: a loop does not wake for others' wakes
        assert queue.next_due(("mcp",), ("a",)) == T + timedelta(seconds=2)
        assert queue.next_due(("mcp",), ("zzz",)) is None
        assert queue.next_due(("mcp",), ()) is None
        assert [d.session for d in queue.claim("mcp", me, 60, later, limit=9,
                                               sessions=("a",))] == ["a"]
        assert queue.claim("mcp", me, 60, later, sessions=("a",)) == []
        assert [d.session for d in queue.claim("mcp", me, 60, later, limit=9,
                                               sessions=("b", ""))] == ["b", "", "b"]
        assert queue.claim("mcp", me, 60, later, limit=9) == []  # every session: all taken
    finally:
        me.stop()
        queue.close()
