"""``POST /v1/send/{identity}``: a plain-text interrupt for shell users, in the style of
ntfy. The body is the text; everything else comes from query parameters or headers::

    curl -H 'Authorization: Bearer msp_…' -d 'disk full on nas' \\
        'http://relay/v1/send/ID?type=alert.disk&priority=now'

=============  ==================  ==================================================
query          header              becomes
=============  ==================  ==================================================
type           X-Type              ``type`` (default ``text``)
priority       X-Priority          ``priority``: now, next (default) or later
title          X-Title             ``payload.title``
session        X-Session           ``session``
dedupe_key     X-Dedupe-Key        ``dedupe_key``
id             X-Interrupt-Id      ``id`` (your ULID: a retry with it is stored once)
event_id       X-Event-Id          ``source.event_id``
=============  ==================  ==================================================

The body becomes ``payload.text``. It is taken as UTF-8 text whatever it is labelled
(``curl -d`` says ``application/x-www-form-urlencoded`` and does not encode the text), but
a body labelled JSON or binary is refused (415): JSON goes to ``POST /v1/interrupts``.
An unknown query parameter, one given twice, or one given both ways with different
values is refused (422): a typo must not silently drop a field. Header values must be
ASCII; send other text in the query (percent-encoded UTF-8).

The result is a draft document, checked by the same model and rules as a posted draft
(``relay.ingest.Draft``): nothing here decides what is valid beyond the text itself.
``check_json_media`` is the other side of the same question, for every route that takes
JSON (``POST /v1/interrupts``, the batch, enrollment, the admin API, webhook deliveries).
Pure functions; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from relay.errors import UnsupportedMediaType
from shared.errors import InvalidEnvelope
from shared.limits import check_json, check_text

#: query parameter → (header, draft field). ``title`` goes into the payload.
PARAMETERS: dict[str, tuple[str, str]] = {
    "type": ("x-type", "type"),
    "priority": ("x-priority", "priority"),
    "title": ("x-title", "title"),
    "session": ("x-session", "session"),
    "dedupe_key": ("x-dedupe-key", "dedupe_key"),
    "id": ("x-interrupt-id", "id"),
    "event_id": ("x-event-id", "event_id"),
}
DEFAULT_TYPE = "text"
#: ``application/json``, ``application/<anything>+json``; parameters allowed.
JSON_MEDIA_RE = re.compile(r"application/(?:[a-z0-9!#$&^_.-]+\+)?json", re.IGNORECASE)
#: Media types a plain-text body may be labelled with (or none at all).
TEXT_MEDIA = ("text/plain", "application/x-www-form-urlencoded")


def check_text_media(content_type: str | None) -> None:
    """Refuse a body labelled as something other than text (415)."""
    if content_type is None:
        return
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media not in TEXT_MEDIA and not (media.startswith("text/") or media == ""):
        raise UnsupportedMediaType(
            f"POST /v1/send takes plain text, not {media[:64]!r} (JSON goes to "
            "POST /v1/interrupts)"
        )
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8", "utf8", "us-ascii"
        ):
            raise UnsupportedMediaType("plain-text bodies must be UTF-8 (charset=utf-8)")


def check_json_media(content_type: str | None) -> None:
    """Refuse a body that does not say it is UTF-8 JSON (415): a form post (``curl -d``
    without ``-H 'Content-Type: application/json'``) gets a clear answer, not a parse
    error."""
    if content_type is None:
        raise UnsupportedMediaType("send the body with Content-Type: application/json")
    media, _, params = content_type.partition(";")
    if JSON_MEDIA_RE.fullmatch(media.strip()) is None:
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {media.strip()[:64]!r}"
        )
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8", "utf8"
        ):
            raise UnsupportedMediaType("JSON bodies must be UTF-8 (charset=utf-8)")


def decode_text(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEnvelope("the body is not UTF-8 text", code="invalid_string") from exc
    return check_text(text, "the body")


def options(query: Iterable[tuple[str, str]], headers: Mapping[str, str]) -> dict[str, str]:
    """The send options from the query and the headers (see the table), strictly."""
    found: dict[str, str] = {}
    for name, value in query:
        if name not in PARAMETERS:
            raise InvalidEnvelope(
                f"unknown query parameter {name[:40]!r} (known: {', '.join(PARAMETERS)})",
                code="unknown_parameter",
            )
        if name in found:
            raise InvalidEnvelope(f"query parameter {name} given twice", code="repeated_parameter")
        found[name] = check_text(value, f"query parameter {name}")
    for name, (header, _) in PARAMETERS.items():
        if header not in headers:
            continue
        value = headers[header]
        if not value.isascii():
            raise InvalidEnvelope(
                f"header {header} must be ASCII; send this text as the {name} query "
                "parameter (percent-encoded UTF-8)",
                code="invalid_string",
            )
        if name in found and found[name] != value:
            raise InvalidEnvelope(
                f"{name} given as a query parameter and as header {header}, differently",
                code="conflicting_parameter",
            )
        found[name] = value
    return found


def send_draft(to: str, text: str, opts: Mapping[str, str]) -> dict[str, Any]:
    """The draft document a plain-text send stands for."""
    payload: dict[str, Any] = {"text": text}
    if "title" in opts:
        payload["title"] = opts["title"]
    if not text and "title" not in opts:
        raise InvalidEnvelope("send some text (the body) or a title", code="empty_message")
    check_json(payload)
    doc: dict[str, Any] = {"to": to, "type": opts.get("type", DEFAULT_TYPE), "payload": payload}
    for name, (_, field) in PARAMETERS.items():
        if name in opts and name not in ("type", "title"):
            doc[field] = opts[name]
    return doc
