"""The relay's adapter to the ``standardwebhooks`` reference library (the edge's, for its
outgoing webhook routes, is ``edge.delivery.webhook``): the ``whsec_`` secret format and
the ``v1`` signature of ``{webhook-id}.{webhook-timestamp}.{body}``, from the library.

Only those two: the library's own ``verify`` reads the clock itself, tells a stale
timestamp from a bad signature only in its message, and lets a body that is not UTF-8
escape as ``UnicodeDecodeError``. ``relay.hooks.verify`` parses the headers, compares in
constant time and checks the timestamp against the ``now`` it is given.
"""

from __future__ import annotations

import binascii
from datetime import UTC, datetime

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook


def check_secret(secret: str) -> str:
    """``secret`` if the library reads it as a signing key (``whsec_`` and base64; the
    prefix is optional), else ``ValueError`` saying why."""
    try:
        Webhook(secret)
    except (EmptyWebhookSecretError, binascii.Error, ValueError) as exc:
        raise ValueError("a Standard Webhooks secret is whsec_ followed by base64 "
                         f"(e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw): {exc}") from None
    return secret


def signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The ``v1,<base64>`` signature the library makes for this message. ``secret`` must
    have passed ``check_secret``; ``body`` is the received bytes as UTF-8 text (which
    encodes back to exactly those bytes); ``timestamp`` whole seconds, 0 ≤ t < 10**10."""
    when = datetime.fromtimestamp(timestamp, UTC)
    return Webhook(secret).sign(msg_id, when, body)
