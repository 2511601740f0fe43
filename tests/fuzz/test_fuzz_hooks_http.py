"""``POST /v1/hooks/{hook_id}`` of a real relay process, fuzzed: any headers a provider
might send (with any values), any body bytes, any content type, to a hook of every
source — and deliveries correctly signed over any body. Properties, for every example:
never a 5xx; every refusal the documented JSON body; nothing stored unless answered 202
(then exactly one interrupt); the keep-alive connection survives. At the end: what the
relay accepted reaches alice's real edge, which refuses none of it, and the relay logged
no unexpected failure."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from hooks_support import (
    GITHUB_SECRET,
    SLACK_SECRET,
    STANDARD_SECRET,
    STRIPE_SECRET,
    github_headers,
    slack_headers,
    standard_headers,
    stripe_headers,
)
from hypothesis import given
from hypothesis import strategies as st

from fuzz.fuzz_support import Harness, KeepAlive, assert_answer
from fuzz.strategies import content_types, header_value, json_values
from relay.adminauth import ADMIN_KEY_FILE

HEADERS = ("X-Hub-Signature-256", "X-GitHub-Event", "X-GitHub-Delivery", "Stripe-Signature",
           "X-Slack-Signature", "X-Slack-Request-Timestamp", "webhook-id",
           "webhook-timestamp", "webhook-signature", "X-Signature", "X-Timestamp", "X-Event",
           "X-Delivery-Id")
SOURCES: dict[str, dict[str, Any]] = {
    "github": {"source": {"kind": "github"}, "secret": GITHUB_SECRET},
    "stripe": {"source": {"kind": "stripe"}, "secret": STRIPE_SECRET},
    "slack": {"source": {"kind": "slack"}, "secret": SLACK_SECRET},
    "std": {"source": {"kind": "standard-webhooks"}, "secret": STANDARD_SECRET},
    "hmac": {"source": {"kind": "hmac", "header": "X-Signature", "timestamp_header":
                        "X-Timestamp", "signed": "{timestamp}.{body}", "event_header":
                        "X-Event"}, "secret": "generic-hmac-secret"},
    "open": {"source": {"kind": "none", "accept_unsigned": True, "id_header": "X-Delivery-Id"},
             "store_body": True},
}


@pytest.fixture(scope="module")
def hooks(harness: Harness) -> dict[str, str]:
    """A hook of every source for alice: name → path."""
    key = (harness.relay.data_dir / ADMIN_KEY_FILE).read_text().strip()
    paths = {}
    with httpx.Client(base_url=harness.relay.url, timeout=10,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        for name, fields in SOURCES.items():
            made = client.post("/v1/admin/hooks", json={
                "name": f"fuzz-{name}", "to": harness.alice.id, **fields})
            assert made.status_code == 201, made.text
            paths[name] = made.json()["path"]
    return paths


def post_and_check(harness: Harness, http: KeepAlive, path: str, body: bytes,
                   headers: dict[str, str]) -> httpx.Response:
    before = harness.stored()
    response = http.request("POST", path, content=body, headers=headers)
    assert_answer(response)
    after = harness.stored()
    if response.status_code == 202:
        assert after == before + 1, response.text
        harness.accepted.add(response.json()["id"])
    else:
        assert after == before, f"stored on {response.status_code}: {response.text}"
    return response


bodies = st.one_of(st.binary(max_size=300), json_values.map(
    lambda v: json.dumps(v).encode()))


def finish(harness: Harness, http: KeepAlive) -> None:
    assert http.request("GET", "/healthz").status_code == 200
    assert harness.relay.errors_logged() == []
    harness.assert_accepted_reach_the_inbox()


def test_any_headers_and_body_get_an_answer_never_a_5xx(
        harness: Harness, http: KeepAlive, hooks: dict[str, str]) -> None:
    @given(source=st.sampled_from(sorted(SOURCES)),
           headers=st.dictionaries(st.sampled_from(HEADERS), header_value, max_size=6),
           content_type=content_types, body=bodies)
    def run(source: str, headers: dict[str, str], content_type: str | None,
            body: bytes) -> None:
        sent = dict(headers)
        if content_type is not None:
            sent["Content-Type"] = content_type
        post_and_check(harness, http, hooks[source], body, sent)

    run()
    finish(harness, http)


def test_a_right_signature_over_any_body_gets_an_answer_never_a_5xx(
        harness: Harness, http: KeepAlive, hooks: dict[str, str]) -> None:
    @given(source=st.sampled_from(["github", "stripe", "slack", "std"]),
           doc=st.one_of(json_values, st.fixed_dictionaries(
               {"type": st.sampled_from(["event_callback", "url_verification", "x.y"]),
                "id": st.text(max_size=5), "event_id": st.text(max_size=5),
                "challenge": st.text(max_size=5),
                "event": st.fixed_dictionaries({"type": st.text(max_size=8)})})),
           delivery=st.from_regex(r"[!-~]{1,20}", fullmatch=True))
    def run(source: str, doc: Any, delivery: str) -> None:
        body = json.dumps(doc).encode()
        t = int(time.time())
        headers = {
            "github": lambda: github_headers(body, delivery=delivery),
            "stripe": lambda: stripe_headers(body, STRIPE_SECRET, t=t),
            "slack": lambda: slack_headers(body, t=t),
            "std": lambda: standard_headers(body, t=t, msg_id=delivery),
        }[source]()
        headers["Content-Type"] = "application/json"
        statuses.add(post_and_check(harness, http, hooks[source], body, headers).status_code)

    statuses: set[int] = set()
    run()
    assert 202 in statuses and statuses & {400, 422}, statuses  # the test can tell them apart
    finish(harness, http)
