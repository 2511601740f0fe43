"""``POST /v1/hooks/{hook_id}`` on a real relay (real nats-server, real sockets), signed
the way each provider documents it (``hooks_support``): a valid delivery of every source
reaches the recipient's link as the projected, relay-attested interrupt; every refusal
has its status and code and stores nothing; a redelivery is stored once."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest
from hookrelay_support import (  # noqa: F401  (fixture: admin_key)
    ADMIN,
    admin,
    admin_key_fixture,
    body_of,
    create_hook,
    deliver,
    metric,
    now,
    seen,
)
from hooks_support import (
    GITHUB_SECRET,
    HMAC_SECRET,
    SLACK_SECRET,
    STANDARD_SECRET,
    STRIPE_SECRET,
    github_headers,
    slack_headers,
    standard_headers,
    stripe_headers,
)
from relay_support import (  # noqa: F401  (fixtures: alice)
    alice_fixture,
    edge_link,
    grant_header,
    pending,
    refused,
    relay_config_fixture,
)
from tests_support import Member, wait_until

from relay.hooks import routes
from relay.hooks.model import BODY_MAX_BYTES
from relay.hooks.registry import delivery_key
from relay.registry import Registry
from relay.server import RelayServer
from relay.store import HOOKS_BUCKET, STREAM
from shared.identity import Identity

PR = {"action": "opened", "number": 7, "huge": "x" * 500,
      "pull_request": {"number": 7, "title": "Fix the door", "html_url": "https://gh/pr/7",
                       "body": "long text the interrupt does not need"},
      "repository": {"full_name": "acme/door"}, "sender": {"login": "octo"}}
INVOICE = {"id": "evt_1", "type": "invoice.payment_failed", "livemode": False,
           "data": {"object": {"id": "in_1", "object": "invoice", "status": "open",
                               "amount": 1200, "currency": "eur", "customer_email": "x@y"}}}
MENTION = {"type": "event_callback", "team_id": "T1", "event_id": "Ev1", "token": "old",
           "event": {"type": "app_mention", "channel": "C1", "user": "U1", "text": "hi",
                     "ts": "1.2"}}
ORDER = {"type": "order.created", "timestamp": "2026-01-01T00:00:00Z", "data": {"id": 3}}
DEPLOY = {"service": "api", "status": "done", "log": "…"}
HMAC_SOURCE = {"kind": "hmac", "header": "X-Signature", "prefix": "sha256=",
               "timestamp_header": "X-Timestamp", "signed": "{timestamp}.{body}",
               "id_header": "X-Delivery-Id", "event_header": "X-Event"}


def hmac_headers(body: bytes, secret: str = HMAC_SECRET, t: int | None = None,
                 delivery: str = "dep-1") -> dict[str, str]:
    t = now() if t is None else t
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Signature": "sha256=" + digest, "X-Timestamp": str(t),
            "X-Delivery-Id": delivery, "X-Event": "deploy"}


async def total(relay: RelayServer, member: Member) -> int:
    return sum((await pending(relay, member.id)).values())


async def test_a_valid_delivery_of_each_source_reaches_the_link_projected(
        relay: RelayServer, alice: Member, admin_key: str) -> None:
    made = {
        "gh": await create_hook(relay, admin_key, name="gh", to=alice.id,
                                source={"kind": "github"}, secret=GITHUB_SECRET),
        "billing": await create_hook(relay, admin_key, name="billing", to=alice.id,
                                     source={"kind": "stripe"}, secret=STRIPE_SECRET,
                                     priority=[{"when": {"event": "invoice.*"},
                                                "priority": "now"}]),
        "slack": await create_hook(relay, admin_key, name="slack", to=alice.id,
                                   source={"kind": "slack"}, secret=SLACK_SECRET),
        "orders": await create_hook(relay, admin_key, name="orders", to=alice.id,
                                    source={"kind": "standard-webhooks"},
                                    secret=STANDARD_SECRET),
        "deploys": await create_hook(relay, admin_key, name="deploys", to=alice.id,
                                     source=HMAC_SOURCE, secret=HMAC_SECRET,
                                     keep=["service", "status"]),
        "open": await create_hook(relay, admin_key, name="open", to=alice.id,
                                  source={"kind": "none", "accept_unsigned": True,
                                          "event_header": "X-Event"}, keep=["a"]),
    }
    assert made["gh"]["secret"] is None  # given, so not answered back
    assert "warning" in made["open"]
    t = now()
    posts = [
        ("gh", body_of(PR), lambda b: github_headers(b, event="pull_request",
                                                     delivery="d-1")),
        ("billing", body_of(INVOICE), lambda b: stripe_headers(b, STRIPE_SECRET, t=t)),
        ("slack", body_of(MENTION), lambda b: slack_headers(b, t=t)),
        ("orders", body_of(ORDER), lambda b: standard_headers(b, t=t, msg_id="msg_1")),
        ("deploys", body_of(DEPLOY), lambda b: hmac_headers(b, t=t)),
        ("open", b'{"a": 1, "b": 2}', lambda b: {"X-Event": "tick"}),
    ]
    for name, body, sign in posts:
        response = await deliver(relay, made[name]["path"], body, sign(body))
        assert response.status_code == 202, (name, response.text)
        assert response.json()["duplicate"] is False
    for name, body, sign in posts[:-1]:  # redelivered: each source's id, stored once
        again = await deliver(relay, made[name]["path"], body, sign(body))
        assert (again.status_code, again.json()) == (200, {"duplicate": True}), name
    assert await total(relay, alice) == 6

    async with edge_link(relay, alice, credit=6) as link:
        items = await link.items(6)
    got = {e["source"]["name"]: e for e in (json.loads(i.envelope) for i in items)}
    assert relay.identity is not None
    for envelope in got.values():
        assert envelope["signer"] == relay.identity.id and envelope["to"] == alice.id
        assert envelope["source"]["kind"] == "webhook"
    gh = got["gh"]
    assert gh["type"] == "github.pull-request.opened"
    assert gh["source"]["event_id"] == "d-1"
    assert gh["payload"] == {
        "action": "opened", "repository": {"full_name": "acme/door"},
        "sender": {"login": "octo"},
        "pull_request": {"number": 7, "title": "Fix the door", "html_url": "https://gh/pr/7"}}
    assert (got["billing"]["type"], got["billing"]["priority"]) == (
        "stripe.invoice.payment-failed", "now")
    assert got["billing"]["source"]["event_id"] == "evt_1"
    assert "customer_email" not in json.dumps(got["billing"]["payload"])
    assert got["slack"]["type"] == "slack.app-mention"
    assert got["slack"]["source"]["event_id"] == "Ev1"
    assert got["slack"]["payload"]["event"]["text"] == "hi"
    assert (got["orders"]["type"], got["orders"]["source"]["event_id"]) == (
        "webhook.order.created", "msg_1")
    assert got["deploys"]["type"] == "webhook.deploy"
    assert got["deploys"]["payload"] == {"service": "api", "status": "done"}
    assert got["deploys"]["source"]["event_id"] == "dep-1"
    assert (got["open"]["type"], got["open"]["payload"]) == ("webhook.tick", {"a": 1})


async def test_a_redelivery_is_stored_once_within_and_beyond_the_duplicate_window(
        relay: RelayServer, alice: Member, admin_key: str) -> None:
    made = await create_hook(relay, admin_key, name="gh", to=alice.id,
                             source={"kind": "github"}, secret=GITHUB_SECRET)
    hook_id, body = made["hook"]["id"], body_of(PR)
    headers = github_headers(body, event="pull_request", delivery="d-9")
    first = await deliver(relay, made["path"], body, headers)
    assert first.status_code == 202, first.text
    assert await seen(relay, hook_id, "d-9")
    again = await deliver(relay, made["path"], body, headers)  # JetStream's window says so
    assert (again.status_code, again.json()) == (200, {"duplicate": True})
    assert "mailslot_relay_interrupts_duplicate_total 1.0" in await metrics_text(relay)
    # Days later (the key aged past JetStream's window): the hooks bucket answers alone.
    assert relay.store is not None
    await relay.store.hook_put(delivery_key(hook_id, "d-9"), {"at": 0})
    late = await deliver(relay, made["path"], body, headers)
    assert (late.status_code, late.json()) == (200, {"duplicate": True})
    text = await metrics_text(relay)
    assert "mailslot_relay_interrupts_duplicate_total 1.0" in text  # JetStream not asked
    assert metric(text, "accepted", "gh") == 1 and metric(text, "duplicate", "gh") == 2
    assert await total(relay, alice) == 1

    # A delivery refused after its id was taken gives the id back: the retry is stored.
    other = body_of({**PR, "number": 8})
    assert relay.store is not None
    await Registry(relay.store).revoke_identity(alice.account, alice.id)
    refused(await deliver(relay, made["path"], other, github_headers(
        other, event="pull_request", delivery="d-10")), 404, "unknown_identity")
    assert not await seen(relay, hook_id, "d-10")
    # Not an id another delivery took moments before (it may be stored: given back, a
    # retry after JetStream's window would store it again).
    await relay.store.hook_put(delivery_key(hook_id, "d-11"), {"at": time.time()})
    refused(await deliver(relay, made["path"], other, github_headers(
        other, event="pull_request", delivery="d-11")), 404, "unknown_identity")
    assert await seen(relay, hook_id, "d-11")


#: What answers the delivery id's claim, in JetStream's place: a JetStream API error, or
#: a reply that is no acknowledgement (nats-server's own never is empty).
NOT_A_PUBACK = (b'{"error":{"code":503,"err_code":10008,'
                b'"description":"JetStream system temporarily unavailable"}}', b"")


@pytest.mark.parametrize(("gone", "answer"), [
    (STREAM, None),  # the claim is made, the publish unanswered: the claim is given back
    (f"KV_{HOOKS_BUCKET}", None),  # no responders to the claim
    *((f"KV_{HOOKS_BUCKET}", answer) for answer in NOT_A_PUBACK)])
async def test_no_acknowledgement_from_jetstream_is_503_and_the_retry_is_stored(
        relay: RelayServer, alice: Member, admin_key: str, gone: str,
        answer: bytes | None) -> None:
    made = await create_hook(relay, admin_key, name="gh", to=alice.id,
                             source={"kind": "github"}, secret=GITHUB_SECRET)
    body = body_of(PR)
    headers = github_headers(body, event="pull_request", delivery="d-1")
    assert relay.store is not None
    await relay.store.js.delete_stream(gone)  # nothing answers the publish, or the claim

    async def impostor(msg: Any) -> None:
        await msg.respond(answer)

    sub = None if answer is None else await relay.store.nc.subscribe(
        f"$KV.{HOOKS_BUCKET}.>", cb=impostor)
    refused(await deliver(relay, made["path"], body, headers), 503, "store_unavailable")
    if sub is not None:
        await sub.unsubscribe()
    await relay.store.ensure()  # the stream is back
    assert await total(relay, alice) == 0
    assert not await seen(relay, made["hook"]["id"], "d-1")  # never taken, or given back
    assert (await deliver(relay, made["path"], body, headers)).status_code == 202
    assert await total(relay, alice) == 1


async def metrics_text(relay: RelayServer) -> str:
    async with httpx.AsyncClient(base_url=relay.url) as client:
        return (await client.get("/metrics")).text


async def test_every_refusal_has_its_code_and_stores_nothing(
        relay: RelayServer, alice: Member, admin_key: str) -> None:
    gh = (await create_hook(relay, admin_key, name="gh", to=alice.id,
                            source={"kind": "github"}, secret=GITHUB_SECRET,
                            filter={"event": ["pull_request"]}))["path"]
    stripe = (await create_hook(relay, admin_key, name="billing", to=alice.id,
                                source={"kind": "stripe"}, secret=STRIPE_SECRET))["path"]
    slack = (await create_hook(relay, admin_key, name="slack", to=alice.id,
                               source={"kind": "slack"}, secret=SLACK_SECRET))["path"]
    std = (await create_hook(relay, admin_key, name="orders", to=alice.id,
                             source={"kind": "standard-webhooks"},
                             secret=STANDARD_SECRET))["path"]
    deploys = (await create_hook(relay, admin_key, name="deploys", to=alice.id,
                                 source=HMAC_SOURCE, secret=HMAC_SECRET))["path"]
    body = body_of(PR)
    good = github_headers(body, event="pull_request")
    cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
        (gh, body, github_headers(body, secret="not the secret"), 401, "bad_signature"),
        (gh, body + b" ", good, 401, "bad_signature"),  # altered after signing
        (gh, body, {k: v for k, v in good.items() if k != "X-GitHub-Delivery"}, 400,
         "missing_header"),
        (gh, body, {k: v for k, v in good.items() if k != "X-Hub-Signature-256"}, 400,
         "missing_header"),
        (stripe, body_of(INVOICE), stripe_headers(body_of(INVOICE), t=now() - 1000), 401,
         "stale_timestamp"),
        (slack, body_of(MENTION), slack_headers(body_of(MENTION), t=now() + 1000), 401,
         "stale_timestamp"),
        (gh, b"{" + b" " * BODY_MAX_BYTES + b"}", good, 413, "body_too_large"),
        (gh[:-1] + ("A" if gh[-1] != "A" else "B"), body, good, 404, "unknown_hook"),
        ("/v1/hooks/short", body, good, 404, "unknown_hook"),
        (gh, b"not json", github_headers(b"not json"), 400, "malformed_json"),
    ]
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    for path, doc, sign, wrong in [
        (stripe, INVOICE, lambda b, t: stripe_headers(b, STRIPE_SECRET, t=t),
         lambda b, t: stripe_headers(b, "whsec_wrong_secret", t=t)),
        (slack, MENTION, lambda b, t: slack_headers(b, t=t),
         lambda b, t: slack_headers(b, "wrong-signing-secret", t=t)),
        (std, ORDER, lambda b, t: standard_headers(b, t=t),
         lambda b, t: standard_headers(b, other, t=t)),
        (deploys, DEPLOY, lambda b, t: hmac_headers(b, t=t),
         lambda b, t: hmac_headers(b, "wrong-hmac-secret", t=t)),
    ]:  # every signed source: wrong secret, altered body, stale, a header missing
        sent, t = body_of(doc), now()
        good_headers = sign(sent, t)
        cases += [
            (path, sent, wrong(sent, t), 401, "bad_signature"),
            (path, sent.replace(b"}", b', "x": 1}', 1), good_headers, 401, "bad_signature"),
            (path, sent, sign(sent, t - 1000), 401, "stale_timestamp"),
            (path, sent, dict(list(good_headers.items())[1:]), 400, "missing_header"),
        ]
    for path, sent, headers, status, code in cases:
        refused(await deliver(relay, path, sent, headers), status, code)
    form_headers = {**github_headers(b"payload=%7B%7D"),
                    "Content-Type": "application/x-www-form-urlencoded"}
    form = await deliver(relay, gh, b"payload=%7B%7D", form_headers)
    refused(form, 415, "unsupported_media_type")

    filtered = await deliver(relay, gh, body, github_headers(body, event="issues"))
    assert filtered.status_code == 200 and "filtered" in filtered.json(), filtered.text
    ping = await deliver(relay, gh, b'{"zen": "hi"}', github_headers(b'{"zen": "hi"}',
                                                                      event="ping"))
    assert (ping.status_code, ping.json()["event"]) == (200, "ping")
    challenge = body_of({"type": "url_verification", "challenge": "c-123", "token": "t"})
    answered = await deliver(relay, slack, challenge, slack_headers(challenge, t=now()))
    assert (answered.status_code, answered.json()) == (200, {"challenge": "c-123"})
    assert await total(relay, alice) == 0

    hook_id = gh.rsplit("/", 1)[1]
    shown = await admin(relay, admin_key, "GET", f"{ADMIN}/{hook_id}")
    codes = [r["code"] for r in shown.json()["refusals"]]
    assert codes[:4] == ["bad_signature", "bad_signature", "missing_header", "missing_header"]
    assert "Fix the door" not in shown.text and "not json" not in shown.text  # no bodies


async def test_paused_rate_limited_deleted(relay: RelayServer, alice: Member,
                                           admin_key: str) -> None:
    made = await create_hook(relay, admin_key, name="gh", to=alice.id,
                             source={"kind": "github"}, secret=GITHUB_SECRET, rate=0.01,
                             burst=1)
    path, hook_id = made["path"], made["hook"]["id"]

    def signed(n: int) -> tuple[bytes, dict[str, str]]:
        body = body_of({**PR, "n": n})
        return body, github_headers(body, event="pull_request", delivery=f"d-{n}")

    paused = await admin(relay, admin_key, "POST", f"{ADMIN}/{hook_id}/pause")
    assert paused.json()["hook"]["paused"] is True
    response = await deliver(relay, path, *signed(1))
    refused(response, 503, "hook_paused")
    assert int(response.headers["Retry-After"]) >= 1
    await admin(relay, admin_key, "POST", f"{ADMIN}/{hook_id}/resume")
    assert (await deliver(relay, path, *signed(1))).status_code == 202
    limited = await deliver(relay, path, *signed(2))
    refused(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    assert await total(relay, alice) == 1

    gone = await admin(relay, admin_key, "DELETE", f"{ADMIN}/{hook_id}")
    assert gone.json()["deleted"] is True
    refused(await deliver(relay, path, *signed(3)), 410, "hook_deleted")
    # Deleting the account deletes its hooks: their deliveries are 410 too.
    other = await create_hook(relay, admin_key, name="other", to=alice.id,
                              source={"kind": "github"}, secret=GITHUB_SECRET)
    deleted = await admin(relay, admin_key, "DELETE", f"/v1/admin/accounts/{alice.account}")
    assert deleted.json()["hooks_deleted"] == 1
    refused(await deliver(relay, other["path"], *signed(4)), 410, "hook_deleted")


async def test_rotation_both_secrets_verify_in_the_grace_period_only_the_new_after(
        relay: RelayServer, alice: Member, admin_key: str) -> None:
    made = await create_hook(relay, admin_key, name="gh", to=alice.id,
                             source={"kind": "github"}, filter={"event": "push"})
    old = made["secret"]
    assert isinstance(old, str) and len(old) >= 32  # made by the relay, answered once
    path, hook_id = made["path"], made["hook"]["id"]
    body = body_of(PR)  # an "issues" event: verified, then filtered (nothing stored)

    async def status(secret: str) -> int:
        return (await deliver(relay, path, body, github_headers(body, secret, "issues"))
                ).status_code

    assert await status(old) == 200
    rotated = await admin(relay, admin_key, "POST", f"{ADMIN}/{hook_id}/rotate-secret",
                          {"grace": 1.5})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new and new != old and rotated.json()["previous_valid_until"] is not None
    assert (await status(old), await status(new)) == (200, 200)
    assert await wait_until(lambda: _refused(status(old)), 10, "old secret refused")
    assert await status(new) == 200
    assert old not in rotated.text and new not in json.dumps(rotated.json()["hook"])


async def _refused(pending_status: Any) -> bool:
    return bool(await pending_status == 401)


async def test_admin_api_needs_the_credential_and_never_shows_a_secret(
        relay: RelayServer, alice: Member, admin_key: str) -> None:
    refused(await admin(relay, None, "GET", ADMIN), 401, "missing_token")
    refused(await admin(relay, "msa_wrong", "POST", ADMIN, {"name": "x"}), 401,
            "invalid_token")
    made = await create_hook(relay, admin_key, name="orders", to=alice.id,
                             source={"kind": "standard-webhooks"})
    secret = made["secret"]
    assert secret.startswith("whsec_")
    listed = await admin(relay, admin_key, "GET", ADMIN, account=alice.account)
    assert [h["name"] for h in listed.json()["hooks"]] == ["orders"]
    shown = await admin(relay, admin_key, "GET", f"{ADMIN}/{made['hook']['id']}")
    for text in (listed.text, shown.text):
        assert secret not in text and secret.removeprefix("whsec_") not in text
    for body, code in [({"name": "x", "to": alice.id, "source": {"kind": "github"},
                         "colour": 1}, "unknown_field"),
                       ({"name": "x", "to": alice.id, "source": {"kind": "none"}},
                        "invalid_hook"),
                       ({"name": "x", "to": alice.id, "source": {"kind": "github"},
                         "type": "{event}"}, "invalid_hook"),
                       ({"name": "orders", "to": alice.id, "source": {"kind": "github"}},
                        "hook_exists")]:
        status = 409 if code == "hook_exists" else 400
        refused(await admin(relay, admin_key, "POST", ADMIN, body), status, code)
    refused(await admin(relay, admin_key, "POST", ADMIN, {
        "name": "y", "to": "b" * 32, "source": {"kind": "github"}}), 404, "unknown_identity")
    stripe = await create_hook(relay, admin_key, name="billing", to=alice.id,
                               source={"kind": "stripe"})
    assert stripe["secret"] is None and "warning" in stripe
    refused(await admin(relay, admin_key, "POST",
                        f"{ADMIN}/{stripe['hook']['id']}/rotate-secret", {}),
            400, "secret_required")


async def test_an_identity_manages_its_own_hooks_with_signed_requests(
        relay: RelayServer, alice: Member) -> None:
    own = f"/v1/identities/{alice.id}/hooks"
    body = body_of({"name": "mine", "source": {"kind": "github"}})

    async def signed(method: str, path: str, content: bytes = b"",
                     signer: Any = None) -> httpx.Response:
        header = grant_header(signer or alice.identity, method, path, body=content,
                              claimed=alice.id)
        async with httpx.AsyncClient(base_url=relay.url) as client:
            return await client.request(method, path, content=content, headers={
                "Authorization": header, "Content-Type": "application/json"})

    made = await signed("POST", own, body)
    assert made.status_code == 201, made.text
    assert made.json()["hook"]["to"] == alice.id and made.json()["secret"]
    listed = await signed("GET", own)
    assert [h["name"] for h in listed.json()["hooks"]] == ["mine"]
    assert made.json()["secret"] not in listed.text
    async with httpx.AsyncClient(base_url=relay.url) as client:
        refused(await client.post(own, content=body), 401, "missing_auth")
    refused(await signed("POST", own, body, signer=Identity.generate()), 401, "bad_signature")
    hook_id = made.json()["hook"]["id"]
    paused = await signed("POST", f"{own}/{hook_id}/pause")
    assert paused.json()["hook"]["paused"] is True
    rotated = await signed("POST", f"{own}/{hook_id}/rotate-secret", b'{"grace": 0}')
    new = rotated.json()["secret"]
    assert new and new != made.json()["secret"] and new not in (await signed(
        "GET", f"{own}/{hook_id}")).text
    assert (await signed("POST", f"{own}/{hook_id}/resume")).json()["hook"]["paused"] is False
    pr = body_of(PR)
    assert (await deliver(relay, made.json()["path"], pr, github_headers(
        pr, new, "pull_request", "d-own"))).status_code == 202
    deleted = await signed("DELETE", f"{own}/{hook_id}")
    assert deleted.json()["deleted"] is True
    refused(await deliver(relay, made.json()["path"], b"{}", github_headers(b"{}")), 410,
            "hook_deleted")


async def test_the_webhook_metric_names_a_bounded_number_of_hooks(
        relay: RelayServer, alice: Member, admin_key: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Tenants make hooks: past ``LABELLED_HOOKS`` (account, hook) pairs the metric
    counts the rest as ``other``, so a scrape cannot grow without bound."""
    monkeypatch.setattr(routes, "LABELLED_HOOKS", 1)
    paths = {name: (await create_hook(relay, admin_key, name=name, to=alice.id,
                                      source={"kind": "github"}, secret=GITHUB_SECRET))["path"]
             for name in ("first", "second")}
    for name, delivery in (("first", "d-1"), ("second", "d-2"), ("first", "d-3")):
        body = body_of(PR)
        answer = await deliver(relay, paths[name], body,
                               github_headers(body, event="pull_request", delivery=delivery))
        assert answer.status_code == 202, answer.text
    text = await metrics_text(relay)
    assert metric(text, "accepted", "first") == 2
    assert metric(text, "accepted", "second") == 0
    assert metric(text, "accepted", "other") == 1
