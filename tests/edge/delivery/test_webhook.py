"""``edge.delivery.webhook``: a real HTTP server on a real socket (no mocks of httpx),
signatures verified with the official Standard Webhooks library."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from channel_support import WAKE, is_json
from standardwebhooks.webhooks import Webhook
from tests_support import free_port

from edge.delivery.outcome import ChannelResult, wake_bytes
from edge.delivery.webhook import deliver_webhook
from edge.intents.model import WebhookRoute

#: A delivery key as the queue makes them (``edge.store.enginestate.new_delivery_key``).
KEY = "msg_01JDQ8Z9X4EEEEEEEEEEEEEEEE"

# -- webhook: a real HTTP server ------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1. ``reply`` decides the answer to each request;
    ``"reset"`` closes the connection without one, ``"hang"`` never answers."""

    url: str
    requests: list[Received] = field(default_factory=list)
    reply: Callable[[Received], Reply | str] = lambda _r: (200, {}, b"")
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            request = Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                               self.rfile.read(length))
            state.requests.append(request)
            answer = state.reply(request)
            if answer == "reset":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if answer == "hang":
                state.release.wait(10)
                self.close_connection = True
                return
            assert not isinstance(answer, str)
            status, headers, body = answer
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/wake"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def hook(url: str, **options: Any) -> WebhookRoute:
    return WebhookRoute(kind="webhook", url=url, **options)


def json_reply(status: int, document: Any) -> Callable[[Received], Reply]:
    return lambda _r: (status, {"content-type": "application/json"},
                       json.dumps(document).encode())


# -- webhook: signing and headers -----------------------------------------------------


async def test_the_signature_verifies_with_the_standard_webhooks_library(
    receiver: Receiver,
) -> None:
    secret = new_secret()
    result = await deliver_webhook(hook(receiver.url, secret_env="HOOK_SECRET"), WAKE,
                                   KEY, {"HOOK_SECRET": secret})

    assert result == ChannelResult(outcome="ok", detail=result.detail)
    assert result.detail["status"] == 200 and "error" not in result.detail
    is_json(result)
    [request] = receiver.requests
    assert request.path == "/hooks/wake"
    assert Webhook(secret).verify(request.body, request.headers) == WAKE
    assert request.body == wake_bytes(WAKE) and "café".encode() in request.body
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("mailslot/")
    assert request.headers["webhook-id"] == KEY
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 5
    assert request.headers["webhook-signature"].startswith("v1,")
    assert "authorization" not in request.headers

    # Any change to the body, the id or the timestamp breaks it.
    tampered = request.body.replace(b"ci-red", b"ci-rex")
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(secret).verify(tampered, request.headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(new_secret()).verify(request.body, request.headers)


async def test_a_template_shapes_the_signed_body_and_the_user_agent_says_mailslot(
    receiver: Receiver,
) -> None:
    """OpenClaw's /hooks/agent wants {message, name, sessionKey, …}: the template makes
    that body from the wake, and the signature covers the body as sent."""
    secret = new_secret()
    template = {"message": "{wake.reason}", "name": "mailslot", "sessionKey": "{session}",
                "deliver": True, "branch": "{payload.branch}", "missing": "{interrupts.4.id}",
                "line": "{type} on {payload.branch} ({delivery}) {{literal}}"}
    result = await deliver_webhook(hook(receiver.url, secret_env="HOOK_SECRET",
                                        template=template), WAKE, KEY, {"HOOK_SECRET": secret})
    assert result.outcome == "ok"
    [request] = receiver.requests
    body = Webhook(secret).verify(request.body, request.headers)
    assert body == {"message": "build failed on main — café", "name": "mailslot",
                    "sessionKey": "main", "deliver": True, "branch": "main", "missing": None,
                    "line": f"ci.failed on main ({KEY}) {{literal}}"}
    assert request.headers["user-agent"].startswith("mailslot/")
    assert request.headers["user-agent"] != "mailslot/"


async def test_the_bearer_token_is_sent(receiver: Receiver) -> None:
    environ = {"HOOK_SECRET": new_secret(), "GATEWAY_TOKEN": "tok-3f9a.b_c~d"}
    result = await deliver_webhook(
        hook(receiver.url, secret_env="HOOK_SECRET", bearer_env="GATEWAY_TOKEN"),
        WAKE, "msg_1", environ)
    assert result.outcome == "ok"
    [request] = receiver.requests
    assert request.headers["authorization"] == "Bearer tok-3f9a.b_c~d"
    Webhook(environ["HOOK_SECRET"]).verify(request.body, request.headers)


async def test_a_route_without_secret_env_is_sent_unsigned(receiver: Receiver) -> None:
    result = await deliver_webhook(hook(receiver.url, bearer_env="GATEWAY_TOKEN"), WAKE,
                                   "msg_2", {"GATEWAY_TOKEN": "t0k"})
    assert result.outcome == "ok"
    [request] = receiver.requests
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] == "msg_2"
    assert request.headers["authorization"] == "Bearer t0k"


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({}, ["HOOK_SECRET", "secret_env", "not set"]),
        ({"HOOK_SECRET": ""}, ["HOOK_SECRET", "not set"]),
        ({"HOOK_SECRET": "hunter2-not-whsec"}, ["HOOK_SECRET", "whsec_"]),
        ({"HOOK_SECRET": "whsec_"}, ["HOOK_SECRET", "unusable"]),
        ({"HOOK_SECRET": "whsec_A"}, ["HOOK_SECRET", "unusable"]),
        ({"HOOK_SECRET": "whsec_!!!"}, ["HOOK_SECRET", "unusable"]),
    ],
)
async def test_a_missing_or_unusable_secret_is_an_error_not_retried(
    receiver: Receiver, environ: dict[str, str], words: list[str],
) -> None:
    result = await deliver_webhook(hook(receiver.url, secret_env="HOOK_SECRET"), WAKE,
                                   "msg_3", environ)
    assert result.outcome == "error" and not result.retry and not result.disable
    for word in words:
        assert word in result.detail["error"]
    assert receiver.requests == []  # nothing went out unsigned
    for value in environ.values():
        if value:
            assert value not in json.dumps(result.detail)
    is_json(result)


@pytest.mark.parametrize("token", [None, "", "two words", "line\nbreak", "tök"])
async def test_a_missing_or_unusable_bearer_token_is_an_error_not_retried(
    receiver: Receiver, token: str | None,
) -> None:
    environ = {} if token is None else {"GATEWAY_TOKEN": token}
    result = await deliver_webhook(hook(receiver.url, bearer_env="GATEWAY_TOKEN"), WAKE,
                                   "msg_4", environ)
    assert result.outcome == "error" and not result.retry
    assert "GATEWAY_TOKEN" in result.detail["error"]
    assert receiver.requests == []
    if token:
        assert token not in json.dumps(result.detail)


# -- webhook: statuses ----------------------------------------------------------------


async def test_a_2xx_json_body_is_honoured_like_exec_stdout(receiver: Receiver) -> None:
    target = hook(receiver.url)
    receiver.reply = json_reply(200, {"outcome": "action-taken", "tokens": 900})
    reported = await deliver_webhook(target, WAKE, "msg_5")
    assert reported.outcome == "action-taken" and reported.tokens == 900

    receiver.reply = json_reply(202, {"status": "accepted", "delivery_id": "msg_5"})
    accepted = await deliver_webhook(target, WAKE, "msg_5")
    assert accepted.outcome == "ok" and accepted.detail["status"] == 202
    assert "body_ignored" not in accepted.detail

    receiver.reply = lambda _r: (204, {}, b"")
    empty = await deliver_webhook(target, WAKE, "msg_5")
    assert empty.outcome == "ok" and "body_ignored" not in empty.detail

    receiver.reply = lambda _r: (200, {"content-type": "text/plain"}, b"OK")
    text = await deliver_webhook(target, WAKE, "msg_5")
    assert text.outcome == "ok" and text.detail["body_ignored"] == "not JSON"

    receiver.reply = lambda _r: (200, {}, b'{"outcome": "ok", "pad": "' + b"x" * 100_000 + b'"}')
    huge = await deliver_webhook(target, WAKE, "msg_5")
    assert huge.outcome == "ok" and "larger than" in huge.detail["body_ignored"]


@pytest.mark.parametrize(("status", "retry_after"), [
    (500, None), (502, None), (503, "30"), (408, None), (429, "120"),
])
async def test_server_errors_and_throttling_are_retried(
    receiver: Receiver, status: int, retry_after: str | None,
) -> None:
    headers = {"retry-after": retry_after} if retry_after else {}
    receiver.reply = lambda _r: (status, headers, b"try later")
    result = await deliver_webhook(hook(receiver.url), WAKE, "msg_6")
    assert result.outcome == "error" and result.retry and not result.disable
    assert result.detail["status"] == status
    assert result.detail["error"].startswith(f"HTTP {status}")
    assert result.detail["error"].endswith(": try later")
    if retry_after:
        assert result.detail["retry_after_s"] == int(retry_after)
    else:
        assert "retry_after_s" not in result.detail
    is_json(result)


async def test_410_disables_the_route(receiver: Receiver) -> None:
    receiver.reply = lambda _r: (410, {}, b"")
    result = await deliver_webhook(hook(receiver.url), WAKE, "msg_7")
    assert result.outcome == "error" and result.disable and not result.retry
    assert result.detail == {"status": 410, "error": "HTTP 410 Gone",
                             "duration_ms": result.detail["duration_ms"]}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_other_4xx_are_errors_not_retried(receiver: Receiver, status: int) -> None:
    receiver.reply = json_reply(status, {"ok": False, "error": "text required"})
    result = await deliver_webhook(hook(receiver.url), WAKE, "msg_8")
    assert result.outcome == "error" and not result.retry and not result.disable
    assert result.detail["status"] == status
    assert '"error": "text required"' in result.detail["error"]


async def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.reply = lambda r: ((302, {"location": "/elsewhere"}, b"") if r.path == "/hooks/wake"
                                else (200, {}, b""))
    result = await deliver_webhook(hook(receiver.url, bearer_env="T"), WAKE, "msg_9",
                                   {"T": "secret-token"})
    assert result.outcome == "error" and not result.retry
    assert "redirects are not followed" in result.detail["error"]
    assert [r.path for r in receiver.requests] == ["/hooks/wake"]


# -- webhook: transport failures ------------------------------------------------------


async def test_a_server_that_is_down_is_retried() -> None:
    result = await deliver_webhook(hook(f"http://127.0.0.1:{free_port()}/hooks/wake"), WAKE,
                                   "msg_10")
    assert result.outcome == "error" and result.retry and not result.disable
    assert result.detail["status"] is None
    assert result.detail["error"].startswith("connection failed: ")
    is_json(result)


async def test_a_connection_reset_is_retried(receiver: Receiver) -> None:
    receiver.reply = lambda _r: "reset"
    result = await deliver_webhook(hook(receiver.url), WAKE, "msg_11")
    assert result.outcome == "error" and result.retry
    assert result.detail["error"].startswith("connection failed: ")


async def test_a_server_that_never_answers_is_retried_after_the_timeout(
    receiver: Receiver,
) -> None:
    receiver.reply = lambda _r: "hang"
    began = time.monotonic()
    result = await deliver_webhook(hook(receiver.url, timeout=0.5), WAKE, "msg_12")
    assert 0.4 <= time.monotonic() - began < 3.0
    assert result.outcome == "error" and result.retry
    assert result.detail["error"] == "timed out after 0.5s"


# -- webhook: secrets -----------------------------------------------------------------


async def test_secrets_never_appear_in_detail_even_when_the_receiver_echoes_them(
    receiver: Receiver,
) -> None:
    environ = {"HOOK_SECRET": new_secret(), "GATEWAY_TOKEN": "gw-token-5e1f2a"}
    target = hook(receiver.url, secret_env="HOOK_SECRET", bearer_env="GATEWAY_TOKEN")

    def echo(status: int) -> Callable[[Received], Reply]:
        # A careless receiver: puts our headers, and the secret it was configured with,
        # into its answer.
        return lambda r: (status, {}, json.dumps(
            {"configured": environ["HOOK_SECRET"], "headers": r.headers}).encode())

    seen = []
    for status in (200, 400, 410, 500):
        receiver.reply = echo(status)
        result = await deliver_webhook(target, WAKE, "msg_13", environ)
        seen.append(result)
        text = json.dumps(result.detail)
        assert environ["GATEWAY_TOKEN"] not in text
        assert environ["HOOK_SECRET"] not in text
        assert environ["HOOK_SECRET"].removeprefix("whsec_") not in text
        is_json(result)
    assert [r.outcome for r in seen] == ["ok", "error", "error", "error"]
    assert "[redacted]" in seen[1].detail["error"]
    assert seen[0].detail.get("body_ignored") is None  # a JSON object without "outcome"
