"""Property: whatever a webhook delivery holds — any headers, any body bytes, a right
signature over any body, any hook definition — the hook's door gives a verdict or a
typed 4xx error with a snake_case code, never another exception; what it accepts becomes
a payload and a type that an envelope takes. Pure functions (``relay.hooks``), in
process: no relay needed."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from hooks_support import (
    ALICE,
    NOW,
    github_headers,
    hook,
    slack_headers,
    standard_headers,
    stripe_headers,
)
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from ulid import ULID

from fuzz.fuzz_support import CODE_RE
from fuzz.strategies import any_text, json_values
from relay.errors import HookRequestInvalid, HookUnverified
from relay.hooks.model import PAYLOAD_BUDGET, Hook, describe_error, template_segments
from relay.hooks.project import Filtered, Handshake, Mapped, process, project, render_type
from relay.hooks.verify import Verified, verify
from shared.envelope import Envelope, Source
from shared.errors import RemoteError
from shared.match import MISSING, field_value
from shared.tokens import TYPE_RE

HOOKS: dict[str, Hook] = {
    "github": hook("github"),
    "stripe": hook("stripe"),
    "slack": hook("slack"),
    "standard-webhooks": hook("standard-webhooks"),
    "hmac": hook("hmac", source={"kind": "hmac", "header": "x-sig", "prefix": "sha256=",
                                 "timestamp_header": "x-time", "signed": "{timestamp}.{body}",
                                 "id_header": "x-id", "event_header": "x-event"}),
    "hmac-b64": hook("hmac", source={"kind": "hmac", "header": "x-sig", "encoding": "base64",
                                     "algorithm": "sha512"}),
    "none": hook("none"),
}
HEADER_NAMES = ["x-hub-signature-256", "x-github-event", "x-github-delivery", "stripe-signature",
                "x-slack-signature", "x-slack-request-timestamp", "webhook-id",
                "webhook-timestamp", "webhook-signature", "x-sig", "x-time", "x-id", "x-event"]
header_values = st.one_of(
    any_text,
    st.sampled_from(["sha256=" + "0" * 64, "t=1760000000,v1=00", "v0=00", "1760000000",
                     "v1,AAAA", "v1,", ",", "t=,v1=", "t=99999999999", "sha256=", "=="]),
)
headers = st.dictionaries(st.sampled_from(HEADER_NAMES) | any_text, header_values, max_size=8)
bodies = st.one_of(st.binary(max_size=300),
                   json_values.map(lambda v: json.dumps(v).encode()),
                   st.builds(lambda d: json.dumps(d).encode(), st.fixed_dictionaries(
                       {"type": st.sampled_from(["url_verification", "event_callback", "x"])},
                       optional={"challenge": any_text, "event_id": any_text, "id": any_text,
                                 "event": st.fixed_dictionaries({"type": any_text})})))


def assert_typed(error: Exception) -> None:
    assert isinstance(error, RemoteError), repr(error)
    assert error.status is not None and 400 <= error.status < 500, repr(error)
    assert CODE_RE.fullmatch(error.code), error.code


def assert_publishable(result: Handshake | Filtered | Mapped) -> None:
    """A Mapped result makes an envelope the relay can sign and the edge takes."""
    if not isinstance(result, Mapped):
        return
    Envelope.model_validate({
        "id": str(ULID()), "to": ALICE, "type": result.type, "priority": result.priority,
        "source": Source(kind="webhook", name="hook", event_id=result.event_id),
        "created_at": datetime.now(UTC), "payload": result.payload, "signer": ALICE})


@given(st.sampled_from(sorted(HOOKS)), headers, bodies, st.integers(0, 2 * NOW))
def test_any_delivery_gets_a_verdict_or_a_typed_refusal(
        name: str, sent: dict[str, str], body: bytes, now: int) -> None:
    made = HOOKS[name]
    try:
        verified = verify(made.source, made.valid_secrets(now), sent, body, now)
    except (HookUnverified, HookRequestInvalid) as exc:
        assert_typed(exc)
        return
    assert made.source.kind == "none", "a forgery verified"
    try:
        result = process(made, verified, sent, body)
    except RemoteError as exc:
        assert_typed(exc)
        return
    assert_publishable(result)


SIGNERS = {
    "github": github_headers,
    "stripe": lambda body: stripe_headers(body),
    "slack": lambda body: slack_headers(body),
    "standard-webhooks": lambda body: standard_headers(body),
}


@given(st.sampled_from(sorted(SIGNERS)), bodies, st.data())
def test_a_right_signature_verifies_and_any_change_to_the_body_breaks_it(
        kind: str, body: bytes, data: st.DataObject) -> None:
    made = HOOKS[kind]
    sent = SIGNERS[kind](body if kind != "standard-webhooks" else _utf8(body))
    body = body if kind != "standard-webhooks" else _utf8(body)
    verified = verify(made.source, made.valid_secrets(NOW), sent, body, NOW)
    assert isinstance(verified, Verified)
    try:
        assert_publishable(process(made, verified, sent, body))
    except RemoteError as exc:
        assert_typed(exc)
    altered = data.draw(st.binary(max_size=300).filter(lambda b: b != body))
    try:
        verify(made.source, made.valid_secrets(NOW), sent, altered, NOW)
    except (HookUnverified, HookRequestInvalid) as exc:
        assert_typed(exc)
    else:
        raise AssertionError("an altered body verified")


def _utf8(body: bytes) -> bytes:
    return body.decode("utf-8", "replace").encode()


hook_fields = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["ci", "CI", ""]) | any_text,
    "type": st.sampled_from(["github.{event}", "a.{payload.x}.{headers.y}", "{event}", "a..b"])
    | any_text,
    "filter": st.fixed_dictionaries({}, optional={
        "event": st.lists(any_text, max_size=3) | any_text,
        "all": st.lists(st.fixed_dictionaries(
            {"field": st.sampled_from(["payload.a", "event", "headers.x", "a"]) | any_text},
            optional={"op": st.sampled_from(["eq", "glob", "regex", "gt", "in", "x"]),
                      "value": json_values}), max_size=2)}),
    "keep": st.lists(st.sampled_from(["a", "a.b", "x-y"]) | any_text, max_size=4),
    "priority": st.lists(st.fixed_dictionaries(
        {"when": st.fixed_dictionaries({}, optional={"event": st.lists(any_text, max_size=2)}),
         "priority": st.sampled_from(["now", "next", "later", "soon"])}), max_size=2),
    "keep_max_bytes": st.integers(-1, 20_000) | json_values,
    "store_body": st.booleans() | json_values,
    "rate": json_values,
    "secrets": st.lists(st.fixed_dictionaries({"value": any_text | st.just("a secret!")},
                                              optional={"until": json_values}), max_size=3),
    "source": st.fixed_dictionaries({"kind": st.sampled_from(
        ["github", "hmac", "none", "standard-webhooks", "x"])}, optional={
        "header": any_text, "signed": any_text, "accept_unsigned": json_values}),
})


@given(hook_fields, json_values.map(lambda v: json.dumps(v).encode()))
def test_any_hook_definition_is_a_hook_or_a_described_refusal(
        fields: dict[str, Any], body: bytes) -> None:
    base: dict[str, Any] = {"name": "ci", "id": "A" * 32, "to": ALICE,
                            "source": {"kind": "github"}, "secrets": [{"value": "a secret!"}]}
    try:
        made = Hook.model_validate({**base, **fields})
    except ValidationError as exc:
        described = describe_error(exc)
        assert described and "a secret!" not in described
        return
    assert Hook.model_validate(made.stored()) == made
    try:
        assert_publishable(process(made, Verified(event="push", delivery_id="d"), {}, body))
    except RemoteError as exc:
        assert_typed(exc)


def _reference_type(template: str, doc: dict[str, Any]) -> str:
    """``render_type`` as its docstring says it, written plainly (the module's own is
    cut for speed): a segment whose placeholder is not a non-empty scalar is left out."""
    segments = []
    for pieces in template_segments(template):
        texts = []
        for is_field, text in pieces:
            value = field_value(doc, text) if is_field else text
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, int | float):
                value = repr(value)
            texts.append(re.sub(r"[^A-Za-z0-9.:/-]", "-", value)
                         if isinstance(value, str) and value else None)
        if all(texts):
            segments.append("".join(t for t in texts if t))
    return ".".join(segments)[:128]


#: What a placeholder may meet: any JSON, and text with and without characters outside
#: the type alphabet.
type_texts = json_values | any_text | st.sampled_from(
    ["pull_request", "a b/ü*>", "x.y", "", "ok", "A:b/c-d", "_"])


@given(st.sampled_from(["github.{event}.{payload.action}", "stripe.{event}",
                        "ci.run-{payload.a.b}x.{headers.x-k}", "w.{payload.n}{payload.s}"]),
       st.fixed_dictionaries({}, optional={
           "event": type_texts, "headers": st.dictionaries(st.just("x-k"), type_texts),
           "payload": st.dictionaries(st.sampled_from(["action", "a", "n", "s"]),
                                      type_texts | st.fixed_dictionaries(
                                          {"b": type_texts}))}))
def test_a_rendered_type_is_the_documented_one_or_refused(template: str,
                                                          doc: dict[str, Any]) -> None:
    expected = _reference_type(template, doc)
    try:
        rendered = render_type(template, doc)
    except RemoteError as exc:  # an empty or ill-formed type, as the reference would be
        assert_typed(exc)
        assert not TYPE_RE.fullmatch(expected)
        return
    assert rendered == expected


def _reference_projection(body: Any, paths: list[str]) -> dict[str, Any]:
    """``project``'s first pass as its docstring says it, path by path: each found path
    nested as in the body, a whole value replacing what longer paths built, a longer
    path inside a value kept whole adding nothing."""
    payload: dict[str, Any] = {}
    ours: set[int] = set()
    for path in paths:
        value = field_value(body, path)
        if value is MISSING:
            continue
        *above, last = path.split(".")
        node: Any = payload
        for key in above:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
                ours.add(id(child))
            elif not (isinstance(child, dict) and id(child) in ours):
                node = None
                break
            node = child
        if node is None:
            continue
        before = node.get(last, MISSING)
        if before is MISSING or (isinstance(before, dict) and id(before) in ours):
            node[last] = value
    return payload


keys = st.sampled_from(["a", "b", "c"])
nested = st.recursive(st.none() | st.integers(0, 9) | st.just("x"),
                      lambda inner: st.dictionaries(keys, inner, max_size=3), max_leaves=12)


@given(nested, st.lists(st.lists(keys, min_size=1, max_size=3).map(".".join), max_size=6))
def test_a_projection_is_the_paths_taken_one_by_one(body: Any, paths: list[str]) -> None:
    payload, left_out = project(body, paths, PAYLOAD_BUDGET)
    assert left_out == ()
    assert json.dumps(payload) == json.dumps(_reference_projection(body, paths))  # in order
