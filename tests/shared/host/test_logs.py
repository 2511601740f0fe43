"""``shared.host.logs``: secrets masked, JSON lines with the request id of the context."""

from __future__ import annotations

import json
import logging
import sys

from shared.host.logs import REQUEST_ID, JsonFormatter, configure_logging, redact


def test_redact_masks_every_kind_of_secret():
    text = ("Bearer abc.def msp_0123456789abcdef mse_ABCDEFGHIJKL msa_zzzzzzzzzzzz "
            "nats://tok3n@127.0.0.1:4222 https://example.com/x")
    masked = redact(text)
    for secret in ("abc.def", "0123456789abcdef", "ABCDEFGHIJKL", "zzzzzzzzzzzz", "tok3n"):
        assert secret not in masked
    assert "msp_[redacted]" in masked and "https://example.com/x" in masked
    assert "nats://[redacted]@127.0.0.1:4222" in masked


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("token msp_abcdefghijkl in a traceback")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("mailslot.relay.x", logging.WARNING, __file__, 1, message, args,
                             info)


def test_json_lines_carry_the_request_id_of_their_context():
    formatter = JsonFormatter()
    outside = json.loads(formatter.format(record("hello %s", "world")))
    assert outside["message"] == "hello world" and "request_id" not in outside
    assert outside["level"] == "WARNING" and outside["logger"] == "mailslot.relay.x"
    assert outside["ts"].endswith("+00:00")
    token = REQUEST_ID.set("req-1")
    try:
        inside = json.loads(formatter.format(record("token %s", "msp_abcdefghijkl", exc=True)))
    finally:
        REQUEST_ID.reset(token)
    assert inside["request_id"] == "req-1"
    assert "abcdefghijkl" not in json.dumps(inside)
    assert "ValueError" in inside["exc"]


def test_configure_logging_switches_the_format_of_the_root_handler():
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        configure_logging("INFO", "json")
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        configure_logging("INFO", "text")
        assert not isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)


def test_redact_leaves_ordinary_words_alone():
    text = "msg_ttl_seconds mspx_abcdefghijk Bearer-less text, http://example.com/a@b"
    assert redact(text) == text
