"""Text encodings: base64url without padding, the one text encoding of keys, signatures
and nonces; and a moment that may be missing as ISO 8601 text (``iso_time``)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from shared.errors import MalformedInput


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str, what: str = "value") -> bytes:
    """Decode unpadded base64url; raise ``MalformedInput`` (not binascii.Error) on junk."""
    if not isinstance(text, str) or not text.isascii():
        raise MalformedInput(f"{what} is not base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedInput(f"{what} is not valid base64url") from exc


def iso_time(value: datetime | None) -> str | None:
    """``value`` as ISO 8601 text (``datetime.isoformat``); None stays None."""
    return None if value is None else value.isoformat()
