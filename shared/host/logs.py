"""Log lines as JSON (``--log-format json``): one object per line with ``ts``, ``level``,
``logger``, ``message``, and ``request_id`` when the line was written while the relay was
handling a request (the id the relay sends back as ``X-Request-Id``).

The request id travels in a ``ContextVar`` (``REQUEST_ID``): the relay sets it for the
duration of a request (``relay.metrics.ObserveMiddleware``), and every task the request
starts inherits it, so a log line deep in the store carries it without being handed it.
Secrets never reach a line: bearer tokens (``msp_…``, ``mse_…``, ``msa_…``, anything after
``Bearer``) and the user part of a URL (``nats://token@host``) are masked in the message
and in the traceback, whichever formatter is in use (``redact``).
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The id of the HTTP request being handled, if any (see the module docstring).
REQUEST_ID: ContextVar[str | None] = ContextVar("mailslot_request_id", default=None)

_SECRETS = re.compile(
    r"(?P<token>\bms[aep]_[A-Za-z0-9_-]{8,})"
    r"|(?P<bearer>(?i:bearer)\s+)[^\s\"',]+"
    r"|(?P<url>[a-z][a-z0-9+.-]*://)[^\s/@\"']+@"
)


def _mask(match: re.Match[str]) -> str:
    if match.group("token"):
        return match.group("token")[:4] + "[redacted]"
    if match.group("bearer"):
        return match.group("bearer") + "[redacted]"
    return match.group("url") + "[redacted]@"


def redact(text: str) -> str:
    """``text`` with every secret it may quote masked (tokens keep their prefix)."""
    return _SECRETS.sub(_mask, text)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, ``request_id`` (when set), ``exc`` (a traceback, when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            doc["request_id"] = rid
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=True, default=str)


class RedactingFormatter(logging.Formatter):
    """The text format, with the same masking of secrets as the JSON one."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str, log_format: str = "text") -> None:
    """Set up the root logger once per process: ``log_format`` is ``text`` or ``json``
    (``LOG_FORMATS``). Replaces any handler set up before, so calling it again (``mailslot
    up`` after the top-level set-up) switches the format of every line that follows."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else RedactingFormatter(
        TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
