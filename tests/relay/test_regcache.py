"""RegistryCache's bookkeeping, without NATS: only live, positive entries answer;
entries only move forward; a local write or a stopped watch stops an entry answering."""

from __future__ import annotations

import json

from relay.regcache import RegistryCache


def record(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_nothing_answers_until_the_watch_has_caught_up() -> None:
    cache = RegistryCache()
    cache.apply("token.a", record(to="x"), 1)
    assert cache.get("token.a") is None
    cache.caught_up()
    assert cache.get("token.a") == ({"to": "x"}, 1)
    assert (cache.hits, cache.misses) == (1, 1)


def test_a_miss_is_not_an_answer_and_a_deletion_removes_the_entry() -> None:
    cache = RegistryCache()
    cache.caught_up()
    assert cache.get("token.unknown") is None
    cache.apply("token.a", record(to="x"), 3)
    cache.deleted("token.a", 4)
    assert cache.get("token.a") is None
    assert len(cache) == 0


def test_entries_only_move_forward() -> None:
    cache = RegistryCache()
    cache.caught_up()
    cache.apply("k", record(v=2), 5)
    cache.apply("k", record(v=1), 4)  # a replayed older update
    cache.deleted("k", 5)  # not newer either
    assert cache.get("k") == ({"v": 2}, 5)
    cache.apply("k", record(v=3), 6)
    assert cache.get("k") == ({"v": 3}, 6)


def test_a_local_write_and_a_stopped_watch_stop_answering() -> None:
    cache = RegistryCache()
    cache.caught_up()
    cache.apply("a", record(v=1), 1)
    cache.apply("b", record(v=1), 2)
    cache.invalidate("a")
    assert cache.get("a") is None and cache.get("b") is not None
    cache.suspend()
    assert not cache.live and cache.get("b") is None and len(cache) == 0


def test_the_record_returned_is_a_copy_and_junk_is_not_held() -> None:
    cache = RegistryCache()
    cache.caught_up()
    cache.apply("a", record(v=1), 1)
    found = cache.get("a")
    assert found is not None
    found[0]["v"] = 99
    assert cache.get("a") == ({"v": 1}, 1)
    cache.apply("a", b"not json", 2)
    cache.apply("c", b"[1]", 3)
    assert cache.get("a") is None and cache.get("c") is None
