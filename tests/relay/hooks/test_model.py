"""``relay.hooks.model``: a hook's definition, validated field by field; ids and secrets
generated; secrets never shown; rotation with a grace period."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from hooks_support import ALICE, NOW, hook
from pydantic import ValidationError

from relay.hooks.model import (
    DEFAULT_KEEP,
    DEFAULT_TYPE,
    KINDS,
    Hook,
    HookFilter,
    check_template,
    describe_error,
    new_hook,
    new_hook_id,
    new_secret,
    template_segments,
)
from relay.hooks.stdwebhooks import check_secret


def test_a_new_hook_gets_an_unguessable_id_and_a_generated_secret_where_mailslot_makes_it() -> None:
    ids = {new_hook_id() for _ in range(2000)}
    # Never a leading "-" (one in 64 token_urlsafe ids had one: the CLI took the id for
    # an option); 2,000 ids without the "h" would have one with odds of 1 - (63/64)^2000.
    assert len(ids) == 2000 and all(re.fullmatch(r"h[A-Za-z0-9_-]{32}", i) for i in ids)
    made, secret = new_hook("ci", ALICE, {"kind": "github"})
    assert secret is not None and len(secret) >= 40
    assert made.valid_secrets(NOW) == [secret]
    _, std_secret = new_hook("std", ALICE, {"kind": "standard-webhooks"})
    assert std_secret is not None and std_secret.startswith("whsec_")
    assert len(base64.b64decode(std_secret.removeprefix("whsec_"))) == 24
    assert check_secret(std_secret) == std_secret
    for kind in ("stripe", "slack", "none"):
        assert new_secret(kind) is None
    own, shown_once = new_hook("own", ALICE, {"kind": "github"}, secret="my own secret")
    assert shown_once is None and own.valid_secrets(NOW) == ["my own secret"]


@pytest.mark.parametrize("kind", ["stripe", "slack"])
def test_stripe_and_slack_may_wait_for_the_providers_secret(kind: str) -> None:
    """Stripe shows an endpoint's secret once the endpoint (the hook's URL) exists."""
    made, generated = new_hook("x", ALICE, {"kind": kind})
    assert generated is None and made.valid_secrets(NOW) == []
    given = made.rotated("whsec_from_the_provider", now=NOW, grace=3600)
    assert given.valid_secrets(NOW) == ["whsec_from_the_provider"]
    assert len(given.secrets) == 1


def test_secrets_are_masked_except_in_what_is_stored() -> None:
    made = hook("github")
    text = repr(made) + str(made.shown()) + made.model_dump_json()
    assert "Secret to Everybody" not in text
    assert made.shown()["secrets"] == [{"value": "**********"}]
    assert made.stored()["secrets"] == [{"value": "It's a Secret to Everybody"}]
    assert Hook.model_validate(made.stored()) == made


def test_rotation() -> None:
    made = hook("github")
    rotated = made.rotated("the next secret", now=NOW, grace=600)
    assert [s.until for s in rotated.secrets] == [None, NOW + 600]
    assert rotated.valid_secrets(NOW + 599) == ["the next secret", "It's a Secret to Everybody"]
    assert rotated.valid_secrets(NOW + 600) == ["the next secret"]
    again = rotated.rotated("a third secret", now=NOW + 10, grace=600)
    assert again.valid_secrets(NOW + 11) == ["a third secret", "the next secret"]
    with pytest.raises(ValueError, match="no secret to rotate"):
        hook("none").rotated("whatever!", now=NOW, grace=1)


def errors_of(**fields: Any) -> str:
    base: dict[str, Any] = {"name": "ci", "id": new_hook_id(), "to": ALICE,
                            "source": {"kind": "github"}, "secrets": [{"value": "a secret!"}]}
    with pytest.raises(ValidationError) as caught:
        Hook.model_validate({**base, **fields})
    return describe_error(caught.value)


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "CI Hook"}, "name"),
    ({"id": "short"}, "id: String should match pattern"),
    ({"to": "bob"}, "to"),
    ({"source": {"kind": "gitlab"}}, "source"),
    ({"source": {"kind": "none"}}, "accept_unsigned"),
    ({"source": {"kind": "none", "accept_unsigned": False}}, "accept_unsigned"),
    ({"source": {"kind": "none", "accept_unsigned": True}}, "has no secrets"),
    ({"secrets": []}, "a github hook needs its signing secret"),
    ({"secrets": [{"value": "short"}]}, "8 to 512 printable ASCII"),
    ({"secrets": [{"value": "a secret!", "until": 5}]}, "the current secret (the first) has no end"),
    ({"secrets": [{"value": "a secret!"}, {"value": "b secret!"}]}, "needs its grace end"),
    ({"secrets": [{"value": "a secret!"}] * 3}, "at most 2 items"),
    ({"source": {"kind": "standard-webhooks"}}, "whsec_ followed by base64"),
    ({"source": {"kind": "hmac"}}, "source.hmac.header: Field required"),
    ({"source": {"kind": "hmac", "header": "x sig"}}, "should match pattern"),
    ({"source": {"kind": "hmac", "header": "x", "signed": "{timestamp}"}}, "{body} exactly once"),
    ({"source": {"kind": "hmac", "header": "x", "signed": "{timestamp}.{body}"}}, "timestamp_header"),
    ({"source": {"kind": "hmac", "header": "x", "timestamp_header": "t"}}, "an unsigned timestamp"),
    ({"source": {"kind": "hmac", "header": "x", "signed": "{id}.{body}"}}, "needs an id_header"),
    ({"source": {"kind": "hmac", "header": "x", "signed": "{when}.{body}"}}, "knows {body}"),
    ({"source": {"kind": "hmac", "header": "x", "algorithm": "md5"}}, "algorithm"),
    ({"source": {"kind": "hmac", "header": "x", "tolerance": 0}}, "tolerance"),
    ({"paused": "yes"}, "paused"),
    ({"type": "{event}.github"}, "starts with a literal word"),
    ({"type": "github..push"}, "no empty segment"),
    ({"type": "github.{payload}"}, "placeholders are"),
    ({"type": "github.pull_request"}, "literal text is letters"),
    ({"type": "x" * 129}, "1 to 128 characters"),
    ({"filter": {"all": [{"field": "action", "value": "opened"}]}}, "a hook tests event, payload"),
    ({"filter": {"all": [{"field": "payload.n", "op": "gt", "value": "3"}]}}, "needs a number"),
    ({"filter": {"colour": "red"}}, "Extra inputs are not permitted"),
    ({"priority": [{"when": {"event": "push"}, "priority": "urgent"}]}, "priority"),
    ({"keep": ["a..b"]}, "keep.0"),
    ({"keep": ["a" * 101]}, "at most 100 characters"),
    ({"keep": ["a"] * 33}, "at most 32 items"),
    ({"keep_max_bytes": 10}, "keep_max_bytes"),
    ({"store_body": True, "keep_max_bytes": 8192, "body_max_bytes": 8192}, "at most 12288"),
    ({"rate": 0}, "rate"),
    ({"burst": 0}, "burst"),
    ({"colour": "red"}, "Extra inputs are not permitted"),
])
def test_every_field_is_validated_with_a_reason(fields: dict[str, Any], message: str) -> None:
    described = errors_of(**fields)
    assert message in described, described
    assert "a secret!" not in described  # the input is never echoed


def test_defaults_per_source() -> None:
    assert set(DEFAULT_TYPE) == set(KINDS) == set(DEFAULT_KEEP)
    for template in DEFAULT_TYPE.values():
        assert check_template(template) == template
    made = hook("github")
    assert made.type_template() == "github.{event}.{payload.action}"
    assert made.keep_paths() == DEFAULT_KEEP["github"]
    assert hook("github", keep=[]).keep_paths() == ()


def test_template_segments_cut_at_dots_outside_placeholders() -> None:
    assert template_segments("github.{event}.{payload.a.b}-x") == [
        [(False, "github")], [(True, "event")], [(True, "payload.a.b"), (False, "-x")]]


def test_filter_headers_are_lowercased_names_and_the_filter_is_frozen() -> None:
    made = hook("hmac", source={"kind": "hmac", "header": "X-Signature"})
    assert made.source.header == "x-signature"  # type: ignore[union-attr]
    flt = HookFilter(event=["push", "pull_request"])
    with pytest.raises(ValidationError):
        flt.event = ["x"]
