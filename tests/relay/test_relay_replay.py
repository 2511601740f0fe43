"""A signed request (``PUT``/``DELETE /v1/identities/{id}/grants/{signer}``) works once.

Its nonce is covered by the signature and spent in JetStream (the ``mailslot_nonces``
bucket, atomic ``create``) before anything changes, so a captured request replayed later
— after a revoke, to another relay process — is ``401 replayed_request`` and changes
nothing. The header is parsed strictly: no value in it can make the relay fail (a ``ts``
too large for a float was a 500)."""

from __future__ import annotations

import time

import httpx
import pytest
from relay_support import (  # noqa: F401  (fixtures: alice, bob, producer, relay_config)
    SOON,
    alice_fixture,
    assert_still_serving,
    bob_fixture,
    grant_header,
    grant_path,
    grant_request,
    granted,
    post,
    producer_fixture,
    refused,
    relay_config_fixture,
    signed_doc,
)

from relay.server import RelayServer
from relay.store import NONCE_BUCKET
from shared.auth import NONCE_MEMORY_SECONDS, request_message, sign_b64


async def test_a_replayed_grant_after_a_revoke_is_refused(relay, alice, make_member):
    signer = (await make_member("producers", with_home=False)).identity
    path = grant_path(alice.id, signer.id)
    captured = grant_header(alice.identity, "PUT", path)  # what an eavesdropper keeps
    ok = await grant_request(relay, "PUT", alice.id, signer.id, captured)
    assert ok.status_code == 200, ok.text
    assert await granted(relay, alice.id, signer.id)
    revoke = await grant_request(relay, "DELETE", alice.id, signer.id, "sign",
                                 signed_by=alice.identity)
    assert revoke.status_code == 200, revoke.text

    replay = await grant_request(relay, "PUT", alice.id, signer.id, captured)
    refused(replay, 401, "replayed_request")
    assert not await granted(relay, alice.id, signer.id)
    refused(await post(relay, signed_doc(signer, alice.id)), 403, "untrusted_signer")
    # A fresh request from alice still works: only the nonce is spent.
    again = await grant_request(relay, "PUT", alice.id, signer.id, "sign",
                                signed_by=alice.identity)
    assert again.status_code == 200, again.text


async def test_a_replayed_revoke_is_refused_and_keeps_the_grant(relay, alice, producer):
    path = grant_path(alice.id, producer.id)
    captured = grant_header(alice.identity, "DELETE", path)
    first = await grant_request(relay, "DELETE", alice.id, producer.id, captured)
    assert first.status_code == 200, first.text
    regrant = await grant_request(relay, "PUT", alice.id, producer.id, "sign",
                                  signed_by=alice.identity)
    assert regrant.status_code == 200, regrant.text
    refused(await grant_request(relay, "DELETE", alice.id, producer.id, captured),
            401, "replayed_request")
    assert await granted(relay, alice.id, producer.id)


async def test_a_replay_to_another_relay_process_is_refused(relay, relay_config, tmp_path,
                                                             alice, producer):
    """The nonce lives in JetStream, not in the process that saw it first."""
    other = RelayServer(relay_config.model_copy(update={"data_dir": tmp_path / "relay2"}))
    await other.start()
    try:
        captured = grant_header(alice.identity, "DELETE", grant_path(alice.id, producer.id))
        first = await grant_request(relay, "DELETE", alice.id, producer.id, captured)
        assert first.status_code == 200, first.text
        assert (await grant_request(relay, "PUT", alice.id, producer.id, "sign",
                                    signed_by=alice.identity)).status_code == 200
        refused(await grant_request(other, "DELETE", alice.id, producer.id, captured),
                401, "replayed_request")
        assert await granted(relay, alice.id, producer.id)
    finally:
        await other.stop()


async def test_a_refused_request_does_not_spend_its_nonce(relay, alice, bob, producer):
    """The nonce is spent only once the signature verified: a forger who saw a nonce
    (or guessed one) cannot burn it and so block the owner's request."""
    path = grant_path(alice.id, producer.id)
    real = grant_header(alice.identity, "DELETE", path)
    nonce = real.split("nonce=")[1].split(",")[0]
    ts = int(time.time())
    forged_sig = sign_b64(bob.identity, request_message("DELETE", path, ts, nonce, b""))
    forged = f"Mailslot-Signature id={alice.id},ts={ts},nonce={nonce},sig={forged_sig}"
    refused(await grant_request(relay, "DELETE", alice.id, producer.id, forged),
            401, "bad_signature")
    refused(await grant_request(relay, "DELETE", alice.id, producer.id,
                                real.replace(f"id={alice.id}", f"id={bob.id}")),
            401, "bad_auth")
    ok = await grant_request(relay, "DELETE", alice.id, producer.id, real)
    assert ok.status_code == 200, ok.text
    assert not await granted(relay, alice.id, producer.id)


async def test_nonces_are_kept_in_a_bucket_that_outlives_the_skew(relay):
    assert relay.store is not None
    config = (await relay.store.js.stream_info(f"KV_{NONCE_BUCKET}")).config
    assert config.max_age == NONCE_MEMORY_SECONDS
    assert config.num_replicas == relay.store.settings.replicas


MALFORMED = {
    "ts too large for a float": lambda h: h.replace("ts=", "ts=" + "9" * 400, 1),
    "ts exponent": lambda h: _with_ts(h, "1e400"),
    "ts negative": lambda h: _with_ts(h, "-1"),
    "ts underscore": lambda h: _with_ts(h, "1_700_000_000"),
    "ts other digits": lambda h: _with_ts(h, "\u0661\u0667\u0660\u0660"),
    "no nonce (v1 header)": lambda h: ",".join(p for p in h.split(",")
                                              if not p.startswith("nonce=")),
    "empty nonce": lambda h: _with("nonce", h, ""),
    "nonce with a dot": lambda h: _with("nonce", h, "a.b.c.d.e.f.g.h.i"),
    "nonce too long": lambda h: _with("nonce", h, "n" * 65),
    "duplicate field": lambda h: h + ",nonce=AAAAAAAAAAAAAAAAAAAAAA",
    "unknown field": lambda h: h + ",kid=1",
    "sig too long": lambda h: _with("sig", h, "A" * 4000),
}


def _with(key: str, header: str, value: str) -> str:
    scheme, _, params = header.partition(" ")
    parts = [f"{key}={value}" if p.startswith(f"{key}=") else p for p in params.split(",")]
    return f"{scheme} {','.join(parts)}"


def _with_ts(header: str, value: str) -> str:
    return _with("ts", header, value)


@pytest.mark.parametrize("change", list(MALFORMED), ids=list(MALFORMED))
async def test_a_malformed_header_is_a_400_on_a_connection_that_stays_usable(
    relay, alice, producer, change
):
    path = grant_path(alice.id, producer.id)
    header = MALFORMED[change](grant_header(alice.identity, "DELETE", path))
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        # As raw UTF-8 bytes: httpx would refuse to send non-Latin-1 text, an attacker won't.
        response = await client.delete(path, headers={"Authorization": header.encode()})
        refused(response, 400, "missing_auth")
        assert await granted(relay, alice.id, producer.id)
        # The same keep-alive connection serves the next request.
        again = await client.delete(path, headers={
            "Authorization": grant_header(alice.identity, "DELETE", path)})
        assert again.status_code == 200, again.text
    assert not await granted(relay, alice.id, producer.id)
    await assert_still_serving(relay, alice)
