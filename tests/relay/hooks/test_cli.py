"""``mailslot relay hook …``'s flags, checked while parsing (a bad one is a usage error
before anything is sent): ``--where``, ``--priority-rule``, ``--grace``."""

from __future__ import annotations

import argparse

import pytest

from relay.hooks.cli import grace_arg, priority_rule_arg, where_arg


def test_where_reads_a_predicate_as_intents_do() -> None:
    assert where_arg("payload.action eq opened") == {
        "field": "payload.action", "op": "eq", "value": "opened"}
    assert where_arg("payload.n gt 3") == {"field": "payload.n", "op": "gt", "value": 3}
    assert where_arg("payload.action in opened,closed") == {
        "field": "payload.action", "op": "in", "value": ["opened", "closed"]}
    assert where_arg("headers.x-env present") == {"field": "headers.x-env", "op": "present"}
    assert where_arg('payload.ref eq "refs/heads/main"')["value"] == "refs/heads/main"
    for bad in ("payload.action", "payload.a is b", "payload.a present yes", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            where_arg(bad)


def test_priority_rule_and_grace() -> None:
    assert priority_rule_arg("charge.dispute.*=now") == {
        "when": {"event": ["charge.dispute.*"]}, "priority": "now"}
    for bad in ("=now", "push=soon", "push"):
        with pytest.raises(argparse.ArgumentTypeError):
            priority_rule_arg(bad)
    assert [grace_arg(v) for v in ("0", "90s", "30m", "24h", "7d")] == [
        0, 90, 1800, 86_400, 604_800]
    for bad in ("31d", "-1", "soon", "1w"):
        with pytest.raises(argparse.ArgumentTypeError):
            grace_arg(bad)
