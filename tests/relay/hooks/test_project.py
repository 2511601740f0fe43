"""``relay.hooks.project``: a verified delivery read, filtered, typed, prioritised and
projected to the minimum useful payload. Pure: no relay, no sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hooks_support import hook

from relay.errors import HookRequestInvalid
from relay.hooks.model import Hook, HookFilter
from relay.hooks.project import (
    TRUNCATED,
    Filtered,
    Handshake,
    Mapped,
    passes,
    pick_priority,
    process,
    project,
    read_delivery,
    render_type,
)
from relay.hooks.verify import Verified
from shared.envelope import Priority
from shared.errors import LimitExceeded, MalformedInput
from shared.limits import PAYLOAD_MAX_BYTES
from shared.tokens import TYPE_RE

PR = {
    "action": "opened",
    "number": 7,
    "pull_request": {"number": 7, "title": "Fix the flaky test", "html_url": "https://github.com/o/r/pull/7",
                     "body": "x" * 5000, "user": {"login": "octocat"}},
    "repository": {"full_name": "o/r", "private": True},
    "sender": {"login": "octocat"},
}
GH = Verified(delivery_id="d-1", event="pull_request")


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_a_github_pull_request_becomes_a_small_typed_interrupt() -> None:
    result = process(hook("github"), GH, {"X-GitHub-Event": "pull_request"}, body(PR))
    assert result == Mapped(
        type="github.pull-request.opened", priority=Priority.next, event_id="d-1",
        event="pull_request",
        payload={"action": "opened", "repository": {"full_name": "o/r"},
                 "sender": {"login": "octocat"},
                 "pull_request": {"number": 7, "title": "Fix the flaky test",
                                  "html_url": "https://github.com/o/r/pull/7"}})
    assert "x" * 100 not in json.dumps(result.payload)  # the PR's body is not kept


def test_headers_already_lowercase_are_read_as_given() -> None:
    """``lowered``: the route's dict (names lowercase) is what filters and templates see,
    not copied; without it, names are lowercased first."""
    by_header = hook("github", filter={"all": [
        {"field": "headers.x-github-event", "op": "eq", "value": "pull_request"}]})
    lowered = {"x-github-event": "pull_request"}
    assert isinstance(process(by_header, GH, lowered, body(PR), lowered=True), Mapped)
    assert isinstance(process(by_header, GH, {"X-GitHub-Event": "pull_request"}, body(PR)),
                      Mapped)
    assert isinstance(process(by_header, GH, {"x-github-event": "push"}, body(PR),
                              lowered=True), Filtered)


def test_handshakes_are_answered_and_not_events() -> None:
    ping = process(hook("github"), Verified(delivery_id="d", event="ping"), {}, b'{"zen": "hi"}')
    assert ping == Handshake({"ok": True, "event": "ping"})
    challenge = {"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                 "type": "url_verification"}
    assert process(hook("slack"), Verified(timestamp=1), {}, body(challenge)) == Handshake(
        {"challenge": challenge["challenge"]})
    with pytest.raises(HookRequestInvalid) as caught:
        process(hook("slack"), Verified(timestamp=1), {}, b'{"type": "url_verification"}')
    assert caught.value.code == "malformed_body"


def test_where_each_source_puts_the_event_and_the_delivery_id() -> None:
    stripe = read_delivery("stripe", Verified(timestamp=1), {}, body(
        {"id": "evt_1", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}}))
    assert not isinstance(stripe, Handshake)
    assert (stripe.event, stripe.delivery_id) == ("invoice.paid", "evt_1")
    slack = read_delivery("slack", Verified(timestamp=1), {}, body(
        {"type": "event_callback", "event_id": "Ev1", "event": {"type": "app_mention"}}))
    assert not isinstance(slack, Handshake)
    assert (slack.event, slack.delivery_id) == ("app_mention", "Ev1")
    limited = read_delivery("slack", Verified(timestamp=1), {}, body({"type": "app_rate_limited"}))
    assert not isinstance(limited, Handshake) and limited.event == "app_rate_limited"
    std = read_delivery("standard-webhooks", Verified(delivery_id="msg_1"), {"Webhook-Id": "msg_1"},
                        body({"type": "user.created", "data": {}}))
    assert not isinstance(std, Handshake)
    assert (std.event, std.delivery_id) == ("user.created", "msg_1")
    assert std.doc["headers"] == {"webhook-id": "msg_1"}
    for kind, doc in [("stripe", {"type": "x"}), ("stripe", {"id": "evt_1"}),
                      ("stripe", {"id": "evt 1", "type": "x"}), ("slack", {"no": "type"}),
                      ("slack", {"type": "event_callback", "event": {"type": "m"}}),
                      ("stripe", [1, 2])]:
        with pytest.raises(HookRequestInvalid) as caught:
            read_delivery(kind, Verified(), {}, body(doc))
        assert caught.value.code == "malformed_body"


def test_bodies_are_parsed_by_the_limits() -> None:
    with pytest.raises(MalformedInput):
        read_delivery("github", GH, {}, b"not json")
    with pytest.raises(LimitExceeded):
        read_delivery("github", GH, {}, b'{"n": 1e999}')
    with pytest.raises(LimitExceeded):
        read_delivery("github", GH, {}, b"[" * 40 + b"]" * 40)


def test_the_filter_keeps_noise_out() -> None:
    doc = {"event": "pull_request", "payload": PR, "headers": {"x-github-event": "pull_request"}}
    assert passes(HookFilter(), doc) is None
    assert passes(HookFilter(event=["pull_*", "issues"]), doc) is None
    assert passes(HookFilter(event=["push"]), doc) == "event 'pull_request' not in ['push']"
    assert passes(HookFilter(event=["*"]), {**doc, "event": None}) == "event None not in ['*']"
    keep_opened = HookFilter.model_validate(
        {"all": [{"field": "payload.action", "op": "in", "value": ["opened", "reopened"]}]})
    assert passes(keep_opened, doc) is None
    closed = {**doc, "payload": {**PR, "action": "closed"}}
    assert passes(keep_opened, closed) == "payload.action in ['opened', 'reopened'] does not hold"
    by_header = HookFilter.model_validate(
        {"any": [{"field": "headers.x-github-event", "op": "eq", "value": "push"}]})
    assert passes(by_header, doc) == "none of the 'any' predicates holds"
    made = hook("github", filter={"event": ["push"]})
    assert process(made, GH, {}, body(PR)) == Filtered("event 'pull_request' not in ['push']")


@pytest.mark.parametrize(("template", "doc", "expected"), [
    ("github.{event}.{payload.action}", {"event": "issues", "payload": {"action": "opened"}},
     "github.issues.opened"),
    ("github.{event}.{payload.action}", {"event": "push", "payload": {}}, "github.push"),
    ("github.{event}.{payload.action}", {"event": "push", "payload": {"action": None}}, "github.push"),
    ("github.{event}.{payload.action}", {"event": "push", "payload": {"action": ""}}, "github.push"),
    ("github.{event}.{payload.action}", {"event": "push", "payload": {"action": {"a": 1}}},
     "github.push"),
    ("stripe.{event}", {"event": "invoice.payment_succeeded"}, "stripe.invoice.payment-succeeded"),
    ("ci.{payload.n}.{payload.ok}", {"payload": {"n": 3, "ok": True}}, "ci.3.true"),
    ("ci.run-{payload.n}", {"payload": {}}, "ci"),
    ("ci.{payload.name}", {"payload": {"name": "a b/ü*>"}}, "ci.a-b/---"),
    ("ci.{headers.x-kind}", {"headers": {"x-kind": "deploy"}}, "ci.deploy"),
    ("x.{payload.s}", {"payload": {"s": "y" * 300}}, "x." + "y" * 126),
])
def test_render_type(template: str, doc: dict[str, Any], expected: str) -> None:
    rendered = render_type(template, doc)
    assert rendered == expected and TYPE_RE.fullmatch(rendered)


def test_priority_rules_first_match_wins_then_the_default() -> None:
    made = hook("github", default_priority="later", priority=[
        {"when": {"all": [{"field": "payload.action", "value": "closed"}]}, "priority": "next"},
        {"when": {"event": ["pull_request"]}, "priority": "now"},
        {"when": {"event": ["*"]}, "priority": "next"},
    ])
    doc = {"event": "pull_request", "payload": PR, "headers": {}}
    assert pick_priority(made, doc) is Priority.now
    assert pick_priority(made, {**doc, "payload": {"action": "closed"}}) is Priority.next
    assert pick_priority(made, {**doc, "event": None}) is Priority.later
    assert pick_priority(hook("github"), doc) is Priority.next


def test_projection_keeps_only_the_paths_nested_as_in_the_body() -> None:
    payload, left_out = project(PR, ["pull_request.user.login", "repository", "missing.path",
                                     "number"], 4096)
    assert payload == {"pull_request": {"user": {"login": "octocat"}},
                       "repository": {"full_name": "o/r", "private": True}, "number": 7}
    assert left_out == ()
    # A shorter path kept whole holds the longer one; a whole value replaces the longer.
    assert project(PR, ["repository", "repository.full_name"], 4096)[0] == {
        "repository": PR["repository"]}
    assert project(PR, ["repository.full_name", "repository"], 4096)[0] == {
        "repository": PR["repository"]}
    assert project(PR, ["number", "number"], 4096)[0] == {"number": 7}
    assert project([1, 2], ["a"], 4096) == ({}, ())
    assert project(PR, [], 4096) == ({}, ())


def test_projection_is_capped_and_says_what_it_left_out() -> None:
    payload, left_out = project(PR, ["action", "pull_request.body", "pull_request.title"], 200)
    assert payload == {"action": "opened", "pull_request": {"title": "Fix the flaky test"},
                       TRUNCATED: ["pull_request.body"]}
    assert left_out == ("pull_request.body",)
    assert len(json.dumps({k: v for k, v in payload.items() if k != TRUNCATED})) <= 200


def test_the_full_body_only_when_asked_and_capped() -> None:
    assert "body" not in project(PR, ["action"], 2048)[0]
    small = {"a": 1}
    assert project(small, [], 2048, store_body=True, body_max_bytes=64) == (
        {"body": small}, ())
    payload, left_out = project(PR, ["action"], 2048, store_body=True, body_max_bytes=1024)
    assert payload == {"action": "opened", TRUNCATED: ["body"]} and left_out == ("body",)
    deep: Any = 1
    for _ in range(32):
        deep = [deep]
    assert project(deep, [], 2048, store_body=True, body_max_bytes=4096)[1] == ("body",)


def test_the_biggest_projection_fits_the_payload_cap() -> None:
    huge = {f"k{i}": "v" * 20_000 for i in range(32)}
    made: Hook = hook("hmac", source={"kind": "hmac", "header": "x"}, keep=list(huge),
                      keep_max_bytes=4096, store_body=True, body_max_bytes=8192)
    result = process(made, Verified(), {}, body(huge))
    assert isinstance(result, Mapped)
    assert len(json.dumps(result.payload, separators=(",", ":"))) <= PAYLOAD_MAX_BYTES
    assert result.left_out == (*huge, "body")
    assert result.type == "webhook"  # no event: the segment is left out
