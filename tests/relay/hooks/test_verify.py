"""``relay.hooks.verify``: each source's signature on the exact bytes, with signatures
made the way each provider documents them (``hooks_support``) and the published test
vectors of GitHub and Standard Webhooks. Pure: no relay, no sockets."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

import pytest
from hooks_support import (
    GITHUB_BODY,
    GITHUB_SECRET,
    GITHUB_SIGNATURE,
    HMAC_SECRET,
    NOW,
    STANDARD_SECRET,
    STRIPE_SECRET,
    github_headers,
    hex_hmac,
    hook,
    slack_headers,
    standard_headers,
    stripe_headers,
)

from relay.errors import HookRequestInvalid, HookUnverified
from relay.hooks.model import Hook, UnsignedSource
from relay.hooks.verify import Verified, verify, verify_lowered

BODY = b'{"action":"opened","number":7}'


def check(made: Hook, headers: dict[str, str], body: bytes = BODY, now: float = NOW) -> Verified:
    return verify(made.source, made.valid_secrets(now), headers, body, now)


def refused(made: Hook, headers: dict[str, str], body: bytes = BODY, now: float = NOW) -> str:
    with pytest.raises((HookUnverified, HookRequestInvalid)) as caught:
        check(made, headers, body, now)
    error = caught.value
    assert error.status == (401 if isinstance(error, HookUnverified) else 400)
    return error.code


# -- GitHub ---------------------------------------------------------------------------


def test_github_published_example_verifies() -> None:
    """docs.github.com, "Validating webhook deliveries": the example secret and payload."""
    assert "sha256=" + hex_hmac(GITHUB_SECRET, GITHUB_BODY) == GITHUB_SIGNATURE
    headers = {"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Event": "push",
               "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    verified = check(hook("github"), headers, GITHUB_BODY)
    assert verified == Verified(delivery_id="72d3162e-cc78-11e3-81ab-4c9367dc0958",
                                event="push", timestamp=None)


def test_the_route_s_lowercase_headers_verify_as_given() -> None:
    """``verify_lowered`` (the route's: names lowercase from the ASGI scope, not copied)
    is ``verify``; it looks names up as they are, so mixed case is ``verify``'s job."""
    gh = hook("github")
    headers = {"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Event": "push",
               "X-GitHub-Delivery": "d-1"}
    lowered = {name.lower(): value for name, value in headers.items()}
    assert verify_lowered(gh.source, gh.valid_secrets(NOW), lowered, GITHUB_BODY, NOW) == (
        check(gh, headers, GITHUB_BODY))
    with pytest.raises(HookRequestInvalid) as exc:
        verify_lowered(gh.source, gh.valid_secrets(NOW), headers, GITHUB_BODY, NOW)
    assert exc.value.code == "missing_header"


def test_github_refusals() -> None:
    gh = hook("github")
    good = github_headers(BODY)
    assert check(gh, good).event == "push"
    assert check(gh, {k.lower(): v for k, v in good.items()}).event == "push"  # any case
    assert refused(gh, github_headers(BODY, secret="another secret")) == "bad_signature"
    assert refused(gh, good, BODY + b" ") == "bad_signature"  # altered after signing
    assert refused(gh, good, BODY.replace(b'"number":7', b'"number": 7')) == "bad_signature"
    for name in ("X-Hub-Signature-256", "X-GitHub-Event", "X-GitHub-Delivery"):
        assert refused(gh, {k: v for k, v in good.items() if k != name}) == "missing_header"
    assert refused(gh, {**good, "X-Hub-Signature-256": "sha1=" + "0" * 40}) == "malformed_header"
    assert refused(gh, {**good, "X-Hub-Signature-256": good["X-Hub-Signature-256"].upper()}
                   ) == "malformed_header"
    assert refused(gh, {**good, "X-GitHub-Event": "push event"}) == "malformed_header"
    assert refused(gh, {**good, "X-GitHub-Delivery": "é"}) == "malformed_header"


def test_github_missing_signature_says_to_set_a_secret() -> None:
    headers = {k: v for k, v in github_headers(BODY).items() if k != "X-Hub-Signature-256"}
    with pytest.raises(HookRequestInvalid, match="set a secret on the GitHub webhook"):
        check(hook("github"), headers)


# -- Stripe ---------------------------------------------------------------------------


def test_stripe_valid_and_refusals() -> None:
    st = hook("stripe")
    assert check(st, stripe_headers(BODY)) == Verified(timestamp=NOW)
    assert refused(st, stripe_headers(BODY, "whsec_other_secret")) == "bad_signature"
    assert refused(st, stripe_headers(BODY), BODY + b"\n") == "bad_signature"
    assert refused(st, stripe_headers(BODY, t=NOW - 301)) == "stale_timestamp"
    assert refused(st, stripe_headers(BODY, t=NOW + 301)) == "stale_timestamp"
    assert check(st, stripe_headers(BODY, t=NOW - 300)).timestamp == NOW - 300
    assert refused(st, {}) == "missing_header"
    assert refused(st, {"Stripe-Signature": "v1=abc"}) == "malformed_header"
    assert refused(st, {"Stripe-Signature": f"t={NOW}"}) == "bad_signature"  # no v1
    # Only v0 (the legacy scheme) that happens to be right: ignored.
    v0_only = f"t={NOW},v0={hex_hmac(STRIPE_SECRET, f'{NOW}.'.encode() + BODY)}"
    assert refused(st, {"Stripe-Signature": v0_only}) == "bad_signature"


def test_stripe_any_v1_may_match_and_a_stale_forgery_is_a_bad_signature() -> None:
    st = hook("stripe")
    assert check(st, stripe_headers(BODY, "whsec_rolled_secret", STRIPE_SECRET)).timestamp == NOW
    # stale_timestamp is said only of a delivery that is signed right.
    assert refused(st, stripe_headers(BODY, "whsec_other_secret", t=NOW - 3600)) == "bad_signature"


# -- Slack ----------------------------------------------------------------------------


def test_slack_valid_and_refusals() -> None:
    sl = hook("slack")
    assert check(sl, slack_headers(BODY)) == Verified(timestamp=NOW)
    assert refused(sl, slack_headers(BODY, secret="0" * 32)) == "bad_signature"
    assert refused(sl, slack_headers(BODY), b"{}") == "bad_signature"
    assert refused(sl, slack_headers(BODY, t=NOW - 5 * 60 - 1)) == "stale_timestamp"
    assert check(sl, slack_headers(BODY, t=NOW + 5 * 60)).timestamp == NOW + 300
    good = slack_headers(BODY)
    assert refused(sl, {"X-Slack-Signature": good["X-Slack-Signature"]}) == "missing_header"
    assert refused(sl, {"X-Slack-Request-Timestamp": str(NOW)}) == "missing_header"
    assert refused(sl, {**good, "X-Slack-Request-Timestamp": " 1_760_000_000"}) == "malformed_header"
    assert refused(sl, {**good, "X-Slack-Request-Timestamp": "١٧٦٠٠٠٠٠٠٠"}) == "malformed_header"
    assert refused(sl, {**good, "X-Slack-Signature": "v1=" + "0" * 64}) == "malformed_header"
    # The timestamp is signed: moving it breaks the signature, not just the freshness.
    assert refused(sl, {**good, "X-Slack-Request-Timestamp": str(NOW + 1)}) == "bad_signature"


# -- Standard Webhooks ----------------------------------------------------------------


def test_standard_webhooks_published_vector() -> None:
    """The specification's example (standard-webhooks/standard-webhooks, its tests)."""
    body = b'{"test": 2432232314}'
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
               "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}
    made = hook("standard-webhooks")
    assert verify(made.source, [STANDARD_SECRET], headers, body, 1614265330 + 10) == Verified(
        delivery_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330)
    # The same, computed by hand from the spec: HMAC-SHA256 of "{id}.{ts}.{body}" keyed
    # with the base64-decoded part of the secret after whsec_.
    key = base64.b64decode(STANDARD_SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330." + body, hashlib.sha256)
    assert base64.b64encode(mac.digest()).decode() == headers["webhook-signature"][3:]


def test_standard_webhooks_valid_and_refusals() -> None:
    sw = hook("standard-webhooks")
    good = standard_headers(BODY)
    assert check(sw, good).delivery_id == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    other = "whsec_" + base64.b64encode(b"another key of 24 bytes!").decode()
    assert refused(sw, standard_headers(BODY, other)) == "bad_signature"
    assert refused(sw, good, BODY + b" ") == "bad_signature"
    assert refused(sw, standard_headers(BODY, t=NOW - 301)) == "stale_timestamp"
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert refused(sw, {k: v for k, v in good.items() if k != name}) == "missing_header"
    assert refused(sw, {**good, "webhook-timestamp": "soon"}) == "malformed_header"
    assert refused(sw, good, b"\xff\xfe") == "malformed_body"
    # Several signatures, space-separated; other versions and junk ignored.
    several = f"v1a,AAAA junk v1,bm90IGl0 {good['webhook-signature']}"
    assert check(sw, {**good, "webhook-signature": several}).timestamp == NOW
    assert refused(sw, {**good, "webhook-signature": "v2," + good["webhook-signature"][3:]}
                   ) == "bad_signature"


# -- generic HMAC and none ------------------------------------------------------------


def generic(**options: object) -> Hook:
    return hook("hmac", source={"kind": "hmac", **options})


def test_hmac_hex_with_a_prefix() -> None:
    made = generic(header="X-Signature", prefix="sha256=", id_header="X-Delivery",
                   event_header="X-Event")
    headers = {"X-Signature": "sha256=" + hex_hmac(HMAC_SECRET, BODY), "X-Delivery": "d-1",
               "X-Event": "build.failed"}
    assert check(made, headers) == Verified(delivery_id="d-1", event="build.failed")
    assert check(made, {**headers, "X-Signature": headers["X-Signature"].upper()
                        .replace("SHA256=", "sha256=")}).event == "build.failed"
    assert refused(made, headers, BODY + b"x") == "bad_signature"
    assert refused(made, {**headers, "X-Signature": hex_hmac(HMAC_SECRET, BODY)}) == "malformed_header"
    assert refused(made, {**headers, "X-Signature": "sha256=zz"}) == "bad_signature"
    assert refused(made, {k: v for k, v in headers.items() if k != "X-Delivery"}) == "missing_header"


def test_hmac_sha512_base64_over_a_timestamp() -> None:
    made = generic(header="X-Sig", algorithm="sha512", encoding="base64",
                   timestamp_header="X-Time", signed="{timestamp}.{body}", tolerance=60)

    def sign(t: int, body: bytes = BODY) -> dict[str, str]:
        mac = hmac.new(HMAC_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha512)
        return {"X-Sig": base64.b64encode(mac.digest()).decode(), "X-Time": str(t)}

    assert check(made, sign(NOW)).timestamp == NOW
    assert refused(made, sign(NOW - 61)) == "stale_timestamp"
    assert refused(made, {**sign(NOW), "X-Time": str(NOW - 1)}) == "bad_signature"
    assert refused(made, {**sign(NOW), "X-Sig": "not base64!"}) == "bad_signature"
    assert refused(made, {"X-Sig": sign(NOW)["X-Sig"]}) == "missing_header"


def test_hmac_signing_an_id() -> None:
    made = generic(header="sig", id_header="msg-id", signed="{id}:{body}")
    headers = {"sig": hex_hmac(HMAC_SECRET, b"m1:" + BODY), "msg-id": "m1"}
    assert check(made, headers).delivery_id == "m1"
    assert refused(made, {**headers, "msg-id": "m2"}) == "bad_signature"


def test_none_checks_nothing_but_reads_the_named_headers() -> None:
    made = hook("none", source=None)
    assert check(made, {}) == Verified()
    named = hook("none").model_copy(update={"source": UnsignedSource(
        accept_unsigned=True, id_header="x-id", event_header="x-event")})
    assert check(named, {"X-Id": "7", "X-Event": "ping"}) == Verified(delivery_id="7", event="ping")
    assert refused(named, {"X-Id": "7"}) == "missing_header"


def test_a_hook_without_its_secret_yet_refuses_everything() -> None:
    waiting = hook("stripe").model_copy(update={"secrets": []})
    with pytest.raises(HookUnverified, match="no signing secret yet") as caught:
        check(waiting, stripe_headers(BODY))
    assert caught.value.code == "bad_signature"


# -- rotation -------------------------------------------------------------------------

SIGNERS: dict[str, Callable[[bytes, str], dict[str, str]]] = {
    "github": lambda body, secret: github_headers(body, secret),
    "stripe": lambda body, secret: stripe_headers(body, secret),
    "slack": lambda body, secret: slack_headers(body, secret),
    "standard-webhooks": lambda body, secret: standard_headers(body, secret),
}
NEW = {"github": "the new github secret", "stripe": "whsec_the_new_one_123",
       "slack": "0123456789abcdef0123456789abcdef",
       "standard-webhooks": "whsec_" + base64.b64encode(b"the new key, 24 bytes!!!").decode()}


@pytest.mark.parametrize("kind", list(SIGNERS))
def test_rotation_keeps_the_old_secret_valid_for_the_grace_period(kind: str) -> None:
    old = hook(kind)
    old_secret = old.secrets[0].value.get_secret_value()
    rotated = old.rotated(NEW[kind], now=NOW - 100, grace=3600)
    sign = SIGNERS[kind]
    for secret in (old_secret, NEW[kind]):  # both verify in the grace period
        assert check(rotated, sign(BODY, secret), now=NOW) is not None
    after = NOW - 100 + 3600
    assert rotated.valid_secrets(after) == [NEW[kind]]
    assert verify(rotated.source, rotated.valid_secrets(after), sign(BODY, NEW[kind]), BODY,
                  NOW) is not None
    with pytest.raises(HookUnverified):
        verify(rotated.source, rotated.valid_secrets(after), sign(BODY, old_secret), BODY, NOW)
    # A rotation without grace drops the old secret at once.
    assert old.rotated(NEW[kind], now=NOW, grace=0).valid_secrets(NOW) == [NEW[kind]]
