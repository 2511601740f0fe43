"""The one table of limits at the relay's door: each class of input that once got a 500,
a silent ``null`` or a 202 the edge then refused is now refused with its code, stores
nothing, and leaves the relay (and the keep-alive connection) serving. Plus the parts
every response shares: ``X-Request-Id``, and a 500 that has a body.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import uvicorn
from relay_support import (  # noqa: F401  (fixtures: alice, producer, relay_config)
    SOON,
    alice_fixture,
    assert_still_serving,
    draft,
    edge_link,
    item_id,
    post,
    producer_fixture,
    raw_envelope_fields,
    refused,
    relay_config_fixture,
    sign_text,
    stored_total,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tests_support import free_port

from relay.app import RequestIdMiddleware, guarded
from shared.limits import CLOCK_SKEW_SECONDS, MAX_DEPTH


def deep(depth: int) -> str:
    """A payload ``depth`` containers deep (the payload object counts as one)."""
    return '{"a":' * depth + "1" + "}" * depth


def draft_text(to: str, payload_text: str) -> bytes:
    """A draft whose payload is raw JSON text (what Python's json would never write)."""
    return (json.dumps(draft(to, payload=None))[:-1] + f', "payload": {payload_text}}}').encode()


def signed_text(producer, to: str, payload_text: str, **fields) -> dict[str, str]:
    text = json.dumps(raw_envelope_fields(producer, to, payload=None, **fields))
    return sign_text(producer, text[:-1] + f', "payload": {payload_text}}}')


@pytest.mark.parametrize(("payload", "code"), [
    ('{"x": NaN}', "non_finite_number"),
    ('{"x": Infinity}', "non_finite_number"),
    ('{"x": [-Infinity]}', "non_finite_number"),
    ('{"x": 1e400}', "non_finite_number"),
    ('{"x": 9007199254740992}', "number_out_of_range"),
    ('{"x": -' + "9" * 40 + "}", "number_out_of_range"),
    ('{"x": "\\ud800"}', "invalid_string"),
    ('{"\\udfff": 1}', "invalid_string"),
    (deep(MAX_DEPTH + 1), "too_deep"),
    (deep(250), "too_deep"),
    (deep(5_000), "too_deep"),
])
async def test_a_draft_outside_the_limits_is_refused(relay, alice, payload, code):
    """These were stored as ``null``, answered 500, or (250 deep) answered 202 and then
    refused by the edge."""
    refused(await post(relay, content=draft_text(alice.id, payload), token=alice.token),
            422, code)
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


@pytest.mark.parametrize(("payload", "status", "code"), [
    ('{"x": NaN}', 422, "non_finite_number"),
    ('{"x": 1e400}', 422, "non_finite_number"),
    ('{"x": 9007199254740992}', 422, "number_out_of_range"),
    ('{"x": "\\ud800"}', 400, "malformed_json"),  # invalid JSON text for the edge's parser
    (deep(MAX_DEPTH + 1), 422, "too_deep"),
    (deep(250), 422, "too_deep"),
])
async def test_a_signed_envelope_outside_the_limits_is_refused(relay, alice, producer, payload,
                                                               status, code):
    refused(await post(relay, signed_text(producer, alice.id, payload)), status, code)
    assert await stored_total(relay) == 0


async def test_a_payload_at_the_limits_is_accepted_and_delivered(relay, alice, producer):
    payload = {"deep": json.loads(deep(MAX_DEPTH - 1)), "n": 2**53 - 1, "f": 1e308, "s": "é🙂"}
    assert json.dumps(payload).count("{") == MAX_DEPTH
    response = await post(relay, draft(alice.id, payload=payload), token=alice.token)
    assert response.status_code == 202, response.text
    signed = await post(relay, signed_text(producer, alice.id, json.dumps(payload)))
    assert signed.status_code == 202, signed.text
    async with edge_link(relay, alice, credit=2) as link:
        items = await link.items(2)
    assert [json.loads(i.envelope)["payload"] for i in items] == [payload, payload]


@pytest.mark.parametrize("field", ["epk", "nonce", "ct"])
async def test_a_lone_surrogate_in_a_sealed_field_is_refused(relay, alice, field):
    """This one was a 500 with no body (the envelope could not be serialized)."""
    sealed = {"alg": "x25519-hkdf-sha256-chacha20poly1305", "epk": "A" * 43,
              "nonce": "B" * 16, "ct": "C" * 40}
    body = json.dumps(draft(alice.id, payload=None, sealed={**sealed, field: "\ud800"}))
    assert "\\ud800" in body
    refused(await post(relay, content=body.encode(), token=alice.token), 422, "invalid_string")
    assert await stored_total(relay) == 0
    await assert_still_serving(relay, alice)


async def test_created_at_from_the_future_is_refused(relay, alice, producer):
    """A ``created_at`` in 2999 was accepted and delivered."""
    for created_at in (datetime(2999, 1, 1, tzinfo=UTC),
                       datetime.now(UTC) + timedelta(seconds=CLOCK_SKEW_SECONDS + 60)):
        text = json.dumps(raw_envelope_fields(producer, alice.id,
                                              created_at=created_at.isoformat()))
        refused(await post(relay, sign_text(producer, text)), 422, "clock_skew")
    assert await stored_total(relay) == 0
    for created_at in (datetime.now(UTC) + timedelta(seconds=60),
                       datetime.now(UTC) - timedelta(days=30)):  # a little ahead; old
        text = json.dumps(raw_envelope_fields(producer, alice.id,
                                              created_at=created_at.isoformat()))
        response = await post(relay, sign_text(producer, text))
        assert response.status_code == 202, response.text
    assert await stored_total(relay) == 2


async def test_an_expiry_centuries_away_is_kept(relay, alice):
    """JetStream's per-message TTL overflows past ~292 years: an ``expires_at`` in 9999
    was answered 202 and dropped at once. The TTL is capped; the interrupt arrives."""
    response = await post(relay, draft(alice.id, expires_at="9999-12-31T23:59:59Z"),
                          token=alice.token)
    assert response.status_code == 202, response.text
    async with edge_link(relay, alice, credit=1) as link:
        [item] = await link.items(1)
    assert item_id(item) == response.json()["id"]


async def test_every_answer_carries_a_request_id(relay, alice):
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        answers = [
            await client.post("/v1/interrupts", json=draft(alice.id),
                              headers={"Authorization": f"Bearer {alice.token}"}),
            await client.post("/v1/interrupts", content=b"{", headers={
                "Content-Type": "application/json"}),
            await client.get("/nowhere"),
            await client.get("/healthz"),
            await client.delete("/v1/interrupts"),
        ]
        ids = [a.headers["x-request-id"] for a in answers]
        assert len(set(ids)) == len(ids) and all(ids), ids
        echoed = await client.get("/healthz", headers={"X-Request-Id": "lb-1234.abc"})
        assert echoed.headers["x-request-id"] == "lb-1234.abc"
        replaced = await client.get("/healthz", headers={"X-Request-Id": "bad id\x7f" * 20})
        assert replaced.headers["x-request-id"] not in ("", "bad id\x7f" * 20)


@pytest.mark.parametrize("request_bytes", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: bad\x7fid\r\n\r\n",  # DEL
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",  # space in a name
    b"GET /healthz HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"BREW /pot HTCPCP/1.0\r\n\r\n",
])
async def test_a_request_the_parser_refuses_is_a_json_400_with_a_request_id(
    relay, alice, request_bytes
):
    """The HTTP parser (httptools) refuses what RFC 9112 forbids before any handler runs;
    that answer too is JSON with a code and the request id, and the relay serves on."""
    host, port = relay.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request_bytes)
        answer = await asyncio.wait_for(reader.read(), SOON)  # it closes the connection
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 400"), lines
    headers = {name.lower(): value for name, value in (
        line.split(": ", 1) for line in lines[1:])}
    doc = json.loads(body)
    assert doc["error"] == "malformed_http" and doc["message"]
    assert doc["request_id"] == headers["x-request-id"] and headers[
        "content-type"] == "application/json"
    await assert_still_serving(relay, alice)


class Boom(Exception):
    pass


async def test_an_unexpected_exception_is_a_500_with_a_body_and_the_connection_lives(caplog):
    """A bug in a handler: 500 ``internal`` with the request id, logged once with that id,
    and the keep-alive connection still serves the next request. (A tiny app on a real
    uvicorn: the relay's own handlers have no bug to trigger on purpose.)"""

    async def boom(_request: Request) -> Response:
        raise Boom("a bug")

    async def fine(_request: Request) -> Response:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/boom", guarded(boom)), Route("/fine", guarded(fine))],
                    middleware=[Middleware(RequestIdMiddleware)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_config=None, access_log=False))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(SOON):  # uvicorn exposes no started event: poll
            while not server.started:
                assert not task.done()
                await asyncio.sleep(0.01)
        caplog.set_level(logging.ERROR, "mailslot.relay.http")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=SOON) as client:
            first = await client.get("/boom")
            assert first.status_code == 500
            body = first.json()
            assert set(body) == {"error", "message", "request_id"}
            assert body["error"] == "internal" and body["message"]
            assert body["request_id"] == first.headers["x-request-id"]
            again = await client.get("/fine")
            assert again.status_code == 200
            assert (again.extensions["network_stream"].get_extra_info("client_addr")
                    == first.extensions["network_stream"].get_extra_info("client_addr"))
        logged = [r for r in caplog.records if body["request_id"] in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None
        assert "a bug" not in first.text  # the exception's text stays in the log
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
